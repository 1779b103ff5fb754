"""One node among several: shared burns, and healing rooms split across nodes.

A load balancer (nginx ``hash $room consistent``) sends both seats of a room
to the same node.  When the node set changes (a node dies or comes back)
the two seats of a room may reconnect at different moments, see different
node sets, and land on two nodes: a *split room*, in which neither seat
ever hears of the other.  This module keeps the few facts the nodes must
share in a :class:`~m42d.relay.store.SharedStore` and heals such rooms.

Rules and invariants
--------------------
* **The last join decides.**  Every JOIN makes its node the room's holder
  (``m42d:room:<id>``).  A node routed that seat by the balancer's current
  view, so the latest holder is where the balancer sends the room now.
* **A lone seat whose room is held by another live node is moved.**  Every
  ``heartbeat`` seconds a node looks up the holders of its rooms that have
  exactly one seat; a seat whose room another node holds, and that node's
  heartbeat is fresh, gets GOAWAY and reconnects through the balancer,
  which sends it to the holder.  Rooms with both seats are never touched
  (they are not split), nor rooms whose claim has not reached the store yet.
  So a split room heals within about one heartbeat plus one reconnect.
* **Burns are shared, and fail closed.**  A burn is written to the store
  before it takes effect; when the store cannot take it the burn is refused
  (the room lives on, the client may try again), so a burned room never
  comes back on another node.  A JOIN asks the store unless a recent answer
  is cached: "burned" is cached until the ticket expires, "not burned" for
  :data:`CACHE_TTL` seconds.  A JOIN whose room has no fresh answer while the
  store is unreachable is refused with 503 (clients retry with back-off).
* Claims and releases are queued and written once per heartbeat, in one
  pipeline each: a join costs no store round trip beyond the burn lookup.
* Memory is bounded: the answer cache and the queues are capped; past the
  caps the oldest answers are forgotten and claims are dropped (a dropped
  claim delays healing, it never splits a room).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Sequence
from typing import Final, Protocol, final

import trio

from m42d.relay.store import SharedStore, StoreUnavailable

__all__ = ["CACHE_TTL", "HEARTBEAT", "Cluster", "RoomDirectory", "new_node_name"]

logger = logging.getLogger("m42d.relay.cluster")

CACHE_TTL: Final = 2.0
"""Seconds a "not burned" answer is trusted without asking the store again."""
HEARTBEAT: Final = 1.0
"""Seconds between a node's heartbeats, claim writes and split-room checks."""
MAX_CACHE: Final = 100_000
MAX_PENDING: Final = 100_000


def new_node_name() -> str:
    """A name for a node that was not given one: unique per process start."""
    return secrets.token_hex(6)


class RoomDirectory(Protocol):
    """What the cluster needs from the relay: its lone seats, and a way to move one."""

    def lone_rooms(self) -> list[bytes]:
        """Ids of the rooms on this node with exactly one seat occupied."""
        ...

    def move_room(self, room_id: bytes) -> None:
        """Tell the seats of ``room_id`` on this node to reconnect (GOAWAY)."""
        ...


