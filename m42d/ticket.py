"""Room tickets and seat tokens (stub: being written)."""

from __future__ import annotations

import enum


class Seat(enum.Enum):
    """One of the two places in a room; A created it and initiates the handshake."""

    A = "A"
    B = "B"

    @property
    def other(self) -> Seat:
        return Seat.B if self is Seat.A else Seat.A

    @property
    def byte(self) -> int:
        """Wire value: the ASCII code of the letter."""
        return ord(self.value)


TICKET_SIZE = 42
TOKEN_SIZE = 16
ROOM_ID_SIZE = 16
