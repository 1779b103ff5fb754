"""A hostile relay for the attack tests (no tests here).

Two real :class:`~m42d.client.engine.Client` engines connect to it through a
fake transport (``transports={"tls": relay.transport}``) that hands each
``connect`` one end of an in-memory byte stream; the frames on it are real
stream-form relay frames, encoded and decoded by :mod:`m42d.wire`.  The
other end is served by this relay, which does what an honest relay does
(JOIN -> JOINED + CREDIT, PEER_UP / PEER_DOWN, PONG) and forwards CONTROL and
BULK between the seats -- through a *middle* the test chooses, which may
drop, duplicate, reorder, replace or add frames.  It can also:

* run its own :class:`~m42d.session.Session` toward each seat (a key swap:
  it answers A's handshake as "B" and starts its own toward B as "A", with a
  room secret of its own, since it never sees R);
* inject any frame into a seat (a replay from an earlier session, a stale
  handshake message, a forged file chunk);
* cut a seat's connection (the client reconnects) or bounce a seat with
  PEER_DOWN + PEER_UP (the client starts a fresh handshake);
* read a seat *lazily* (:attr:`HostileRelay.lazy`): its CONTROL and BULK
  are passed on only when it sends a PING (answered after them, so a PONG
  proves everything before it was taken), and dropped if it hangs up
  first.  m42d's own relay once behaved like that by accident: when its
  writer to a closing connection failed, it cancelled the reader before
  the reader had taken the last frames.

Everything the clients sent is kept in :attr:`HostileRelay.history`, tagged
with the connection generation, for replays.
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from typing import Any, Final

import attrs
import trio
import trio.testing

from m42d.errors import TransportError, WireError
from m42d.link import Link, make_links
from m42d.session import Envelope, MemoryKeyStore, Session
from m42d.ticket import IssuedRoom, Seat, TicketKeyRing
from m42d.transport import FrameConnection, StreamFrameConnection
from m42d.wire import (
    MAX_PAYLOAD,
    Bulk,
    Control,
    Credit,
    Frame,
    Join,
    Joined,
    PeerDown,
    PeerUp,
    Ping,
    Pong,
)

RELAY_URL: Final = "tls://hostile.invalid:8043"
WINDOW: Final = 0xFFFF_FFFF
"""Credit granted once at JOINED: the hostile relay never limits bulk."""

BULK_HEADER: Final = struct.Struct(">QQ")

Middle = Callable[[Seat, Frame], Sequence[Frame]]
"""Sees (sending seat, frame) and returns the frames to deliver to the other seat."""


def passthrough(_seat: Seat, frame: Frame) -> Sequence[Frame]:
    return [frame]


def envelope(frame: Frame) -> int | None:
    """The session envelope byte of a CONTROL frame (HS1..RESET), else None."""
    if isinstance(frame, Control) and frame.payload:
        return frame.payload[0]
    return None


def is_data(frame: Frame) -> bool:
    return envelope(frame) == Envelope.DATA


def chunk_header(frame: Frame) -> tuple[int, int] | None:
    """(file id, chunk index) of a BULK frame carrying a file chunk."""
    if isinstance(frame, Bulk) and len(frame.payload) >= BULK_HEADER.size:
        file_id, index = BULK_HEADER.unpack_from(frame.payload)
        return file_id, index
    return None


@attrs.define(eq=False)
class KeySwap:
    """The relay's own sessions: ``toward[S]`` talks to seat S, pretending to be the other."""

    toward: dict[Seat, Session]
    quiet: bool = False
    """Swallow the relay's own RESETs, so A learns of the failure only by its timeout."""
    events: dict[Seat, list[object]] = attrs.field(factory=lambda: {Seat.A: [], Seat.B: []})

    @classmethod
    def make(cls, room_id: bytes) -> KeySwap:
        secret = os.urandom(32)  # the relay's guess at R: it cannot know the real one
        return cls(
            {
                Seat.A: Session(Seat.B, room_id, secret, MemoryKeyStore(), handshake_timeout=1.0),
                Seat.B: Session(Seat.A, room_id, secret, MemoryKeyStore(), handshake_timeout=1.0),
            }
        )


