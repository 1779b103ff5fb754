"""The two promises of the lanes, on lockstep streams (a write blocks until read).

* Priority: a control frame waits behind at most one bulk frame.
* Bounded memory: a receiver that stops reading costs the relay at most the
  bulk window (plus the frame being written), however much the sender has.
"""

from __future__ import annotations

import trio
import trio.testing

from m42d.relay import RelayLimits
from m42d.ticket import Seat
from m42d.transport import StreamFrameConnection
from m42d.wire import Bulk, Control, Credit, Frame, Joined, PeerUp, Ping, Pong
from tests.test_relay_harness import V1_PAYLOAD, Harness, expect, make_harness, receive

CHUNK = 64 * 1024
WINDOW = 1024 * 1024


async def setup_room(harness: Harness) -> tuple[StreamFrameConnection, StreamFrameConnection, int]:
    """Sender A on a memory stream, receiver B on a lockstep stream; returns A's credit."""
    room = harness.mint()
    receiver = await harness.join(room, Seat.B, lockstep=True)
    await expect(receiver, Joined)
    await expect(receiver, Credit, skip_credit=False)
    sender = await harness.join(room, Seat.A)
    await expect(sender, Joined)
    credit = (await expect(sender, Credit, skip_credit=False)).amount
    await expect(receiver, PeerUp)
    return sender, receiver, credit


async def test_control_overtakes_queued_bulk(nursery: trio.Nursery) -> None:
    harness = make_harness(nursery, RelayLimits(max_payload=V1_PAYLOAD, bulk_window=WINDOW))
    sender, receiver, credit = await setup_room(harness)
    sent = 0
    while credit >= CHUNK:  # saturate the credit
        await sender.send(Bulk(bytes([sent % 256]) * CHUNK))
        credit -= CHUNK
        sent += 1
    assert sent == WINDOW // CHUNK
    await trio.testing.wait_all_tasks_blocked()
    # The receiver's writer is blocked inside the first bulk write; the rest is queued.
    assert harness.relay.statistics().queued_bulk_bytes == sent * CHUNK
    await sender.send(Control(b"urgent"))
    await trio.testing.wait_all_tasks_blocked()
    bulk_before = 0
    while True:
        frame = await receive(receiver)
        if isinstance(frame, Control):
            break
        assert isinstance(frame, Bulk)
        bulk_before += 1
    assert frame.payload == b"urgent"
    assert bulk_before <= 1
    # Then the rest of the bulk, in order.
    for index in range(bulk_before, sent):
        frame = await receive(receiver)
        assert isinstance(frame, Bulk)
        assert frame.payload[:1] == bytes([index % 256])


class Sender:
    """A well-behaved client: sends BULK only within its credit."""

    def __init__(self, connection: StreamFrameConnection, credit: int, total: int) -> None:
        self.connection = connection
        self.credit = credit
        self.remaining = total
        self.pongs: list[Frame] = []
        self.credit_arrived = trio.Event()
        self.sent = 0

    async def run_reader(self) -> None:
        while True:
            frame = await self.connection.receive()
            if isinstance(frame, Credit):
                self.credit += frame.amount
                self.credit_arrived.set()
            elif isinstance(frame, Pong):
                self.pongs.append(frame)

    async def run_writer(self) -> None:
        chunk = b"\xab" * CHUNK
        while self.remaining > 0:
            while self.credit < CHUNK:
                self.credit_arrived = trio.Event()
                await self.credit_arrived.wait()
            self.credit -= CHUNK
            self.remaining -= CHUNK
            self.sent += CHUNK
            await self.connection.send(Bulk(chunk))


async def test_a_stalled_receiver_bounds_relay_memory_to_the_window(nursery: trio.Nursery) -> None:
    total = 100 * 1024 * 1024
    bound = WINDOW + V1_PAYLOAD
    harness = make_harness(nursery, RelayLimits(max_payload=V1_PAYLOAD, bulk_window=WINDOW))
    sender_conn, receiver, credit = await setup_room(harness)
    sender = Sender(sender_conn, credit, total)
    # An unrelated room that must stay responsive while the first one is stalled.
    other_room = harness.mint()
    c = await harness.join(other_room, Seat.A)
    d = await harness.join(other_room, Seat.B)
    await expect(c, Joined)
    await expect(c, PeerUp)
    await expect(d, Joined)
    async with trio.open_nursery() as clients:
        clients.start_soon(sender.run_reader)
        clients.start_soon(sender.run_writer)
        received = 0
        pauses = 0
        with trio.fail_after(120):
            while received < total:
                if received % (25 * 1024 * 1024) == 0:
                    # Stop reading: the sender must stall on credit, memory stay bounded.
                    await trio.testing.wait_all_tasks_blocked()
                    stats = harness.relay.statistics()
                    assert stats.queued_bulk_bytes <= bound
                    assert sender.credit < CHUNK
                    assert sender.sent - received <= bound
                    await sender_conn.send(Ping(b"%d" % pauses))
                    await c.send(Control(b"still here"))
                    assert (await expect(d, Control)).payload == b"still here"
                    await trio.testing.wait_all_tasks_blocked()
                    assert sender.pongs[-1] == Pong(b"%d" % pauses)
                    pauses += 1
                frame = await receiver.receive()
                assert isinstance(frame, Bulk)
                received += len(frame.payload)
                assert harness.relay.statistics().queued_bulk_bytes <= bound
        clients.cancel_scope.cancel()
    stats = harness.relay.statistics()
    assert pauses == 4
    assert received == total
    assert stats.bytes_by_lane["bulk"] == total
    assert stats.queued_bulk_high_water <= bound
    assert stats.credit_stalls >= pauses
