"""The seat's relay connection: JOIN, one reader, one writer over the lanes, credit, liveness.

One :class:`RelayConnection` lives as long as its engine and carries one
transport connection at a time (the engine reconnects through it).

Rules and invariants
--------------------
* Per connection: ONE reader task (relay frames in, session fed in order)
  and ONE writer task, the only code that writes the connection.  The writer
  sends everything on the control side first (session records, PONG, BURN),
  then at most one BULK chunk, then looks at the control side again: a text
  never waits behind more than one 256 KiB chunk on our side either.
* BULK goes out only within relay credit: credit is 0 at JOINED, grows with
  each CREDIT, shrinks by each payload sent (docs/protocol.md "Flow
  control").  Sending past it would be ERROR 402.
* Every wait is bounded: JOIN has a deadline, a relay silent for
  ``dead_after`` seconds counts as gone, so does one that takes longer than
  that to read one write of ours (a PING goes out after ``ping_after``
  seconds without a write, to find out).
* Nothing the relay sends makes replies pile up while it does not read: one
  PONG answers all its PINGs, and one waiting PING of ours is enough.
* Leaving: :meth:`RelayConnection.stop_taking_payloads` keeps the peer's
  payloads out of the session, and :meth:`RelayConnection.read_all` returns
  once the relay answered a PING sent after everything else.
* A relay ERROR ends the connection with :class:`RelayRefused`; whether to
  retry is the engine's call (:func:`retryable`).
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Final, NoReturn, Protocol, final

import trio

from m42d.errors import M42Error, TransportError, WireError
from m42d.link import Link
from m42d.session import Session
from m42d.transport import FrameConnection
from m42d.wire import (
    Bulk,
    Control,
    Credit,
    Error,
    ErrorCode,
    Frame,
    GoAway,
    Join,
    Joined,
    PeerDown,
    PeerUp,
    Ping,
    Pong,
)

__all__ = [
    "ChunkSource",
    "RelayConnection",
    "RelayGoingAway",
    "RelayRefused",
    "retryable",
]

RETRY_CODES: Final = frozenset(
    {ErrorCode.JOIN_TIMEOUT, ErrorCode.RATE_LIMITED, ErrorCode.CREDIT_EXCEEDED}
)


class RelayRefused(M42Error):
    """The relay ended the connection with an ERROR that retrying will not fix."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"relay refused ({code}): {message}")
        self.code = code
        self.relay_message = message


class RelayGoingAway(Exception):
    """The relay sent GOAWAY (it is shutting down): reconnect with back-off."""


def retryable(code: int) -> bool:
    """An ERROR that a later connection may not meet again (a busy relay, a slow join)."""
    return code in RETRY_CODES or 500 <= code <= 599


class ChunkSource(Protocol):
    """Where the writer takes BULK payloads from (our outgoing files)."""

    max_payload: int
    """The relay's cap on a payload, from each JOINED: a chunk above it is never sent."""

    def take_chunk(self, credit: int) -> bytes | None:
        """The next payload if it fits in ``credit`` bytes, else None."""
        ...


