"""Faults under real client engines and a real relay on loopback.

* A connection cut under a client (closed from the client's side or the
  relay's): it reconnects and carries on; every text arrives exactly once
  and a file in flight is saved with the right hash.
* The receiver's disk fills up mid-transfer: a clean error on both sides
  (``NO_SPACE``), the partial file removed, the relay and the session fine.
  On a real 2 MiB tmpfs when this runs as root and ``mount`` works, and
  always with the engine's writer failing with ``ENOSPC`` in-process.

Killing the daemon itself (SIGKILL during a chat and a 200 MB transfer) is
``tests/test_e2e.py``.
"""

from __future__ import annotations

import errno
import hashlib
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from m42d.client import events as ev
from m42d.client import incoming
from m42d.client.engine import Client
from m42d.client.keystore import FileKeyStore
from m42d.link import Link
from m42d.session import FileCode
from m42d.ticket import Seat
from tests.client_harness import Recorder, RelayUnderTest, TrackingTransport, running_relay

STEP = 20.0


@pytest.fixture
async def relay() -> AsyncIterator[RelayUnderTest]:
    async with running_relay("tls") as relay:
        yield relay


async def start(nursery: trio.Nursery, client: Client) -> Recorder:
    recorder = Recorder(client)
    nursery.start_soon(recorder.run)
    await nursery.start(client.run)
    return recorder


def established(r: Recorder) -> bool:
    return r.client.established and bool(r.of(ev.SafetyWords))


def tracked_client(
    relay: RelayUnderTest, link: Link, tmp: Path, **kwargs: Any
) -> tuple[Client, TrackingTransport]:
    """A client with a tracker of its own, so a test can close *its* connection."""
    tracker = TrackingTransport(relay.tracker.inner)
    client = Client(
        link,
        FileKeyStore(tmp / f"keys-{link.seat.value}"),
        transports={relay.scheme: tracker},
        backoff_base=0.01,
        backoff_cap=0.2,
        tick_interval=0.05,
        **kwargs,
    )
    return client, tracker


TRACKERS: dict[Seat, TrackingTransport] = {}


async def cut_from_client(relay: RelayUnderTest, seat: Seat) -> None:
    await TRACKERS[seat].connections[-1].aclose()


async def cut_from_relay(relay: RelayUnderTest, seat: Seat) -> None:
    peers = [p for p in relay.relay._peers if p.seat is seat]
    assert len(peers) == 1
    await peers[0].connection.aclose()


@pytest.mark.parametrize("side", ["client", "relay"])
async def test_cut_connection_reconnects_and_loses_nothing(
    relay: RelayUnderTest, tmp_path: Path, side: str
) -> None:
    down = tmp_path / "down"
    down.mkdir()
    data = os.urandom(3 * 1024 * 1024 + 77)
    (tmp_path / "big.bin").write_bytes(data)
    link_a, link_b = relay.links()
    cut = cut_from_client if side == "client" else cut_from_relay
    async with trio.open_nursery() as nursery:
        client_a, TRACKERS[Seat.A] = tracked_client(relay, link_a, tmp_path)
        client_b, TRACKERS[Seat.B] = tracked_client(
            relay, link_b, tmp_path, download_dir=down, accept="all"
        )
        a = await start(nursery, client_a)
        b = await start(nursery, client_b)
        await a.wait_for(established, STEP)
        await b.wait_for(established, STEP)
        await a.client.send_file(tmp_path / "big.bin")
        sent_a = []
        sent_b = []
        for i in range(30):
            sent_a.append(f"from A {i}")
            a.client.send_text(sent_a[-1])
            if i % 3 == 0:
                sent_b.append(f"from B {i}")
                b.client.send_text(sent_b[-1])
            if i in (8, 20):
                # Cut the sender on one round, the receiver on the other.
                victim = a if i == 8 else b
                joins = len(victim.of(ev.Connected))
                await cut(relay, Seat.A if i == 8 else Seat.B)
                await victim.wait_for(lambda r, n=joins: len(r.of(ev.Connected)) > n, STEP)
            await trio.sleep(0.005)
        await a.wait_for(lambda r: len(r.of(ev.Delivered)) >= len(sent_a), STEP)
        await b.wait_for(lambda r: len(r.of(ev.Delivered)) >= len(sent_b), STEP)
        await b.wait_for(lambda r: r.of(ev.TransferDone), STEP)
        await a.wait_for(lambda r: r.of(ev.TransferDone), STEP)
        assert [t.text for t in b.of(ev.TextIn)] == sent_a
        assert [t.text for t in a.of(ev.TextIn)] == sent_b
        assert a.of(ev.Reconnecting) or b.of(ev.Reconnecting)
        done = b.of(ev.TransferDone)[0]
        assert done.path is not None
        assert (
            hashlib.sha256(Path(done.path).read_bytes()).digest()  # noqa: ASYNC240
            == hashlib.sha256(data).digest()
        )
        assert not a.client.busy
        nursery.cancel_scope.cancel()


# -- disk full ------------------------------------------------------------------------------


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs, or a skip when this is not root or mounting is not allowed."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root; the ENOSPC test in-process covers the logic")
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


