"""Relay memory is bounded by bytes: per lane, per peer, per client address.

CONTROL needs no credit, and credit counts BULK payload only: a room whose
seat B never reads used to hold ``control_queue`` x 64 KiB of CONTROL (16 MiB
at the defaults) plus ~111 bytes of objects per byte of credit spent in
1-byte BULK frames.  Each test measures what the lanes really hold (the
frames in them, counted as payload + FRAME_COST, independently of the
relay's own accounting), with an attacker whose receiving seats never read.
"""

from __future__ import annotations

import trio
import trio.testing

from m42d.relay import Occupant, RelayLimits
from m42d.relay.lanes import (
    FRAME_COST,
    RELAY_FRAME_SIZE,
    WRITE_COPIES,
    address_queue_bound,
    peer_queue_bound,
)
from m42d.ticket import Seat
from m42d.transport import StreamFrameConnection
from m42d.wire import Bulk, Control, Credit, Joined, PeerUp, Relayed, encode_stream
from tests.test_relay_harness import V1_PAYLOAD, Harness, expect, make_harness, receive

ATTACKER = "203.0.113.66"


def lane_bytes(peer: Occupant) -> int:
    """What ``peer``'s lanes hold now, counted from the frames themselves."""
    total = 0
    for item in [*peer.lanes.control, *(peer.lanes.bulk or ())]:
        if isinstance(item, Relayed):
            total += item.size + FRAME_COST
        elif isinstance(item, Control | Bulk):
            total += len(item.payload) + FRAME_COST
        else:
            total += RELAY_FRAME_SIZE + FRAME_COST
    return total


def held(harness: Harness) -> int:
    return sum(lane_bytes(peer) for peer in harness.relay._peers)


async def attacked_room(
    harness: Harness, *, control: int, bulk: int, bulk_size: int
) -> tuple[StreamFrameConnection, StreamFrameConnection]:
    """A room whose seat B never reads while seat A sends, all from one address."""
    room = harness.mint()
    b = await harness.join(room, Seat.B, lockstep=True, address=ATTACKER)
    a = await harness.join(room, Seat.A, address=ATTACKER)
    await expect(a, Joined)
    credit = 0
    while credit < bulk * bulk_size:
        frame = await receive(a)
        if isinstance(frame, Credit):
            credit += frame.amount
        else:
            assert isinstance(frame, PeerUp), frame
    payload = bytes(harness.relay.limits.max_payload)
    wire = encode_stream(Control(payload)) * control
    wire += encode_stream(Bulk(bytes(bulk_size))) * bulk
    await a.stream.send_all(wire)  # a memory stream: never blocks
    return a, b


async def test_an_attacker_holding_n_rooms_stays_within_the_per_address_bound(
    nursery: trio.Nursery,
) -> None:
    limits = RelayLimits(
        max_payload=V1_PAYLOAD,
        bulk_window=256 * 1024,
        control_window=128 * 1024,
        max_queued_per_address=1024 * 1024,
        max_connections_per_address=64,
    )
    harness = make_harness(nursery, limits)
    rooms = 6
    seats = []
    for _ in range(rooms):
        seats.append(await attacked_room(harness, control=40, bulk=2000, bulk_size=100))
    await trio.testing.wait_all_tasks_blocked()
    peers = 2 * rooms
    stats = harness.relay.statistics()
    # Before: 40 x 64 KiB of CONTROL per room (15 MiB in all) plus the BULK frames.
    assert held(harness) <= limits.max_queued_per_address + peers * 2 * limits.control_queue * (
        RELAY_FRAME_SIZE + FRAME_COST
    )
    assert stats.queued_high_water <= address_queue_bound(limits, peers)
    assert stats.queued_high_water <= peers * peer_queue_bound(limits)
    # The accounting is exact: the lanes, plus the batches being written
    # (their frames and WRITE_COPIES copies of them).
    copies = sum(peer.lanes.copies for peer in harness.relay._peers)
    assert stats.queued_bytes == held(harness) + copies + copies // WRITE_COPIES
    del seats


async def test_tiny_bulk_frames_cost_their_objects_not_just_their_credit(
    nursery: trio.Nursery,
) -> None:
    """1-byte BULK frames within credit: the sender waits once the lane's bytes are spent."""
    limits = RelayLimits(max_payload=65600, bulk_window=65600)
    harness = make_harness(nursery, limits)
    a, b = await attacked_room(harness, control=0, bulk=65_600, bulk_size=1)
    await trio.testing.wait_all_tasks_blocked()
    bulk_budget = limits.bulk_window + FRAME_COST * (limits.bulk_window // limits.max_payload + 1)
    # Before: 65,600 frames queued (~7 MiB of objects for 64 KiB of credit).
    assert held(harness) <= bulk_budget + 2 * limits.control_queue * (RELAY_FRAME_SIZE + FRAME_COST)
    del a, b


async def test_a_parked_sender_resumes_once_the_receiver_reads(nursery: trio.Nursery) -> None:
    """Stopping to read is backpressure, not loss: everything arrives, in order."""
    limits = RelayLimits(
        max_payload=V1_PAYLOAD, control_window=70_000, max_queued_per_address=2 * 1024 * 1024
    )
    harness = make_harness(nursery, limits)
    a, b = await attacked_room(harness, control=30, bulk=0, bulk_size=1)
    await trio.testing.wait_all_tasks_blocked()
    assert held(harness) <= limits.control_window + 2 * limits.control_queue * (
        RELAY_FRAME_SIZE + FRAME_COST
    )
    got = 0
    while got < 30:
        frame = await receive(b)
        if isinstance(frame, Control):
            assert len(frame.payload) == limits.max_payload
            got += 1
    await trio.testing.wait_all_tasks_blocked()
    assert harness.relay.statistics().queued_bytes == 0
    del a


async def test_everything_is_discharged_when_the_peers_leave(nursery: trio.Nursery) -> None:
    limits = RelayLimits(
        max_payload=V1_PAYLOAD, control_window=70_000, max_queued_per_address=2 * 1024 * 1024
    )
    harness = make_harness(nursery, limits)
    a, b = await attacked_room(harness, control=30, bulk=500, bulk_size=10)
    await trio.testing.wait_all_tasks_blocked()
    assert harness.relay.statistics().queued_bytes > 0
    await b.aclose()
    await a.aclose()
    await trio.testing.wait_all_tasks_blocked()
    assert not harness.relay._peers
    stats = harness.relay.statistics()
    assert stats.queued_bytes == 0
    assert not harness.relay._queues
