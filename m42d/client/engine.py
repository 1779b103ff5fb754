"""The client engine: trio glue that runs one seat's :class:`~m42d.session.Session`.

``m42 chat``, ``send``, ``recv`` and ``trust`` are thin user interfaces over
one :class:`Client`: it connects to the relay named in the link, joins the
seat, feeds the session whatever arrives, writes whatever the session and
the file streams produce, reconnects on its own, and reports to the UI
through :attr:`Client.events`.

The parts, each with its own rules: :mod:`m42d.client.connection` (JOIN,
the one reader and the one writer, credit, the dead-relay rules),
:mod:`m42d.client.outgoing` (our files, read ahead from disk),
:mod:`m42d.client.incoming` (the peer's files, partial files, fsync).

Rules and invariants
--------------------
* Session events are processed in order by one task at a time (a lock), so
  every chunk is written before the completion that follows it is handled.
* Reconnects back off exponentially with jitter up to ``backoff_cap``; a
  connection that had joined starts the count again.
* Leaving (:meth:`Client.finish`) stops taking payloads in, writes the
  acknowledgements owed and closes only once the relay answered a PING
  sent after them.
* A relay ERROR that retrying cannot fix (bad token, expired, burned, seat
  taken by another device...) stops the engine with :class:`RelayRefused`;
  the engine never fights another device for the seat.
* Events for the UI queue in order and go out between two session steps;
  the engine waits when the UI does not read (the channel is bounded).

Why this module is a little over 500 lines: it is the client's facade --
reconnection with backoff, the session's steps and the event channel to the
UI -- over parts in their own modules (connection, outgoing and incoming
files, key store, rooms); what remains needs several of them at once.
"""

from __future__ import annotations

import contextlib
import random
import ssl
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Final, final

import attrs
import trio

from m42d.client import events as ev
from m42d.client.connection import RelayConnection, RelayGoingAway, RelayRefused, retryable
from m42d.client.incoming import AcceptPolicy, IncomingFiles
from m42d.client.keystore import SeatKeyStore
from m42d.client.outgoing import READ_AHEAD, OutgoingFiles
from m42d.client.partials import partial_key
from m42d.client.relay_words import lost_words, refusal_words, retry_words
from m42d.errors import TransportError, WireError
from m42d.link import Link
from m42d.session import (
    Event,
    FileChunk,
    FileCode,
    FileCompleted,
    FileDelivered,
    FileFailed,
    FileOffered,
    FileProgress,
    HandshakeComplete,
    PeerKeyChanged,
    ResetReason,
    SendChunks,
    SessionFailed,
    SessionOptions,
    TextDelivered,
    TextReceived,
    TextRefused,
    TextRejected,
    open_session,
)
from m42d.ticket import Seat
from m42d.transport import Transport, load_transports
from m42d.wire import Burn, ErrorCode

__all__ = [
    "READ_AHEAD",
    "AcceptPolicy",
    "Client",
    "ClientStatistics",
    "RelayRefused",
]

WRONG_SECRET: Final = (
    "this link's secret does not match the other person's: was the link changed? "
    "(or someone in the middle runs their own handshake)"
)
"""Said once per side when the handshake shows the two links' room secrets differ."""


