"""When a seated connection must be pinged, or ended for silence or expiry; no I/O.

Rules
-----
* A connection from which nothing arrived for ``idle_timeout`` is ended
  (408); one silent for ``ping_interval`` since it last sent a frame or was
  last pinged gets a PING; every connection of a room is ended when the
  room's ticket expires (410; ``ends_at`` is on trio's clock).
* These deadlines are plain numbers here: the reader records arrivals in
  :attr:`Deadlines.last_rx`, the connection's writer waits for work *or*
  :meth:`Deadlines.next_at`, whichever comes first, and asks :meth:`due`
  what the time calls for.  No task and no cancel scope per timer: a
  connection costs the same memory idle or busy.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, final

if TYPE_CHECKING:
    from m42d.relay.limits import RelayLimits

__all__ = ["Deadlines", "Due"]


class Due(enum.Enum):
    """What a connection's deadlines call for."""

    IDLE = "idle"
    EXPIRED = "expiry"
    PING = "ping"


@final
class Deadlines:
    """The idle, ping and expiry deadlines of one connection."""

    __slots__ = ("ends_at", "idle_timeout", "last_ping", "last_rx", "ping_interval")

    def __init__(self, limits: RelayLimits, now: float, ends_at: float) -> None:
        self.idle_timeout = limits.idle_timeout
        self.ping_interval = limits.ping_interval
        self.ends_at = ends_at
        self.last_rx = now
        """trio time of the last frame received (the reader sets it)."""
        self.last_ping = now

    def next_at(self) -> float:
        """The earliest time at which :meth:`due` may answer something."""
        ping_at = max(self.last_rx, self.last_ping) + self.ping_interval
        return min(self.last_rx + self.idle_timeout, ping_at, self.ends_at)

    def due(self, now: float) -> Due | None:
        """What is due at ``now``, most serious first; a PING counts as sent once asked."""
        if now >= self.last_rx + self.idle_timeout:
            return Due.IDLE
        if now >= self.ends_at:
            return Due.EXPIRED
        if now >= max(self.last_rx, self.last_ping) + self.ping_interval:
            self.last_ping = now
            return Due.PING
        return None
