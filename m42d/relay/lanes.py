"""The two outgoing lanes of a seated connection, and what queued frames cost; no I/O.

Rules and invariants
--------------------
* Two lanes per connection, filled by the other seat's reader and by the
  relay, drained by that connection's ONE writer: each write takes the
  control lane's frames (up to :data:`BATCH_BYTES`), then any pending
  CREDIT, then at most ONE bulk frame, and that only when the control lane
  was drained.  So a control frame waits behind at most one bulk frame that
  is already being written.
* Memory is counted in bytes: every queued frame costs its payload plus
  :data:`FRAME_COST` (the objects around it), from the moment it is queued
  until its write has *completed*; while a batch is written it exists
  :data:`WRITE_COPIES` more times (joined, then framed or encrypted by the
  transport), which counts too.  Each connection counts per lane, each
  client address (:class:`AddressQueue`) over all its connections.
* The control lane holds at most ``control_queue`` relayed frames and
  ``control_window`` bytes (an empty lane takes any one frame); the relay's
  own frames never wait, and a lane they fill to twice ``control_queue`` is
  a client that does not read.  The bulk lane holds at most a window of
  full frames and their overhead (:func:`bulk_budget`); credit bounds its
  payload anyway, this bounds tiny frames' overhead.
* The lanes are plain data: waiting for room, waking the writer and the
  credit that written frames give back belong to the connection
  (:mod:`m42d.relay.occupant`) and the room (:mod:`m42d.relay.credit`).
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING, Final, final

import trio

from m42d.relay.limits import FRAME_COST
from m42d.wire import Bulk, Control, Credit, Frame, Relayed

if TYPE_CHECKING:
    from m42d.relay.limits import RelayLimits

__all__ = [
    "BATCH_BYTES",
    "FRAME_COST",
    "RELAY_FRAME_SIZE",
    "WRITE_COPIES",
    "AddressQueue",
    "Batch",
    "Lanes",
    "address_queue_bound",
    "bulk_budget",
    "peer_queue_bound",
    "relay_frames_bound",
]

BATCH_BYTES: Final = 256 * 1024
"""Control frames written in one go at most; keeps one write bounded."""

WRITE_COPIES: Final = 2
"""Copies of a batch that exist while it is written: the joined buffer, and the
transport's framed or encrypted one (TLS keeps the whole batch encrypted in its
outgoing buffer until the socket takes it)."""

RELAY_FRAME_SIZE: Final = 16
"""What a frame the relay makes (PONG, CREDIT, PEER_UP...) counts as payload."""


def bulk_budget(limits: RelayLimits) -> int:
    """Bytes a bulk lane may cost: a window of full frames and their overhead."""
    window = limits.bulk_window
    return window + FRAME_COST * (window // limits.max_payload + 1)


def relay_frames_bound(limits: RelayLimits) -> int:
    """Bytes of the relay's own frames a control lane may hold (they never wait)."""
    return 2 * limits.control_queue * (RELAY_FRAME_SIZE + FRAME_COST)


def peer_queue_bound(limits: RelayLimits) -> int:
    """The most a connection's lanes (and the write in progress, copies included) can cost."""
    control = limits.control_window + relay_frames_bound(limits)
    batch = min(control, BATCH_BYTES + limits.max_payload + FRAME_COST)
    return control + bulk_budget(limits) + WRITE_COPIES * (batch + limits.max_payload + FRAME_COST)


def address_queue_bound(limits: RelayLimits, peers: int) -> int:
    """The most ``peers`` joined connections of one address can make the relay queue.

    Relayed frames wait for the address's budget; the relay's own frames do
    not, and a write in progress adds its copies of what it writes.
    """
    lanes = limits.max_queued_per_address + peers * relay_frames_bound(limits)
    return (1 + WRITE_COPIES) * lanes


@final
class AddressQueue:
    """Bytes queued towards the joined connections of one client address.

    Charged to the *receiving* address: what a client that does not read
    makes the relay hold counts against its own address, however many
    rooms (and senders) it spreads over; a sender cannot fill another
    address's budget beyond the lanes of rooms it shares with it.
    """

    __slots__ = ("bytes", "peers", "space")

    def __init__(self) -> None:
        self.bytes = 0
        self.peers = 0
        self.space = trio.lowlevel.ParkingLot()
        """Senders waiting for this address to drain below its budget."""


