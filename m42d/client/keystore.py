"""The client's only state at rest: per room and seat, two keys.

For each room this seat has joined, one small JSON file holds this seat's
static private key and the peer's pinned public key (base64)::

    $XDG_DATA_HOME/m42/keys/<room id hex>-<seat>.json
    {"format": "m42-keys", "version": 1, "room": "<hex>", "seat": "A",
     "static": "<base64>", "peer": "<base64>" | null}

Rules
-----
* The directory is ``0700`` and every file ``0600``; both are enforced on
  every write, not only on creation, so a loosened mode is tightened again.
* Writes are atomic (temporary file, fsync, rename, fsync of the directory):
  a crash leaves the old or the new file, never a torn one.  Losing the
  static key would look to the peer exactly like an impostor.
* Nothing but keys is ever written here: no messages, names or addresses.
* A file that cannot be parsed is an error, never silently replaced (that
  would re-pin whatever key the next handshake offers).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, Protocol, final

import attrs

from m42d.errors import ConfigError
from m42d.session import KeyStore
from m42d.ticket import Seat

__all__ = ["FORMAT", "FileKeyStore", "KeyStoreError", "SeatKeyStore", "default_key_dir"]

FORMAT: Final = "m42-keys"
VERSION: Final = 1
KEY_SIZE: Final = 32


class KeyStoreError(ConfigError):
    """A key file is unreadable or damaged; the message names the file, never a key."""


class SeatKeyStore(KeyStore, Protocol):
    """The session's :class:`~m42d.session.KeyStore`, plus what the person did with it.

    Forgetting a room after a burn, and when its safety words were last
    compared (cleared whenever a different peer key is pinned: new words
    have not been compared by anyone).
    """

    def forget(self, room_id: bytes, seat: Seat) -> bool:
        """Delete the seat's keys for the room; True if there were any."""
        ...

    def compared_at(self, room_id: bytes, seat: Seat) -> float | None:
        """When (seconds since the epoch) the words of the pinned key were compared, if ever."""
        ...

    def mark_compared(self, room_id: bytes, seat: Seat, when: float) -> None:
        """Note that the people compared the words of the pinned key at ``when``."""
        ...


def default_key_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_DATA_HOME/m42/keys``, by default ``~/.local/share/m42/keys``."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_DATA_HOME") or ""
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".local" / "share"
    return root / "m42" / "keys"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@final
@attrs.define
class FileKeyStore:
    """A :class:`m42d.session.KeyStore` kept in one JSON file per room and seat."""

    root: Path = attrs.field(converter=Path)

    def path(self, room_id: bytes, seat: Seat) -> Path:
        return self.root / f"{room_id.hex()}-{seat.value}.json"

    # -- KeyStore protocol ------------------------------------------------------

    def load_static(self, room_id: bytes, seat: Seat) -> bytes | None:
        return self._load(room_id, seat).get("static")

    def save_static(self, room_id: bytes, seat: Seat, private: bytes) -> None:
        self._update(room_id, seat, "static", private)

    def load_peer(self, room_id: bytes, seat: Seat) -> bytes | None:
        return self._load(room_id, seat).get("peer")

    def save_peer(self, room_id: bytes, seat: Seat, public: bytes) -> None:
        self._update(room_id, seat, "peer", public)

    def compared_at(self, room_id: bytes, seat: Seat) -> float | None:
        return self._read(room_id, seat)[1]

    def mark_compared(self, room_id: bytes, seat: Seat, when: float) -> None:
        keys, _ = self._read(room_id, seat)
        if "peer" not in keys:
            raise KeyStoreError("no peer key is pinned yet: there are no words to have compared")
        self._store(room_id, seat, keys, when)

    # -- extra ----------------------------------------------------------------------

    def forget(self, room_id: bytes, seat: Seat) -> bool:
        """Delete the room's keys (after a burn); True if there was a file."""
        try:
            self.path(room_id, seat).unlink()
        except FileNotFoundError:
            return False
        return True

    # -- files ------------------------------------------------------------------------

    def _load(self, room_id: bytes, seat: Seat) -> dict[str, bytes]:
        return self._read(room_id, seat)[0]

    def _read(self, room_id: bytes, seat: Seat) -> tuple[dict[str, bytes], float | None]:
        """The keys in the file and when their words were compared (version 1 files: never)."""
        path = self.path(room_id, seat)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return {}, None
        except OSError as exc:
            raise KeyStoreError(f"cannot read key file {path}: {exc.strerror}") from exc
        try:
            doc: Any = json.loads(raw)
            if not isinstance(doc, dict) or doc.get("format") != FORMAT:
                raise ValueError("not an m42 key file")
            if doc.get("version") != VERSION:
                raise ValueError(f"unsupported version {doc.get('version')!r}")
            if doc.get("room") != room_id.hex() or doc.get("seat") != seat.value:
                raise ValueError("the file belongs to another room or seat")
            keys: dict[str, bytes] = {}
            for name in ("static", "peer"):
                value = doc.get(name)
                if value is None:
                    continue
                if not isinstance(value, str):
                    raise ValueError(f"{name} must be a base64 string")
                key = base64.b64decode(value, validate=True)
                if len(key) != KEY_SIZE:
                    raise ValueError(f"{name} must be {KEY_SIZE} bytes")
                keys[name] = key
            compared = doc.get("compared_at")
            if compared is not None and not isinstance(compared, int | float):
                raise ValueError("compared_at must be a time in seconds")
        except (ValueError, UnicodeDecodeError) as exc:
            raise KeyStoreError(f"key file {path} is damaged: {exc}") from exc
        return keys, None if compared is None else float(compared)

    def _update(self, room_id: bytes, seat: Seat, name: str, key: bytes) -> None:
        if len(key) != KEY_SIZE:
            raise ValueError(f"{name} key must be {KEY_SIZE} bytes")
        keys, compared = self._read(room_id, seat)
        if name == "peer" and keys.get("peer") != key:
            compared = None  # another key, other words: nobody compared these
        keys[name] = key
        self._store(room_id, seat, keys, compared)

    def _store(
        self, room_id: bytes, seat: Seat, keys: dict[str, bytes], compared: float | None
    ) -> None:
        doc = {
            "format": FORMAT,
            "version": VERSION,
            "room": room_id.hex(),
            "seat": seat.value,
            "static": _b64(keys["static"]) if "static" in keys else None,
            "peer": _b64(keys["peer"]) if "peer" in keys else None,
            "compared_at": compared,
        }
        self._write(self.path(room_id, seat), json.dumps(doc, indent=1).encode() + b"\n")

    def _ensure_root(self) -> None:
        try:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(self.root, 0o700)
        except OSError as exc:
            raise KeyStoreError(f"cannot create key directory {self.root}: {exc.strerror}") from exc

    def _write(self, path: Path, data: bytes) -> None:
        self._ensure_root()
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            try:
                os.fchmod(fd, 0o600)
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
            dir_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise KeyStoreError(f"cannot write key file {path}: {exc.strerror}") from exc
