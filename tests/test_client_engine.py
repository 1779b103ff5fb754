"""The client engine against a real in-process relay on loopback (ws and tls)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from m42d.client import events as ev
from m42d.client.engine import Client, RelayRefused
from m42d.client.keystore import FileKeyStore
from m42d.errors import TransportError
from m42d.link import Link
from m42d.session import FileCode, SessionOptions
from m42d.ticket import Seat
from tests.client_harness import (
    Recorder,
    RelayUnderTest,
    TrackingTransport,
    file_digest,
    file_mode,
    running_relay,
)

pytestmark = pytest.mark.filterwarnings("error")


@pytest.fixture(params=["ws", "tls"])
async def relay(request: pytest.FixtureRequest) -> AsyncIterator[RelayUnderTest]:
    async with running_relay(request.param) as relay:
        yield relay


async def start(nursery: trio.Nursery, client: Client) -> Recorder:
    recorder = Recorder(client)
    nursery.start_soon(recorder.run)
    await nursery.start(client.run)
    return recorder


def established(r: Recorder) -> bool:
    return r.client.established and bool(r.of(ev.SafetyWords))


async def test_text_both_ways_with_delivery(relay: RelayUnderTest, tmp_path: Path) -> None:
    link_a, link_b = relay.links()
    async with trio.open_nursery() as nursery:
        a = await start(nursery, relay.client(link_a, tmp_path))
        b = await start(nursery, relay.client(link_b, tmp_path))
        await a.wait_for(established)
        await b.wait_for(established)
        assert a.of(ev.SafetyWords)[-1].words == b.of(ev.SafetyWords)[-1].words
        assert len(a.of(ev.SafetyWords)[-1].words) == 8
        assert a.of(ev.SafetyWords)[0].first_contact
        seq_a = a.client.send_text("hello from A \x1b[31m")
        seq_b = b.client.send_text("hello from B")
        await a.wait_for(lambda r: any(d.seq == seq_a for d in r.of(ev.Delivered)))
        await b.wait_for(lambda r: any(d.seq == seq_b for d in r.of(ev.Delivered)))
        await a.wait_for(lambda r: r.of(ev.TextIn))
        await b.wait_for(lambda r: r.of(ev.TextIn))
        assert [t.text for t in b.of(ev.TextIn)] == ["hello from A \x1b[31m"]
        assert [t.text for t in a.of(ev.TextIn)] == ["hello from B"]
        assert a.of(ev.PeerOnline)
        assert a.of(ev.Connected)
        assert not a.client.busy
        a.client.close()
        await b.wait_for(lambda r: r.of(ev.PeerOffline))
        b.client.close()


async def test_text_sent_before_peer_arrives(relay: RelayUnderTest, tmp_path: Path) -> None:
    link_a, link_b = relay.links()
    async with trio.open_nursery() as nursery:
        a = await start(nursery, relay.client(link_a, tmp_path))
        await a.wait_for(lambda r: r.of(ev.Connected))
        seqs = [a.client.send_text(f"m{i}") for i in range(5)]
        assert a.client.busy
        b = await start(nursery, relay.client(link_b, tmp_path))
        await a.wait_for(lambda r: {d.seq for d in r.of(ev.Delivered)} >= set(seqs))
        await b.wait_for(lambda r: len(r.of(ev.TextIn)) == 5)
        assert [t.text for t in b.of(ev.TextIn)] == [f"m{i}" for i in range(5)]
        nursery.cancel_scope.cancel()


def _write_random(path: Path, size: int) -> bytes:
    data = os.urandom(size)
    path.write_bytes(data)
    return hashlib.sha256(data).digest()


async def test_file_transfer_with_progress(relay: RelayUnderTest, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    down = tmp_path / "down"
    down.mkdir()
    digest = _write_random(src / "big file.bin", 3 * 1024 * 1024 + 123)
    link_a, link_b = relay.links()
    async with trio.open_nursery() as nursery:
        a = await start(nursery, relay.client(link_a, tmp_path))
        b = await start(nursery, relay.client(link_b, tmp_path, download_dir=down, accept="all"))
        file_id = await a.client.send_file(src / "big file.bin")
        await a.wait_for(lambda r: r.of(ev.TransferDone))
        await b.wait_for(lambda r: r.of(ev.TransferDone))
        done_b = b.of(ev.TransferDone)[0]
        assert done_b.path is not None
        assert Path(done_b.path) == down / "big file.bin"
        assert file_digest(done_b.path) == digest
        assert a.of(ev.TransferDone)[0].file_id == file_id
        assert a.of(ev.Progress)
        assert b.of(ev.Progress)
        last = b.of(ev.Progress)[-1]
        assert last.done == last.size == 3 * 1024 * 1024 + 123
        assert all(p.rate >= 0 for p in b.of(ev.Progress))
        assert not [p for p in down.iterdir() if p.name.endswith(".m42part")]
        assert file_mode(done_b.path) == 0o600
        nursery.cancel_scope.cancel()


async def test_second_file_same_name_not_overwritten(relay: RelayUnderTest, tmp_path: Path) -> None:
    down = tmp_path / "down"
    down.mkdir()
    (down / "a.txt").write_bytes(b"precious")
    (tmp_path / "a.txt").write_bytes(b"new content")
    link_a, link_b = relay.links()
    async with trio.open_nursery() as nursery:
        a = await start(nursery, relay.client(link_a, tmp_path))
        b = await start(nursery, relay.client(link_b, tmp_path, download_dir=down, accept="all"))
        await a.client.send_file(tmp_path / "a.txt", name="../../a.txt")
        await b.wait_for(lambda r: r.of(ev.TransferDone))
        assert (down / "a.txt").read_bytes() == b"precious"
        assert (down / "a (1).txt").read_bytes() == b"new content"
        nursery.cancel_scope.cancel()


async def test_offer_asked_and_refusals(relay: RelayUnderTest, tmp_path: Path) -> None:
    down = tmp_path / "down"
    down.mkdir()
    _write_random(tmp_path / "one.bin", 1000)
    _write_random(tmp_path / "two.bin", 5000)
    _write_random(tmp_path / "three.bin", 10)
    link_a, link_b = relay.links()
    async with trio.open_nursery() as nursery:
        a = await start(nursery, relay.client(link_a, tmp_path))
        b = await start(nursery, relay.client(link_b, tmp_path, download_dir=down, max_size=2000))
        await a.client.send_file(tmp_path / "two.bin")
        await a.wait_for(lambda r: r.of(ev.TransferFailed))
        failed = a.of(ev.TransferFailed)[0]
        assert failed.code == FileCode.TOO_LARGE
        assert "2000" in failed.reason
        await a.client.send_file(tmp_path / "one.bin")
        await b.wait_for(lambda r: r.of(ev.FileOffer))
        offer = b.of(ev.FileOffer)[0]
        assert (offer.name, offer.size) == ("one.bin", 1000)
        with pytest.raises(Exception, match="no pending offer"):
            b.client.accept_file(12345)
        b.client.reject_file(offer.file_id, "no thanks")
        await a.wait_for(lambda r: len(r.of(ev.TransferFailed)) == 2)
        assert a.of(ev.TransferFailed)[1].code == FileCode.DECLINED
        assert a.of(ev.TransferFailed)[1].reason == "no thanks"
        await a.client.send_file(tmp_path / "three.bin")
        await b.wait_for(lambda r: len(r.of(ev.FileOffer)) == 2)
        partial = b.client.accept_file(b.of(ev.FileOffer)[1].file_id)
        assert partial.name.startswith(".three.bin.")
        assert partial.name.endswith(".m42part")
        await b.wait_for(lambda r: r.of(ev.TransferDone))
        assert (down / "three.bin").stat().st_size == 10
        assert not partial.exists()
        nursery.cancel_scope.cancel()


async def test_an_event_handed_over_under_cancellation_is_not_lost(
    relay: RelayUnderTest, tmp_path: Path
) -> None:
    """A reader cancelled by a cut while it hands an event to the UI must not drop it.

    trio's ``send()`` checks for cancellation before it sends; the engine
    used to take the event off its queue first, so a text shown and
    acknowledged (the sender saw "delivered") could vanish on the
    receiving side when its connection was cut at that moment.
    """
    link_a, _ = relay.links()
    client = relay.client(link_a, tmp_path)
    client._emit(ev.PeerOnline())
    with trio.CancelScope() as scope:
        scope.cancel()
        await client._deliver_ui()  # cancelled before anything is sent
    client._emit(ev.PeerOffline())
    await client._deliver_ui()
    got = [client.events.receive_nowait(), client.events.receive_nowait()]
    assert got == [ev.PeerOnline(), ev.PeerOffline()]


async def test_reconnect_after_cut_loses_nothing(relay: RelayUnderTest, tmp_path: Path) -> None:
    down = tmp_path / "down"
    down.mkdir()
    digest = _write_random(tmp_path / "f.bin", 2 * 1024 * 1024)
    link_a, link_b = relay.links()
    # A's own tracker: the cut below must hit A's live connection, even if
    # A had to reconnect once before it (a slow handshake on a loaded machine).
    a_tracker = TrackingTransport(relay.tracker.inner)
    async with trio.open_nursery() as nursery:
        a = await start(
            nursery, relay.client(link_a, tmp_path, transports={relay.scheme: a_tracker})
        )
        await a.wait_for(lambda r: r.of(ev.Connected))
        b = await start(nursery, relay.client(link_b, tmp_path, download_dir=down, accept="all"))
        await a.wait_for(established)
        for i in range(3):
            a.client.send_text(f"before {i}")
        await a.client.send_file(tmp_path / "f.bin")
        await b.wait_for(lambda r: r.of(ev.TextIn))
        # Cut A's connection under it, in the middle of things.
        connected_before = len(a.of(ev.Connected))
        await a_tracker.connections[-1].aclose()
        for i in range(3):
            a.client.send_text(f"after {i}")
        await a.wait_for(lambda r: r.of(ev.Reconnecting))
        await a.wait_for(lambda r: len(r.of(ev.Connected)) > connected_before)
        await b.wait_for(lambda r: len(r.of(ev.TextIn)) == 6)
        await b.wait_for(lambda r: r.of(ev.TransferDone))
        await a.wait_for(lambda r: len(r.of(ev.Delivered)) == 6 and r.of(ev.TransferDone))
        texts = [t.text for t in b.of(ev.TextIn)]
        assert texts == [f"before {i}" for i in range(3)] + [f"after {i}" for i in range(3)]
        path = b.of(ev.TransferDone)[0].path
        assert path is not None
        assert file_digest(path) == digest
        assert len(b.of(ev.TransferDone)) == 1
        nursery.cancel_scope.cancel()


async def test_changed_key_detected_then_trusted(relay: RelayUnderTest, tmp_path: Path) -> None:
    link_a, link_b = relay.links()
    keys_b = FileKeyStore(tmp_path / "keys-b")
    async with trio.open_nursery() as nursery:
        a = await start(nursery, relay.client(link_a, tmp_path, keys=FileKeyStore(tmp_path / "a1")))
        b = await start(nursery, relay.client(link_b, tmp_path, keys=keys_b))
        await b.wait_for(established)
        first_peer = keys_b.load_peer(link_b.room_id, Seat.B)
        a.client.close()
        await b.wait_for(lambda r: r.of(ev.PeerOffline))
        # A comes back with a different static key (another device, or an impostor).
        a2 = await start(
            nursery,
            relay.client(
                link_a,
                tmp_path,
                keys=FileKeyStore(tmp_path / "a2"),
                session_options=SessionOptions(handshake_timeout=0.5),
            ),
        )
        await b.wait_for(lambda r: r.of(ev.KeyChanged))
        assert not b.client.established
        assert keys_b.load_peer(link_b.room_id, Seat.B) == first_peer
        b.client.trust()
        await b.wait_for(lambda r: len(r.of(ev.SafetyWords)) == 2)
        await a2.wait_for(established)
        assert keys_b.load_peer(link_b.room_id, Seat.B) != first_peer
        nursery.cancel_scope.cancel()


async def test_wrong_token_refused(relay: RelayUnderTest, tmp_path: Path) -> None:
    link_a, _ = relay.links()
    bad = Link(link_a.relay, link_a.seat, link_a.ticket, bytes(16), link_a.secret, link_a.pin)
    client = relay.client(bad, tmp_path)
    recorder = Recorder(client)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(recorder.run)
        with pytest.raises(RelayRefused) as info:
            await client.run()
    assert info.value.code == 401
    problems = recorder.of(ev.Problem)
    assert problems
    assert problems[-1].fatal
    assert problems[-1].code == 401


async def test_seat_taken_stops_old_client(relay: RelayUnderTest, tmp_path: Path) -> None:
    link_a, _ = relay.links()
    async with trio.open_nursery() as nursery:
        first = relay.client(link_a, tmp_path)
        rec = Recorder(first)
        nursery.start_soon(rec.run)
        outcome: list[BaseException] = []
        finished = trio.Event()

        async def run_first() -> None:
            try:
                await first.run()
            except RelayRefused as exc:
                outcome.append(exc)
            finished.set()

        nursery.start_soon(run_first)
        await rec.wait_for(lambda r: r.of(ev.Connected))
        second = await start(nursery, relay.client(link_a, tmp_path))
        await second.wait_for(lambda r: r.of(ev.Connected))
        await rec.wait_for(lambda r: any(p.fatal for p in r.of(ev.Problem)))
        assert rec.of(ev.Problem)[-1].code == 409
        with trio.fail_after(5):
            await finished.wait()
        nursery.cancel_scope.cancel()
    assert outcome
    assert isinstance(outcome[0], RelayRefused)


async def run_until_refused(
    client: Client, codes: list[int], task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    try:
        await client.run(task_status=task_status)
    except RelayRefused as exc:
        codes.append(exc.code)


async def test_burn_forgets_keys(relay: RelayUnderTest, tmp_path: Path) -> None:
    link_a, link_b = relay.links()
    keys = FileKeyStore(tmp_path / "ka")
    codes_a: list[int] = []
    codes_b: list[int] = []
    async with trio.open_nursery() as nursery:
        a = Recorder(relay.client(link_a, tmp_path, keys=keys))
        b = Recorder(relay.client(link_b, tmp_path))
        for rec, codes in ((a, codes_a), (b, codes_b)):
            nursery.start_soon(rec.run)
            await nursery.start(run_until_refused, rec.client, codes)
        await a.wait_for(established)
        assert keys.path(link_a.room_id, Seat.A).exists()
        a.client.burn()
    assert codes_a == codes_b == [411]
    assert not keys.path(link_a.room_id, Seat.A).exists()


async def test_unknown_scheme(tmp_path: Path) -> None:
    async with running_relay("ws") as relay:
        link_a, _ = relay.links()
        client = Client(link_a, FileKeyStore(tmp_path), transports={})
        with pytest.raises(TransportError, match="no transport"):
            await client.run()


async def test_a_relay_whose_frames_are_too_small_fails_the_file_not_the_chat(
    tmp_path: Path,
) -> None:
    """A relay with protocol 1's max_payload (65600) would 413 the first 256 KiB chunk
    and close the connection; the sender fails the file with the reason and keeps talking."""
    from m42d.relay import RelayLimits

    src = tmp_path / "src"
    src.mkdir()
    down = tmp_path / "down"
    down.mkdir()
    _write_random(src / "big.bin", 300_000)
    limits = RelayLimits(max_payload=65600)
    async with running_relay("tls", limits) as relay:
        link_a, link_b = relay.links()
        async with trio.open_nursery() as nursery:
            a = await start(nursery, relay.client(link_a, tmp_path))
            b = await start(
                nursery, relay.client(link_b, tmp_path, download_dir=down, accept="all")
            )
            await a.wait_for(established)
            await a.client.send_file(src / "big.bin")
            await a.wait_for(lambda r: r.of(ev.TransferFailed))
            failed = a.of(ev.TransferFailed)[0]
            assert "the relay takes frames of at most 65600 bytes" in failed.reason
            assert "limits.max_payload" in failed.reason
            await b.wait_for(lambda r: r.of(ev.TransferFailed))
            a.client.send_text("still here")
            await b.wait_for(lambda r: [t for t in r.of(ev.TextIn) if t.text == "still here"])
            assert not a.of(ev.Reconnecting)
            assert not list(down.iterdir())
            nursery.cancel_scope.cancel()
