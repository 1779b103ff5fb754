"""A connection that holds a seat: its reader, its one writer, and how it waits.

Rules and invariants
--------------------
* An :class:`Occupant` is one joined connection.  Its reader runs in the
  connection's own task (one task fewer per connection) and passes what it
  reads to the other seat's lanes; its writer is the ONLY code that writes
  the connection, draining its :class:`~m42d.relay.lanes.Lanes` in the
  order they define (control, CREDIT, then at most one bulk frame).
* CONTROL and BULK from a connection that supports it travel as
  :class:`~m42d.wire.Relayed` (their encoded bytes): counted and checked,
  never decoded or re-encoded.  A writer whose connection cannot send them
  decodes them first.
* Flow control: a relayed CONTROL waits (the reader stops) while the
  receiver's control lane or address is over budget; a BULK spends the
  sender's credit (:class:`~m42d.relay.credit.CreditLedger`, owned by the
  room), more than the credit is 402, and waits only for the frame-overhead
  budget.  Credit that a written, dropped or discarded frame frees goes back
  to whoever holds the sending seat; that occupant's writer writes it.
* Every write must progress within ``write_timeout``: one cancel scope
  around the writer carries that deadline, re-armed before each write and
  disarmed while the writer waits for work (no scope per write).  Between
  writes it waits for work or for its :class:`~m42d.relay.timers.Deadlines`.
* When a write fails because the client closed or broke its side, the
  reader is not cancelled at once: it may still take frames the client sent
  just before (its last ACKs), until it sees the end or ``close_timeout``.
* A terminated occupant (replaced, burned, protocol error, idle, expired)
  leaves its seat at once: its lanes are dropped, their credit goes back,
  the other seat hears PEER_DOWN; its writer then sends one final ERROR
  within ``close_timeout`` and the connection closes.  A client terminated
  for what it sent (past credit, too large) may still be sending: the
  reader reads and drops it until the client closes or ``close_timeout``
  passes, so the close does not reset the connection before the client
  has read its ERROR.

Why this module is a little over 500 lines: it is the one class that owns
a joined connection's reader and its single writer; the ordering rules
above (credit, lanes, termination, draining) tie the two together, so they
are read and changed together.
"""

from __future__ import annotations

import contextlib
import logging
import math
from typing import TYPE_CHECKING, Final, final

import trio

from m42d.errors import ConnectionClosed, TransportError, WireError
from m42d.relay.lanes import FRAME_COST, RELAY_FRAME_SIZE, AddressQueue, Lanes, bulk_budget
from m42d.relay.timers import Deadlines, Due
from m42d.ticket import Seat
from m42d.transport import as_relaying
from m42d.wire import (
    Bulk,
    Burn,
    Control,
    Error,
    ErrorCode,
    Frame,
    GoAway,
    Joined,
    Lane,
    PeerDown,
    PeerUp,
    Ping,
    Pong,
    Relayed,
    error_code_for,
)

if TYPE_CHECKING:
    from m42d.relay.room import Room, RoomHost
    from m42d.transport import FrameConnection

__all__ = ["Occupant"]

logger = logging.getLogger("m42d.relay")

_CONTROL: Final = Lane.CONTROL.value
_BULK: Final = Lane.BULK.value

_DUE_ERRORS: Final = {
    Due.IDLE: (ErrorCode.JOIN_TIMEOUT, "no frame received within the idle timeout"),
    Due.EXPIRED: (ErrorCode.EXPIRED, None),
}


