"""Rooms, seats and the two lanes of each joined connection.

Rules and invariants
--------------------

* A :class:`Room` exists while at least one of its two seats is occupied; it
  is created by the first JOIN and forgotten when the last seat empties.
  Nothing about a room outlives its connections except a burn.
* A seat holds at most one :class:`Peer` (a joined connection).  A newer JOIN
  for an occupied seat wins: the old peer gets ``ERROR 409`` and is closed,
  and the other seat sees ``PEER_DOWN`` then ``PEER_UP`` (a new session).
* Each peer has two outgoing lanes, filled by the *other* seat's reader (and
  by the relay itself), and ONE writer task, the only code that writes its
  connection.  Each write is: the control lane's frames (up to
  ``BATCH_BYTES``), then any pending CREDIT, then at most ONE bulk frame
  (only when the control lane was drained), in a single ``send``.  So a
  control frame waits behind at most one bulk frame that is already being
  written.
* CONTROL and BULK from a connection that supports it travel as
  :class:`~m42d.wire.Relayed` (their encoded bytes): counted and checked,
  never decoded or re-encoded.  A writer whose connection cannot send them
  decodes them first.
* Every write must progress within ``write_timeout``: one cancel scope
  around the writer carries that deadline, re-armed before each write and
  disarmed while the writer waits for work (no scope per write).
* Memory is counted in bytes: every queued frame costs its payload plus
  :data:`FRAME_COST` (the objects around it), from the moment it is queued
  until its write has *completed* (a batch being written still holds its
  memory).  Each peer counts what is queued towards it per lane, and each
  client address (:class:`AddressQueue`, keyed like every per-address
  limit) what is queued towards all its peers.
* Control lane: a queue of frames.  Frames relayed from the other seat wait
  while the lane holds ``control_queue`` frames or adding the frame would
  pass ``control_window`` bytes, or while the receiver's address holds
  ``max_queued_per_address`` bytes: the sender's reader stops meanwhile.
  Frames the relay makes (PONG, PEER_UP, PEER_DOWN, GOAWAY, PING) never
  wait, but a peer that lets them pile up to twice ``control_queue`` is not
  reading and is closed.  Credit grants are not queued: they add to one
  pending number sent as a single CREDIT frame.
* Bulk lane: credit bounds its payload to the window; its frames' overhead
  is bounded too (:meth:`Peer.bulk_budget`): a sender of many tiny BULK
  frames, or one towards an address over its budget, waits (its reader
  stops) instead of making the relay hold 111 bytes per byte of credit.
* Bulk credit, per direction S -> R: ``credit(S) + queued(R) <= window``,
  where ``queued(R)`` counts the BULK payload bytes in R's bulk lane,
  including the frame being written.  So a room holds at most two windows of
  bulk plus one frame per writer, and the relay never has to stop reading a
  connection because of bulk.

  - JOINED announces the window; a new sender connection is then granted
    ``window - queued(R)`` with CREDIT (the frames its predecessor left).
  - Every BULK costs its payload length; more than the credit is
    ``ERROR 402``, then close.
  - Credit comes back to the sender seat's current connection when R's
    writer has written the frame, when R's lanes are discarded (R left), or
    at once when R is absent and the frame is dropped.  Returned credit
    gathers into one CREDIT frame, written once ``CREDIT_BATCH`` has
    gathered, or once the sender holds less than ``max(window / 2,
    max_payload)`` and R's bulk lane is empty (no further release is sure
    to follow).  A sender that cannot send a full frame is below that mark,
    so it is never stranded; one that still holds half a window is not sent
    a CREDIT per frame.
* When a write fails because the client closed or broke its side, the
  reader is not cancelled at once: it may still take frames the client sent
  just before (its last ACKs), until it sees the end or ``close_timeout``.
* Any frame with no one in the other seat is dropped.  A terminated peer
  (replaced, burned, protocol error, idle) drops its lanes, releases their
  credit, sends one final ERROR within ``close_timeout`` and closes.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import logging
import math
from typing import TYPE_CHECKING, Final, Protocol, final

import trio

from m42d.errors import ConnectionClosed, TransportError, WireError
from m42d.relay.limits import FRAME_COST
from m42d.ticket import Seat
from m42d.wire import (
    Bulk,
    Burn,
    Control,
    Credit,
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
    from m42d.relay.limits import RelayLimits
    from m42d.relay.stats import RelayCounters
    from m42d.transport import FrameConnection

from m42d.transport import as_relaying

__all__ = [
    "FRAME_COST",
    "AddressQueue",
    "Peer",
    "Room",
    "RoomHost",
    "address_queue_bound",
    "peer_queue_bound",
    "room_tag",
]

logger = logging.getLogger("m42d.relay")

BATCH_BYTES: Final = 256 * 1024
"""Control frames written in one go at most; keeps one write bounded."""

WRITE_COPIES: Final = 2
"""Copies of a batch that exist while it is written: the joined buffer, and the
transport's framed or encrypted one (TLS keeps the whole batch encrypted in its
outgoing buffer until the socket takes it)."""

RELAY_FRAME_SIZE: Final = 16
"""What a frame the relay makes (PONG, CREDIT, PEER_UP...) counts as payload."""

CREDIT_BATCH: Final = 256 * 1024
"""Returned credit is sent once this much has gathered (or the sender runs low): one
CREDIT write per four 64 KiB frames instead of one per frame.  Each CREDIT costs the
relay a TLS write and the sender a wake-up; per frame, that was ~13% of the relay's
CPU and ~15% of the sending client's under bulk."""

