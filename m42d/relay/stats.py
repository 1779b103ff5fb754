"""Relay counters, and the frozen snapshot :meth:`Relay.statistics` returns.

Counters hold numbers only: never a room id, address, token or payload, so a
metrics endpoint can publish them as they are.
"""

from __future__ import annotations

from collections import Counter
from typing import final

import attrs

__all__ = ["RelayCounters", "RelayStatistics"]


@final
@attrs.define
class RelayCounters:
    """Mutable counters the relay updates in place; read them through a snapshot."""

    rooms: int = 0
    peers: int = 0
    connections: Counter[str] = attrs.field(factory=Counter)
    frames: Counter[str] = attrs.field(factory=Counter)
    bytes: Counter[str] = attrs.field(factory=Counter)
    frames_dropped: int = 0
    credit_stalls: int = 0
    rooms_created: int = 0
    joins: int = 0
    refused: Counter[str] = attrs.field(factory=Counter)
    timeouts: Counter[str] = attrs.field(factory=Counter)
    queued_bulk_bytes: int = 0
    queued_bulk_high_water: int = 0
    queued_control_frames: int = 0
    queued_bytes: int = 0
    queued_high_water: int = 0

    def add_queued(self, cost: int) -> None:
        self.queued_bytes += cost
        if self.queued_bytes > self.queued_high_water:
            self.queued_high_water = self.queued_bytes

    def add_queued_bulk(self, n: int) -> None:
        self.queued_bulk_bytes += n
        self.queued_bulk_high_water = max(self.queued_bulk_high_water, self.queued_bulk_bytes)

    def snapshot(self) -> RelayStatistics:
        return RelayStatistics(
            rooms=self.rooms,
            peers=self.peers,
            connections=sum(self.connections.values()),
            connections_by_transport=dict(+self.connections),
            frames_by_lane=dict(self.frames),
            bytes_by_lane=dict(self.bytes),
            frames_dropped=self.frames_dropped,
            credit_stalls=self.credit_stalls,
            rooms_created=self.rooms_created,
            joins=self.joins,
            refused=dict(self.refused),
            timeouts=dict(self.timeouts),
            queued_bulk_bytes=self.queued_bulk_bytes,
            queued_bulk_high_water=self.queued_bulk_high_water,
            queued_control_frames=self.queued_control_frames,
            queued_bytes=self.queued_bytes,
            queued_high_water=self.queued_high_water,
        )


@final
@attrs.frozen
class RelayStatistics:
    """A point-in-time copy of the relay's counters.

    Attributes:
        rooms: rooms with at least one seat connected.
        peers: joined connections.
        connections: open connections, joined or not.
        connections_by_transport: open connections per transport scheme.
        frames_by_lane / bytes_by_lane: CONTROL and BULK frames (payload bytes)
            received from joined clients, keyed ``"control"`` / ``"bulk"``.
        frames_dropped: CONTROL/BULK frames dropped because the other seat was absent.
        credit_stalls: times a sender's credit fell below one full bulk frame.
        refused: connections or requests refused, by ERROR code name.
        timeouts: connections closed by a deadline: ``join``, ``idle``, ``write``,
            ``expiry`` (the room's ticket expired while joined).
        queued_bulk_bytes: BULK payload bytes waiting in (or being written from)
            the relay's bulk lanes right now; bounded by the windows.
        queued_bulk_high_water: the largest ``queued_bulk_bytes`` seen.
        queued_control_frames: frames waiting in control lanes right now.
        store_up / rooms_moved: the shared store's state (several nodes only).
        queued_bytes: what every lane holds now, both lanes and writes in
            progress, each frame counted as its payload plus
            :data:`~m42d.relay.lanes.FRAME_COST`; bounded per peer, per address.
        queued_high_water: the largest ``queued_bytes`` seen.
    """

    rooms: int
    peers: int
    connections: int
    connections_by_transport: dict[str, int]
    frames_by_lane: dict[str, int]
    bytes_by_lane: dict[str, int]
    frames_dropped: int
    credit_stalls: int
    rooms_created: int
    joins: int
    refused: dict[str, int]
    timeouts: dict[str, int]
    queued_bulk_bytes: int
    queued_bulk_high_water: int
    queued_control_frames: int
    queued_bytes: int = 0
    queued_high_water: int = 0
    store_up: bool | None = None
    """Whether the shared store answered the last call (None: no store configured)."""
    rooms_moved: int = 0
    """Lone seats told to reconnect because another node holds their room."""