@final
class Occupant:
    """One joined connection: its seat, its lanes, its reader and its writer."""

    def __init__(
        self,
        host: RoomHost,
        room: Room,
        seat: Seat,
        connection: FrameConnection,
        queue: AddressQueue | None = None,
        *,
        address: str = "",
    ) -> None:
        self.host = host
        self.address = address
        """The per-address key (never logged unless addresses are)."""
        self.room = room
        self.seat = seat
        self.connection = connection
        self.limits = host.limits
        self.lanes = Lanes()
        self.queue = queue if queue is not None else AddressQueue()
        """Its address's count (a private one for an address-less transport)."""
        self.queue.peers += 1
        self.final: Error | None = None
        self.closing = False
        self._draining = False
        self.deadlines = Deadlines(self.limits, trio.current_time(), room.ends_at)
        self._sending = room.credit[seat]
        """The credit of what this connection sends."""
        self._receiving = room.credit[seat.other]
        """The credit of what this connection receives (its bulk lane's bytes)."""
        self._other_seat = seat.other
        self._bulk_budget = bulk_budget(self.limits)
        self._wake = trio.Event()
        self._space = trio.lowlevel.ParkingLot()
        self._scope: trio.CancelScope | None = None
        self._write_scope = trio.CancelScope()
        self._relaying = as_relaying(connection)

    def __repr__(self) -> str:
        return f"<Occupant {self.seat.value} of {self.room!r}>"

    # -- called by the relay ------------------------------------------------------

    def start_session(self) -> None:
        """Queue JOINED and the first CREDIT; tell the other seat we are up."""
        limits = self.limits
        other = self.room.other(self.seat)
        self.put_relay(
            Joined(
                peer_online=other is not None,
                max_payload=limits.max_payload,
                bulk_window=limits.bulk_window,
            )
        )
        self._sending.new_sender(limits.bulk_window, limits.max_payload)
        self.wake()
        if other is not None:
            other.put_relay(PeerUp())

    async def run(self) -> None:
        """Relay until the connection ends or the occupant is terminated; never raises."""
        try:
            async with trio.open_nursery() as nursery:
                self._scope = nursery.cancel_scope
                nursery.start_soon(self._writer)
                await self._reader()
        finally:
            self._detach()
            self.closing = True

    def go_away(self, reason: str) -> None:
        """Ask the client to reconnect (GOAWAY 0); closed after close_timeout if it stays."""
        if self.closing:
            return
        self.put_relay(GoAway(0, reason))
        self._stop_after(self.limits.close_timeout)

    def terminate(self, final: Error) -> None:
        """Leave the seat now; the writer sends ``final`` and closes."""
        if self.closing:
            return
        self.final = final
        self._detach()
        self.closing = True
        self._wake.set()

    def wake(self) -> None:
        """There is something to write (a frame, or credit of this seat's)."""
        self._wake.set()

    # -- lanes ----------------------------------------------------------------------

    async def put_control(self, frame: Frame | Relayed, n: int) -> None:
        """Queue a frame relayed from the other seat (``n`` payload bytes).

        Waits while the control lane is full or the address is over
        ``max_queued_per_address``.
        """
        cost = n + FRAME_COST
        limits = self.limits
        queue = self.queue
        while not self.closing:
            if not self.lanes.control_has_room(cost, limits):
                await self._space.park()
            elif queue.bytes + cost > limits.max_queued_per_address:
                await queue.space.park()
            else:
                self._push_control(frame, cost)
                return
        self.host.counters.frames_dropped += 1

    def put_relay(self, frame: Frame) -> None:
        """Queue a frame the relay makes; never waits."""
        if self.closing:
            return
        if len(self.lanes.control) >= 2 * self.limits.control_queue:
            self.terminate(Error.from_code(ErrorCode.UNAVAILABLE, "client is not reading"))
            return
        self._push_control(frame, RELAY_FRAME_SIZE + FRAME_COST)

    def _push_control(self, frame: Frame | Relayed, cost: int) -> None:
        self.lanes.push_control(frame, cost)
        self._charge(cost)
        self.host.counters.queued_control_frames += 1
        self._wake.set()

    def bulk_has_room(self, n: int) -> bool:
        """Whether a BULK of ``n`` payload bytes may be queued now without waiting."""
        cost = n + FRAME_COST
        return self.lanes.bulk_has_room(cost, self._bulk_budget) and (
            self.queue.bytes + cost <= self.limits.max_queued_per_address
        )

    async def wait_bulk_room(self, n: int) -> None:
        """Until :meth:`bulk_has_room` (or this occupant closes)."""
        cost = n + FRAME_COST
        while not self.closing:
            if not self.lanes.bulk_has_room(cost, self._bulk_budget):
                await self._space.park()
            elif self.queue.bytes + cost > self.limits.max_queued_per_address:
                await self.queue.space.park()
            else:
                return

    def put_bulk(self, frame: Bulk | Relayed, n: int) -> None:
        cost = n + FRAME_COST
        self.lanes.push_bulk(frame, cost)
        self._receiving.queue(n)
        self._charge(cost)
        self.host.counters.add_queued_bulk(n)
        self._wake.set()

    def _charge(self, cost: int) -> None:
        self.queue.bytes += cost
        self.host.counters.add_queued(cost)

    def _discharge(self, cost: int) -> None:
        """``cost`` bytes left this connection's lanes: wake whoever waits for room."""
        queue = self.queue
        queue.bytes -= cost
        self.host.counters.queued_bytes -= cost
        if self._space:
            self._space.unpark_all()
        if queue.space:
            queue.space.unpark_all()

    def _unqueue_bulk(self, n: int, *, more_coming: bool = False) -> None:
        """``n`` payload bytes left this connection's bulk lane: the sender gets them back."""
        if n <= 0:
            return
        self.host.counters.queued_bulk_bytes -= n
        if self._receiving.unqueue(n, more_coming=more_coming):
            sender = self.room.other(self.seat)
            if sender is not None:
                sender.wake()

    def _give_back(self, n: int) -> None:
        """A BULK of ours was dropped (no receiver): its credit comes straight back."""
        if self._sending.give_back(n):
            self.wake()

    def _detach(self) -> None:
        """Leave the seat (once): drop the lanes, return their credit, tell the other seat."""
        if self.closing:
            return
        lanes = self.lanes
        self.host.counters.queued_control_frames -= len(lanes.control)
        # Everything still counted, the write in progress included (its
        # completion will not discharge it: the occupant is closing by then).
        self._discharge(lanes.clear())
        self.queue.peers -= 1
        self._space.unpark_all()
        self._unqueue_bulk(self._receiving.queued)
        room = self.room
        if room.seats.get(self.seat) is self:
            del room.seats[self.seat]
            self._sending.sender_left()
            other = room.other(self.seat)
            if other is not None:
                other.put_relay(PeerDown())
        self.host.forget(self)

    def _stop(self) -> None:
        if self._scope is not None:
            self._scope.cancel()

    def _stop_after(self, seconds: float) -> None:
        """End the connection ``seconds`` from now unless the reader ends it first."""
        if self._scope is not None:
            self._scope.deadline = min(self._scope.deadline, trio.current_time() + seconds)

    # -- reader ---------------------------------------------------------------------

    async def _reader(self) -> None:
        relaying = self._relaying
        deadlines = self.deadlines
        try:
            while relaying is None and not self.closing:
                frame = await self.connection.receive()
                deadlines.last_rx = trio.current_time()
                await self._on_frame(frame)
            while relaying is not None and not self.closing:
                batch = await relaying.receive_relayed()
                deadlines.last_rx = trio.current_time()
                for item in batch:
                    if self.closing:
                        break
                    if type(item) is Relayed:
                        if item.bulk:
                            waits_for = self._on_bulk(item, item.size)
                            if waits_for is not None:
                                await self._bulk_when_room(waits_for, item, item.size)
                        else:
                            await self._on_control(item, item.size)
                    else:
                        await self._on_frame(item)
            await self._drain()
        except WireError as exc:
            self.terminate(Error.from_code(error_code_for(exc)))
        except TransportError:  # ConnectionClosed included
            self._stop()

    async def _drain(self) -> None:
        """Read and drop what a terminated client still sends, until it closes.

        Closing a TCP socket with bytes unread sends a reset, and a client
        whose write failed on it may never read the ERROR that came first
        (a TLS stream is broken for reading too, then).  The writer bounds
        this by ``close_timeout`` once the ERROR is out.
        """
        self._draining = True
        relaying = self._relaying
        with contextlib.suppress(WireError, TransportError):
            while True:
                if relaying is not None:
                    await relaying.receive_relayed()
                else:
                    await self.connection.receive()

    def _on_bulk(self, frame: Bulk | Relayed, n: int) -> Occupant | None:
        """Check and queue a BULK; the receiver it must wait for, if its lane is full."""
        counters = self.host.counters
        counters.frames[_BULK] += 1
        counters.bytes[_BULK] += n
        ledger = self._sending
        before = ledger.credit
        if n > self.limits.max_payload:
            self.terminate(Error.from_code(ErrorCode.TOO_LARGE))
        elif not ledger.spend(n):
            self.terminate(Error.from_code(ErrorCode.CREDIT_EXCEEDED))
        else:
            if ledger.stalled(before):
                counters.credit_stalls += 1
            other = self.room.seats.get(self._other_seat)
            if other is None or other.closing:
                counters.frames_dropped += 1
                self._give_back(n)
            elif other.bulk_has_room(n):
                other.put_bulk(frame, n)
            else:
                return other
        return None

    async def _relay_bulk(self, frame: Bulk | Relayed, n: int) -> None:
        waits_for = self._on_bulk(frame, n)
        if waits_for is not None:
            await self._bulk_when_room(waits_for, frame, n)

    async def _bulk_when_room(self, other: Occupant, frame: Bulk | Relayed, n: int) -> None:
        """Stop reading until ``other`` has room for this BULK (credit already spent)."""
        await other.wait_bulk_room(n)
        if other.closing or self.closing:
            self.host.counters.frames_dropped += 1
            self._give_back(n)  # as for an absent receiver
        else:
            other.put_bulk(frame, n)

    async def _on_control(self, frame: Control | Relayed, n: int) -> None:
        counters = self.host.counters
        counters.frames[_CONTROL] += 1
        counters.bytes[_CONTROL] += n
        if n > self.limits.max_payload:
            self.terminate(Error.from_code(ErrorCode.TOO_LARGE))
            return
        other = self.room.seats.get(self._other_seat)
        if other is None:
            counters.frames_dropped += 1
        else:
            await other.put_control(frame, n)

    async def _on_frame(self, frame: Frame | Relayed) -> None:
        if isinstance(frame, Bulk):
            await self._relay_bulk(frame, len(frame.payload))
        elif isinstance(frame, Control):
            await self._on_control(frame, len(frame.payload))
        elif isinstance(frame, Relayed):  # pragma: no cover - _reader dispatches these
            if frame.bulk:
                await self._relay_bulk(frame, frame.size)
            else:
                await self._on_control(frame, frame.size)
        elif isinstance(frame, Ping):
            self.put_relay(Pong(frame.data))
        elif isinstance(frame, Pong):
            pass
        elif isinstance(frame, Burn):
            await self.host.burn(self)
        else:
            self.terminate(
                Error.from_code(ErrorCode.BAD_FRAME, f"{frame.kind.name} is not allowed after JOIN")
            )

    # -- writer ---------------------------------------------------------------------

    def _has_work(self) -> bool:
        # The ledger is the seat's: once this connection is leaving, a new
        # occupant's credit must not be written here.
        lanes = self.lanes
        return bool(
            lanes.control
            or (self._sending.pending and not self.closing)
            or (lanes.bulk and self.final is None)
        )

    async def _writer(self) -> None:
        scope = self._write_scope
        grace = False
        try:
            with scope:
                while True:
                    await self._wait_for_work()
                    if self._has_work():
                        await self._write_next()
                    elif self.final is not None:
                        scope.deadline = math.inf
                        await self._write_final(self.final)
                        # A reader still reading lets the client close first.
                        grace = self._draining
                        return
            if scope.cancelled_caught:
                self.host.counters.timeouts["write"] += 1
                logger.debug("closing %r: write timed out", self)
        except TransportError:
            # The client closed or broke its side: frames it sent before that
            # may still be on their way to our reader (its last ACKs, often).
            # Let the reader take them until it sees the end, within
            # close_timeout, instead of cancelling it with them unread.
            grace = True
        finally:
            if grace:
                self._stop_after(self.limits.close_timeout)
            else:
                self._stop()

    async def _wait_for_work(self) -> None:
        """Until there is something to write or a deadline falls due (handled here)."""
        deadlines = self.deadlines
        while True:
            due = deadlines.due(trio.current_time()) if not self.closing else None
            if due is Due.PING:
                self.put_relay(Ping())
            elif due is not None:
                self.host.counters.timeouts[due.value] += 1
                code, message = _DUE_ERRORS[due]
                self.terminate(Error.from_code(code, message))
            if self._has_work() or self.final is not None:
                return
            self._wake = trio.Event()
            self._write_scope.deadline = math.inf
            with trio.move_on_at(deadlines.next_at()):
                await self._wake.wait()

    async def _write_next(self) -> None:
        """One write: queued control frames, pending CREDIT, then at most one bulk frame."""
        lanes = self.lanes
        credit = 0 if self.closing else self._sending.take_pending()
        batch = lanes.take(credit, bulk_allowed=self.final is None)
        self.host.counters.queued_control_frames -= batch.controls
        self._charge(lanes.copies)
        # Re-arm the write deadline (a heap push) only when it moved by more
        # than 1/8 of the timeout: the deadline is write_timeout, give or take that.
        timeout = self.limits.write_timeout
        target = trio.current_time() + timeout
        scope = self._write_scope
        if not target - timeout / 8 <= scope.deadline <= target:
            scope.deadline = target
        if self._relaying is not None:
            await self._relaying.send_batch(batch.items)
        else:
            await self.connection.send_many(
                [item.frame() if type(item) is Relayed else item for item in batch.items]
            )
        if self.closing:  # _detach discharged and gave back everything
            return
        self._discharge(lanes.written(batch))
        if batch.bulk_size >= 0:
            # The sender's CREDIT gathers (see CreditLedger): one frame per
            # CREDIT_BATCH, or sooner when the sender runs low.
            self._unqueue_bulk(batch.bulk_size, more_coming=bool(lanes.bulk))

    async def _write_final(self, final: Error | None) -> None:
        if final is None:  # pragma: no cover - terminate() always sets it
            return
        with trio.move_on_after(self.limits.close_timeout):
            with contextlib.suppress(ConnectionClosed, TransportError):
                await self.connection.send(final)
