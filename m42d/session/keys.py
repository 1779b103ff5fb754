"""Long-lived keys of a seat and the values derived from the room secret.

A client keeps, per (room, seat), its own static X25519 key and the peer's
pinned public key, nothing else (docs/protocol.md, "Keys kept").  Where
they live is the caller's business: :class:`KeyStore` is the interface,
:class:`MemoryKeyStore` the one that forgets everything at exit.
"""

from __future__ import annotations

from typing import Final, Protocol, final

import attrs
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from m42d.ticket import Seat

PROLOGUE_PREFIX: Final = b"m42d/2"
PSK_INFO: Final = b"m42 psk v1"


class KeyStore(Protocol):
    """Where a client keeps, per room, its own static key and the peer's pinned key."""

    def load_static(self, room_id: bytes, seat: Seat) -> bytes | None:
        """This seat's private static key for the room, or None on first use."""
        ...

    def save_static(self, room_id: bytes, seat: Seat, private: bytes) -> None:
        """Persist this seat's private static key."""
        ...

    def load_peer(self, room_id: bytes, seat: Seat) -> bytes | None:
        """The pinned public key of the *other* seat, or None before first contact."""
        ...

    def save_peer(self, room_id: bytes, seat: Seat, public: bytes) -> None:
        """Pin (or re-pin after the user trusted it) the other seat's public key."""
        ...


@final
@attrs.define
class MemoryKeyStore:
    """A key store that forgets everything at exit: for tests and ``--ephemeral`` use."""

    statics: dict[tuple[bytes, Seat], bytes] = attrs.field(factory=dict, repr=False)
    peers: dict[tuple[bytes, Seat], bytes] = attrs.field(factory=dict)

    def load_static(self, room_id: bytes, seat: Seat) -> bytes | None:
        return self.statics.get((room_id, seat))

    def save_static(self, room_id: bytes, seat: Seat, private: bytes) -> None:
        self.statics[(room_id, seat)] = private

    def load_peer(self, room_id: bytes, seat: Seat) -> bytes | None:
        return self.peers.get((room_id, seat))

    def save_peer(self, room_id: bytes, seat: Seat, public: bytes) -> None:
        self.peers[(room_id, seat)] = public


def derive_psk(secret: bytes, room_id: bytes) -> bytes:
    """The Noise psk: the room secret bound to the room it was made for."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=room_id, info=PSK_INFO).derive(secret)


def prologue(room_id: bytes) -> bytes:
    """Binds protocol version and room into the handshake transcript."""
    return PROLOGUE_PREFIX + room_id
