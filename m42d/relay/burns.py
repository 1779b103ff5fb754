"""What the relay needs from the burn deny-list, and an in-memory one for tests.

The persisted deny-list is :class:`m42d.relay.state.DenyList`; it satisfies
:class:`BurnList` structurally.
"""

from __future__ import annotations

from typing import Protocol, final

import attrs

__all__ = ["BurnList", "MemoryBurnList"]


class BurnList(Protocol):
    """Rooms refused until their ticket expires."""

    def is_burned(self, room_id: bytes, now: int) -> bool:
        """True while ``room_id`` is burned and ``now`` (unix seconds) is before its expiry."""
        ...

    def burn(self, room_id: bytes, expires: int) -> None:
        """Refuse ``room_id`` until ``expires``; may raise an ``M42Error`` when full."""
        ...


@final
@attrs.define
class MemoryBurnList:
    """A :class:`BurnList` that forgets everything on restart."""

    _rooms: dict[bytes, int] = attrs.field(factory=dict, repr=False)

    def is_burned(self, room_id: bytes, now: int) -> bool:
        expires = self._rooms.get(room_id)
        return expires is not None and now <= expires

    def burn(self, room_id: bytes, expires: int) -> None:
        self._rooms[room_id] = max(expires, self._rooms.get(room_id, expires))

    def __len__(self) -> int:
        return len(self._rooms)