@final
class Cluster:
    """This node's view of the shared state.

    Args:
        store: the shared store.
        node: this node's name (unique among the nodes sharing the store).
        clock: trio time, replaceable in tests.
    """

    def __init__(
        self,
        store: SharedStore,
        node: str,
        *,
        heartbeat: float = HEARTBEAT,
        cache_ttl: float = CACHE_TTL,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self.store = store
        self.node = node
        self.heartbeat = heartbeat
        self.cache_ttl = cache_ttl
        self._clock = clock
        self._answers: dict[bytes, tuple[bool, float]] = {}
        """room -> (burned, trusted until): answers of the store, by trio time."""
        self._claims: dict[bytes, int] = {}
        self._releases: set[bytes] = set()
        self.available = True
        """Whether the last store call succeeded (for metrics and health)."""
        self.moved = 0
        """Seats told to reconnect because another node holds their room."""

    # -- called by the relay ------------------------------------------------------

    async def is_burned(self, room_id: bytes, seconds_left: float) -> bool:
        """Whether a JOIN must be refused as burned.

        Args:
            room_id: the room of the JOIN.
            seconds_left: how long the room's ticket is still valid (a burned
                answer is cached that long).

        Raises:
            StoreUnavailable: no fresh answer is cached and the store is unreachable.
        """
        now = self._clock()
        cached = self._answers.get(room_id)
        if cached is not None and now < cached[1]:
            return cached[0]
        try:
            burned = await self.store.is_burned(room_id)
        except StoreUnavailable:
            self._note(False)
            raise
        self._note(True)
        self._remember(room_id, burned, now + (seconds_left if burned else self.cache_ttl))
        return burned

    async def burn(self, room_id: bytes, expires: int, seconds_left: float) -> None:
        """Burn ``room_id`` on every node (the store first).

        Raises:
            StoreUnavailable: the store did not take it; nothing was burned.
        """
        try:
            await self.store.burn(room_id, expires)
        except StoreUnavailable:
            self._note(False)
            raise
        self._note(True)
        self._remember(room_id, True, self._clock() + seconds_left)

    def joined(self, room_id: bytes, expires: int) -> None:
        """A seat of ``room_id`` joined here: this node holds the room now."""
        self._releases.discard(room_id)
        if len(self._claims) < MAX_PENDING or room_id in self._claims:
            self._claims[room_id] = expires

    def emptied(self, room_id: bytes) -> None:
        """The last seat of ``room_id`` left this node."""
        self._claims.pop(room_id, None)
        if len(self._releases) < MAX_PENDING:
            self._releases.add(room_id)

    # -- the heartbeat ---------------------------------------------------------------

    async def run(
        self,
        rooms: RoomDirectory,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Heartbeat, write claims, heal split rooms; until cancelled."""
        task_status.started()
        while True:
            await self.beat(rooms)
            await trio.sleep(self.heartbeat)

    async def beat(self, rooms: RoomDirectory) -> None:
        """One round: heartbeat, pending claims and releases, then the lone-seat check."""
        claims, self._claims = self._claims, {}
        releases, self._releases = list(self._releases), set()
        try:
            await self.store.heartbeat(self.node, 3 * self.heartbeat)
            await self.store.claim(self.node, claims)
            await self.store.release(self.node, releases)
            await self._heal(rooms, await self._foreign(rooms.lone_rooms()))
        except StoreUnavailable as exc:
            if self.available:
                logger.warning("%s; rooms split across nodes are not healed meanwhile", exc)
            self._note(False)
            self._requeue(claims, releases)
            return
        self._note(True)

    def _requeue(self, claims: dict[bytes, int], releases: list[bytes]) -> None:
        """Put back what a failed round did not write, unless a newer join or leave replaced it.

        Writing them twice is harmless: a claim is a SET, a release deletes only our own key.
        """
        for room, expires in claims.items():
            if room not in self._releases and len(self._claims) < MAX_PENDING:
                self._claims.setdefault(room, expires)
        for room in releases:
            if room not in self._claims and len(self._releases) < MAX_PENDING:
                self._releases.add(room)

    async def _foreign(self, lone: Sequence[bytes]) -> list[tuple[bytes, str]]:
        """Lone rooms that another node holds, with that node's name."""
        lone = [room for room in lone if room not in self._claims]  # claim not written yet
        holders = await self.store.holders(lone)
        return [
            (room, holder)
            for room, holder in zip(lone, holders, strict=True)
            if holder is not None and holder != self.node
        ]

    async def _heal(self, rooms: RoomDirectory, foreign: list[tuple[bytes, str]]) -> None:
        if not foreign:
            return
        # Only a live holder pulls a seat away: a dead node's claims are void.
        alive = await self.store.alive(sorted({holder for _, holder in foreign}))
        for room, holder in foreign:
            if holder in alive:
                self.moved += 1
                rooms.move_room(room)

    # -- bookkeeping -----------------------------------------------------------------

    def _remember(self, room_id: bytes, burned: bool, until: float) -> None:
        answers = self._answers
        if len(answers) >= MAX_CACHE and room_id not in answers:
            now = self._clock()
            self._answers = answers = {r: a for r, a in answers.items() if a[1] > now}
            if len(answers) >= MAX_CACHE:
                # Still full of fresh answers: forget the "not burned" ones,
                # which the store can give again.
                self._answers = answers = {r: a for r, a in answers.items() if a[0]}
        answers[room_id] = (burned, until)

    def _note(self, ok: bool) -> None:
        if ok and not self.available:
            logger.warning("shared store reachable again")
        self.available = ok
