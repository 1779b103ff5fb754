"""The relay: admission (create, join), the lobby before JOIN, and the serve loop.

Rules and invariants
--------------------

* A connection starts in the *lobby*.  Within ``join_timeout`` of accepting
  it, it must JOIN; before that it may send CREATE_ROOM (answered with
  ROOM_CREATED, any number of times within the rate limit) and PING.  Any
  other frame, a refused request or the deadline ends it with one ERROR.
  Its replies are written by the same deadline and within ``write_timeout``;
  a reply that cannot be written closes it without a frame (a write cut
  short may leave half a frame on the wire), counted as that timeout.
* Admission is decided from the ticket alone (HMAC, constant time) plus the
  burn list: no per-room state exists before the first JOIN.
* Every refusal is an ERROR frame with a stable code, written within
  ``close_timeout``, then the connection is closed.
* Counts are per address (IPv6 per ``ipv6_prefix``, see ``address_key``) and
  global; an address is never logged unless
  ``log_addresses`` is on, a room only as :func:`~m42d.relay.room.room_tag`.
* Stopping: no new connections, lobby connections get GOAWAY(0) and close,
  joined ones get GOAWAY(grace) and keep relaying until they leave or the
  grace deadline passes; then everything left is cancelled.

Why this module is a little over 500 lines: admission, the lobby (create
or join), burn and the graceful stop all mutate the same per-address and
global counts of :class:`Relay`; the room, occupant, lanes, credit and
deadlines already live in their own modules.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Final, final

import attrs
import trio

from m42d.errors import M42Error, TicketError, TransportError, WireError
from m42d.relay.burns import BurnList, MemoryBurnList
from m42d.relay.cluster import Cluster
from m42d.relay.lanes import AddressQueue
from m42d.relay.limits import RateLimiter, RelayLimits, address_key
from m42d.relay.occupant import Occupant
from m42d.relay.room import Room, room_tag
from m42d.relay.stats import RelayCounters, RelayStatistics
from m42d.relay.store import StoreUnavailable
from m42d.ticket import (
    Ticket,
    TicketKeyRing,
)
from m42d.transport import AdmittingListener, FrameConnection, FrameListener
from m42d.wire import (
    WIRE_VERSION,
    CreateRoom,
    Error,
    ErrorCode,
    Frame,
    GoAway,
    Join,
    Ping,
    Pong,
    RoomCreated,
    error_code_for,
)

__all__ = ["DEFAULT_ROOM_TTL", "Relay", "serve_relay"]

logger = logging.getLogger("m42d.relay")

DEFAULT_ROOM_TTL: Final = 7 * 24 * 3600


class _Refused(Exception):
    """Internal: end the lobby with this ERROR."""

    def __init__(self, error: Error) -> None:
        super().__init__(error.message)
        self.error = error


@final
@attrs.define(eq=False)
class Relay:
    """Pairs the two seats of each room and relays frames between them.

    Attributes may be replaced while running (SIGHUP): ``keyring`` and
    ``limits`` apply to the next request or join; connections already joined
    keep the window they were announced.

    Args:
        keyring: the keys that mint and verify tickets.
        limits: resource limits.
        burned: the burn deny-list (persisted one from ``m42d.relay.state``).
        creation_secret: when set, CREATE_ROOM must carry it (private relay).
        room_ttl: seconds a new room's ticket stays valid.
        log_addresses: allow client addresses in log lines.
        wall_clock: unix time in seconds, for ticket expiry (tests replace it).
        cluster: shared burns and room holders with other nodes, when configured.
    """

    keyring: TicketKeyRing
    limits: RelayLimits = attrs.field(factory=RelayLimits)
    burned: BurnList = attrs.field(factory=MemoryBurnList)
    creation_secret: bytes | None = attrs.field(default=None, repr=False)
    room_ttl: int = DEFAULT_ROOM_TTL
    log_addresses: bool = False
    wall_clock: Callable[[], float] = time.time
    cluster: Cluster | None = None
    """This node's shared state with other nodes (docs/scale-out.md); None: a single node."""
    counters: RelayCounters = attrs.field(factory=RelayCounters, init=False)
    _rooms: dict[bytes, Room] = attrs.field(factory=dict, init=False, repr=False)
    _peers: set[Occupant] = attrs.field(factory=set, init=False, repr=False)
    _per_address: Counter[str] = attrs.field(factory=Counter, init=False, repr=False)
    _handshaking: Counter[str] = attrs.field(factory=Counter, init=False, repr=False)
    _handshake_keys: dict[str, tuple[str, int]] = attrs.field(factory=dict, init=False, repr=False)
    """Occupant -> (its key when admitted, handshakes in flight): release() must give
    back what admit() took even if a reload changed ``ipv6_prefix`` meanwhile."""
    _lobby: set[trio.CancelScope] = attrs.field(factory=set, init=False, repr=False)
    _queues: dict[str, AddressQueue] = attrs.field(factory=dict, init=False, repr=False)
    """Bytes queued towards each address's joined peers (``max_queued_per_address``)."""
    _create_limiter: RateLimiter | None = attrs.field(default=None, init=False, repr=False)
    _join_limiter: RateLimiter | None = attrs.field(default=None, init=False, repr=False)
    _stop_requested: trio.Event | None = attrs.field(default=None, init=False, repr=False)
    stopping: bool = attrs.field(default=False, init=False)

    # -- public -----------------------------------------------------------------

    def statistics(self) -> RelayStatistics:
        """A snapshot of the counters (numbers only, safe to publish)."""
        stats = self.counters.snapshot()
        if self.cluster is None:
            return stats
        return attrs.evolve(stats, store_up=self.cluster.available, rooms_moved=self.cluster.moved)

    def stop_requested(self) -> trio.Event:
        """An event :meth:`stop` sets (set already if it was called); serve_relay waits on it."""
        event = trio.Event()
        if self.stopping:
            event.set()
        self._stop_requested = event
        return event

    def stop(self) -> None:
        """Begin a graceful stop (safe to call from a signal-handling task, more than once)."""
        if self.stopping:
            return
        self.stopping = True
        if self._stop_requested is not None:
            self._stop_requested.set()
        for scope in list(self._lobby):
            scope.cancel()
        grace_ms = int(self.limits.shutdown_grace * 1000)
        for peer in list(self._peers):
            peer.put_relay(GoAway(grace_ms, "relay shutting down"))

    def admit(self, address: str) -> bool:
        """:class:`~m42d.transport.Admission`: refuse before the handshake what
        :meth:`handle_connection` would refuse after it (overload, per-address cap)."""
        limits = self.limits
        if self.stopping:
            return False
        total = sum(self.counters.connections.values()) + sum(self._handshaking.values())
        if total >= limits.max_connections:
            self.counters.refused[ErrorCode.UNAVAILABLE.name] += 1
            return False
        key, in_flight = self._handshake_keys.get(address, ("", 0))
        if not in_flight:
            key = address_key(address, limits.ipv6_prefix)
        if key:
            held = self._per_address[key] + self._handshaking[key]
            if held >= limits.max_connections_per_address:
                self.counters.refused[ErrorCode.RATE_LIMITED.name] += 1
                return False
        self._handshaking[key] += 1
        self._handshake_keys[address] = (key, in_flight + 1)
        return True

    def release(self, address: str) -> None:
        key, in_flight = self._handshake_keys.pop(address, (address, 1))
        if in_flight > 1:
            self._handshake_keys[address] = (key, in_flight - 1)
        self._handshaking[key] -= 1
        if self._handshaking[key] <= 0:
            del self._handshaking[key]

    async def handle_connection(self, connection: FrameConnection) -> None:
        """Serve one accepted connection until it ends; the listener closes it after.

        Never raises (except cancellation): a failure of one connection is
        logged and stays with that connection.
        """
        limits = self.limits
        address = address_key(connection.address, limits.ipv6_prefix)
        counters = self.counters
        if self.stopping:
            await self._refuse(connection, Error.from_code(ErrorCode.UNAVAILABLE))
            return
        if sum(counters.connections.values()) >= limits.max_connections:
            counters.refused[ErrorCode.UNAVAILABLE.name] += 1
            await self._refuse(connection, Error.from_code(ErrorCode.UNAVAILABLE))
            return
        if address and self._per_address[address] >= limits.max_connections_per_address:
            counters.refused[ErrorCode.RATE_LIMITED.name] += 1
            await self._refuse(
                connection,
                Error.from_code(ErrorCode.RATE_LIMITED, "too many connections from this address"),
            )
            return
        transport = connection.transport
        counters.connections[transport] += 1
        if address:
            self._per_address[address] += 1
        try:
            peer = await self._lobby_phase(connection, address)
            if peer is not None:
                await peer.run()
        except Exception:
            logger.exception("relay failed on a %s connection", transport)
        finally:
            counters.connections[transport] -= 1
            if address:
                self._per_address[address] -= 1
                if not self._per_address[address]:
                    del self._per_address[address]

    # -- RoomHost ------------------------------------------------------------------

    async def burn(self, peer: Occupant) -> None:
        room = peer.room
        if self.cluster is not None:
            # Shared first: a burn the other nodes would not know of is no burn.
            try:
                await self.cluster.burn(
                    room.room_id, room.expires, self._seconds_left(room.expires)
                )
            except StoreUnavailable:
                logger.warning(
                    "burn of room %s refused: shared store unreachable", room_tag(room.room_id)
                )
                peer.terminate(
                    Error.from_code(
                        ErrorCode.UNAVAILABLE,
                        "burn refused: the relay's shared store is unreachable; try again",
                    )
                )
                return
        try:
            self.burned.burn(room.room_id, room.expires)
        except M42Error:
            logger.warning("burn of room %s refused: %s", room_tag(room.room_id), "deny-list full")
            peer.terminate(Error.from_code(ErrorCode.INTERNAL, "burn refused: deny-list is full"))
            return
        logger.info("room %s burned", room_tag(room.room_id))
        for seated in list(room.seats.values()):
            seated.terminate(Error.from_code(ErrorCode.BURNED))

    def forget(self, peer: Occupant) -> None:
        if peer in self._peers:
            self._peers.discard(peer)
            self.counters.peers -= 1
        queue = peer.queue
        if not queue.peers and self._queues.get(peer.address) is queue:
            del self._queues[peer.address]
        room = peer.room
        if not room.seats and self._rooms.get(room.room_id) is room:
            del self._rooms[room.room_id]
            self.counters.rooms -= 1
            if self.cluster is not None:
                self.cluster.emptied(room.room_id)

    # -- RoomDirectory (m42d.relay.cluster) ---------------------------------------------

    def lone_rooms(self) -> list[bytes]:
        return [room_id for room_id, room in self._rooms.items() if len(room.seats) == 1]

    def move_room(self, room_id: bytes) -> None:
        room = self._rooms.get(room_id)
        if room is None:
            return
        for peer in list(room.seats.values()):
            peer.go_away("this room is served by another relay node now; reconnect")

    def _seconds_left(self, expires: int) -> float:
        return max(0.0, expires + 1 - self.wall_clock())

    # -- lobby ----------------------------------------------------------------------

    async def _lobby_phase(self, connection: FrameConnection, address: str) -> Occupant | None:
        """Answer CREATE_ROOM and PING until a JOIN is admitted; None when refused."""
        deadline = trio.current_time() + self.limits.join_timeout
        with trio.CancelScope() as lobby:
            self._lobby.add(lobby)
            try:
                while True:
                    with trio.move_on_at(deadline) as timer:
                        frame = await connection.receive()
                    if timer.cancelled_caught:
                        self.counters.timeouts["join"] += 1
                        raise _Refused(Error.from_code(ErrorCode.JOIN_TIMEOUT))
                    reply = await self._lobby_frame(connection, address, frame)
                    if isinstance(reply, Occupant):
                        return reply
                    if not await self._lobby_reply(connection, reply, deadline):
                        return None
            except _Refused as refused:
                code = refused.error.error_code
                self.counters.refused[code.name if code else str(refused.error.code)] += 1
                await self._refuse(connection, refused.error)
                return None
            except WireError as exc:
                code = error_code_for(exc)
                self.counters.refused[code.name] += 1
                await self._refuse(connection, Error.from_code(code))
                return None
            except TransportError:
                return None
            finally:
                self._lobby.discard(lobby)
        # Only reached when stop() cancelled the lobby.
        await self._refuse(connection, GoAway(0, "relay shutting down"))
        return None

    async def _lobby_frame(
        self, connection: FrameConnection, address: str, frame: Frame
    ) -> Frame | Occupant:
        if isinstance(frame, Join):
            return await self._join(connection, address, frame)
        if isinstance(frame, CreateRoom):
            return self._create_room(address, frame)
        if isinstance(frame, Ping):
            return Pong(frame.data)
        raise _Refused(
            Error.from_code(ErrorCode.BAD_FRAME, f"{frame.kind.name} is not allowed before JOIN")
        )

    def _create_room(self, address: str, frame: CreateRoom) -> RoomCreated:
        if frame.version != WIRE_VERSION:
            raise _Refused(Error.from_code(ErrorCode.UNSUPPORTED_VERSION))
        secret = self.creation_secret
        if secret is not None and not hmac.compare_digest(frame.creation_secret, secret):
            raise _Refused(Error.from_code(ErrorCode.FORBIDDEN))
        limiter = self._limiter("create")
        if not limiter.allow(address, trio.current_time()):
            raise _Refused(Error.from_code(ErrorCode.RATE_LIMITED))
        issued = self.keyring.mint(now=int(self.wall_clock()), ttl=self.room_ttl)
        self.counters.rooms_created += 1
        logger.debug("room %s created", room_tag(issued.ticket.room_id))
        return RoomCreated(issued.ticket.to_bytes(), issued.token_a, issued.token_b)

    async def _join(self, connection: FrameConnection, address: str, frame: Join) -> Occupant:
        if frame.version != WIRE_VERSION:
            raise _Refused(Error.from_code(ErrorCode.UNSUPPORTED_VERSION))
        if not self._limiter("join").allow(address, trio.current_time()):
            raise _Refused(Error.from_code(ErrorCode.RATE_LIMITED))
        now = int(self.wall_clock())
        ticket = self._verify(frame, now)
        if self.burned.is_burned(ticket.room_id, now):
            raise _Refused(Error.from_code(ErrorCode.BURNED))
        if self.cluster is not None:
            # A store round trip only here, and only on a node with a store:
            # a single node's join stays free of awaits, as before.
            try:
                burned = await self.cluster.is_burned(
                    ticket.room_id, self._seconds_left(ticket.expires)
                )
            except StoreUnavailable as exc:
                raise _Refused(
                    Error.from_code(
                        ErrorCode.UNAVAILABLE, "the relay's shared store is unreachable; try again"
                    )
                ) from exc
            if burned:
                raise _Refused(Error.from_code(ErrorCode.BURNED))
        return self._seat(connection, address, ticket, frame)

    def _verify(self, frame: Join, now: int) -> Ticket:
        try:
            return self.keyring.verify(frame.ticket, frame.seat, frame.token, now=now)
        except TicketError as exc:
            raise _Refused(Error.from_code(error_code_for(exc))) from exc

    def _seat(
        self, connection: FrameConnection, address: str, ticket: Ticket, frame: Join
    ) -> Occupant:
        room = self._rooms.get(ticket.room_id)
        if room is None:
            # The ticket is valid through the second `expires`; the room ends
            # a second later, measured on trio's clock from the wall clock now.
            ends_at = trio.current_time() + (ticket.expires + 1 - self.wall_clock())
            limits = self.limits
            room = Room(
                ticket.room_id,
                ticket.expires,
                ends_at,
                window=limits.bulk_window,
                max_payload=limits.max_payload,
            )
            self._rooms[ticket.room_id] = room
            self.counters.rooms += 1
        seat = frame.seat
        old = room.seats.get(seat)
        if old is not None:
            old.terminate(Error.from_code(ErrorCode.SEAT_TAKEN))
        # An address-less transport (a Unix socket) gets no shared budget:
        # "" is every such client, as for the other per-address limits.
        queue = self._queues.setdefault(address, AddressQueue()) if address else None
        peer = Occupant(self, room, seat, connection, queue, address=address)
        room.seats[seat] = peer
        self._peers.add(peer)
        self.counters.peers += 1
        self.counters.joins += 1
        peer.start_session()
        if self.cluster is not None:
            self.cluster.joined(room.room_id, room.expires)
        if self.log_addresses:
            logger.info(
                "seat %s of room %s joined from %s",
                seat.value,
                room_tag(room.room_id),
                connection.address,
            )
        else:
            logger.debug("seat %s of room %s joined", seat.value, room_tag(room.room_id))
        return peer

    def _limiter(self, kind: str) -> RateLimiter:
        # Rebuilt when a reload changes the rate, so new limits apply at once.
        if kind == "create":
            if (
                self._create_limiter is None
                or self._create_limiter.per_minute != self.limits.create_rate
            ):
                self._create_limiter = RateLimiter(self.limits.create_rate)
            return self._create_limiter
        if self._join_limiter is None or self._join_limiter.per_minute != self.limits.join_rate:
            self._join_limiter = RateLimiter(self.limits.join_rate)
        return self._join_limiter

    async def _lobby_reply(
        self, connection: FrameConnection, frame: Frame, deadline: float
    ) -> bool:
        """Write a lobby reply by the lobby's deadline and within ``write_timeout``.

        A client that sends and never reads (PINGs, say) blocks the write.
        Cut short, a write may leave half a frame on the wire, so no ERROR
        can follow it: the connection closes without a frame, counted as a
        ``join`` timeout (the lobby's deadline came first) or a ``write``
        one.  Returns False when it closed so.
        """
        write_by = trio.current_time() + self.limits.write_timeout
        with trio.move_on_at(min(deadline, write_by)) as timer:
            await connection.send(frame)
        if not timer.cancelled_caught:
            return True
        self.counters.timeouts["write" if write_by < deadline else "join"] += 1
        return False

    async def _refuse(self, connection: FrameConnection, frame: Frame) -> None:
        """Best effort: the last frame before closing, within ``close_timeout``."""
        with trio.move_on_after(self.limits.close_timeout):
            with contextlib.suppress(TransportError):
                await connection.send(frame)


