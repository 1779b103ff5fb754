"""The client engine: trio glue that runs one seat's :class:`~m42d.session.Session`.

``m42 chat``, ``send``, ``recv`` and ``trust`` are thin user interfaces over
one :class:`Client`: it connects to the relay named in the link, joins the
seat, feeds the session whatever arrives, writes whatever the session and
the file streams produce, reconnects on its own, and reports to the UI
through :attr:`Client.events`.

Rules and invariants
--------------------
* Per connection: ONE reader task (relay frames in, session fed in order)
  and ONE writer task, the only code that writes the connection.  The writer
  sends everything on the control side first (session records, PONG, BURN),
  then at most one BULK chunk, then looks at the control side again: a text
  never waits behind more than one 64 KiB chunk on our side either.
* BULK goes out only within relay credit: credit is 0 at JOINED, grows with
  each CREDIT, shrinks by each payload sent (docs/protocol.md "Flow
  control").  Sending past it would be ERROR 402.
* Outgoing file chunks are read from disk in a worker thread,
  :data:`READ_BATCH` chunks per trip, at most :data:`READ_AHEAD` chunks per
  file ahead of the writer.  Every
  :class:`~m42d.session.SendChunks` bumps the file's *generation*: the old
  reader task is cancelled and queued chunks of the old generation are
  dropped, so a restart from chunk ``start`` never interleaves with stale
  chunks.  A lost connection bumps every generation (the peer re-accepts
  from its first missing chunk after the next handshake).
* Incoming files are written to a partial file (``DIR/.<name>.<tag>.m42part``,
  created ``O_EXCL``, mode 0600, locked while open: see
  :mod:`m42d.client.partials`) and linked to their final, never-existing
  name only on :class:`~m42d.session.FileCompleted` (whole-file hash
  matched).  A failed or abandoned transfer deletes its partial file; at
  start the engine sweeps the stale ones an earlier, killed run of this
  seat left.  Texts are never written.
  Received chunks gather in memory up to :data:`WRITE_BATCH` bytes per file
  and are written in one worker-thread trip; a completion writes what is
  left before its fsync.
* Session events are processed in order by one task at a time (a lock), so
  every chunk is written before the completion that follows it is handled.
* Every wait is bounded or cancellable: connect and JOIN have deadlines,
  a relay silent for :attr:`Client.dead_after` seconds counts as gone, so
  does one that takes longer than that to read one write of ours (a PING
  goes out after ``ping_after`` seconds without a write, to find out), and
  reconnects back off exponentially with jitter up to ``backoff_cap``.
* Nothing the relay sends makes replies pile up while it does not read: one
  PONG answers all its PINGs, and the session replaces an unsent
  handshake message or RESET by a newer one.
* Leaving (:meth:`Client.finish`) stops taking payloads in, writes the
  acknowledgements owed and closes only once the relay answered a PING
  sent after them.
* A relay ERROR that retrying cannot fix (bad token, expired, burned, seat
  taken by another device...) stops the engine with :class:`RelayRefused`;
  the engine never fights another device for the seat.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import random
import shutil
import ssl
import stat
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Final, Literal, final

import attrs
import trio

from m42d.client import events as ev
from m42d.client.names import safe_file_name, unique_path
from m42d.client.partials import create_partial, partial_key, sweep_stale_partials
from m42d.crypto.stream import CHUNK_SIZE
from m42d.errors import LocalProtocolError, M42Error, TransportError, WireError
from m42d.link import Link
from m42d.session import (
    FileChunk,
    FileCode,
    FileCompleted,
    FileDelivered,
    FileFailed,
    FileOffered,
    FileProgress,
    HandshakeComplete,
    KeyStore,
    PeerKeyChanged,
    SendChunks,
    Session,
    SessionFailed,
    TextDelivered,
    TextReceived,
    TextRefused,
    TextRejected,
)
from m42d.ticket import Seat
from m42d.transport import Transport, load_transports
from m42d.wire import (
    Bulk,
    Burn,
    Control,
    Credit,
    Error,
    ErrorCode,
    Frame,
    GoAway,
    Join,
    Joined,
    Lane,
    PeerDown,
    PeerUp,
    Ping,
    Pong,
)

__all__ = [
    "READ_AHEAD",
    "AcceptPolicy",
    "Client",
    "ClientStatistics",
    "RelayRefused",
]

READ_AHEAD: Final = 32
"""Chunks per outgoing file read from disk but not yet written to the relay."""
READ_BATCH: Final = 16
"""Chunks read from disk per worker-thread trip (1 MiB).