@final
class RelayConnection:
    """One seat's relay connection: frames in to the session, frames out from it.

    Args:
        link: the seat's link (seat, ticket, token for JOIN).
        session: fed with the peer's payloads; its records are written.
        chunks: the BULK payloads to write within credit.
        joined: called on JOINED with the peer's presence; the writer starts
            once it returns.
        peer_changed: called on PEER_UP (True) and PEER_DOWN (False).
        processed: called after each payload of the peer's was fed to the
            session, to handle what it caused.
        join_timeout: seconds for JOIN to be answered.
        ping_after: seconds without a write (or a read) before a PING goes out.
        dead_after: seconds of silence, or of one write waiting, before the
            relay counts as gone.
    """

    def __init__(
        self,
        link: Link,
        session: Session,
        chunks: ChunkSource,
        *,
        joined: Callable[[bool], Awaitable[None]],
        peer_changed: Callable[[bool], None],
        processed: Callable[[], Awaitable[None]],
        join_timeout: float,
        ping_after: float,
        dead_after: float,
    ) -> None:
        self._link = link
        self._session = session
        self._chunks = chunks
        self._joined = joined
        self._peer_changed = peer_changed
        self._processed = processed
        self.join_timeout = join_timeout
        self.ping_after = ping_after
        self.dead_after = dead_after
        self._connected = False
        self._credit = 0
        self._relay_out: list[Frame] = []
        """Frames of our own for the relay (BURN, PING), written before the session's."""
        self._pong: bytes | None = None
        """Data of the relay's latest PING, not yet answered (one PONG answers them all)."""
        self._barrier: tuple[bytes, trio.Event] | None = None
        self._last_rx = 0.0
        self._last_ping = 0.0
        self._last_write = 0.0
        self._wakeup = trio.Event()
        self._idle = trio.Event()
        self._dirty = False
        self._writing = False
        self._scope: trio.CancelScope | None = None
        self._draining = False
        self._restart_reason = ""

    @property
    def connected(self) -> bool:
        """Joined to the relay right now."""
        return self._connected

    @property
    def unsent_frames(self) -> int:
        """Frames made for the relay that the writer has not taken yet."""
        return self._session.queued_payloads + len(self._relay_out) + (self._pong is not None)

    # -- what the engine asks -----------------------------------------------------------

    def wake_writer(self) -> None:
        """Something may be ready to write: the writer looks again."""
        self._dirty = True
        self._wakeup.set()

    def queue(self, frame: Frame) -> None:
        """Queue a frame of our own for the relay (BURN); between connections, for the next one."""
        self._relay_out.append(frame)

    def restart(self, reason: str) -> None:
        """End the current connection (if any) so that the engine reconnects; ``reason`` shows."""
        if self._scope is not None:
            self._restart_reason = reason
            self._scope.cancel()

    def leave(self) -> bool:
        """End the current connection through its normal exit; False when there is none.

        Not by cancelling the transport: a transport then closes cleanly (a
        WebSocket close handshake cannot finish under cancellation).
        """
        if self._scope is None:
            return False
        self._scope.cancel()
        return True

    def stop_taking_payloads(self) -> None:
        """From now on the peer's payloads are not fed to the session (leaving).

        They stay unacknowledged and come again next time; the relay's own
        frames still count (the PONG :meth:`read_all` waits for, an ERROR).
        """
        self._draining = True

    async def flush(self) -> None:
        """Wait until everything queued for the control lane has been written.

        Bound it with a deadline: the connection may be down.
        """
        while self._connected and (
            self._dirty or self._writing or self._relay_out or self._pong is not None
        ):
            await self._idle.wait()

    async def read_all(self) -> None:
        """Until the relay answered a PING sent after everything else.

        Written is not enough: a relay may drop the last frames of a
        connection that closes right after them.
        """
        if not self._connected:
            return
        token = os.urandom(8)
        answered = trio.Event()
        self._barrier = (token, answered)
        self._relay_out.append(Ping(token))
        self.wake_writer()
        await answered.wait()

    def tick(self, now: float) -> None:
        """The dead-relay rules, once per engine tick."""
        if not self._connected:
            return
        silent = now - self._last_rx
        if silent > self.dead_after and self._scope is not None:
            self._scope.cancel()
        elif now - self._last_ping > self.ping_after and (
            silent > self.ping_after or now - self._last_write > self.ping_after
        ):
            # Also when the relay talks but we have not written: only a
            # write shows whether it still reads (see _write).  One
            # waiting PING is enough, however long the writer waits.
            self._last_ping = now
            if not any(isinstance(frame, Ping) for frame in self._relay_out):
                self._relay_out.append(Ping())

    # -- one transport connection ----------------------------------------------------------

    async def join(self, conn: FrameConnection) -> None:
        """JOIN the seat and wait for JOINED (within ``join_timeout``).

        Raises:
            trio.TooSlowError: no JOINED in time.
            RelayRefused, RelayGoingAway, TransportError, WireError: as :meth:`serve`.
        """
        link = self._link
        with trio.fail_after(self.join_timeout):
            await conn.send(Join(link.seat, link.ticket, link.token))
            while True:
                frame = await conn.receive()
                if isinstance(frame, Joined):
                    break
                self._relay_frame(frame)
        now = trio.current_time()
        self._chunks.max_payload = frame.max_payload
        self._connected = True
        self._credit = 0
        self._last_rx = self._last_ping = self._last_write = now
        await self._joined(frame.peer_online)

    async def serve(self, conn: FrameConnection) -> NoReturn:
        """Run the reader and the writer until the connection ends; it always ends by raising.

        Raises:
            RelayRefused: the relay sent an ERROR.
            RelayGoingAway: the relay sent GOAWAY.
            TransportError: the connection broke, the relay went silent or
                stopped reading, or :meth:`restart` / :meth:`leave` ended it.
            WireError: the relay sent a malformed frame.
        """
        failure: list[BaseException] = []

        async def guarded(task: Callable[[FrameConnection], Awaitable[None]]) -> None:
            try:
                await task(conn)
            except (
                TransportError,
                WireError,
                RelayRefused,
                RelayGoingAway,
                trio.TooSlowError,
            ) as exc:
                failure.append(exc)
                nursery.cancel_scope.cancel()

        async with trio.open_nursery() as nursery:
            self._scope = nursery.cancel_scope
            nursery.start_soon(guarded, self._reader)
            nursery.start_soon(guarded, self._writer)
        self._scope = None
        if failure:
            raise failure[0]
        reason, self._restart_reason = self._restart_reason, ""
        raise TransportError(reason or "the relay stopped answering")

    def reset(self) -> bool:
        """After a connection ended: nothing of it carries over.  True if it had joined."""
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
        return was

    def _relay_frame(self, frame: Frame) -> None:
        """Frames the relay itself sends (not the peer's payloads)."""
        if isinstance(frame, Credit):
            self._credit += frame.amount
            self.wake_writer()
        elif isinstance(frame, PeerUp):
            self._peer_changed(True)
        elif isinstance(frame, PeerDown):
            self._peer_changed(False)
        elif isinstance(frame, Ping):
            # Coalesced: a relay that sends PINGs and never reads must not
            # make replies pile up here; the latest data answers them all.
            self._pong = frame.data
            self.wake_writer()
        elif isinstance(frame, Pong):
            barrier = self._barrier
            if barrier is not None and frame.data == barrier[0]:
                barrier[1].set()
        elif isinstance(frame, Error):
            raise RelayRefused(frame.code, frame.message)
        elif isinstance(frame, GoAway):
            raise RelayGoingAway(frame.reason)
        else:
            raise TransportError(f"the relay sent an unexpected {frame.kind.name} frame")

    async def _reader(self, conn: FrameConnection) -> None:
        session = self._session
        while True:
            frame = await conn.receive()
            self._last_rx = trio.current_time()
            if self._draining:
                # Leaving: see stop_taking_payloads.
                if not isinstance(frame, Control | Bulk | PeerUp | PeerDown):
                    self._relay_frame(frame)
                continue
            if isinstance(frame, Control):
                session.receive_control(frame.payload)
            elif isinstance(frame, Bulk):
                session.receive_bulk(frame.payload)
            else:
                self._relay_frame(frame)
            await self._processed()
            self.wake_writer()

    async def _writer(self, conn: FrameConnection) -> None:
        while True:
            self._wakeup = trio.Event()
            self._dirty = False
            frames = self._relay_out
            self._relay_out = []
            if self._pong is not None:
                frames.append(Pong(self._pong))
                self._pong = None
            # The session makes CONTROL payloads only; chunks come from
            # encrypt_chunk via the file streams.
            frames.extend(Control(payload) for payload in self._session.data_to_send())
            if frames:
                self._writing = True
                await self._write(conn.send_many(frames))
                self._writing = False
                continue
            chunk = self._chunks.take_chunk(self._credit)
            if chunk is not None:
                self._credit -= len(chunk)
                self._writing = True
                await self._write(conn.send(Bulk(chunk)))
                self._writing = False
                continue
            self._idle.set()
            self._idle = trio.Event()
            await self._wakeup.wait()

    async def _write(self, write: Awaitable[None]) -> None:
        """One write, within ``dead_after``: a relay that stops reading counts as gone.

        Without this deadline a relay could keep us alive with PINGs while
        reading nothing, and everything we owe it would wait forever.
        """
        with trio.move_on_after(self.dead_after) as scope:
            await write
            self._last_write = trio.current_time()
        if scope.cancelled_caught:
            raise TransportError(
                f"the relay stopped reading (a write waited over {self.dead_after:g} s)"
            )
