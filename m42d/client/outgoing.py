"""Our files on their way to the peer: open, read ahead from disk, hand chunks to the writer.

Rules and invariants
--------------------
* Nothing is read before the peer accepts: protocol 2 offers carry no hash
  (the final chunk's authentication covers the file).
* Chunks are read from disk in a worker thread, :data:`READ_BATCH` chunks
  per trip, at most :data:`READ_AHEAD` chunks per file ahead of the writer.
* Every :class:`~m42d.session.SendChunks` bumps the file's *generation*:
  the old reader task is cancelled and queued chunks of the old generation
  are dropped, so a restart from chunk ``start`` never interleaves with
  stale chunks.  A lost connection bumps every generation (the peer
  re-accepts from its first missing chunk after the next handshake).
* The writer takes chunks in the order they were read, one at a time and
  only within the relay's credit (:meth:`OutgoingFiles.take_chunk`).
* A file's descriptor is closed only when no read of it is in a worker
  thread: a cancel cannot stop a thread, and a descriptor closed under it
  fails the read ("Bad file descriptor") or, once its number is reused,
  reads another file.  The last read to finish closes it instead.
* Only the current generation of a file still in flight reports a failure:
  a read that ends after a cancel or restart says nothing.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Final, final

import attrs
import trio

from m42d.client import events as ev
from m42d.client.transfer import Transfer
from m42d.crypto.stream import CHUNK_SIZE, encrypted_size
from m42d.errors import LocalProtocolError
from m42d.session import BULK_HEADER, FileCode, Session
from m42d.wire import MAX_PAYLOAD

__all__ = ["READ_AHEAD", "READ_BATCH", "OutgoingFiles"]

READ_AHEAD: Final = (2 * 1024 * 1024) // CHUNK_SIZE
"""Chunks per outgoing file read from disk but not yet written to the relay (2 MiB)."""
READ_BATCH: Final = (1024 * 1024) // CHUNK_SIZE
"""Chunks read from disk per worker-thread trip (1 MiB).