A trip to a worker thread costs about as much as the Python work of a whole
chunk (GIL hand-over both ways), so the disk is read and written in batches:
one trip per megabyte, not one per 64 KiB.
"""
WRITE_BATCH: Final = 16 * CHUNK_SIZE
"""Bytes of received chunks gathered per incoming file before one trip writes them."""
PROGRESS_EVERY: Final = 0.2
"""Seconds between two progress events of one file (the last one always goes)."""
FREE_SPACE_MARGIN: Final = 16 * 1024 * 1024
"""Left free on the download disk: a file that would fill it to the brim is refused."""

RETRY_CODES: Final = frozenset(
    {ErrorCode.JOIN_TIMEOUT, ErrorCode.RATE_LIMITED, ErrorCode.CREDIT_EXCEEDED}
)

AcceptPolicy = Literal["ask", "all", "none"]


class RelayRefused(M42Error):
    """The relay ended the connection with an ERROR that retrying will not fix."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"relay refused ({code}): {message}")
        self.code = code
        self.relay_message = message


@attrs.frozen
class ClientStatistics:
    unsent_frames: int
    """Frames made for the relay that the writer has not taken yet (a bound holds)."""


class _GoAway(Exception):
    """Internal: the relay is going away; reconnect with back-off."""


def _retryable(code: int) -> bool:
    return code in RETRY_CODES or 500 <= code <= 599


@attrs.define(eq=False)
class _Transfer:
    file_id: int
    name: str
    size: int
    started: float
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


@attrs.define(eq=False)
class _OutFile(_Transfer):
    path: Path = Path()
    fd: int = -1
    generation: int = 0
    queued: int = 0
    scope: trio.CancelScope | None = None
    space: trio.lowlevel.ParkingLot = attrs.field(factory=trio.lowlevel.ParkingLot)
    accepted: bool = False