_CONTROL: Final = Lane.CONTROL.value
_BULK: Final = Lane.BULK.value


def relay_frames_bound(limits: RelayLimits) -> int:
    """Bytes of the relay's own frames a peer's control lane may hold (they never wait)."""
    return 2 * limits.control_queue * (RELAY_FRAME_SIZE + FRAME_COST)


def peer_queue_bound(limits: RelayLimits) -> int:
    """The most a peer's lanes (and the write in progress, copies included) can cost."""
    control = limits.control_window + relay_frames_bound(limits)
    window = limits.bulk_window
    bulk = window + FRAME_COST * (window // limits.max_payload + 1)
    batch = min(control, BATCH_BYTES + limits.max_payload + FRAME_COST)
    return control + bulk + WRITE_COPIES * (batch + limits.max_payload + FRAME_COST)


def address_queue_bound(limits: RelayLimits, peers: int) -> int:
    """The most ``peers`` joined connections of one address can make the relay queue.

    Relayed frames wait for the address's budget; the relay's own frames do
    not, and a write in progress adds its copies of what it writes.
    """
    lanes = limits.max_queued_per_address + peers * relay_frames_bound(limits)
    return (1 + WRITE_COPIES) * lanes


def room_tag(room_id: bytes) -> str:
    """A short, non-reversible label for logs: never log a room id in full."""
    return hashlib.sha256(room_id).hexdigest()[:8]


class RoomHost(Protocol):
    """What a peer needs from the relay that owns it."""

    @property
    def limits(self) -> RelayLimits: ...

    @property
    def counters(self) -> RelayCounters: ...

    async def burn(self, peer: Peer) -> None:
        """Burn ``peer``'s room: deny-list it and close both seats."""
        ...

    def forget(self, peer: Peer) -> None:
        """``peer`` left its seat; drop the room if it is empty now."""
        ...


@final
class Room:
    """Two seats; only ever touched from the relay's trio thread."""

    def __init__(self, room_id: bytes, expires: int, ends_at: float = math.inf) -> None:
        self.room_id = room_id
        self.expires = expires
        self.ends_at = ends_at
        """trio time at which the ticket expires: both seats are then closed with 410."""
        self.seats: dict[Seat, Peer] = {}

    def __repr__(self) -> str:
        return f"<Room {room_tag(self.room_id)} seats={sorted(s.value for s in self.seats)}>"

    def other(self, seat: Seat) -> Peer | None:
        return self.seats.get(seat.other)


@final
class AddressQueue:
    """Bytes queued towards the joined connections of one client address.

    Charged to the *receiving* address: what a client that does not read
    makes the relay hold counts against its own address, however many
    rooms (and senders) it spreads over; a sender cannot fill another
    address's budget beyond the lanes of rooms it shares with it.
    """

    __slots__ = ("bytes", "peers", "space")

    def __init__(self) -> None:
        self.bytes = 0
        self.peers = 0
        self.space = trio.lowlevel.ParkingLot()
        """Senders waiting for this address to drain below its budget."""


class _IdleTimeout(Exception):
    """Nothing arrived from the client within ``idle_timeout``."""


class _RoomExpired(Exception):
    """The room's ticket expired while this seat was joined."""


@final
class Peer:
    """One joined connection: its seat, its two outgoing lanes, its reader and writer."""

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
        # Lanes cost memory per connection (a deque is ~760 bytes even empty;
        # section d of the benchmarks): the control lane is a list (bounded
        # by 2 * control_queue, taken by the writer a slice at a time), the
        # bulk lane a deque made on the first BULK.
        self.control: list[Frame | Relayed] = []
        self.bulk: collections.deque[Bulk | Relayed] | None = None
        self.bulk_bytes = 0
        """BULK payload bytes queued to this peer, including the one being written."""
        self.bulk_cost = 0
        self.control_cost = 0
        """Bytes (payload + FRAME_COST per frame) queued to this peer per lane,
        including the write in progress."""
        self._copies = 0
        """What the write in progress holds beyond its frames (WRITE_COPIES of them)."""
        self.queue = queue if queue is not None else AddressQueue()
        """Its address's count (a private one for an address-less transport)."""
        self.queue.peers += 1
        self.credit = 0
        """BULK payload bytes this peer may still send (as a sender)."""
        self.pending_credit = 0
        """Credit granted here but not yet written in a CREDIT frame."""
        self.final: Error | None = None
        self.closing = False
        self.last_rx = trio.current_time()
        self._last_ping = self.last_rx
        self._wake = trio.Event()
        self._space = trio.lowlevel.ParkingLot()
        self._scope: trio.CancelScope | None = None
        self._write_scope = trio.CancelScope()
        self._relaying = as_relaying(connection)
        self._other_seat = seat.other
        self._bulk_budget = self.bulk_budget()

    def __repr__(self) -> str:
        return f"<Peer {self.seat.value} of {self.room!r}>"

    # -- called by the relay ------------------------------------------------------

    def start_session(self, other: Peer | None) -> None:
        """Queue JOINED and the first CREDIT; tell ``other`` we are up."""
        window = self.limits.bulk_window
        self.put_relay(
            Joined(
                peer_online=other is not None,
                max_payload=self.limits.max_payload,
                bulk_window=window,
            )
        )
        self.grant(window - (other.bulk_bytes if other is not None else 0))
        if other is not None:
            other.put_relay(PeerUp())

    async def run(self) -> None:
        """Relay until the connection ends or the peer is terminated; never raises."""
        try:
            async with trio.open_nursery() as nursery:
                self._scope = nursery.cancel_scope
                nursery.start_soon(self._writer)
                await self._reader()  # in this task: one task fewer per connection
        finally:
            self._detach()
            self.closing = True

    def go_away(self, reason: str) -> None:
        """Ask the client to reconnect (GOAWAY 0), and close if it has not left by close_timeout."""
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

    # -- lanes ----------------------------------------------------------------------

    async def put_control(self, frame: Frame | Relayed, n: int) -> None:
        """Queue a frame relayed from the other seat (``n`` payload bytes).

        Waits while the lane is full (``control_queue`` frames, or
        ``control_window`` bytes unless it is empty) or the address is over
        ``max_queued_per_address``.
        """
        cost = n + FRAME_COST
        limits = self.limits
        queue = self.queue
        while not self.closing:
            if len(self.control) >= limits.control_queue or (
                self.control_cost and self.control_cost + cost > limits.control_window
            ):
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
        if len(self.control) >= 2 * self.limits.control_queue:
            self.terminate(Error.from_code(ErrorCode.UNAVAILABLE, "client is not reading"))
            return
        self._push_control(frame, RELAY_FRAME_SIZE + FRAME_COST)

    def _push_control(self, frame: Frame | Relayed, cost: int) -> None:
        self.control.append(frame)
        self.control_cost += cost
        self._charge(cost)
        self.host.counters.queued_control_frames += 1
        self._wake.set()

    def _charge(self, cost: int) -> None:
        self.queue.bytes += cost
        self.host.counters.add_queued(cost)

    def _discharge(self, cost: int) -> None:
        """``cost`` bytes left this peer's lanes: wake whoever waits for room."""
        queue = self.queue
        queue.bytes -= cost
        self.host.counters.queued_bytes -= cost
        if self._space:
            self._space.unpark_all()
        if queue.space:
            queue.space.unpark_all()

    def bulk_budget(self) -> int:
        """Bytes the bulk lane may cost: a window of full frames and their overhead."""
        limits = self.limits
        window = limits.bulk_window
        return window + FRAME_COST * (window // limits.max_payload + 1)

    def bulk_has_room(self, n: int) -> bool:
        """Whether a BULK of ``n`` payload bytes may be queued now without waiting."""
        cost = n + FRAME_COST
        return (not self.bulk_cost or self.bulk_cost + cost <= self._bulk_budget) and (
            self.queue.bytes + cost <= self.limits.max_queued_per_address
        )

    async def wait_bulk_room(self, n: int) -> None:
        """Until :meth:`bulk_has_room` (or this peer closes)."""
        cost = n + FRAME_COST
        while not self.closing:
            if self.bulk_cost and self.bulk_cost + cost > self._bulk_budget:
                await self._space.park()
            elif self.queue.bytes + cost > self.limits.max_queued_per_address:
                await self.queue.space.park()
            else:
                return

    def put_bulk(self, frame: Bulk | Relayed, n: int) -> None:
        lane = self.bulk
        if lane is None:
            lane = self.bulk = collections.deque()
        lane.append(frame)
        self.bulk_bytes += n
        cost = n + FRAME_COST
        self.bulk_cost += cost
        self._charge(cost)
        self.host.counters.add_queued_bulk(n)
        self._wake.set()

    def grant(self, amount: int, *, more_coming: bool = False) -> None:
        """Give this peer (as a sender) ``amount`` more bytes of bulk credit.

        The CREDIT frame is written once :data:`CREDIT_BATCH` bytes have
        gathered, or when this peer holds less than its low-water mark
        (``max(window / 2, max_payload)``) and no further grant is sure to
        follow.  ``more_coming`` says one is: the receiver's bulk lane still
        holds frames, each of which will be released here in turn.  So a
        sender below the mark (which includes one that cannot send a full
        frame) always gets its CREDIT by the last release, and one that still
        holds half a window is not interrupted for every frame.
        """
        if self.closing or amount <= 0:
            return
        self.credit += amount
        self.pending_credit += amount
        if self.pending_credit >= CREDIT_BATCH or (
            not more_coming
            and self.credit - self.pending_credit
            < max(self.limits.bulk_window >> 1, self.limits.max_payload)
        ):
            self._wake.set()

    def _release_bulk(self, amount: int, *, more_coming: bool = False) -> None:
        """``amount`` payload bytes left this peer's bulk lane: the sender seat gets them back."""
        if amount <= 0:
            return
        self.bulk_bytes -= amount
        self.host.counters.queued_bulk_bytes -= amount
        sender = self.room.other(self.seat)
        if sender is not None:
            sender.grant(amount, more_coming=more_coming)

    def _detach(self) -> None:
        """Leave the seat (once): drop the lanes, return their credit, tell the other seat."""
        if self.closing:
            return
        self.host.counters.queued_control_frames -= len(self.control)
        self.control.clear()
        self.bulk = None
        # Everything still counted, the write in progress included (its
        # completion will not discharge it: the peer is closing by then).
        self._discharge(self.control_cost + self.bulk_cost + self._copies)
        self.control_cost = self.bulk_cost = self._copies = 0
        self.queue.peers -= 1
        self._space.unpark_all()
        self._release_bulk(self.bulk_bytes)
        room = self.room
        if room.seats.get(self.seat) is self:
            del room.seats[self.seat]
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
        try:
            while relaying is None and not self.closing:
                frame = await self.connection.receive()
                self.last_rx = trio.current_time()
                await self._on_frame(frame)
            while relaying is not None and not self.closing:
                batch = await relaying.receive_relayed()
                self.last_rx = trio.current_time()
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
        except WireError as exc:
            self.terminate(Error.from_code(error_code_for(exc)))
        except TransportError:  # ConnectionClosed included
            self._stop()

    def _on_bulk(self, frame: Bulk | Relayed, n: int) -> Peer | None:
        """Check and queue a BULK; the receiver it must wait for, if its lane is full."""
        counters = self.host.counters
        counters.frames[_BULK] += 1
        counters.bytes[_BULK] += n
        if n > self.limits.max_payload:
            self.terminate(Error.from_code(ErrorCode.TOO_LARGE))
        elif n > self.credit:
            self.terminate(Error.from_code(ErrorCode.CREDIT_EXCEEDED))
        else:
            before = self.credit
            self.credit -= n
            if before >= self.limits.max_payload > self.credit:
                counters.credit_stalls += 1
            other = self.room.seats.get(self._other_seat)
            if other is None or other.closing:
                counters.frames_dropped += 1
                self.grant(n)
            elif other.bulk_has_room(n):
                other.put_bulk(frame, n)
            else:
                return other
        return None

    async def _relay_bulk(self, frame: Bulk | Relayed, n: int) -> None:
        waits_for = self._on_bulk(frame, n)
        if waits_for is not None:
            await self._bulk_when_room(waits_for, frame, n)

    async def _bulk_when_room(self, other: Peer, frame: Bulk | Relayed, n: int) -> None:
        """Stop reading until ``other`` has room for this BULK (credit already spent)."""
        await other.wait_bulk_room(n)
        if other.closing or self.closing:
            self.host.counters.frames_dropped += 1
            self.grant(n)  # as for an absent receiver
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

    async def _writer(self) -> None:
        scope = self._write_scope
        grace = False
        try:
            with scope:
                while True:
                    await self._wait_for_work()
                    if self.control or self.pending_credit or (self.bulk and self.final is None):
                        await self._write_next()
                    elif self.final is not None:
                        scope.deadline = math.inf
                        await self._write_final(self.final)
                        return
            if scope.cancelled_caught:
                self.host.counters.timeouts["write"] += 1
                logger.debug("closing %r: write timed out", self)
        except _IdleTimeout:
            self.host.counters.timeouts["idle"] += 1
            self.terminate(
                Error.from_code(ErrorCode.JOIN_TIMEOUT, "no frame received within the idle timeout")
            )
            await self._write_final(self.final)
        except _RoomExpired:
            self.host.counters.timeouts["expiry"] += 1
            self.terminate(Error.from_code(ErrorCode.EXPIRED))
            await self._write_final(self.final)
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
        limits = self.limits
        while True:
            now = trio.current_time()
            idle_at = self.last_rx + limits.idle_timeout
            if now >= idle_at and self.final is None:
                raise _IdleTimeout
            ends_at = self.room.ends_at
            if now >= ends_at and self.final is None:
                raise _RoomExpired
            ping_at = max(self.last_rx, self._last_ping) + limits.ping_interval
            if now >= ping_at and not self.closing:
                self._last_ping = now
                self.put_relay(Ping())
            if self.control or self.pending_credit or self.final is not None or self.bulk:
                return
            self._wake = trio.Event()
            self._write_scope.deadline = math.inf
            with trio.move_on_at(min(idle_at, ping_at, ends_at)):
                await self._wake.wait()

    async def _write_next(self) -> None:
        """One write: queued control frames, pending CREDIT, then at most one bulk frame."""
        batch: list[Frame | Relayed] = []
        control = self.control
        written = 0
        """What the batch costs (see FRAME_COST): discharged once it is written."""
        if control:
            size = 0
            taken = 0
            for item in control:
                if size >= BATCH_BYTES:
                    break
                taken += 1
                if type(item) is Relayed:
                    size += item.size
                elif isinstance(item, Control):
                    size += len(item.payload)
                else:
                    size += RELAY_FRAME_SIZE
            batch = control[:taken]
            del control[:taken]
            self.host.counters.queued_control_frames -= taken
            written = size + taken * FRAME_COST
        if self.pending_credit:
            batch.append(Credit(self.pending_credit))
            self.pending_credit = 0
        bulk = None
        lane = self.bulk
        n = 0
        if lane and not control and self.final is None:
            bulk = lane.popleft()
            batch.append(bulk)
            n = bulk.size if type(bulk) is Relayed else len(bulk.payload)
            written += n + FRAME_COST
        # While it is written the batch exists up to WRITE_COPIES more times
        # (joined into one buffer, framed or encrypted by the transport):
        # counted too, so a client that does not read holds what it is charged.
        copies = self._copies = WRITE_COPIES * written
        self._charge(copies)
        # Re-arm the write deadline (a heap push) only when it moved by more
        # than 1/8 of the timeout: the deadline is write_timeout, give or take that.
        timeout = self.limits.write_timeout
        target = trio.current_time() + timeout
        scope = self._write_scope
        if not target - timeout / 8 <= scope.deadline <= target:
            scope.deadline = target
        if self._relaying is not None:
            await self._relaying.send_batch(batch)
        else:
            await self.connection.send_many(
                [item.frame() if type(item) is Relayed else item for item in batch]
            )
        if self.closing:  # _detach discharged and released everything
            return
        self._copies = 0
        if bulk is not None:
            self.bulk_cost -= n + FRAME_COST
            self.control_cost -= written - n - FRAME_COST
            # The sender's CREDIT gathers (see grant): one frame per
            # CREDIT_BATCH, or sooner when the sender runs low.
            self._release_bulk(n, more_coming=bool(self.bulk))
        else:
            self.control_cost -= written
        self._discharge(written + copies)

    async def _write_final(self, final: Error | None) -> None:
        if final is None:  # pragma: no cover - terminate() always sets it
            return
        with trio.move_on_after(self.limits.close_timeout):
            with contextlib.suppress(ConnectionClosed, TransportError):
                await self.connection.send(final)
