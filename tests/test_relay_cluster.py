"""Several relay nodes sharing a store (m42d.relay.cluster): burns and split rooms, in memory.

Two in-process relays with the same ticket keys stand for two nodes behind
a load balancer; tests/store_harness.MemoryStore is the shared store.
"""

from __future__ import annotations

import trio

from m42d.relay.cluster import Cluster
from m42d.ticket import Seat, TicketKeyRing
from m42d.wire import Burn, Control, Error, ErrorCode, GoAway, Joined, PeerUp
from tests.store_harness import MemoryStore
from tests.test_relay_harness import Harness, expect, expect_closed, make_harness


def two_nodes(nursery: trio.Nursery, store: MemoryStore) -> tuple[Harness, Harness]:
    keys = TicketKeyRing.generate()
    one = make_harness(nursery, cluster=Cluster(store, "one"))
    two = make_harness(nursery, cluster=Cluster(store, "two"))
    one.relay.keyring = two.relay.keyring = keys
    return one, two


async def test_a_room_burned_on_one_node_is_refused_on_the_other(nursery: trio.Nursery) -> None:
    store = MemoryStore()
    one, two = two_nodes(nursery, store)
    room = one.mint()
    a = await one.join(room, Seat.A)
    await expect(a, Joined)
    await a.send(Burn())
    assert (await expect(a, Error)).code == ErrorCode.BURNED
    b = await two.join(room, Seat.B)
    assert (await expect(b, Error)).code == ErrorCode.BURNED
    await expect_closed(b)


async def test_store_down_refuses_unknown_joins_and_burns_but_keeps_rooms(
    nursery: trio.Nursery,
) -> None:
    store = MemoryStore()
    one, _ = two_nodes(nursery, store)
    room = one.mint()
    a = await one.join(room, Seat.A)
    await expect(a, Joined)
    b = await one.join(room, Seat.B)
    await expect(b, Joined)
    await expect(a, PeerUp)
    store.down = True
    # A burn the store cannot take is refused: the room is not burned anywhere.
    await a.send(Burn())
    error = await expect(a, Error)
    assert error.code == ErrorCode.UNAVAILABLE
    assert "shared store" in error.message
    # The other seat still talks (nothing was burned).
    other = one.mint()
    c = await one.join(other, Seat.A)  # no fresh answer for this room: refused, retryable
    refused = await expect(c, Error)
    assert refused.code == ErrorCode.UNAVAILABLE
    store.down = False
    assert room.ticket.room_id not in store.burns
    d = await one.join(other, Seat.A)
    await expect(d, Joined)


async def test_a_split_room_heals_when_the_lone_seat_is_moved(nursery: trio.Nursery) -> None:
    store = MemoryStore()
    one, two = two_nodes(nursery, store)
    assert one.relay.cluster is not None
    assert two.relay.cluster is not None
    room = one.mint()
    b = await two.join(room, Seat.B)  # B stayed on node two
    await expect(b, Joined)
    await two.relay.cluster.beat(two.relay)
    a = await one.join(room, Seat.A)  # A reconnected: the balancer sent it to node one
    await expect(a, Joined)
    await one.relay.cluster.beat(one.relay)
    assert store.holders_[room.ticket.room_id] == "one"
    await two.relay.cluster.beat(two.relay)
    goaway = await expect(b, GoAway)
    assert goaway.grace_ms == 0
    assert "another relay node" in goaway.reason
    # B reconnects through the balancer, which sends it where the room is held.
    b2 = await one.join(room, Seat.B)
    await expect(b2, Joined)
    await expect(a, PeerUp)
    await b2.send(Control(b"together again"))
    assert (await expect(a, Control)).payload == b"together again"
    await one.relay.cluster.beat(one.relay)
    assert two.relay.cluster.moved == 1
    assert one.relay.cluster.moved == 0


async def test_rooms_with_both_seats_are_never_moved(nursery: trio.Nursery) -> None:
    store = MemoryStore()
    _one, two = two_nodes(nursery, store)
    assert two.relay.cluster is not None
    room = two.mint()
    a = await two.join(room, Seat.A)
    b = await two.join(room, Seat.B)
    await expect(a, Joined)
    await expect(b, Joined)
    store.holders_[room.ticket.room_id] = "one"  # a stale claim from an earlier split
    store.beats.add("one")
    await two.relay.cluster.beat(two.relay)
    await a.send(Control(b"still here"))
    assert (await expect(b, Control)).payload == b"still here"
    assert two.relay.cluster.moved == 0