async def serve_relay(
    relay: Relay,
    listeners: Sequence[FrameListener],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept on every listener and relay until :meth:`Relay.stop`, then drain.

    Reports started once every listener accepts.  After ``relay.stop()``,
    it stops accepting, sends GOAWAY, and returns when the last connection
    has ended or ``limits.shutdown_grace`` has passed (the rest cancelled).
    A listener that crashes is logged and the others keep serving.
    Cancelling it from outside stops at once, without grace.
    """
    stop_requested = relay.stop_requested()
    async with trio.open_nursery() as connections:
        async with trio.open_nursery() as accepting:
            for listener in listeners:
                await accepting.start(_run_listener, listener, relay, connections)
            if relay.cluster is not None:
                await accepting.start(relay.cluster.run, relay)
            task_status.started()
            await stop_requested.wait()
            accepting.cancel_scope.cancel()
        connections.cancel_scope.deadline = trio.current_time() + relay.limits.shutdown_grace


async def _run_listener(
    listener: FrameListener,
    relay: Relay,
    connections: trio.Nursery,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    started = False

    def report() -> None:
        nonlocal started
        if not started:
            started = True
            task_status.started()

    class _Status:
        def started(self, value: None = None) -> None:
            report()

    if isinstance(listener, AdmittingListener):
        listener.set_admission(relay)
    try:
        await listener.serve(
            relay.handle_connection,
            handler_nursery=connections,
            task_status=_Status(),
        )
    except Exception:
        logger.exception("listener %s failed; the other listeners keep serving", listener.urls)
    finally:
        report()
        with trio.CancelScope(shield=True):
            try:
                await listener.aclose()
            except Exception:  # pragma: no cover - closing a socket rarely fails
                logger.exception("closing a listener failed")