A trip to a worker thread costs about as much as the Python work of a whole
chunk (GIL hand-over both ways), so the disk is read and written in batches:
one trip per megabyte, not one per chunk.  Both counts are set in bytes so
that the chunk size (64 KiB in protocol 1, 256 KiB in 2) does not change
what a transfer holds in memory.
"""


@attrs.define(eq=False)
class _OutFile(Transfer):
    path: Path = Path()
    fd: int = -1
    generation: int = 0
    queued: int = 0
    scope: trio.CancelScope | None = None
    space: trio.lowlevel.ParkingLot = attrs.field(factory=trio.lowlevel.ParkingLot)
    accepted: bool = False
    reads: int = 0
    """Reads of ``fd`` in worker threads right now."""
    closing: bool = False
    """Close ``fd`` once ``reads`` is back to 0."""


@attrs.frozen
class _BulkItem:
    file_id: int
    generation: int
    payload: bytes = attrs.field(repr=False)


def _pread(fd: int, size: int, offset: int) -> bytes:
    data = os.pread(fd, size, offset)
    # pread may return less than asked before EOF on some file systems.
    while len(data) < size:
        more = os.pread(fd, size - len(data), offset + len(data))
        if not more:
            break
        data += more
    return data


@final
class OutgoingFiles:
    """Every file of ours from its offer until the peer confirmed it (or it failed).

    Args:
        session: the seat's session (offers, chunk encryption, cancels).
        emit: how an event reaches the user interface.
        changed: tells the engine the session has something to send or report.
        wake_writer: tells the connection's writer a chunk is ready.

    :attr:`nursery` must be set before a :class:`~m42d.session.SendChunks`
    can start a reader task.
    """

    def __init__(
        self,
        session: Session,
        *,
        emit: Callable[[ev.ClientEvent], None],
        changed: Callable[[], None],
        wake_writer: Callable[[], None],
    ) -> None:
        self._session = session
        self._emit = emit
        self._changed = changed
        self._wake_writer = wake_writer
        self.nursery: trio.Nursery | None = None
        self.max_payload = MAX_PAYLOAD
        """The relay's cap on a BULK payload (set by the connection at each JOINED)."""
        self._files: dict[int, _OutFile] = {}
        self._chunks: deque[_BulkItem] = deque()

    @property
    def in_flight(self) -> bool:
        """Some file of ours is neither confirmed nor failed yet."""
        return bool(self._files)

    def size(self, file_id: int) -> int:
        """Size of one of our files still in flight (0 once it is done)."""
        out = self._files.get(file_id)
        return out.size if out is not None else 0

    # -- the user's actions ----------------------------------------------------------

    async def offer(self, path: Path, name: str | None = None) -> int:
        """Open ``path`` and offer it; returns the file id.

        Raises:
            OSError: the file cannot be opened or is not a regular file.
            LocalProtocolError: the name is empty or too long.
        """
        fd = await trio.to_thread.run_sync(os.open, path, os.O_RDONLY)
        try:
            info = await trio.to_thread.run_sync(os.fstat, fd)
            if not stat.S_ISREG(info.st_mode):
                raise IsADirectoryError(errno.EISDIR, "not a regular file", str(path))
            size = info.st_size
            shown = name if name is not None else path.name
            file_id = self._session.offer_file(shown, size)
        except BaseException:
            os.close(fd)
            raise
        self._files[file_id] = _OutFile(file_id, shown, size, trio.current_time(), path=path, fd=fd)
        self._changed()
        return file_id

    def cancel(self, file_id: int) -> None:
        """Stop sending one of our files.

        Raises:
            LocalProtocolError: no such file (from the session).
        """
        self._session.cancel_file(file_id)
        out = self._files.pop(file_id, None)
        if out is not None:
            self._stop_stream(out)
            self._close(out)
            self._emit(ev.TransferFailed(file_id, True, out.name, FileCode.CANCELLED, "cancelled"))
        self._changed()

    # -- what the session says ---------------------------------------------------------

    def send_from(self, file_id: int, start: int) -> None:
        """The peer wants chunks from ``start`` on: a new generation reads them."""
        out = self._files.get(file_id)
        if out is None or self.nursery is None:
            return
        largest = BULK_HEADER.size + encrypted_size(min(out.size, CHUNK_SIZE))
        if largest > self.max_payload:
            # The relay would answer the first chunk with 413 and close the
            # connection, texts and all: fail this file instead, and say why.
            self._abort(
                out,
                f"the relay takes frames of at most {self.max_payload} bytes and this file's "
                f"chunks are {largest}: texts get through, files cannot (ask whoever runs "
                "the relay to remove limits.max_payload)",
            )
            return
        self._stop_stream(out)
        if not out.accepted:
            # The rate counts from the peer's acceptance, not from the offer
            # (a person may take a minute to answer "accept? (y/n)").
            out.accepted = True
            out.started = trio.current_time()
        out.generation += 1
        out.queued = 0
        out.space.unpark_all()
        scope = trio.CancelScope()
        out.scope = scope
        self.nursery.start_soon(self._stream, out, start, out.generation, scope)

    def progress(self, file_id: int, done: int, now: float) -> ev.Progress | None:
        out = self._files.get(file_id)
        return out.progress(True, done, now) if out is not None else None

    def delivered(self, file_id: int) -> None:
        """The peer saved the file."""
        out = self._files.pop(file_id, None)
        if out is not None:
            self._stop_stream(out)
            self._close(out)
            self._emit(ev.TransferDone(out.file_id, True, out.name, out.size, None))

    def failed(self, file_id: int, code: int, reason: str) -> None:
        """The peer refused or aborted the file, or the session gave it up."""
        out = self._files.pop(file_id, None)
        if out is None:
            return
        self._stop_stream(out)
        self._close(out)
        self._emit(ev.TransferFailed(out.file_id, True, out.name, code, reason))

    def connection_lost(self) -> None:
        """Every read-ahead stops and queued chunks go: the next handshake says where to resume."""
        for out in self._files.values():
            self._stop_stream(out)
        self._chunks.clear()

    def close_all(self) -> None:
        """At exit: every file we hold open is closed."""
        for out in self._files.values():
            self._close(out)

    # -- the writer's side ---------------------------------------------------------------

    def take_chunk(self, credit: int) -> bytes | None:
        """The next chunk's payload if it fits in ``credit`` bytes, else None (it waits)."""
        item = self._next_chunk()
        if item is None or credit < len(item.payload):
            return None
        self._chunks.popleft()
        self._chunk_left_queue(item)
        return item.payload

    def _next_chunk(self) -> _BulkItem | None:
        while self._chunks:
            item = self._chunks[0]
            out = self._files.get(item.file_id)
            if out is not None and out.generation == item.generation:
                return item
            self._chunks.popleft()
            self._chunk_left_queue(item)
        return None

    def _chunk_left_queue(self, item: _BulkItem) -> None:
        out = self._files.get(item.file_id)
        if out is not None and out.generation == item.generation:
            out.queued -= 1
            if out.queued <= READ_AHEAD - READ_BATCH:
                out.space.unpark_all()

    # -- reading ---------------------------------------------------------------------------

    def _stop_stream(self, out: _OutFile) -> None:
        if out.scope is not None:
            out.scope.cancel()
            out.scope = None
        out.generation += 1
        out.queued = 0
        out.space.unpark_all()

    async def _stream(
        self, out: _OutFile, start: int, generation: int, scope: trio.CancelScope
    ) -> None:
        with scope:
            count = self._session.file_chunks(out.file_id)
            for first in range(start, count, READ_BATCH):
                # Room for a whole batch: read the next one while the writer
                # still has READ_AHEAD - READ_BATCH chunks to send.
                while out.queued > READ_AHEAD - READ_BATCH and out.generation == generation:
                    await out.space.park()
                if out.generation != generation:
                    return
                end = min(first + READ_BATCH, count)
                offset = first * CHUNK_SIZE
                wanted = max(0, min(end * CHUNK_SIZE, out.size) - offset)
                failure: OSError | None = None
                out.reads += 1
                try:
                    data = await trio.to_thread.run_sync(_pread, out.fd, wanted, offset)
                except OSError as exc:
                    failure = exc
                finally:
                    out.reads -= 1
                    if out.closing:
                        self._close(out)
                if out.generation != generation:
                    return  # cancelled, done or restarted meanwhile: not this read's to report
                if failure is not None:
                    self._abort(out, f"cannot read the file: {failure.strerror}")
                    return
                if not self._encrypt_batch(out, generation, first, end, data):
                    return
                self._wake_writer()

    def _encrypt_batch(
        self, out: _OutFile, generation: int, first: int, end: int, data: bytes
    ) -> bool:
        """Queue chunks ``first`` to ``end`` of ``data``; False when the file is gone."""
        for index in range(first, end):
            at = (index - first) * CHUNK_SIZE
            length = min(CHUNK_SIZE, out.size - index * CHUNK_SIZE)
            piece = data[at : at + CHUNK_SIZE]
            try:
                payload = self._session.encrypt_chunk(out.file_id, index, piece)
            except LocalProtocolError:
                if len(piece) != length:
                    self._abort(out, "the file changed while it was being sent")
                return False  # cancelled, rejected or done meanwhile
            self._chunks.append(_BulkItem(out.file_id, generation, payload))
            out.queued += 1
        return True

    def _abort(self, out: _OutFile, reason: str) -> None:
        if self._files.get(out.file_id) is not out:
            return  # it ended already, and that was reported
        with contextlib.suppress(LocalProtocolError):
            self._session.cancel_file(out.file_id, reason)
        self._files.pop(out.file_id, None)
        self._stop_stream(out)
        self._close(out)
        self._emit(ev.TransferFailed(out.file_id, True, out.name, FileCode.CANCELLED, reason))
        self._changed()

    @staticmethod
    def _close(out: _OutFile) -> None:
        if out.reads:
            out.closing = True  # the last read to come back closes it
            return
        out.closing = False
        if out.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(out.fd)
            out.fd = -1
