"""Bulk credit of one direction of a room (seat S sends, seat R receives); no I/O.

Rules and invariants
--------------------
* ``credit + queued <= window`` at all times, where ``credit`` is what S may
  still send and ``queued`` the BULK payload bytes held for R (in R's bulk
  lane, including the frame being written).  So a room holds at most two
  windows of bulk plus one frame per writer, and the relay never has to
  stop reading a connection because of bulk.
* The ledger belongs to the room, not to a connection: a new connection of
  S is granted ``window - queued`` (what its predecessor left in R's lane is
  still owed), and when R's connection goes its lane's bytes come back as
  credit to whoever holds seat S.
* Every BULK costs its payload length; more than ``credit`` is refused (the
  relay answers 402).
* Returned credit gathers in ``pending`` and is written as one CREDIT frame
  once :data:`CREDIT_BATCH` bytes have gathered, or once S holds less than
  ``max(window / 2, max_payload)`` and no further release is sure to follow
  (R's lane is empty).  A sender that cannot send a full frame is below that
  mark, so it is never stranded; one that still holds half a window is not
  sent a CREDIT per frame.
"""

from __future__ import annotations

from typing import Final, final

__all__ = ["CREDIT_BATCH", "CreditLedger"]

CREDIT_BATCH: Final = 256 * 1024
"""Returned credit is written once this much has gathered (or the sender runs low): one
CREDIT write per 256 KiB file chunk, or per four of protocol 1's 64 KiB ones, and not one
per small frame.  Each CREDIT costs the relay a TLS write and the sender a wake-up; per
64 KiB frame, that was ~13% of the relay's CPU and ~15% of the sending client's under bulk."""


@final
class CreditLedger:
    """The credit of one direction; the room keeps one per seat (as sender)."""

    __slots__ = ("credit", "max_payload", "pending", "queued", "window")

    def __init__(self, window: int, max_payload: int) -> None:
        self.window = window
        self.max_payload = max_payload
        self.credit = 0
        """Payload bytes the sender may still send."""
        self.pending = 0
        """Credit granted but not yet written in a CREDIT frame."""
        self.queued = 0
        """BULK payload bytes held for the receiver, including the one being written."""

    def new_sender(self, window: int, max_payload: int) -> None:
        """A connection takes the sender's seat: grant it what the window has free.

        The window is the one its JOINED announced (a reload may have changed
        the limits since the room's first connection).
        """
        self.window = window
        self.max_payload = max_payload
        self.credit = self.pending = max(0, window - self.queued)

    def sender_left(self) -> None:
        """The sender's connection is gone: what it held is not owed to anyone."""
        self.credit = self.pending = 0

    def spend(self, n: int) -> bool:
        """A BULK of ``n`` payload bytes arrived; False when it exceeds the credit."""
        if n > self.credit:
            return False
        self.credit -= n
        return True

    def stalled(self, before: int) -> bool:
        """Whether a spend from ``before`` left less than one full frame (a slow receiver)."""
        return before >= self.max_payload > self.credit

    def queue(self, n: int) -> None:
        """``n`` spent bytes went into the receiver's lane."""
        self.queued += n

    def unqueue(self, n: int, *, more_coming: bool = False) -> bool:
        """``n`` queued bytes left the receiver's lane (written, or the lane discarded).

        Returns what :meth:`give_back` returns.
        """
        self.queued -= n
        return self.give_back(n, more_coming=more_coming)

    def give_back(self, n: int, *, more_coming: bool = False) -> bool:
        """``n`` spent bytes are free again (also: dropped for an absent receiver).

        Returns whether a CREDIT frame should be written now (see the module rules);
        ``more_coming`` says the receiver's lane still holds frames, each of which
        will be given back in turn.
        """
        if n <= 0:
            return False
        self.credit += n
        self.pending += n
        return self.pending >= CREDIT_BATCH or (
            not more_coming and self.credit - self.pending < max(self.window >> 1, self.max_payload)
        )

    def take_pending(self) -> int:
        """The credit to write in the next CREDIT frame (and none pending after)."""
        amount, self.pending = self.pending, 0
        return amount