@attrs.define(eq=False)
class _InFile(_Transfer):
    directory: Path = Path()
    partial: Path | None = None
    fd: int = -1
    failed: bool = False
    pending: list[tuple[int, bytes]] = attrs.field(factory=list, repr=False)
    """Received chunks (offset, plaintext) not yet written: see WRITE_BATCH."""
    pending_bytes: int = 0


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
class Client:
    """One seat of one room: connect, join, run the session, reconnect.

    Args:
        link: the seat's link (relay, ticket, token, room secret, pin).
        keys: where this seat's static key and the peer's pin live.
        download_dir: where accepted files go (None: every offer is declined).
        accept: ``"ask"`` (emit :class:`~m42d.client.events.FileOffer` and wait
            for :meth:`accept_file`), ``"all"`` or ``"none"``.
        max_size: refuse incoming files larger than this many bytes.
        transports: scheme -> transport (default: the installed plugins).
        ssl_context: TLS context when the link has no pin.
        session_options: extra keyword arguments for :class:`Session`.
        backoff_base / backoff_cap: first and longest reconnect delay, seconds.
        tick_interval: seconds between two :meth:`Session.tick` calls.
        event_buffer: bound of the event channel.

    The caller runs :meth:`run` in a nursery and must keep reading
    :attr:`events` (the engine waits when the channel is full).
    """

    def __init__(
        self,
        link: Link,
        keys: KeyStore,
        *,
        download_dir: Path | None = None,
        accept: AcceptPolicy = "ask",
        max_size: int | None = None,
        transports: Mapping[str, Transport] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        session_options: Mapping[str, Any] | None = None,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        tick_interval: float = 1.0,
        connect_timeout: float = 10.0,
        join_timeout: float = 10.0,
        ping_after: float = 30.0,
        dead_after: float = 75.0,
        event_buffer: int = 256,
    ) -> None:
        self.link = link
        self.keys = keys
        self.download_dir = download_dir
        self.accept_policy: AcceptPolicy = accept if download_dir is not None else "none"
        self.max_size = max_size
        self._transports = transports
        self._ssl_context = ssl_context
        self.session = Session(
            link.seat, link.room_id, link.secret, keys, **(session_options or {})
        )
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.tick_interval = tick_interval
        self.connect_timeout = connect_timeout
        self.join_timeout = join_timeout
        self.ping_after = ping_after
        self.dead_after = dead_after
        send, receive = trio.open_memory_channel[ev.ClientEvent](event_buffer)
        self._event_send = send
        self.events: trio.MemoryReceiveChannel[ev.ClientEvent] = receive
        self._ui: deque[ev.ClientEvent] = deque()
        self._lock = trio.StrictFIFOLock()
        self._kick = trio.Event()
        self._wakeup = trio.Event()
        self._idle = trio.Event()
        self._dirty = False
        self._writing = False
        self._relay_out: list[Frame] = []
        self._bulk: deque[_BulkItem] = deque()
        self._credit = 0
        self._connected = False
        self._peer = False
        self._last_rx = 0.0
        self._last_ping = 0.0
        self._last_write = 0.0
        self._conn_scope: trio.CancelScope | None = None
        self._run_scope: trio.CancelScope | None = None
        self._nursery: trio.Nursery | None = None
        self._closing = False
        self._draining = False
        self._restart_reason = ""
        self._out: dict[int, _OutFile] = {}
        self._in: dict[int, _InFile] = {}
        self._pending_offers: set[int] = set()
        self._partial_key = partial_key(link.secret, link.room_id, link.seat)
        self._pong: bytes | None = None
        """Data of the relay's latest PING, not yet answered (one PONG answers them all)."""
        self._barrier: tuple[bytes, trio.Event] | None = None
        self._burn_requested = False

    def __repr__(self) -> str:
        return f"<Client seat {self.link.seat.value} via {self.link.scheme}>"

    # -- state ------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Joined to the relay right now."""
        return self._connected

    @property
    def peer_online(self) -> bool:
        return self._peer

    @property
    def established(self) -> bool:
        """A secure session with the peer stands: texts and files flow."""
        return self.session.established

    @property
    def safety_words(self) -> tuple[str, ...]:
        """The room's safety words with the pinned peer key (empty before first contact)."""
        return self.session.safety_words

    @property
    def busy(self) -> bool:
        """Texts or files of ours are still waiting for the peer's acknowledgement."""
        return self.session.unacked_texts > 0 or bool(self._out)

    def statistics(self) -> ClientStatistics:
        """Counters for tests and debugging."""
        return ClientStatistics(
            unsent_frames=self.session.queued_payloads
            + len(self._relay_out)
            + (self._pong is not None)
        )

    def outgoing_size(self, file_id: int) -> int:
        """Size of one of our files still in flight (0 once it is done)."""
        out = self._out.get(file_id)
        return out.size if out is not None else 0

    # -- user actions (synchronous; the engine's tasks do the I/O) -------------

    def send_text(self, text: str) -> int:
        """Queue a text; its seq comes back in a :class:`~m42d.client.events.Delivered`."""
        seq = self.session.send_text(text)
        self._changed()
        return seq

    async def send_file(self, path: Path, name: str | None = None) -> int:
        """Open ``path`` and offer it; returns the file id.

        Nothing is read before the peer accepts: protocol 2 offers carry no
        hash (the final chunk's authentication covers the file).

        Raises:
            OSError: the file cannot be opened or read.
            LocalProtocolError: the name is empty or too long.
        """
        fd = await trio.to_thread.run_sync(os.open, path, os.O_RDONLY)
        try:
            info = await trio.to_thread.run_sync(os.fstat, fd)
            if not stat.S_ISREG(info.st_mode):
                raise IsADirectoryError(errno.EISDIR, "not a regular file", str(path))
            size = info.st_size
            shown = name if name is not None else path.name
            file_id = self.session.offer_file(shown, size)
        except BaseException:
            os.close(fd)
            raise
        self._out[file_id] = _OutFile(file_id, shown, size, trio.current_time(), path=path, fd=fd)
        self._changed()
        return file_id

    def accept_file(self, file_id: int) -> Path:
        """Accept an offer: open its partial file and let the chunks come.

        Returns the partial file's path.

        Raises:
            LocalProtocolError: no such pending offer.
            OSError: the partial file could not be created (the offer is refused).
        """
        inc = self._in.get(file_id)
        if inc is None or file_id not in self._pending_offers:
            raise LocalProtocolError("no pending offer with that id")
        self._pending_offers.discard(file_id)
        try:
            self._open_partial(inc)
        except OSError as exc:
            self._refuse(inc, FileCode.WRITE_FAILED, f"receiver cannot write: {exc.strerror}")
            raise
        self.session.accept_file(file_id)
        inc.started = trio.current_time()
        self._changed()
        assert inc.partial is not None
        return inc.partial

    def reject_file(
        self, file_id: int, reason: str = "declined", code: FileCode = FileCode.DECLINED
    ) -> None:
        """Refuse an offer (or abort a file being received); the sender is told why."""
        inc = self._in.get(file_id)
        if inc is None:
            raise LocalProtocolError("no offer or transfer with that id")
        self._pending_offers.discard(file_id)
        self._refuse(inc, code, reason)

    def cancel_file(self, file_id: int) -> None:
        """Stop sending one of our files."""
        self.session.cancel_file(file_id)
        out = self._out.pop(file_id, None)
        if out is not None:
            self._stop_stream(out)
            self._close_out(out)
            self._emit(ev.FileFailed(file_id, True, out.name, FileCode.CANCELLED, "cancelled"))
        self._changed()

    def trust(self) -> None:
        """Accept the peer's changed key (after comparing the safety words) and pin it.

        Seat B cannot start a handshake, and A may be waiting out a timeout
        on the handshake B ignored while blocked; so B reconnects, which the
        relay reports to A as PEER_DOWN/PEER_UP and A starts afresh at once.
        """
        self.session.trust_peer_key()
        if self.link.seat is Seat.B and self._conn_scope is not None:
            self._restart_reason = "reconnecting to restart the handshake with the trusted key"
            self._conn_scope.cancel()
        self._changed()

    def burn(self) -> None:
        """Ask the relay to burn the room: both seats are closed and it cannot be joined again."""
        self._burn_requested = True
        self._relay_out.append(Burn())
        self._changed()

    def close(self) -> None:
        """Stop the engine: :meth:`run` returns soon after."""
        self._closing = True
        if self._conn_scope is not None:
            # Leave the connection through its normal exit, not by
            # cancellation: a transport then closes cleanly (a WebSocket
            # close handshake cannot finish under cancellation).
            self._conn_scope.cancel()
        elif self._run_scope is not None:
            self._run_scope.cancel()

    async def finish(self, limit: float = 5.0) -> None:
        """Stop taking payloads in, get the acknowledgements owed out, then :meth:`close`.

        Why not just :meth:`flush` then :meth:`close`: frames keep arriving
        while flushing, and a text read then is acknowledged (so the peer
        counts it as delivered) or processed without its acknowledgement
        leaving (so it is shown again after a resend).  Here the reader stops
        passing payloads to the session first; every text that became a
        :class:`~m42d.client.events.TextIn` has had its acknowledgement
        written, and nothing else was accepted.  Written is not enough: a
        relay may drop the last frames of a connection that closes right
        after them (it did, when its writer to us failed before its reader
        got to them), so a PING goes last and the connection is closed only
        once the relay answered it, that is, once it had read everything
        before.  All within ``limit`` seconds.  A user interface shows every
        ``TextIn`` still in :attr:`events` afterwards.
        """
        self._draining = True
        with trio.move_on_after(limit):
            await self._process()  # waits for the reader's frame in progress, if any
            await self.flush()
            await self._relay_read_all()
        self.close()

    async def _relay_read_all(self) -> None:
        """Until the relay answered a PING sent after everything else (see :meth:`finish`)."""
        if not self._connected:
            return
        token = os.urandom(8)
        answered = trio.Event()
        self._barrier = (token, answered)
        self._relay_out.append(Ping(token))
        self._wake_writer()
        await answered.wait()

    async def flush(self) -> None:
        """Wait until everything queued for the control lane has been written.

        Used before exiting so that acknowledgements reach the relay; bound
        it with a deadline (the connection may be down).
        """
        while self._connected and (
            self._dirty or self._writing or self._relay_out or self._pong is not None
        ):
            await self._idle.wait()

    # -- running -----------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect and keep connected until :meth:`close` or a fatal relay error.

        Raises:
            RelayRefused: the relay refused the seat for good (also reported
                as a fatal :class:`~m42d.client.events.Problem`).
            TransportError: the link's scheme has no transport.
        """
        transports = self._transports if self._transports is not None else load_transports()
        transport = transports.get(self.link.scheme)
        if transport is None:
            raise TransportError(f"no transport for {self.link.scheme}:// is installed")
        refused: RelayRefused | None = None
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._ticker)
                nursery.start_soon(self._pump)
                task_status.started()
                try:
                    with trio.CancelScope() as scope:
                        self._run_scope = scope
                        if self.download_dir is not None and not self._closing:
                            # What an earlier run of this seat could not
                            # remove (it was killed); before any offer comes.
                            await trio.to_thread.run_sync(
                                sweep_stale_partials, self.download_dir, self._partial_key
                            )
                        if not self._closing:
                            await self._connect_loop(transport)
                except RelayRefused as exc:
                    refused = exc  # raised below, outside the nursery's exception group
                finally:
                    nursery.cancel_scope.cancel()
            if refused is not None:
                raise refused
        finally:
            self._cleanup()
            with trio.CancelScope(shield=True):
                with trio.move_on_after(1.0):
                    await self._deliver_ui()
            await self._event_send.aclose()

    async def _connect_loop(self, transport: Transport) -> None:
        failures = 0
        while True:
            joined = False
            try:
                async with transport.connect(
                    self.link.relay,
                    ssl_context=self._ssl_context,
                    pin=self.link.pin,
                    room_id=self.link.room_id,
                    connect_timeout=self.connect_timeout,
                ) as conn:
                    joined = await self._join(conn)
                    await self._serve(conn)
                reason = "the relay closed the connection"
            except RelayRefused as exc:
                if not _retryable(exc.code):
                    self._emit(ev.Problem(str(exc), fatal=True, code=exc.code))
                    if exc.code == ErrorCode.BURNED and self._burn_requested:
                        # Only the user's own /burn forgets keys: an ERROR is
                        # not authenticated, and a relay that could make a
                        # seat drop its key and pin could swap in its own.
                        forget: Callable[..., object] | None = getattr(self.keys, "forget", None)
                        if forget is not None:
                            forget(self.link.room_id, self.link.seat)
                    raise
                reason = str(exc)
            except _GoAway as exc:
                reason = (
                    f"the relay is going away: {exc}" if str(exc) else "the relay is going away"
                )
            except (TransportError, WireError) as exc:
                reason = str(exc)
            except trio.TooSlowError:
                reason = "the relay did not answer in time"
            finally:
                await self._disconnected()
            if self._closing:
                return
            failures = 1 if joined else failures + 1
            delay = min(self.backoff_cap, self.backoff_base * 2 ** (failures - 1))
            delay *= random.uniform(0.5, 1.0)
            self._emit(ev.Reconnecting(delay, reason))
            await self._deliver_ui()
            await trio.sleep(delay)

    async def _join(self, conn: Any) -> bool:
        link = self.link
        with trio.fail_after(self.join_timeout):
            await conn.send(Join(link.seat, link.ticket, link.token))
            while True:
                frame = await conn.receive()
                if isinstance(frame, Joined):
                    break
                self._control_frame(frame)
        now = trio.current_time()
        self._connected = True
        self._credit = 0
        self._last_rx = self._last_ping = self._last_write = now
        self._emit(ev.Connected(link.relay))
        if frame.peer_online:
            self._set_peer(True)
        else:
            self._changed()
        await self._process()
        return True

    def _control_frame(self, frame: Frame) -> None:
        """Frames the relay itself sends (not the peer's payloads)."""
        if isinstance(frame, Credit):
            self._credit += frame.amount
            self._wake_writer()
        elif isinstance(frame, PeerUp):
            self._set_peer(True)
        elif isinstance(frame, PeerDown):
            self._set_peer(False)
        elif isinstance(frame, Ping):
            # Coalesced: a relay that sends PINGs and never reads must not
            # make replies pile up here; the latest data answers them all.
            self._pong = frame.data
            self._wake_writer()
        elif isinstance(frame, Pong):
            barrier = self._barrier
            if barrier is not None and frame.data == barrier[0]:
                barrier[1].set()
        elif isinstance(frame, Error):
            raise RelayRefused(frame.code, frame.message)
        elif isinstance(frame, GoAway):
            raise _GoAway(frame.reason)
        else:
            raise TransportError(f"the relay sent an unexpected {frame.kind.name} frame")

    async def _serve(self, conn: Any) -> None:
        failure: list[BaseException] = []

        async def guarded(fn: Callable[[Any], Any]) -> None:
            try:
                await fn(conn)
            except (TransportError, WireError, RelayRefused, _GoAway, trio.TooSlowError) as exc:
                failure.append(exc)
                nursery.cancel_scope.cancel()

        async with trio.open_nursery() as nursery:
            self._conn_scope = nursery.cancel_scope
            nursery.start_soon(guarded, self._reader)
            nursery.start_soon(guarded, self._writer)
        self._conn_scope = None
        if failure:
            raise failure[0]
        reason, self._restart_reason = self._restart_reason, ""
        raise TransportError(reason or "the relay stopped answering")

    async def _reader(self, conn: Any) -> None:
        session = self.session
        while True:
            frame = await conn.receive()
            self._last_rx = trio.current_time()
            if self._draining:
                # Leaving (finish): the relay's own frames still count (the
                # PONG finish waits for, an ERROR), the peer's are not taken
                # in: they stay unacknowledged and come again next time.
                if not isinstance(frame, Control | Bulk | PeerUp | PeerDown):
                    self._control_frame(frame)
                continue
            if isinstance(frame, Control):
                session.receive_control(frame.payload)
            elif isinstance(frame, Bulk):
                session.receive_bulk(frame.payload)
            else:
                self._control_frame(frame)
            await self._process()
            self._wake_writer()

    async def _writer(self, conn: Any) -> None:
        while True:
            self._wakeup = trio.Event()
            self._dirty = False
            frames = self._relay_out
            self._relay_out = []
            if self._pong is not None:
                frames.append(Pong(self._pong))
                self._pong = None
            for lane, payload in self.session.data_to_send():
                # The session only produces control records; chunks come from
                # encrypt_chunk via the file streams.
                assert lane is Lane.CONTROL
                frames.append(Control(payload))
            if frames:
                self._writing = True
                await self._write(conn.send_many, frames)
                self._writing = False
                continue
            item = self._next_bulk()
            if item is not None and self._credit >= len(item.payload):
                self._bulk.popleft()
                self._credit -= len(item.payload)
                self._chunk_left_queue(item)
                self._writing = True
                await self._write(conn.send, Bulk(item.payload))
                self._writing = False
                continue
            self._idle.set()
            self._idle = trio.Event()
            await self._wakeup.wait()

    async def _write(self, send: Callable[[Any], Awaitable[None]], what: Any) -> None:
        """One write, within :attr:`dead_after`: a relay that stops reading counts as gone.

        Without this deadline a relay could keep us alive with PINGs while
        reading nothing, and everything we owe it would wait forever.
        """
        with trio.move_on_after(self.dead_after) as scope:
            await send(what)
            self._last_write = trio.current_time()
        if scope.cancelled_caught:
            raise TransportError(
                f"the relay stopped reading (a write waited over {self.dead_after:g} s)"
            )

    def _next_bulk(self) -> _BulkItem | None:
        while self._bulk:
            item = self._bulk[0]
            out = self._out.get(item.file_id)
            if out is not None and out.generation == item.generation:
                return item
            self._bulk.popleft()
            self._chunk_left_queue(item)
        return None

    def _chunk_left_queue(self, item: _BulkItem) -> None:
        out = self._out.get(item.file_id)
        if out is not None and out.generation == item.generation:
            out.queued -= 1
            if out.queued <= READ_AHEAD - READ_BATCH:
                out.space.unpark_all()

    async def _disconnected(self) -> None:
        was = self._connected
        self._connected = False
        self._credit = 0
        self._relay_out.clear()
        self._pong = None
        if self._barrier is not None:
            self._barrier[1].set()  # nothing more can reach the relay
            self._barrier = None
        self._writing = False
        self._idle.set()
        self._idle = trio.Event()
        for out in self._out.values():
            self._stop_stream(out)
        self._bulk.clear()
        if was or self._peer:
            self.session.connection_lost()
            if self._peer:
                self._peer = False
                self._emit(ev.PeerDown())
        with trio.CancelScope(shield=True), trio.move_on_after(1.0):
            await self._process()

    def _set_peer(self, online: bool) -> None:
        if online:
            self.session.peer_online(trio.current_time())
            if not self._peer:
                self._emit(ev.PeerUp())
        else:
            self.session.peer_offline()
            if self._peer:
                self._emit(ev.PeerDown())
        self._peer = online
        self._changed()

    # -- background tasks ------------------------------------------------------------

    async def _ticker(self) -> None:
        while True:
            await trio.sleep(self.tick_interval)
            now = trio.current_time()
            self.session.tick(now)
            if self._connected:
                silent = now - self._last_rx
                if silent > self.dead_after and self._conn_scope is not None:
                    self._conn_scope.cancel()
                elif now - self._last_ping > self.ping_after and (
                    silent > self.ping_after or now - self._last_write > self.ping_after
                ):
                    # Also when the relay talks but we have not written: only a
                    # write shows whether it still reads (see _write).  One
                    # waiting PING is enough, however long the writer waits.
                    self._last_ping = now
                    if not any(isinstance(frame, Ping) for frame in self._relay_out):
                        self._relay_out.append(Ping())
            self._changed()

    async def _pump(self) -> None:
        """Process session events caused by user actions and timers."""
        while True:
            await self._kick.wait()
            self._kick = trio.Event()
            await self._process()

    def _changed(self) -> None:
        self._kick.set()
        self._wake_writer()

    def _wake_writer(self) -> None:
        self._dirty = True
        self._wakeup.set()

    def _emit(self, event: ev.ClientEvent) -> None:
        self._ui.append(event)
        self._kick.set()

    async def _deliver_ui(self) -> None:
        while self._ui:
            event = self._ui.popleft()
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await self._event_send.send(event)

    # -- session events -------------------------------------------------------------------

    async def _process(self) -> None:
        async with self._lock:
            while True:
                events = self.session.events()
                if not events:
                    break
                for event in events:
                    await self._handle(event)
            self._wake_writer()
            await self._deliver_ui()

    async def _handle(self, event: Any) -> None:
        now = trio.current_time()
        if isinstance(event, TextReceived):
            self._emit(ev.TextIn(event.seq, event.text))
        elif isinstance(event, TextRefused):
            self._emit(ev.Problem(f"refused {event.reason} from the peer (not shown)"))
        elif isinstance(event, TextRejected):
            self._emit(ev.TextFailed(event.seq, event.reason))
        elif isinstance(event, TextDelivered):
            self._emit(ev.Delivered(event.seq))
        elif isinstance(event, HandshakeComplete):
            self._emit(ev.SafetyWords(event.words, event.first_contact))
        elif isinstance(event, PeerKeyChanged):
            self._emit(ev.KeyChanged(event.words))
        elif isinstance(event, SessionFailed):
            self._emit(ev.Problem(f"secure session broke: {event.reason}"))
        elif isinstance(event, FileChunk):
            await self._write_chunk(event)
        elif isinstance(event, FileProgress):
            transfer: _Transfer | None = (self._out if event.outgoing else self._in).get(
                event.file_id
            )
            if transfer is not None:
                progress = transfer.progress(event.outgoing, event.done, now)
                if progress is not None:
                    self._emit(progress)
        elif isinstance(event, SendChunks):
            self._start_stream(event.file_id, event.start)
        elif isinstance(event, FileOffered):
            self._on_offer(event)
        elif isinstance(event, FileCompleted):
            await self._complete(event)
        elif isinstance(event, FileDelivered):
            out = self._out.pop(event.file_id, None)
            if out is not None:
                self._stop_stream(out)
                self._close_out(out)
                self._emit(ev.FileDone(out.file_id, True, out.name, out.size, None))
        elif isinstance(event, FileFailed):
            self._on_failed(event)

    # -- outgoing files ----------------------------------------------------------------------

    def _start_stream(self, file_id: int, start: int) -> None:
        out = self._out.get(file_id)
        if out is None or self._nursery is None:
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
        self._nursery.start_soon(self._stream, out, start, out.generation, scope)

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
            count = self.session.file_chunks(out.file_id)
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
                try:
                    data = await trio.to_thread.run_sync(_pread, out.fd, wanted, offset)
                except OSError as exc:
                    self._abort_out(out, f"cannot read the file: {exc.strerror}")
                    return
                if out.generation != generation:
                    return
                for index in range(first, end):
                    at = (index - first) * CHUNK_SIZE
                    length = min(CHUNK_SIZE, out.size - index * CHUNK_SIZE)
                    piece = data[at : at + CHUNK_SIZE]
                    try:
                        payload = self.session.encrypt_chunk(out.file_id, index, piece)
                    except LocalProtocolError:
                        if len(piece) != length:
                            self._abort_out(out, "the file changed while it was being sent")
                        return  # cancelled, rejected or done meanwhile
                    self._bulk.append(_BulkItem(out.file_id, generation, payload))
                    out.queued += 1
                self._wake_writer()

    def _abort_out(self, out: _OutFile, reason: str) -> None:
        with contextlib.suppress(LocalProtocolError):
            self.session.cancel_file(out.file_id, reason)
        self._out.pop(out.file_id, None)
        self._stop_stream(out)
        self._close_out(out)
        self._emit(ev.FileFailed(out.file_id, True, out.name, FileCode.CANCELLED, reason))
        self._changed()

    @staticmethod
    def _close_out(out: _OutFile) -> None:
        if out.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(out.fd)
            out.fd = -1

    # -- incoming files ------------------------------------------------------------------------

    def _on_offer(self, offer: FileOffered) -> None:
        name = safe_file_name(offer.name)
        inc = _InFile(
            offer.file_id,
            name,
            offer.size,
            trio.current_time(),
            directory=self.download_dir or Path(),
        )
        self._in[offer.file_id] = inc
        self._pending_offers.add(offer.file_id)
        if self.accept_policy == "none" or self.download_dir is None:
            self.reject_file(offer.file_id, "the receiver is not accepting files")
            return
        if self.max_size is not None and offer.size > self.max_size:
            self.reject_file(
                offer.file_id,
                f"larger than the receiver's limit of {self.max_size} bytes",
                FileCode.TOO_LARGE,
            )
            return
        try:
            free = shutil.disk_usage(self.download_dir).free
        except OSError as exc:
            self.reject_file(
                offer.file_id, f"receiver cannot write: {exc.strerror}", FileCode.WRITE_FAILED
            )
            return
        if offer.size + FREE_SPACE_MARGIN > free:
            self.reject_file(
                offer.file_id, "not enough free disk space at the receiver", FileCode.NO_SPACE
            )
            return
        if self.accept_policy == "all":
            with contextlib.suppress(OSError):
                self.accept_file(offer.file_id)
            return
        self._emit(ev.FileOffer(offer.file_id, name, offer.size))

    def _open_partial(self, inc: _InFile) -> None:
        inc.fd, inc.partial = create_partial(inc.directory, inc.name, self._partial_key)

    def _refuse(self, inc: _InFile, code: FileCode, reason: str) -> None:
        with contextlib.suppress(LocalProtocolError):
            self.session.reject_file(inc.file_id, code, reason)
        self._discard_partial(inc)
        self._in.pop(inc.file_id, None)
        self._emit(ev.FileFailed(inc.file_id, False, inc.name, int(code), reason))
        self._changed()

    async def _write_chunk(self, chunk: FileChunk) -> None:
        inc = self._in.get(chunk.file_id)
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

    @staticmethod
    async def _write_pending(inc: _InFile) -> None:
        """Write the chunks gathered so far in one worker-thread trip.

        The chunks are in memory only until then; a completion writes the
        rest before its fsync, so "complete" still means "on disk".
        """
        pieces, inc.pending, inc.pending_bytes = inc.pending, [], 0
        if pieces and inc.fd >= 0:
            await trio.to_thread.run_sync(_write_pieces, inc.fd, pieces)

    async def _complete(self, done: FileCompleted) -> None:
        inc = self._in.pop(done.file_id, None)
        if inc is None or inc.partial is None:
            return
        try:
            await self._write_pending(inc)
        except OSError as exc:
            self._refuse(inc, _write_failure_code(exc), f"receiver cannot write: {exc.strerror}")
            return
        fd, inc.fd = inc.fd, -1
        try:
            try:
                # fsync, then the final name, then close: the descriptor
                # holds the partial's lock until it is no longer a partial.
                await trio.to_thread.run_sync(os.fsync, fd)
                path = await trio.to_thread.run_sync(
                    _link_into_place, inc.partial, inc.directory, inc.name
                )
            finally:
                os.close(fd)  # also when fsync failed: no descriptor leak
        except OSError as exc:
            self._discard_partial(inc)
            code = _write_failure_code(exc)
            reason = f"complete, but could not be saved: {exc.strerror or exc}"
            # The sender must hear the failure, not "delivered".
            with contextlib.suppress(LocalProtocolError):
                self.session.reject_file(inc.file_id, code, reason)
            self._emit(ev.FileFailed(inc.file_id, False, inc.name, int(code), reason))
            self._changed()
            return
        inc.partial = None
        with contextlib.suppress(LocalProtocolError):
            self.session.confirm_saved(inc.file_id)  # only now: FILE_DONE
        self._emit(ev.FileDone(inc.file_id, False, inc.name, inc.size, str(path)))
        self._changed()

    def _on_failed(self, failed: FileFailed) -> None:
        if failed.outgoing:
            out = self._out.pop(failed.file_id, None)
            if out is None:
                return
            self._stop_stream(out)
            self._close_out(out)
            self._emit(ev.FileFailed(out.file_id, True, out.name, failed.code, failed.reason))
            return
        inc = self._in.pop(failed.file_id, None)
        self._pending_offers.discard(failed.file_id)
        if inc is None:
            return
        self._discard_partial(inc)
        self._emit(ev.FileFailed(inc.file_id, False, inc.name, failed.code, failed.reason))

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

    def _cleanup(self) -> None:
        """At exit: unfinished incoming files are deleted, outgoing ones closed."""
        for inc in self._in.values():
            self._discard_partial(inc)
        self._in.clear()
        for out in self._out.values():
            self._close_out(out)
