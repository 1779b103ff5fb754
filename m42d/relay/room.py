"""Rooms: two seats and the credit of each direction between them.

Rules and invariants
--------------------
* A :class:`Room` exists while at least one of its two seats is occupied; it
  is created by the first JOIN and forgotten when the last seat empties.
  Nothing about a room outlives its connections except a burn.
* A seat holds at most one :class:`~m42d.relay.occupant.Occupant` (a joined
  connection).  A newer JOIN for an occupied seat wins: the old occupant
  gets ``ERROR 409`` and is closed, and the other seat sees ``PEER_DOWN``
  then ``PEER_UP`` (a new session).
* The room owns one :class:`~m42d.relay.credit.CreditLedger` per direction
  (keyed by the sending seat), so credit outlives the connection that held
  a seat: a new connection is granted what the window has free, and frames
  queued for a receiver that left give their credit back.
* Any frame with no one in the other seat is dropped.
"""

from __future__ import annotations

import hashlib
import math
from typing import TYPE_CHECKING, Protocol, final

from m42d.relay.credit import CreditLedger
from m42d.ticket import Seat

if TYPE_CHECKING:
    from m42d.relay.limits import RelayLimits
    from m42d.relay.occupant import Occupant
    from m42d.relay.stats import RelayCounters

__all__ = ["Room", "RoomHost", "room_tag"]


def room_tag(room_id: bytes) -> str:
    """A short, non-reversible label for logs: never log a room id in full."""
    return hashlib.sha256(room_id).hexdigest()[:8]


class RoomHost(Protocol):
    """What an occupant needs from the relay that owns it."""

    @property
    def limits(self) -> RelayLimits: ...

    @property
    def counters(self) -> RelayCounters: ...

    async def burn(self, occupant: Occupant) -> None:
        """Burn ``occupant``'s room: deny-list it and close both seats."""
        ...

    def forget(self, occupant: Occupant) -> None:
        """``occupant`` left its seat; drop the room if it is empty now."""
        ...


@final
class Room:
    """Two seats; only ever touched from the relay's trio thread."""

    __slots__ = ("credit", "ends_at", "expires", "room_id", "seats")

    def __init__(
        self,
        room_id: bytes,
        expires: int,
        ends_at: float = math.inf,
        *,
        window: int = 0,
        max_payload: int = 1,
    ) -> None:
        self.room_id = room_id
        self.expires = expires
        self.ends_at = ends_at
        """trio time at which the ticket expires: both seats are then closed with 410."""
        self.seats: dict[Seat, Occupant] = {}
        self.credit: dict[Seat, CreditLedger] = {
            seat: CreditLedger(window, max_payload) for seat in Seat
        }
        """Per sending seat: the credit of that direction."""

    def __repr__(self) -> str:
        return f"<Room {room_tag(self.room_id)} seats={sorted(s.value for s in self.seats)}>"

    def other(self, seat: Seat) -> Occupant | None:
        return self.seats.get(seat.other)