async def disk_full_scene(
    relay: RelayUnderTest, tmp_path: Path, down: Path, fill: Path | None
) -> None:
    """B accepts a 1.5 MiB file; then the disk fills (``fill`` is written) or the writer fails."""
    data = os.urandom(1536 * 1024)
    (tmp_path / "file.bin").write_bytes(data)
    link_a, link_b = relay.links()
    async with trio.open_nursery() as nursery:
        a = await start(nursery, relay.client(link_a, tmp_path))
        b = await start(nursery, relay.client(link_b, tmp_path, download_dir=down, accept="ask"))
        await a.wait_for(established, STEP)
        file_id = await a.client.send_file(tmp_path / "file.bin")
        await b.wait_for(lambda r: r.of(ev.FileOffer), STEP)
        partial = b.client.accept_file(file_id)
        assert partial.exists()
        if fill is not None:
            # Someone else fills the disk between the offer and the chunks.
            fill.write_bytes(b"\0" * (1024 * 1024 + 256 * 1024))  # noqa: ASYNC240
        await b.wait_for(lambda r: r.of(ev.TransferFailed), STEP)
        await a.wait_for(lambda r: r.of(ev.TransferFailed), STEP)
        failed_b = b.of(ev.TransferFailed)[0]
        failed_a = a.of(ev.TransferFailed)[0]
        assert failed_b.code == FileCode.NO_SPACE, failed_b
        assert "No space left on device" in failed_b.reason
        assert failed_a.code == FileCode.NO_SPACE, failed_a
        assert failed_a.outgoing
        assert not failed_b.outgoing
        assert not a.of(ev.TransferDone)
        assert not b.of(ev.TransferDone)
        assert not partial.exists(), "the partial file must be removed"
        left = sorted(p.name for p in down.iterdir())  # noqa: ASYNC240
        assert left == ([fill.name] if fill else [])
        # The session and the relay are fine: texts still flow both ways.
        a.client.send_text("after the disk filled up")
        await b.wait_for(lambda r: r.of(ev.TextIn), STEP)
        assert b.of(ev.TextIn)[0].text == "after the disk filled up"
        assert not [p for p in b.of(ev.Problem) if p.fatal]
        assert relay.relay.statistics().peers == 2
        nursery.cancel_scope.cancel()


async def test_disk_full_on_a_real_tmpfs(
    relay: RelayUnderTest, tmp_path: Path, small_tmpfs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The engine keeps 16 MiB free on purpose; on a 2 MiB disk nothing would
    # be accepted at all, so the margin goes for this test.
    monkeypatch.setattr(incoming, "FREE_SPACE_MARGIN", 0)
    await disk_full_scene(relay, tmp_path, small_tmpfs, small_tmpfs / "filler")


async def test_disk_full_writer_fails_with_enospc(
    relay: RelayUnderTest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    down = tmp_path / "down"
    down.mkdir()
    real = incoming._pwrite_all
    calls = {"n": 0}

    def pwrite_until_full(fd: int, data: bytes, offset: int) -> None:
        calls["n"] += 1
        if calls["n"] > 5:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd, data, offset)

    monkeypatch.setattr(incoming, "_pwrite_all", pwrite_until_full)
    await disk_full_scene(relay, tmp_path, down, None)
    assert calls["n"] == 6  # the first failure ended the transfer


async def test_offer_bigger_than_free_space_is_refused_up_front(
    relay: RelayUnderTest, tmp_path: Path, small_tmpfs: Path
) -> None:
    (tmp_path / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024))
    link_a, link_b = relay.links()
    async with trio.open_nursery() as nursery:
        a = await start(nursery, relay.client(link_a, tmp_path))
        b = await start(
            nursery, relay.client(link_b, tmp_path, download_dir=small_tmpfs, accept="all")
        )
        await a.client.send_file(tmp_path / "big.bin")
        await a.wait_for(lambda r: r.of(ev.TransferFailed), STEP)
        assert a.of(ev.TransferFailed)[0].code == FileCode.NO_SPACE
        assert b.of(ev.TransferFailed)[0].code == FileCode.NO_SPACE
        assert list(small_tmpfs.iterdir()) == []  # noqa: ASYNC240
        nursery.cancel_scope.cancel()


async def test_sender_not_told_delivered_when_the_receiver_cannot_save(
    relay: RelayUnderTest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last step (fsync + link into place) fails: the sender hears NO_SPACE."""

    def fail(*_args: object) -> Path:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(incoming, "_link_into_place", fail)
    down = tmp_path / "down"
    down.mkdir()
    (tmp_path / "f.bin").write_bytes(os.urandom(100_000))
    link_a, link_b = relay.links()
    async with trio.open_nursery() as nursery:
        a = await start(nursery, relay.client(link_a, tmp_path))
        b = await start(nursery, relay.client(link_b, tmp_path, download_dir=down, accept="all"))
        await a.client.send_file(tmp_path / "f.bin")
        await b.wait_for(lambda r: r.of(ev.TransferFailed), STEP)
        await a.wait_for(lambda r: r.of(ev.TransferDone) or r.of(ev.TransferFailed), STEP)
        assert a.of(ev.TransferDone) == []
        assert [f.code for f in a.of(ev.TransferFailed)] == [FileCode.NO_SPACE]
        assert [f.code for f in b.of(ev.TransferFailed)] == [FileCode.NO_SPACE]
        assert list(down.iterdir()) == []
        nursery.cancel_scope.cancel()
