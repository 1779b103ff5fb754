"""The peer's files arriving here: offers, partial files, batched writes, fsync, final name.

Rules and invariants
--------------------
* An incoming file is written to a partial file (``DIR/.<name>.<tag>.m42part``,
  created ``O_EXCL``, mode 0600, locked while open: see
  :mod:`m42d.client.partials`) and linked to its final, never-existing name
  only on :class:`~m42d.session.FileCompleted` (the last chunk
  authenticated), after an fsync.  Only then does the session send
  FILE_DONE: "delivered" means "on disk".
* A failed or abandoned transfer deletes its partial file; at start
  :meth:`IncomingFiles.sweep` removes the stale ones an earlier, killed run
  of this seat left.  Texts are never written.
* Received chunks gather in memory up to :data:`WRITE_BATCH` bytes per file
  and are written in one worker-thread trip; a completion writes what is
  left before its fsync.
* An offer is refused up front when it cannot fit: over ``max_size``, or
  leaving less than :data:`FREE_SPACE_MARGIN` free on the download disk.
  A full disk later is reported to the sender as NO_SPACE.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Final, Literal, final

import attrs
import trio

from m42d.client import events as ev
from m42d.client.names import safe_file_name, unique_path
from m42d.client.partials import create_partial, sweep_stale_partials
from m42d.client.transfer import Transfer
from m42d.crypto.stream import CHUNK_SIZE
from m42d.errors import LocalProtocolError
from m42d.session import FileChunk, FileCode, FileCompleted, FileOffered, Session

__all__ = ["FREE_SPACE_MARGIN", "WRITE_BATCH", "AcceptPolicy", "IncomingFiles"]

WRITE_BATCH: Final = max(1024 * 1024, CHUNK_SIZE)
"""Bytes of received chunks gathered per incoming file before one trip writes them (1 MiB)."""
FREE_SPACE_MARGIN: Final = 16 * 1024 * 1024
"""Left free on the download disk: a file that would fill it to the brim is refused."""

AcceptPolicy = Literal["ask", "all", "none"]


@attrs.define(eq=False)
class _InFile(Transfer):
    directory: Path = Path()
    partial: Path | None = None
    fd: int = -1
    failed: bool = False
    pending: list[tuple[int, bytes]] = attrs.field(factory=list, repr=False)
    """Received chunks (offset, plaintext) not yet written: see WRITE_BATCH."""
    pending_bytes: int = 0


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def _write_pieces(fd: int, pieces: list[tuple[int, bytes]]) -> None:
    for offset, data in pieces:
        _pwrite_all(fd, data, offset)


_NO_SPACE_ERRNOS: Final = frozenset({errno.ENOSPC, errno.EDQUOT})


def _write_failure_code(exc: OSError) -> FileCode:
    """NO_SPACE for a full disk or quota (the sender can tell the user why), else WRITE_FAILED."""
    return FileCode.NO_SPACE if exc.errno in _NO_SPACE_ERRNOS else FileCode.WRITE_FAILED


def _link_into_place(partial: Path, directory: Path, name: str) -> Path:
    """Give the complete file its final name without ever replacing an existing file."""
    for _ in range(100):
        final_path = unique_path(directory, name)
        try:
            os.link(partial, final_path)
        except FileExistsError:
            continue  # someone took the name between the check and the link
        except OSError:
            # No hard links here (FAT, some network file systems): a checked
            # rename, racy only against another writer in this folder.
            if os.path.lexists(final_path):
                continue
            os.rename(partial, final_path)
            return final_path
        os.unlink(partial)
        return final_path
    raise FileExistsError(f"no free name for {name!r} in {directory}")


@final
class IncomingFiles:
    """Every file the peer offered us, from the offer until it is saved (or gone).

    Args:
        session: the seat's session (accepts, refusals, FILE_DONE).
        download_dir: where accepted files go (None: every offer is declined).
        accept: ``"ask"`` (emit :class:`~m42d.client.events.FileOffer` and wait
            for :meth:`accept`), ``"all"`` or ``"none"``.
        max_size: refuse files larger than this many bytes.
        partial_key: names this seat's partial files (see :mod:`m42d.client.partials`).
        emit: how an event reaches the user interface.
        changed: tells the engine the session has something to send or report.
    """

    def __init__(
        self,
        session: Session,
        *,
        download_dir: Path | None,
        accept: AcceptPolicy,
        max_size: int | None,
        partial_key: bytes,
        emit: Callable[[ev.ClientEvent], None],
        changed: Callable[[], None],
    ) -> None:
        self._session = session
        self.download_dir = download_dir
        self.accept_policy: AcceptPolicy = accept if download_dir is not None else "none"
        self.max_size = max_size
        self._partial_key = partial_key
        self._emit = emit
        self._changed = changed
        self._files: dict[int, _InFile] = {}
        self._pending_offers: set[int] = set()

    async def sweep(self) -> None:
        """Remove what an earlier run of this seat could not (it was killed); before any offer."""
        if self.download_dir is not None:
            await trio.to_thread.run_sync(
                sweep_stale_partials, self.download_dir, self._partial_key
            )

    # -- the user's answers -------------------------------------------------------------

    def accept(self, file_id: int) -> Path:
        """Accept an offer: open its partial file and let the chunks come.

        Returns the partial file's path.

        Raises:
            LocalProtocolError: no such pending offer.
            OSError: the partial file could not be created (the offer is refused).
        """
        inc = self._files.get(file_id)
        if inc is None or file_id not in self._pending_offers:
            raise LocalProtocolError("no pending offer with that id")
        self._pending_offers.discard(file_id)
        try:
            inc.fd, inc.partial = create_partial(inc.directory, inc.name, self._partial_key)
        except OSError as exc:
            self._refuse(inc, FileCode.WRITE_FAILED, f"receiver cannot write: {exc.strerror}")
            raise
        self._session.accept_file(file_id)
        inc.started = trio.current_time()
        self._changed()
        assert inc.partial is not None
        return inc.partial

    def reject(
        self, file_id: int, reason: str = "declined", code: FileCode = FileCode.DECLINED
    ) -> None:
        """Refuse an offer (or abort a file being received); the sender is told why.

        Raises:
            LocalProtocolError: no such offer or transfer.
        """
        inc = self._files.get(file_id)
        if inc is None:
            raise LocalProtocolError("no offer or transfer with that id")
        self._pending_offers.discard(file_id)
        self._refuse(inc, code, reason)

    # -- what the session says ----------------------------------------------------------

    def offered(self, offer: FileOffered) -> None:
        """Refuse what cannot be taken, accept by policy, or ask the user."""
        name = safe_file_name(offer.name)
        inc = _InFile(
            offer.file_id,
            name,
            offer.size,
            trio.current_time(),
            directory=self.download_dir or Path(),
        )
        self._files[offer.file_id] = inc
        self._pending_offers.add(offer.file_id)
        refusal = self._refusal(offer.size)
        if refusal is not None:
            self.reject(offer.file_id, *refusal)
            return
        if self.accept_policy == "all":
            # Said before accepting, so that it comes before any progress
            # (and before the failure, should the partial file not open).
            self._emit(ev.FileOffer(offer.file_id, name, offer.size, accepted=True))
            with contextlib.suppress(OSError):
                self.accept(offer.file_id)
            return
        self._emit(ev.FileOffer(offer.file_id, name, offer.size))

    def _refusal(self, size: int) -> tuple[str, FileCode] | None:
        """Why an offer of ``size`` bytes cannot be taken, or None."""
        if self.accept_policy == "none" or self.download_dir is None:
            return "the receiver is not accepting files", FileCode.DECLINED
        if self.max_size is not None and size > self.max_size:
            return f"larger than the receiver's limit of {self.max_size} bytes", FileCode.TOO_LARGE
        try:
            free = shutil.disk_usage(self.download_dir).free
        except OSError as exc:
            return f"receiver cannot write: {exc.strerror}", FileCode.WRITE_FAILED
        if size + FREE_SPACE_MARGIN > free:
            return "not enough free disk space at the receiver", FileCode.NO_SPACE
        return None

    def progress(self, file_id: int, done: int, now: float) -> ev.Progress | None:
        inc = self._files.get(file_id)
        return inc.progress(False, done, now) if inc is not None else None

    async def write_chunk(self, chunk: FileChunk) -> None:
        inc = self._files.get(chunk.file_id)
        if inc is None or inc.fd < 0:
            return
        inc.pending.append((chunk.offset, chunk.data))
        inc.pending_bytes += len(chunk.data)
        if inc.pending_bytes < WRITE_BATCH:
            return
        try:
            await self._write_pending(inc)
        except OSError as exc:
            self._refuse(inc, _write_failure_code(exc), f"receiver cannot write: {exc.strerror}")

    async def complete(self, done: FileCompleted) -> None:
        """The last chunk is in: write the rest, fsync, give the file its name, then FILE_DONE."""
        inc = self._files.pop(done.file_id, None)
        if inc is None or inc.partial is None:
            return
        try:
            await self._write_pending(inc)
        except OSError as exc:
            self._refuse(inc, _write_failure_code(exc), f"receiver cannot write: {exc.strerror}")
            return
        try:
            path = await self._save(inc, inc.partial)
        except OSError as exc:
            self._discard_partial(inc)
            code = _write_failure_code(exc)
            reason = f"complete, but could not be saved: {exc.strerror or exc}"
            # The sender must hear the failure, not "delivered".
            with contextlib.suppress(LocalProtocolError):
                self._session.reject_file(inc.file_id, code, reason)
            self._emit(ev.TransferFailed(inc.file_id, False, inc.name, int(code), reason))
            self._changed()
            return
        inc.partial = None
        with contextlib.suppress(LocalProtocolError):
            self._session.confirm_saved(inc.file_id)  # only now: FILE_DONE
        self._emit(ev.TransferDone(inc.file_id, False, inc.name, inc.size, str(path)))
        self._changed()

    def failed(self, file_id: int, code: int, reason: str) -> None:
        """The sender cancelled, or the session gave the file up."""
        inc = self._files.pop(file_id, None)
        self._pending_offers.discard(file_id)
        if inc is None:
            return
        self._discard_partial(inc)
        self._emit(ev.TransferFailed(inc.file_id, False, inc.name, code, reason))

    def cleanup(self) -> None:
        """At exit: unfinished incoming files are deleted."""
        for inc in self._files.values():
            self._discard_partial(inc)
        self._files.clear()

    # -- the disk -----------------------------------------------------------------------------

    @staticmethod
    async def _write_pending(inc: _InFile) -> None:
        """Write the chunks gathered so far in one worker-thread trip.

        The chunks are in memory only until then; a completion writes the
        rest before its fsync, so "complete" still means "on disk".
        """
        pieces, inc.pending, inc.pending_bytes = inc.pending, [], 0
        if pieces and inc.fd >= 0:
            await trio.to_thread.run_sync(_write_pieces, inc.fd, pieces)

    @staticmethod
    async def _save(inc: _InFile, partial: Path) -> Path:
        """fsync, then the final name, then close: the descriptor holds the
        partial's lock until it is no longer a partial."""
        fd, inc.fd = inc.fd, -1
        try:
            await trio.to_thread.run_sync(os.fsync, fd)
            return await trio.to_thread.run_sync(_link_into_place, partial, inc.directory, inc.name)
        finally:
            os.close(fd)  # also when fsync failed: no descriptor leak

    def _refuse(self, inc: _InFile, code: FileCode, reason: str) -> None:
        with contextlib.suppress(LocalProtocolError):
            self._session.reject_file(inc.file_id, code, reason)
        self._discard_partial(inc)
        self._files.pop(inc.file_id, None)
        self._emit(ev.TransferFailed(inc.file_id, False, inc.name, int(code), reason))
        self._changed()

    @staticmethod
    def _discard_partial(inc: _InFile) -> None:
        # Unlinked before its descriptor (and so its lock) goes: a sweep by
        # another run never sees it unlocked under this name.
        inc.pending.clear()
        inc.pending_bytes = 0
        if inc.partial is not None:
            with contextlib.suppress(OSError):
                os.unlink(inc.partial)
            inc.partial = None
        if inc.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(inc.fd)
            inc.fd = -1
