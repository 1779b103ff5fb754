"""Partial files of incoming transfers: whose they are, and when they are stale.

An incoming file is written to a hidden partial file and moved into place
only once its hash matched.  The process writing it removes it on every way
out it controls; a process that was killed (SIGKILL, a crash, a power cut)
cannot, so the next run of the same seat sweeps what its predecessors left.
The sweep must never touch a partial that a running process still writes
(it also makes resume after a reconnect possible), nor any file that is not
an m42 partial of this seat.

Rules
-----
* A partial is named ``DIR/.<name>.<tag>.m42part``; ``tag`` is a random
  nonce and a MAC of it under a key derived from the seat's link
  (:func:`partial_key`).  Only the same seat of the same room recognises the
  name, so a file of another room, another program or the user is never
  taken for one of ours, whatever it is called.
* Its writer holds an exclusive ``flock`` on it from creation until it is
  moved into place or removed.  The kernel drops the lock when the process
  dies, however it dies: an unlocked partial of ours is stale.
* Creating and sweeping race safely: the creator locks without waiting
  right after ``O_EXCL`` creation and checks that the name still denotes
  its file; a sweeper that won the race has removed it, and the creator
  simply takes another name.  The sweeper, holding the lock, checks the
  same before it unlinks.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import os
import stat
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from m42d.client.names import PARTIAL_SUFFIX
from m42d.ticket import Seat

__all__ = ["create_partial", "is_partial_of", "partial_key", "sweep_stale_partials"]

PARTIAL_INFO: Final = b"m42 partial files v1 "
_NONCE_BYTES: Final = 8
_MAC_BYTES: Final = 8
_TAG_CHARS: Final = 2 * (_NONCE_BYTES + _MAC_BYTES)
_CREATE_FLAGS: Final = (
    os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
)
_OPEN_FLAGS: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)


def partial_key(secret: bytes, room_id: bytes, seat: Seat) -> bytes:
    """The key that marks this seat's partial files (one-way from the room secret)."""
    return HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=room_id,
        info=PARTIAL_INFO + seat.value.encode("ascii"),
    ).derive(secret)


def _mac(key: bytes, nonce: bytes) -> bytes:
    return hmac.new(key, nonce, hashlib.sha256).digest()[:_MAC_BYTES]


def _tag(key: bytes) -> str:
    nonce = os.urandom(_NONCE_BYTES)
    return (nonce + _mac(key, nonce)).hex()


def is_partial_of(file_name: str, key: bytes) -> bool:
    """True only for a partial file name made with ``key`` (by :func:`create_partial`)."""
    if not (file_name.startswith(".") and file_name.endswith(PARTIAL_SUFFIX)):
        return False
    tag = file_name[: -len(PARTIAL_SUFFIX)].rpartition(".")[2]
    if len(tag) != _TAG_CHARS:
        return False
    try:
        raw = bytes.fromhex(tag)
    except ValueError:
        return False
    return hmac.compare_digest(raw[_NONCE_BYTES:], _mac(key, raw[:_NONCE_BYTES]))


def _still_named(fd: int, path: Path) -> bool:
    """The name still denotes the open file (nobody removed or replaced it meanwhile)."""
    try:
        named = os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    held = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino) and held.st_nlink > 0


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def create_partial(directory: Path, name: str, key: bytes) -> tuple[int, Path]:
    """Create, mode 0600, and lock a new partial file for ``name``; returns (fd, path).

    The descriptor holds the lock: close it only after the file was moved
    into place or removed.

    Raises:
        OSError: the directory is not writable, or no name could be had.
    """
    for _ in range(100):
        path = directory / f".{name}.{_tag(key)}{PARTIAL_SUFFIX}"
        try:
            fd = os.open(path, _CREATE_FLAGS, 0o600)
        except FileExistsError:
            continue
        try:
            if _try_lock(fd) and _still_named(fd, path):
                return fd, path
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # a sweep took it between creation and lock: it removes it
    raise FileExistsError(f"no free partial file name for {name!r} in {directory}")


def sweep_stale_partials(directory: Path, key: bytes) -> list[Path]:
    """Remove this seat's partial files that no running process holds; returns them.

    Errors are not raised: a partial that cannot be examined is left alone.
    """
    removed: list[Path] = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for entry in entries:
        if not is_partial_of(entry.name, key):
            continue
        path = Path(entry.path)
        try:
            fd = os.open(path, _OPEN_FLAGS)
        except OSError:
            continue  # gone, a symlink, or not ours to read
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode) or not _try_lock(fd):
                continue  # a running process is writing it
            if _still_named(fd, path):
                os.unlink(path)
                removed.append(path)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                os.close(fd)
    return removed
