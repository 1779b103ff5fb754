"""The cluster rules (m42d.relay.cluster) on an in-memory store, and the store on a real server."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest
import trio

from m42d.relay.cluster import CACHE_TTL, MAX_CACHE, Cluster
from m42d.relay.store import StoreUnavailable, open_store
from tests.store_harness import MemoryStore, store_server

ROOM = bytes(range(16))
OTHER = bytes(range(16, 32))
EXPIRES = 2_000_000_000


@attrs.define
class Rooms:
    """A RoomDirectory: the lone rooms the relay would report, and the moves asked for."""

    lone: list[bytes] = attrs.field(factory=list)
    moved: list[bytes] = attrs.field(factory=list)

    def lone_rooms(self) -> list[bytes]:
        return list(self.lone)

    def move_room(self, room_id: bytes) -> None:
        self.moved.append(room_id)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def node(store: MemoryStore, name: str, clock: Clock | None = None) -> Cluster:
    return Cluster(store, name, clock=clock or Clock())


async def test_burn_on_one_node_is_refused_on_another() -> None:
    store = MemoryStore()
    a, b = node(store, "a"), node(store, "b")
    assert not await b.is_burned(ROOM, 3600)
    await a.burn(ROOM, EXPIRES, 3600)
    assert await a.is_burned(ROOM, 3600)
    calls = store.calls
    assert await a.is_burned(ROOM, 3600)  # cached on the burning node
    assert store.calls == calls
    # b cached "not burned" a moment ago: it asks again once that answer is stale.
    b._clock.now += CACHE_TTL  # type: ignore[attr-defined]
    assert await b.is_burned(ROOM, 3600)


async def test_not_burned_is_cached_briefly_burned_until_expiry() -> None:
    store = MemoryStore()
    clock = Clock()
    n = node(store, "a", clock)
    assert not await n.is_burned(ROOM, 3600)
    store.down = True
    assert not await n.is_burned(ROOM, 3600)  # answered from the cache
    clock.now += CACHE_TTL
    with pytest.raises(StoreUnavailable):
        await n.is_burned(ROOM, 3600)  # no fresh answer, no store: refused, never guessed
    assert not n.available
    store.down = False
    store.burns[ROOM] = EXPIRES
    assert await n.is_burned(ROOM, 3600)
    store.down = True
    clock.now += 3599
    assert await n.is_burned(ROOM, 3600)  # a burn is remembered while the ticket lives


async def test_a_burn_the_store_cannot_take_is_not_a_burn() -> None:
    store = MemoryStore(down=True)
    n = node(store, "a")
    with pytest.raises(StoreUnavailable):
        await n.burn(ROOM, EXPIRES, 3600)
    store.down = False
    assert not await n.is_burned(ROOM, 3600)
    assert ROOM not in store.burns


async def test_last_join_holds_the_room_and_a_lone_seat_elsewhere_moves() -> None:
    store = MemoryStore()
    a, b = node(store, "a"), node(store, "b")
    rooms_a, rooms_b = Rooms(lone=[ROOM]), Rooms(lone=[ROOM])
    b.joined(ROOM, EXPIRES)  # seat B stayed on node b
    await b.beat(rooms_b)
    a.joined(ROOM, EXPIRES)  # seat A reconnected and the balancer sent it to a
    await a.beat(rooms_a)
    assert store.holders_[ROOM] == "a"
    assert rooms_a.moved == []
    await b.beat(rooms_b)
    assert rooms_b.moved == [ROOM]
    assert b.moved == 1


async def test_rooms_with_both_seats_or_unwritten_claims_stay() -> None:
    store = MemoryStore()
    a, b = node(store, "a"), node(store, "b")
    a.joined(ROOM, EXPIRES)
    await a.beat(Rooms())
    # b has ROOM with both seats: not lone, not checked.  OTHER just joined on
    # b and its claim is not written yet: it must not be moved by an old holder.
    store.holders_[OTHER] = "a"
    b.joined(OTHER, EXPIRES)
    rooms = Rooms(lone=[OTHER])
    b._claims[OTHER] = EXPIRES
    holders = await b._foreign(rooms.lone_rooms())
    assert holders == []


async def test_a_dead_holder_does_not_pull_seats() -> None:
    store = MemoryStore()
    store.holders_[ROOM] = "gone"  # a node killed with SIGKILL: no heartbeat
    n = node(store, "a")
    rooms = Rooms(lone=[ROOM])
    await n.beat(rooms)
    assert rooms.moved == []


async def test_emptied_room_is_released_only_by_its_holder() -> None:
    store = MemoryStore()
    a, b = node(store, "a"), node(store, "b")
    a.joined(ROOM, EXPIRES)
    await a.beat(Rooms())
    b.emptied(ROOM)  # b once held it; a holds it now
    await b.beat(Rooms())
    assert store.holders_[ROOM] == "a"
    a.emptied(ROOM)
    await a.beat(Rooms())
    assert ROOM not in store.holders_


async def test_claims_survive_a_store_outage() -> None:
    store = MemoryStore()
    n = node(store, "a")
    n.joined(ROOM, EXPIRES)
    n.joined(OTHER, EXPIRES)
    store.down = True
    await n.beat(Rooms())
    assert not n.available
    n.emptied(OTHER)  # left during the outage: its claim must not be written later
    store.down = False
    await n.beat(Rooms())
    assert n.available
    assert store.holders_ == {ROOM: "a"}


async def test_answer_cache_is_bounded() -> None:
    store = MemoryStore()
    clock = Clock()
    n = node(store, "a", clock)
    store.burns[ROOM] = EXPIRES
    assert await n.is_burned(ROOM, 3600)
    for i in range(MAX_CACHE + 10):
        n._remember(i.to_bytes(16, "big"), False, clock.now + 10)
    assert len(n._answers) <= MAX_CACHE
    store.down = True
    assert await n.is_burned(ROOM, 3600)  # burned answers are the ones kept


async def test_valkey_store_on_a_real_server(tmp_path: Path) -> None:
    async with store_server(tmp_path) as url, open_store(url) as store:
        assert not await store.is_burned(ROOM)
        await store.burn(ROOM, EXPIRES)
        assert await store.is_burned(ROOM)
        await store.heartbeat("a", 3.0)
        assert await store.alive(["a", "b"]) == {"a"}
        await store.claim("a", {ROOM: EXPIRES, OTHER: EXPIRES})
        assert await store.holders([ROOM, OTHER, bytes(16)]) == ["a", "a", None]
        await store.release("b", [ROOM])
        assert await store.holders([ROOM]) == ["a"]
        await store.release("a", [ROOM])
        assert await store.holders([ROOM, OTHER]) == [None, "a"]


async def test_valkey_store_down_is_store_unavailable(tmp_path: Path) -> None:
    async with store_server(tmp_path) as url:
        pass  # the server is gone now
    async with open_store(url) as store:
        with trio.fail_after(5):
            for call in (
                store.is_burned(ROOM),
                store.burn(ROOM, EXPIRES),
                store.claim("a", {ROOM: EXPIRES}),
                store.holders([ROOM]),
            ):
                with pytest.raises(StoreUnavailable):
                    await call
