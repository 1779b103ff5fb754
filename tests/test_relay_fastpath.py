"""The relay's forwarding fast path: CONTROL and BULK as ``Relayed`` bytes.

The relay passes payloads on in their encoded form; these tests pin that the
bytes on the wire are exactly what a decode + re-encode would give, that a
connection without the fast path still relays both lanes, and that the
write deadline (one scope per writer, not per write) still fires.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import trio
import trio.testing

from m42d.errors import WireError
from m42d.relay import RelayLimits
from m42d.ticket import Seat
from m42d.transport import FrameConnection, StreamFrameConnection, as_relaying
from m42d.wire import (
    Bulk,
    Control,
    FrameDecoder,
    FrameKind,
    Join,
    Joined,
    PeerUp,
    Ping,
    Relayed,
    encode,
    encode_stream,
    relayed_message,
)
from tests.test_relay_harness import expect, make_harness


@pytest.mark.parametrize("frame", [Control(b"x" * 10), Bulk(b"y" * 60_000)])
def test_relayed_forms_match_the_encoders(frame: Control | Bulk) -> None:
    decoder = FrameDecoder()
    decoder.receive_data(encode_stream(frame))
    from_stream = decoder.next_relayed()
    from_message = relayed_message(encode(frame))
    for item in (from_stream, from_message):
        assert isinstance(item, Relayed)
        assert item.stream_bytes() == encode_stream(frame)
        assert item.message_bytes() == encode(frame)
        assert item.frame() == frame
        assert item.size == len(frame.payload)
        assert item.kind is frame.kind
        assert item.bulk is (frame.kind is FrameKind.BULK)
        assert repr(item) == f"<Relayed {frame.kind.name} <{len(frame.payload)} bytes>>"
    assert decoder.next_relayed() is None


def test_relayed_message_decodes_other_kinds_and_checks_limits() -> None:
    assert relayed_message(encode(Ping(b"p"))) == Ping(b"p")
    with pytest.raises(WireError):
        relayed_message(bytes([FrameKind.CONTROL]))  # empty payload
    with pytest.raises(WireError):
        relayed_message(b"")


async def test_frames_before_a_malformed_one_are_delivered_first() -> None:
    left, right = trio.testing.memory_stream_pair()
    receiver = StreamFrameConnection(right, transport="memory")
    await left.send_all(
        encode_stream(Control(b"a")) + encode_stream(Bulk(b"b")) + b"\x00\x00\x00\x02\xee\x00"
    )
    items = await receiver.receive_relayed()
    assert [item.frame() for item in items if isinstance(item, Relayed)] == [
        Control(b"a"),
        Bulk(b"b"),
    ]
    with pytest.raises(WireError):
        await receiver.receive_relayed()


class PlainConnection:
    """A FrameConnection without the fast path (as an outside plugin might be)."""

    def __init__(self, inner: StreamFrameConnection) -> None:
        self._inner = inner

    @property
    def transport(self) -> str:
        return self._inner.transport

    @property
    def address(self) -> str:
        return self._inner.address

    async def send(self, frame: object) -> None:
        await self._inner.send(frame)  # type: ignore[arg-type]

    async def send_many(self, frames: Sequence[object]) -> None:
        await self._inner.send_many(frames)  # type: ignore[arg-type]

    async def receive(self) -> object:
        return await self._inner.receive()

    async def aclose(self) -> None:
        await self._inner.aclose()


async def test_a_connection_without_the_fast_path_relays_both_lanes(
    nursery: trio.Nursery,
) -> None:
    harness = make_harness(nursery)
    fast_server = StreamFrameConnection(trio.testing.memory_stream_pair()[0], transport="m")
    assert as_relaying(fast_server) is fast_server
    room = harness.mint()
    fast = await harness.join(room, Seat.A)
    await expect(fast, Joined)
    # Seat B's server side is wrapped: it offers only FrameConnection.
    client_stream, server_stream = trio.testing.memory_stream_pair()
    plain_server = PlainConnection(StreamFrameConnection(server_stream, transport="memory"))
    assert isinstance(plain_server, FrameConnection)
    assert as_relaying(plain_server) is None

    async def serve() -> None:
        await harness.relay.handle_connection(plain_server)

    nursery.start_soon(serve)
    plain = StreamFrameConnection(client_stream, transport="memory")
    await plain.send(Join(Seat.B, room.ticket.to_bytes(), room.token(Seat.B)))
    await expect(plain, Joined)
    await expect(fast, PeerUp)
    await fast.send(Control(b"to plain"))
    await fast.send(Bulk(b"bulk to plain"))
    assert (await expect(plain, Control)).payload == b"to plain"
    assert (await expect(plain, Bulk)).payload == b"bulk to plain"
    await plain.send(Control(b"to fast"))
    await plain.send(Bulk(b"bulk to fast"))
    assert (await expect(fast, Control)).payload == b"to fast"
    assert (await expect(fast, Bulk)).payload == b"bulk to fast"


async def test_a_write_that_does_not_progress_times_out(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    harness = make_harness(nursery, RelayLimits(write_timeout=3.0))
    room = harness.mint()
    receiver = await harness.join(room, Seat.B, lockstep=True)
    await expect(receiver, Joined)
    sender = await harness.join(room, Seat.A)
    await expect(sender, Joined)
    await expect(receiver, PeerUp)
    await sender.send(Bulk(b"z" * 1000))  # B never reads it
    await trio.sleep(10)
    assert harness.relay.statistics().timeouts["write"] == 1


async def test_concurrent_sends_queue_on_the_lock_and_stay_whole(nursery: trio.Nursery) -> None:
    left, right = trio.testing.lockstep_stream_pair()
    sender = StreamFrameConnection(left, transport="memory")
    receiver = StreamFrameConnection(right, transport="memory")
    frames = [Control(bytes([i]) * 5000) for i in range(3)]
    for frame in frames:  # each send but the first waits for the lock
        nursery.start_soon(sender.send, frame)
    await trio.testing.wait_all_tasks_blocked()
    received = [await receiver.receive() for _ in frames]
    # trio starts tasks in no promised order; each frame arrives whole, once.
    assert sorted(f.payload for f in received if isinstance(f, Control)) == [
        f.payload for f in frames
    ]
    assert all(isinstance(f, Control) and len(set(f.payload)) == 1 for f in received)