@attrs.define(eq=False)
class HostileRelay:
    """The relay under the test's control; see the module docstring."""

    nursery: trio.Nursery
    issued: IssuedRoom
    middle: Middle = passthrough
    keyswap: KeySwap | None = None
    seats: dict[Seat, FrameConnection] = attrs.field(factory=dict)
    generation: dict[Seat, int] = attrs.field(factory=lambda: {Seat.A: 0, Seat.B: 0})
    history: list[tuple[Seat, int, Frame]] = attrs.field(factory=list)
    delivered: list[tuple[Seat, Frame]] = attrs.field(factory=list)
    """Frames actually delivered to a seat (after the middle), with the receiving seat."""
    lazy: set[Seat] = attrs.field(factory=set)
    """Seats read lazily (see the module docstring)."""
    unread: dict[Seat, list[Control | Bulk]] = attrs.field(factory=lambda: {Seat.A: [], Seat.B: []})
    dropped_unread: list[Control | Bulk] = attrs.field(factory=list)
    """Frames of lazily read seats lost because the seat hung up before a PING."""
    _changed: trio.Event = attrs.field(factory=trio.Event)

    @classmethod
    def make(cls, nursery: trio.Nursery) -> HostileRelay:
        issued = TicketKeyRing.generate().mint(now=int(time.time()), ttl=3600)
        return cls(nursery, issued)

    @property
    def room_id(self) -> bytes:
        return self.issued.ticket.room_id

    def links(self) -> tuple[Link, Link]:
        return make_links(RELAY_URL, self.issued, os.urandom(32))

    @property
    def transports(self) -> dict[str, Any]:
        return {"tls": _HostileTransport(self)}

    # -- what the test does -------------------------------------------------------

    def start_keyswap(self, *, quiet: bool = False) -> KeySwap:
        """From now on CONTROL/BULK go to the relay's own sessions, not to the other seat."""
        swap = KeySwap.make(self.room_id)
        swap.quiet = quiet
        self.keyswap = swap
        for seat, conn in self.seats.items():
            swap.toward[seat].peer_online(trio.current_time())
            # Whether or not the real peer had come yet, "it" is there now:
            # a seat that joined alone must not wait for a PEER_UP forever.
            self.nursery.start_soon(self._deliver_quietly, seat, conn, PeerUp())
        self.nursery.start_soon(self._run_keyswap, swap)
        return swap

    async def inject(self, to: Seat, frame: Frame) -> None:
        """Deliver a frame the relay made up (or kept) to a seat, if it is connected."""
        conn = self.seats.get(to)
        if conn is not None:
            await self._deliver(to, conn, frame)

    async def cut(self, seat: Seat) -> None:
        """Close the seat's connection from the relay's side; the client will reconnect."""
        conn = self.seats.pop(seat, None)
        if conn is not None:
            await conn.aclose()
            other = self.seats.get(seat.other)
            if other is not None:
                await self._deliver(seat.other, other, PeerDown())

    async def bounce(self, seat: Seat) -> None:
        """PEER_DOWN then PEER_UP to ``seat``: as after a seat take-over, a new session."""
        conn = self.seats.get(seat)
        if conn is not None:
            await conn.send_many([PeerDown(), PeerUp()])

    async def wait_joined(self, *seats: Seat, generation: int = 1, limit: float = 10.0) -> None:
        """Until each seat has joined at least ``generation`` times and is connected."""
        with trio.fail_after(limit):
            while not all(
                s in self.seats and self.generation[s] >= generation for s in seats or Seat
            ):
                await self._changed.wait()

    def sent_by(self, seat: Seat, *, generation: int | None = None) -> list[Frame]:
        return [
            f for s, g, f in self.history if s is seat and (generation is None or g == generation)
        ]

    # -- serving ----------------------------------------------------------------------

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def serve(self, conn: FrameConnection) -> None:
        seat: Seat | None = None
        try:
            with trio.fail_after(10):
                join = await conn.receive()
            if not isinstance(join, Join) or join.ticket != self.issued.ticket.to_bytes():
                return
            seat = join.seat
            old = self.seats.get(seat)
            if old is not None:
                await old.aclose()
            self.seats[seat] = conn
            self.generation[seat] += 1
            other = self.seats.get(seat.other)
            await conn.send_many(
                # During a key swap the relay's own session is always "there".
                [
                    Joined(other is not None or self.keyswap is not None, MAX_PAYLOAD, WINDOW),
                    Credit(WINDOW),
                ]
            )
            if self.keyswap is not None:
                self.keyswap.toward[seat].peer_online(trio.current_time())
            elif other is not None:
                await self._deliver(seat.other, other, PeerUp())
            self._notify()
            await self._relay_from(seat, conn)
        except (TransportError, WireError, trio.TooSlowError):
            pass
        finally:
            if seat is not None:
                self.dropped_unread += self.unread[seat]
                self.unread[seat] = []
            if seat is not None and self.seats.get(seat) is conn:
                del self.seats[seat]
                other = self.seats.get(seat.other)
                if other is not None and self.keyswap is None:
                    await self._deliver_quietly(seat.other, other, PeerDown())
                if self.keyswap is not None:
                    self.keyswap.toward[seat].peer_offline()
            self._notify()

    async def _relay_from(self, seat: Seat, conn: FrameConnection) -> None:
        while True:
            frame = await conn.receive()
            if isinstance(frame, Ping):
                unread, self.unread[seat] = self.unread[seat], []
                for held in unread:
                    await self._take(seat, held)
                await conn.send(Pong(frame.data))
                continue
            if not isinstance(frame, Control | Bulk):
                continue
            if seat in self.lazy:
                self.unread[seat].append(frame)
                continue
            await self._take(seat, frame)

    async def _take(self, seat: Seat, frame: Control | Bulk) -> None:
        """What the relay does with a payload it has read: pass it on (or to the key swap)."""
        self.history.append((seat, self.generation[seat], frame))
        swap = self.keyswap
        if swap is not None:
            session = swap.toward[seat]
            if isinstance(frame, Control):
                session.receive_control(frame.payload)
            else:
                session.receive_bulk(frame.payload)
            await self._flush_swap(swap)
            return
        for out in self.middle(seat, frame):
            target = self.seats.get(seat.other)
            if target is not None:
                await self._deliver(seat.other, target, out)

    async def _deliver(self, to: Seat, conn: FrameConnection, frame: Frame) -> None:
        self.delivered.append((to, frame))
        await conn.send(frame)

    async def _deliver_quietly(self, to: Seat, conn: FrameConnection, frame: Frame) -> None:
        with suppress(TransportError):
            await self._deliver(to, conn, frame)

    async def _flush_swap(self, swap: KeySwap) -> None:
        for seat, session in swap.toward.items():
            swap.events[seat].extend(session.events())
            out = [
                Control(payload)
                for payload in session.data_to_send()
                if not (swap.quiet and payload[:1] == bytes([Envelope.RESET]))
            ]
            conn = self.seats.get(seat)
            if out and conn is not None:
                for frame in out:
                    await self._deliver_quietly(seat, conn, frame)

    async def _run_keyswap(self, swap: KeySwap) -> None:
        while self.keyswap is swap:
            for session in swap.toward.values():
                session.tick(trio.current_time())
            await self._flush_swap(swap)
            await trio.sleep(0.05)


@attrs.define(eq=False)
class _HostileTransport:
    """Client side: each connect is a fresh in-memory stream served by the hostile relay."""

    relay: HostileRelay

    async def open_listener(self, url: str, **kwargs: Any) -> Any:  # pragma: no cover
        raise TransportError("the hostile relay does not listen")

    @asynccontextmanager
    async def connect(self, url: str, **kwargs: Any) -> AsyncIterator[FrameConnection]:
        client_stream, relay_stream = trio.testing.memory_stream_pair()
        client = StreamFrameConnection(client_stream, transport="tls")
        server = StreamFrameConnection(relay_stream, transport="tls", address="192.0.2.66")

        async def serve() -> None:
            try:
                await self.relay.serve(server)
            finally:
                await server.aclose()

        self.relay.nursery.start_soon(serve)
        try:
            yield client
        finally:
            await client.aclose()
