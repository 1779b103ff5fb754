"""What an outgoing and an incoming file have in common: name, size and progress events."""

from __future__ import annotations

import math
from typing import Final

import attrs

from m42d.client import events as ev

__all__ = ["PROGRESS_EVERY", "Transfer"]

PROGRESS_EVERY: Final = 0.2
"""Seconds between two progress events of one file (the last one always goes)."""


@attrs.define(eq=False)
class Transfer:
    """One file in flight, in either direction."""

    file_id: int
    name: str
    size: int
    started: float
    """When the rate starts counting: the acceptance, not the offer."""
    last_event: float = -math.inf

    def progress(self, outgoing: bool, done: int, now: float) -> ev.Progress | None:
        """A progress event, or None when the last one was too recent."""
        if done < self.size and now - self.last_event < PROGRESS_EVERY:
            return None
        self.last_event = now
        elapsed = now - self.started
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (self.size - done) / rate if rate > 0 else None
        return ev.Progress(self.file_id, outgoing, self.name, done, self.size, rate, eta)