@attrs.frozen
class ClientStatistics:
    unsent_frames: int
    """Frames made for the relay that the writer has not taken yet (a bound holds)."""


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
        session_options: limits and timers of the :class:`Session`.
        backoff_base / backoff_cap: first and longest reconnect delay, seconds.
        tick_interval: seconds between two :meth:`Session.tick` calls.
        connect_timeout / join_timeout: seconds for the transport and for JOIN.
        ping_after / dead_after: see :class:`~m42d.client.connection.RelayConnection`.
        event_buffer: bound of the event channel.

    The caller runs :meth:`run` in a nursery and must keep reading
    :attr:`events` (the engine waits when the channel is full).
    """

    def __init__(
        self,
        link: Link,
        keys: SeatKeyStore,
        *,
        download_dir: Path | None = None,
        accept: AcceptPolicy = "ask",
        max_size: int | None = None,
        transports: Mapping[str, Transport] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        session_options: SessionOptions | None = None,
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
        self._transports = transports
        self._ssl_context = ssl_context
        self.session = open_session(link.seat, link.room_id, link.secret, keys, session_options)
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.tick_interval = tick_interval
        self.connect_timeout = connect_timeout
        send, receive = trio.open_memory_channel[ev.ClientEvent](event_buffer)
        self._event_send = send
        self.events: trio.MemoryReceiveChannel[ev.ClientEvent] = receive
        self._ui: deque[ev.ClientEvent] = deque()
        self._lock = trio.StrictFIFOLock()
        self._ui_lock = trio.StrictFIFOLock()
        self._session_events: deque[Event] = deque()
        """Events taken from the session and not handled yet (see _process)."""
        self._kick = trio.Event()
        self._peer = False
        self._run_scope: trio.CancelScope | None = None
        self._closing = False
        self._burn_requested = False
        self._said_wrong_secret = False
        """The secrets differ, said once: every retry of the handshake fails alike."""
        self._partial_key = partial_key(link.secret, link.room_id, link.seat)
        self._outgoing = OutgoingFiles(
            self.session, emit=self._emit, changed=self._changed, wake_writer=self._wake_writer
        )
        self._incoming = IncomingFiles(
            self.session,
            download_dir=download_dir,
            accept=accept,
            max_size=max_size,
            partial_key=self._partial_key,
            emit=self._emit,
            changed=self._changed,
        )
        self._relay = RelayConnection(
            link,
            self.session,
            self._outgoing,
            joined=self._joined,
            peer_changed=self._peer_changed,
            processed=self._process,
            join_timeout=join_timeout,
            ping_after=ping_after,
            dead_after=dead_after,
        )

    def __repr__(self) -> str:
        return f"<Client seat {self.link.seat.value} via {self.link.scheme}>"

    # -- state ------------------------------------------------------------------

    @property
    def download_dir(self) -> Path | None:
        return self._incoming.download_dir

    @property
    def accept_policy(self) -> AcceptPolicy:
        return self._incoming.accept_policy

    @property
    def max_size(self) -> int | None:
        return self._incoming.max_size

    @property
    def connected(self) -> bool:
        """Joined to the relay right now."""
        return self._relay.connected

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
    def compared_at(self) -> float | None:
        """When the people last compared these words (seconds since the epoch), if ever."""
        return self.keys.compared_at(self.link.room_id, self.link.seat)

    def mark_compared(self, when: float) -> None:
        """The people compared the words just now (by voice, in person).

        Raises:
            KeyStoreError: no peer key is pinned yet, or the key file cannot be written.
        """
        self.keys.mark_compared(self.link.room_id, self.link.seat, when)

    @property
    def busy(self) -> bool:
        """Texts or files of ours are still waiting for the peer's acknowledgement."""
        return self.session.unacked_texts > 0 or self._outgoing.in_flight

    def statistics(self) -> ClientStatistics:
        """Counters for tests and debugging."""
        return ClientStatistics(unsent_frames=self._relay.unsent_frames)

    def outgoing_size(self, file_id: int) -> int:
        """Size of one of our files still in flight (0 once it is done)."""
        return self._outgoing.size(file_id)

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
        return await self._outgoing.offer(path, name)

    def accept_file(self, file_id: int) -> Path:
        """Accept an offer: open its partial file and let the chunks come.

        Returns the partial file's path.

        Raises:
            LocalProtocolError: no such pending offer.
            OSError: the partial file could not be created (the offer is refused).
        """
        return self._incoming.accept(file_id)

    def reject_file(
        self, file_id: int, reason: str = "declined", code: FileCode = FileCode.DECLINED
    ) -> None:
        """Refuse an offer (or abort a file being received); the sender is told why."""
        self._incoming.reject(file_id, reason, code)

    def cancel_file(self, file_id: int) -> None:
        """Stop sending one of our files."""
        self._outgoing.cancel(file_id)

    def trust(self) -> None:
        """Accept the peer's changed key (after comparing the safety words) and pin it.

        Seat B cannot start a handshake, and A may be waiting out a timeout
        on the handshake B ignored while blocked; so B reconnects, which the
        relay reports to A as PEER_DOWN/PEER_UP and A starts afresh at once.
        """
        self.session.trust_peer_key()
        if self.link.seat is Seat.B:
            self._relay.restart("reconnecting to restart the handshake with the trusted key")
        self._changed()

    def burn(self) -> None:
        """Ask the relay to burn the room: both seats are closed and it cannot be joined again."""
        self._burn_requested = True
        self._relay.queue(Burn())
        self._changed()

    def close(self) -> None:
        """Stop the engine: :meth:`run` returns soon after."""
        self._closing = True
        if not self._relay.leave() and self._run_scope is not None:
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
        self._relay.stop_taking_payloads()
        with trio.move_on_after(limit):
            await self._process()  # waits for the reader's frame in progress, if any
            await self.flush()
            await self._relay.read_all()
        self.close()

    async def flush(self) -> None:
        """Wait until everything queued for the control lane has been written.

        Used before exiting so that acknowledgements reach the relay; bound
        it with a deadline (the connection may be down).
        """
        await self._relay.flush()

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
                self._outgoing.nursery = nursery
                nursery.start_soon(self._ticker)
                nursery.start_soon(self._pump)
                task_status.started()
                try:
                    with trio.CancelScope() as scope:
                        self._run_scope = scope
                        if not self._closing:
                            await self._incoming.sweep()
                        if not self._closing:
                            await self._connect_loop(transport)
                except RelayRefused as exc:
                    refused = exc  # raised below, outside the nursery's exception group
                finally:
                    nursery.cancel_scope.cancel()
            if refused is not None:
                raise refused
        finally:
            self._incoming.cleanup()
            self._outgoing.close_all()
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
                    await self._relay.join(conn)
                    joined = True
                    await self._relay.serve(conn)
                reason = "the relay closed the connection"
            except RelayRefused as exc:
                if not retryable(exc.code):
                    self._refused_for_good(exc)
                    raise
                reason = retry_words(exc.code)
            except RelayGoingAway:
                reason = "the relay is restarting or shutting down"
            except (TransportError, WireError, trio.TooSlowError) as exc:
                reason = lost_words(exc)
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

    def _refused_for_good(self, exc: RelayRefused) -> None:
        words = refusal_words(exc.code, exc.relay_message, self.link.seat)
        self._emit(ev.Problem(words, fatal=True, code=exc.code))
        if exc.code == ErrorCode.BURNED and self._burn_requested:
            # Only the user's own /burn forgets keys: an ERROR is not
            # authenticated, and a relay that could make a seat drop its key
            # and pin could swap in its own.
            self.keys.forget(self.link.room_id, self.link.seat)

    async def _disconnected(self) -> None:
        was = self._relay.reset()
        self._outgoing.connection_lost()
        if was or self._peer:
            self.session.connection_lost()
            if self._peer:
                self._peer = False
                self._emit(ev.PeerOffline())
        with trio.CancelScope(shield=True), trio.move_on_after(1.0):
            await self._process()

    # -- what the connection tells us ----------------------------------------------

    async def _joined(self, peer_online: bool) -> None:
        self._emit(ev.Connected(self.link.relay, peer_online))
        if peer_online:
            self._peer_changed(True)
        else:
            self._changed()
        await self._process()

    def _peer_changed(self, online: bool) -> None:
        if online:
            self.session.peer_online(trio.current_time())
            if not self._peer:
                self._said_wrong_secret = False  # they may have come back with the right link
                self._emit(ev.PeerOnline())
        else:
            self.session.peer_offline()
            if self._peer:
                self._emit(ev.PeerOffline())
        self._peer = online
        self._changed()

    # -- background tasks ------------------------------------------------------------

    async def _ticker(self) -> None:
        while True:
            await trio.sleep(self.tick_interval)
            now = trio.current_time()
            self.session.tick(now)
            self._relay.tick(now)
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
        self._relay.wake_writer()

    def _emit(self, event: ev.ClientEvent) -> None:
        self._ui.append(event)
        self._kick.set()

    async def _deliver_ui(self) -> None:
        # An event leaves the queue only once it is sent: the caller may be
        # cancelled while the channel is full (a reader whose connection was
        # cut), and trio's send() then has not sent it.  One task at a time,
        # or two would send the same event.
        async with self._ui_lock:
            ui = self._ui
            while ui:
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await self._event_send.send(ui[0])
                ui.popleft()

    # -- session events -------------------------------------------------------------------

    async def _process(self) -> None:
        async with self._lock:
            # One event at a time from a queue of our own: the caller may be
            # cancelled in any await of a handler (a reader whose connection
            # was cut), and the events after the one it was handling must
            # still be handled by the next call, not lost with the list.
            pending = self._session_events
            while True:
                if not pending:
                    pending.extend(self.session.events())
                    if not pending:
                        break
                await self._handle(pending.popleft())
            self._wake_writer()
            await self._deliver_ui()

    async def _handle(self, event: Event) -> None:
        if isinstance(event, TextReceived):
            self._emit(ev.TextIn(event.seq, event.text))
        elif isinstance(event, TextRefused):
            self._emit(ev.Problem(f"refused {event.reason} from the peer (not shown)"))
        elif isinstance(event, TextRejected):
            self._emit(ev.TextFailed(event.seq, event.reason))
        elif isinstance(event, TextDelivered):
            self._emit(ev.Delivered(event.seq))
        elif isinstance(event, HandshakeComplete):
            self._said_wrong_secret = False
            self._emit(ev.SafetyWords(event.words, event.first_contact))
        elif isinstance(event, PeerKeyChanged):
            self._emit(ev.KeyChanged(event.words))
        elif isinstance(event, SessionFailed) and event.why == ResetReason.AUTHENTICATION:
            if not self._said_wrong_secret:
                self._said_wrong_secret = True
                self._emit(ev.Problem(WRONG_SECRET, cause=ev.WRONG_SECRET_CAUSE))
        elif isinstance(event, SessionFailed):
            self._emit(ev.Problem(f"secure session broke: {event.reason}"))
        elif isinstance(event, FileChunk):
            await self._incoming.write_chunk(event)
        elif isinstance(event, FileProgress):
            files = self._outgoing if event.outgoing else self._incoming
            progress = files.progress(event.file_id, event.done, trio.current_time())
            if progress is not None:
                self._emit(progress)
        elif isinstance(event, SendChunks):
            self._outgoing.send_from(event.file_id, event.start)
        elif isinstance(event, FileOffered):
            self._incoming.offered(event)
        elif isinstance(event, FileCompleted):
            await self._incoming.complete(event)
        elif isinstance(event, FileDelivered):
            self._outgoing.delivered(event.file_id)
        elif isinstance(event, FileFailed):
            files = self._outgoing if event.outgoing else self._incoming
            files.failed(event.file_id, event.code, event.reason)
