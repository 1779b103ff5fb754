"""A hostile peer or relay against the client (the second review).

Real :class:`~m42d.client.engine.Client` engines, against the scriptable
hostile relay of ``tests/hostile_relay.py`` or, where the relay must stop
reading altogether, against a fake relay connection that never reads.
Each test is one thing the review did to the client; docs/security.md lists
them under "A hostile peer or relay against the client (second review)".
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

import attrs
import pytest
import trio

from m42d.client import events as ev
from m42d.client.engine import Client, RelayRefused
from m42d.client.keystore import FileKeyStore
from m42d.crypto.stream import CHUNK_SIZE, StreamEncryptor
from m42d.link import Link, make_links
from m42d.session import (
    BULK_HEADER,
    MAX_TEXT,
    FileCode,
    MemoryKeyStore,
    Session,
    SessionOptions,
)
from m42d.ticket import Seat, TicketKeyRing
from m42d.wire import MAX_PAYLOAD, Bulk, Control, Credit, Error, ErrorCode, Frame, Joined, Ping
from tests.client_harness import Recorder
from tests.hostile_relay import RELAY_URL, HostileRelay, chunk_header
from tests.session_peer import RandomTap

SESSION: Final = SessionOptions(handshake_timeout=1.5, probe_after=0.5, stall_after=0.5)
STEP: Final = 15.0


@attrs.define
class Pair:
    hostile: HostileRelay
    a: Recorder
    b: Recorder
    links: dict[Seat, Link]
    keys: dict[Seat, FileKeyStore]
    down: Path
    refused: dict[Seat, list[int]]
    ended: dict[Seat, trio.Event]

    async def wait_ended(self) -> None:
        with trio.fail_after(STEP):
            for event in self.ended.values():
                await event.wait()


async def _run(client: Client, codes: list[int], ended: trio.Event, *, task_status: Any) -> None:
    try:
        await client.run(task_status=task_status)
    except RelayRefused as exc:
        codes.append(exc.code)
    finally:
        ended.set()


@asynccontextmanager
async def pair_on(
    hostile: HostileRelay,
    tmp_path: Path,
    links: tuple[Link, Link] | None = None,
    seat_options: Mapping[Seat, Mapping[str, Any]] | None = None,
    **options: Any,
) -> AsyncIterator[Pair]:
    """Two engines with key files on disk; B saves files into ``tmp_path/down``.

    ``seat_options`` adds Session options for one seat or both.
    """
    down = tmp_path / "down"
    down.mkdir(exist_ok=True)
    link_a, link_b = links or hostile.links()
    keys = {seat: FileKeyStore(tmp_path / f"keys-{seat.value}") for seat in Seat}
    refused: dict[Seat, list[int]] = {Seat.A: [], Seat.B: []}
    ended = {Seat.A: trio.Event(), Seat.B: trio.Event()}
    recorders = []
    async with trio.open_nursery() as nursery:
        for link in (link_a, link_b):
            client = Client(
                link,
                keys[link.seat],
                transports=hostile.transports,
                download_dir=down if link.seat is Seat.B else None,
                accept="all",
                backoff_base=0.01,
                backoff_cap=0.2,
                tick_interval=0.05,
                session_options=attrs.evolve(SESSION, **(seat_options or {}).get(link.seat, {})),
                **options,
            )
            recorder = Recorder(client)
            nursery.start_soon(recorder.run)
            await nursery.start(_run, client, refused[link.seat], ended[link.seat])
            recorders.append(recorder)
        yield Pair(
            hostile,
            recorders[0],
            recorders[1],
            {Seat.A: link_a, Seat.B: link_b},
            keys,
            down,
            refused,
            ended,
        )
        nursery.cancel_scope.cancel()


def established(r: Recorder) -> bool:
    return r.client.established and bool(r.of(ev.SafetyWords))


async def both_established(p: Pair) -> None:
    await p.a.wait_for(established, STEP)
    await p.b.wait_for(established, STEP)


# -- 8: a file is bounded by its offer, not per chunk -----------------------------------------


async def test_a_peer_streaming_past_its_offer_fills_no_disk(tmp_path: Path) -> None:
    """A peer offers 1 byte, then streams valid chunks without end (sealed with the
    file's real key, so they authenticate): the receiver refuses the first byte
    past the offer; --max-size and the free-space check, made against the
    offer, are not bypassed."""
    src = tmp_path / "tiny.txt"
    src.write_bytes(b"x")
    async with trio.open_nursery() as nursery:
        hostile = HostileRelay.make(nursery)
        drawn = RandomTap()  # seat A's randomness: the hostile peer knows its file keys
        async with pair_on(
            hostile, tmp_path, seat_options={Seat.A: {"random": drawn}}, max_size=1000
        ) as p:
            await both_established(p)
            forged: list[int] = []

            def endless(seat: Seat, frame: Frame) -> Sequence[Frame]:
                header = chunk_header(frame)
                if seat is not Seat.A or header is None:
                    return [frame]
                file_id = header[0]
                sealer = StreamEncryptor(drawn.file_key(file_id))
                out = []
                for index in range(64):  # 4 MiB for a file of one byte
                    forged.append(index)
                    sealed = sealer.encrypt_chunk(index, os.urandom(CHUNK_SIZE), last=False)
                    out.append(Bulk(BULK_HEADER.pack(file_id, index) + sealed))
                return out

            hostile.middle = endless
            await p.a.client.send_file(src)
            await p.b.wait_for(lambda r: r.of(ev.TransferFailed), STEP)
            await p.a.wait_for(lambda r: r.of(ev.TransferFailed), STEP)
            assert forged
            [failed] = p.b.of(ev.TransferFailed)
            assert failed.code == FileCode.MISMATCH
            assert "more than the 1 bytes offered" in failed.reason
            assert p.a.of(ev.TransferFailed)[0].code == FileCode.MISMATCH
            assert not p.b.of(ev.TransferDone)
            assert list(p.down.iterdir()) == []  # the partial file went too
            assert all(pr.done <= 1 for pr in p.b.of(ev.Progress))
            assert p.b.client.established  # the session itself stands


# -- 9: an unauthenticated relay message never destroys keys ----------------------------------


async def test_a_forged_burned_error_destroys_no_key(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        hostile = HostileRelay.make(nursery)
        links = hostile.links()
        async with pair_on(hostile, tmp_path, links) as p:
            await both_established(p)
            before = {
                seat: (p.keys[seat].load_static(p.links[seat].room_id, seat),
                       p.keys[seat].load_peer(p.links[seat].room_id, seat))
                for seat in Seat
            }  # fmt: skip
            assert all(static and peer for static, peer in before.values())
            for seat in Seat:
                await hostile.inject(seat, Error(ErrorCode.BURNED, "burned, honest"))
            await p.wait_ended()
        # Refusing service is all a relay can do: every key and pin is still there.
        assert p.refused == {Seat.A: [ErrorCode.BURNED], Seat.B: [ErrorCode.BURNED]}
        for seat in Seat:
            room = p.links[seat].room_id
            assert (p.keys[seat].load_static(room, seat), p.keys[seat].load_peer(room, seat)) == (
                before[seat]
            )
        # The honest relay again: the same keys, no key change, nothing to trust.
        async with pair_on(hostile, tmp_path, links) as again:
            await both_established(again)
            for r in (again.a, again.b):
                assert not r.of(ev.KeyChanged)
                assert not r.of(ev.SafetyWords)[-1].first_contact
        nursery.cancel_scope.cancel()


async def test_the_users_own_burn_still_forgets_the_keys(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        hostile = HostileRelay.make(nursery)
        async with pair_on(hostile, tmp_path) as p:
            await both_established(p)
            path = p.keys[Seat.A].path(p.links[Seat.A].room_id, Seat.A)
            assert path.exists()
            p.a.client.burn()
            # This hostile relay does not implement BURN; it answers as m42d does.
            await hostile.inject(Seat.A, Error(ErrorCode.BURNED, "the room was burned"))
            with trio.fail_after(STEP):
                await p.ended[Seat.A].wait()
            assert p.refused[Seat.A] == [ErrorCode.BURNED]
            assert not path.exists()
        nursery.cancel_scope.cancel()


# -- 10: owed acknowledgements reach the peer before exit ------------------------------------


async def test_finish_closes_only_once_the_relay_has_read_the_acks(tmp_path: Path) -> None:
    """A relay that takes a connection's frames only as it gets to them, and loses
    what it had not got to when the connection closes, still passes on the
    acknowledgements of every text shown before the client left."""
    async with trio.open_nursery() as nursery:
        hostile = HostileRelay.make(nursery)
        async with pair_on(hostile, tmp_path) as p:
            await both_established(p)
            hostile.lazy.add(Seat.B)
            seq = p.a.client.send_text("shown once, acknowledged once")
            await p.b.wait_for(lambda r: r.of(ev.TextIn), STEP)
            with trio.fail_after(STEP):
                await p.b.client.finish(STEP)
            await p.a.wait_for(lambda r: [d.seq for d in r.of(ev.Delivered)] == [seq], STEP)
            assert hostile.dropped_unread == []
        nursery.cancel_scope.cancel()


# -- 12: a relay that never reads cannot grow client memory ----------------------------------


def _hs1_payload(room_id: bytes) -> bytes:
    """A genuine HS1 (message 1 needs no secret): the relay can replay it at will."""
    session = Session(Seat.A, room_id, os.urandom(32), MemoryKeyStore())
    session.peer_online(0.0)
    [payload] = session.data_to_send()
    return payload


@attrs.define(eq=False)
class DeafRelay:
    """Answers JOIN, then sends ``flood()`` frames as fast as it can and never reads again.

    Every client write after the JOIN blocks for ever, as on a socket whose
    other end stopped reading.  ``peak`` is the most frames the client held
    unsent at any point, sampled before each flood frame.
    """

    flood: Callable[[], Frame]
    client: Client | None = None
    sent: int = 0
    peak: int = 0
    connections: int = 0

    @property
    def transports(self) -> dict[str, Any]:
        return {"tls": self}

    @asynccontextmanager
    async def connect(self, url: str, **kwargs: Any) -> AsyncIterator[Any]:
        self.connections += 1
        yield _DeafConnection(self)


@attrs.define(eq=False)
class _DeafConnection:
    relay: DeafRelay
    joined: bool = False
    welcome: list[Frame] = attrs.field(
        factory=lambda: [Joined(True, MAX_PAYLOAD, 1 << 20), Credit(1 << 20)]
    )

    async def send(self, frame: Frame) -> None:
        if self.joined:
            await trio.sleep_forever()
        self.joined = True

    async def send_many(self, frames: Sequence[Frame]) -> None:
        await trio.sleep_forever()

    async def receive(self) -> Frame:
        await trio.lowlevel.checkpoint()
        if self.welcome:
            return self.welcome.pop(0)
        client = self.relay.client
        assert client is not None
        self.relay.peak = max(self.relay.peak, client.statistics().unsent_frames)
        self.relay.sent += 1
        return self.relay.flood()

    async def aclose(self) -> None:
        pass


@pytest.mark.parametrize(
    ("seat", "flood"),
    [
        (Seat.A, lambda _room: Ping(b"are you there")),
        (Seat.B, lambda room: Control(_hs1_payload(room))),  # each would get an HS2
        (Seat.B, lambda _room: Control(b"\x01" + struct.pack(">I", 7) + b"junk")),  # a RESET
    ],
    ids=["relay-pings", "replayed-hs1", "garbage-hs1"],
)
async def test_a_relay_that_never_reads_holds_no_growing_queue_and_counts_as_dead(
    tmp_path: Path, seat: Seat, flood: Callable[[bytes], Frame]
) -> None:
    issued = TicketKeyRing.generate().mint(now=int(time.time()), ttl=3600)
    link = make_links(RELAY_URL, issued, os.urandom(32))[seat is Seat.B]
    deaf = DeafRelay(lambda: flood(link.room_id))
    client = Client(
        link,
        FileKeyStore(tmp_path / "keys"),
        transports=deaf.transports,
        backoff_base=0.01,
        tick_interval=0.05,
        ping_after=0.2,
        dead_after=1.0,
        session_options=SessionOptions(handshake_timeout=60.0),
    )
    deaf.client = client
    recorder = Recorder(client)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(recorder.run)
        await nursery.start(client.run)
        await recorder.wait_for(lambda r: r.of(ev.Reconnecting), STEP)
        nursery.cancel_scope.cancel()
    assert deaf.sent > 200, "the flood should have been read meanwhile"
    assert deaf.peak <= 4, f"{deaf.peak} frames piled up unsent"
    reason = recorder.of(ev.Reconnecting)[0].reason
    assert "stopped reading" in reason, reason


# -- 14: a text over the cap has an end ------------------------------------------------------


async def test_a_text_over_the_cap_fails_alone_and_is_not_sent_again(tmp_path: Path) -> None:
    """A's engine refuses a text over the cap; one that reaches B over B's cap all the
    same fails alone.  B runs with a cap below A's (B's session option), which B
    sees exactly as a text from a peer that broke the 1 MiB rule
    (tests/test_session.py plays that peer itself, record by record)."""
    cap = 4096
    async with trio.open_nursery() as nursery:
        hostile = HostileRelay.make(nursery)
        async with pair_on(hostile, tmp_path, seat_options={Seat.B: {"max_text": cap}}) as p:
            await both_established(p)
            with pytest.raises(Exception, match="send it as a file instead"):
                p.a.client.send_text("x" * (MAX_TEXT + 1))
            # Over the receiver's cap all the same:
            seq = p.a.client.send_text("x" * (cap + 1))
            after = p.a.client.send_text("and then this")
            await p.a.wait_for(lambda r: {d.seq for d in r.of(ev.Delivered)} == {after}, STEP)
            await p.a.wait_for(lambda r: r.of(ev.TextFailed), STEP)
            # Protocol 2: refused, and the sender is told so, never "delivered".
            assert [f.seq for f in p.a.of(ev.TextFailed)] == [seq]
            assert p.a.client.session.unacked_texts == 0
            await p.b.wait_for(lambda r: r.of(ev.TextIn), STEP)
            assert [t.text for t in p.b.of(ev.TextIn)] == ["and then this"]
            problems = [e.message for e in p.b.of(ev.Problem)]
            assert problems == [
                f"refused a text of {cap + 1} bytes, over the {cap}-byte cap "
                "from the peer (not shown)"
            ]
            assert not p.a.of(ev.Problem)  # no session failure, no re-handshake
            assert len(p.a.of(ev.SafetyWords)) == 1
        nursery.cancel_scope.cancel()