@final
class Batch:
    """What one write takes from the lanes: its items, the bulk frame among them, its cost."""

    __slots__ = ("bulk_size", "controls", "cost", "items")

    def __init__(self, items: list[Frame | Relayed], controls: int, bulk_size: int, cost: int):
        self.items = items
        self.controls = controls
        """How many of ``items`` came from the control lane."""
        self.bulk_size = bulk_size
        """Payload bytes of the bulk frame at the end of ``items`` (-1: none)."""
        self.cost = cost
        """What the taken frames cost (see FRAME_COST); freed once they are written."""


def _payload_size(item: Frame | Relayed) -> int:
    if type(item) is Relayed:
        return item.size
    if isinstance(item, Control):
        return len(item.payload)
    return RELAY_FRAME_SIZE


@final
class Lanes:
    """A connection's control and bulk lanes, with what they cost.

    Lanes cost memory per connection (a deque is ~760 bytes even empty;
    section d of the benchmarks): the control lane is a list, taken a slice
    at a time, the bulk lane a deque made on the first BULK.
    """

    __slots__ = ("bulk", "bulk_cost", "control", "control_cost", "copies")

    def __init__(self) -> None:
        self.control: list[Frame | Relayed] = []
        self.bulk: collections.deque[Bulk | Relayed] | None = None
        self.control_cost = 0
        self.bulk_cost = 0
        """Bytes (payload + FRAME_COST per frame) queued per lane, the write in progress too."""
        self.copies = 0
        """What the write in progress holds beyond its frames (WRITE_COPIES of them)."""

    @property
    def cost(self) -> int:
        """Everything these lanes hold now, the write in progress included."""
        return self.control_cost + self.bulk_cost + self.copies

    def control_has_room(self, cost: int, limits: RelayLimits) -> bool:
        return len(self.control) < limits.control_queue and (
            not self.control_cost or self.control_cost + cost <= limits.control_window
        )

    def bulk_has_room(self, cost: int, budget: int) -> bool:
        return not self.bulk_cost or self.bulk_cost + cost <= budget

    def push_control(self, item: Frame | Relayed, cost: int) -> None:
        self.control.append(item)
        self.control_cost += cost

    def push_bulk(self, item: Bulk | Relayed, cost: int) -> None:
        lane = self.bulk
        if lane is None:
            lane = self.bulk = collections.deque()
        lane.append(item)
        self.bulk_cost += cost

    def take(self, credit: int, *, bulk_allowed: bool) -> Batch:
        """The next write: control frames, a CREDIT of ``credit`` (if any), one bulk frame.

        The bulk frame comes only when the control lane is drained and
        ``bulk_allowed``.  The batch's frames stay counted until
        :meth:`written`; its copies are counted from now (``copies``).
        """
        control = self.control
        items: list[Frame | Relayed] = []
        taken = 0
        cost = 0
        if control:
            size = 0
            for item in control:
                if size >= BATCH_BYTES:
                    break
                taken += 1
                size += _payload_size(item)
            items = control[:taken]
            del control[:taken]
            cost = size + taken * FRAME_COST
        if credit:
            items.append(Credit(credit))
        bulk_size = -1
        lane = self.bulk
        if lane and not control and bulk_allowed:
            bulk = lane.popleft()
            items.append(bulk)
            bulk_size = bulk.size if type(bulk) is Relayed else len(bulk.payload)
            cost += bulk_size + FRAME_COST
        self.copies = WRITE_COPIES * cost
        return Batch(items, taken, bulk_size, cost)

    def written(self, batch: Batch) -> int:
        """``batch`` was written: its frames and copies are freed; returns the bytes freed."""
        if batch.bulk_size >= 0:
            bulk = batch.bulk_size + FRAME_COST
            self.bulk_cost -= bulk
            self.control_cost -= batch.cost - bulk
        else:
            self.control_cost -= batch.cost
        freed = batch.cost + self.copies
        self.copies = 0
        return freed

    def clear(self) -> int:
        """Drop everything (the connection left); returns the bytes freed, copies included."""
        freed = self.cost
        self.control.clear()
        self.bulk = None
        self.control_cost = self.bulk_cost = self.copies = 0
        return freed
