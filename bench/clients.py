"""Load clients: one small class drives m42d, the transit relay and the naive relay alike.

Every benchmark talks in m42d's frame shapes, so the same bytes cross every
relay under test:

* stream relays (m42d over TLS, transit raw TCP, the naive pipes) carry
  ``length:u32 | kind:u8 | body``; a byte pipe does not care, m42d parses it;
* message relays (m42d and transit over WebSocket) carry one ``kind | body``
  per binary message.

The clients measure the relay, not themselves: BULK frames are pre-encoded
once and sent many at a time, and received BULK bodies are counted, never
copied (:class:`StreamScanner`).  They do no end-to-end crypto; the CLI runs
in section b do.  m42d clients honour CREDIT exactly as the protocol says;
the pipes have no credit (only TCP back-pressure).
"""

from __future__ import annotations

import math
import os
import ssl
import struct
from collections.abc import Awaitable, Callable, Sequence
from typing import Final

import trio
import trio_websocket

from m42d.crypto.stream import CHUNK_SIZE
from m42d.ticket import Seat, Ticket
from m42d.wire import WIRE_VERSION, CreateRoom, Join, RoomCreated, decode, encode, encode_stream

__all__ = [
    "BULK_PAYLOAD",
    "Endpoint",
    "RoomKeys",
    "StreamScanner",
    "connect_m42d",
    "connect_pipe",
    "create_rooms",
]

CONTROL: Final = 0x10
BULK: Final = 0x11
CREDIT: Final = 0x12
PING: Final = 0x20
PONG: Final = 0x21
JOINED: Final = 0x04
PEER_UP: Final = 0x05
ERROR: Final = 0x30

BULK_PAYLOAD: Final = CHUNK_SIZE
"""Bytes per BULK frame: one file chunk (the CLI adds its tag and a 16-byte header)."""

READ_SIZE: Final = 256 * 1024
_HDR: Final = struct.Struct(">IB")
_U32: Final = struct.Struct(">I")

Event = tuple[int, "bytes | int"]
"""(kind, body) for small frames; (BULK, payload length) for bulk frames."""


def _client_tls() -> ssl.SSLContext:
    # Loopback benchmark only: the relay's certificate is self-signed and
    # nothing secret travels, so no verification.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class StreamScanner:
    """Splits the stream form into events; BULK bodies are skipped, not buffered."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._skip = 0
        self._pending = 0

    def feed(self, data: bytes | bytearray) -> list[Event]:
        out: list[Event] = []
        i, n = 0, len(data)
        buf = self._buf
        while i < n:
            if self._skip:
                take = min(self._skip, n - i)
                self._skip -= take
                i += take
                if not self._skip:
                    out.append((BULK, self._pending))
                continue
            if len(buf) < 5:
                take = min(5 - len(buf), n - i)
                buf += data[i : i + take]
                i += take
                if len(buf) < 5:
                    break
            length, kind = _HDR.unpack_from(buf, 0)
            body = length - 1
            if kind == BULK:
                self._pending = self._skip = body
                buf.clear()
                continue
            take = min(body - (len(buf) - 5), n - i)
            buf += data[i : i + take]
            i += take
            if len(buf) - 5 == body:
                out.append((kind, bytes(buf[5:])))
                buf.clear()
        return out


class Endpoint:
    """One connection of a benchmark client; run :meth:`reader` in a nursery."""

    def __init__(
        self,
        name: str,
        *,
        stream: trio.abc.Stream | None = None,
        ws: trio_websocket.WebSocketConnection | None = None,
        credit_limited: bool,
    ) -> None:
        self.name = name
        self._stream = stream
        self._ws = ws
        self._scanner = StreamScanner()
        self._lock = trio.StrictFIFOLock()
        self.credit: float = 0 if credit_limited else math.inf
        self._credit_changed = trio.Event()
        self.joined = trio.Event()
        self.peer_up = trio.Event()
        self.bulk_received = 0
        self.bulk_target = math.inf
        self.bulk_done = trio.Event()
        self.controls_received = 0
        self.controls_target = math.inf
        self.controls_done = trio.Event()
        self.on_control: Callable[[bytes], Awaitable[None]] | None = None
        self.errors: list[bytes] = []
        # Built on first use (send_bulk): section d holds ~20,000 of these
        # clients, and an eager 16-frame batch each (4 MiB at 256 KiB frames)
        # ran the bench process out of memory and slowed every join.
        self._bulk_frame = b""
        self._bulk_batch = b""

    # -- framing --------------------------------------------------------------

    def frame(self, kind: int, body: bytes) -> bytes:
        if self._ws is not None:
            return bytes((kind,)) + body
        return _HDR.pack(1 + len(body), kind) + body

    async def send_encoded(self, frames: Sequence[bytes]) -> None:
        async with self._lock:
            if self._ws is not None:
                for message in frames:
                    await self._ws.send_message(message)
            else:
                assert self._stream is not None
                await self._stream.send_all(frames[0] if len(frames) == 1 else b"".join(frames))

    async def _receive(self) -> list[Event]:
        if self._ws is not None:
            message = await self._ws.get_message()
            assert isinstance(message, bytes)
            if message[0] == BULK:
                return [(BULK, len(message) - 1)]
            return [(message[0], message[1:])]
        assert self._stream is not None
        data = await self._stream.receive_some(READ_SIZE)
        if not data:
            raise trio.EndOfChannel
        return self._scanner.feed(data)

    def feed_leftover(self, data: bytes) -> list[Event]:
        return self._scanner.feed(data)

    # -- the reader task ------------------------------------------------------

    async def reader(self, initial: Sequence[Event] = ()) -> None:
        """Dispatch incoming frames until the connection ends (then return quietly)."""
        try:
            await self._dispatch(list(initial))
            while True:
                await self._dispatch(await self._receive())
        except (
            trio.EndOfChannel,
            trio.BrokenResourceError,
            trio.ClosedResourceError,
            trio_websocket.ConnectionClosed,
        ):
            return

    async def _dispatch(self, events: list[Event]) -> None:
        for kind, body in events:
            if kind == BULK:
                assert isinstance(body, int)
                self.bulk_received += body
                if self.bulk_received >= self.bulk_target:
                    self.bulk_done.set()
                continue
            assert isinstance(body, bytes)
            if kind == CONTROL:
                self.controls_received += 1
                if self.on_control is not None:
                    await self.on_control(body)
                if self.controls_received >= self.controls_target:
                    self.controls_done.set()
            elif kind == CREDIT:
                self.credit += _U32.unpack(body)[0]
                self._credit_changed.set()
            elif kind == PING:
                await self.send_encoded([self.frame(PONG, body)])
            elif kind == JOINED:
                self.joined.set()
                if body[0] == 1:
                    self.peer_up.set()
            elif kind == PEER_UP:
                self.peer_up.set()
            elif kind == ERROR:
                self.errors.append(body)
                raise trio.EndOfChannel

    # -- bulk -----------------------------------------------------------------

    async def send_bulk(self, frames: int | None, *, batch: int = 16) -> None:
        """Send ``frames`` BULK frames (None: until cancelled), ``batch`` per write at most."""
        sent = 0
        if not self._bulk_frame:
            self._bulk_frame = self.frame(BULK, bytes(BULK_PAYLOAD))
            self._bulk_batch = self._bulk_frame * 16
        size = len(self._bulk_frame)
        view = memoryview(self._bulk_batch)
        batch = max(1, min(batch, 16))
        while frames is None or sent < frames:
            want = batch if frames is None else min(batch, frames - sent)
            while self.credit < BULK_PAYLOAD:
                self._credit_changed = trio.Event()
                await self._credit_changed.wait()
            k = int(min(want, self.credit // BULK_PAYLOAD))
            self.credit -= k * BULK_PAYLOAD
            if self._ws is not None:
                await self.send_encoded([self._bulk_frame] * k)
            else:
                async with self._lock:
                    assert self._stream is not None
                    await self._stream.send_all(view[: k * size])
            sent += k

    async def aclose(self) -> None:
        if self._ws is not None:
            await trio.aclose_forcefully(self._ws._stream)
        if self._stream is not None:
            await trio.aclose_forcefully(self._stream)


# -- pipes (transit relay, naive relay) -----------------------------------------


def _relay_request(token: bytes, side: bytes) -> bytes:
    return b"please relay " + token.hex().encode() + b" for side " + side.hex().encode() + b"\n"


async def connect_pipe(
    nursery: trio.Nursery,
    url: str,
    token: bytes,
    side: bytes,
    *,
    tls: bool = False,
    name: str = "pipe",
) -> Endpoint:
    """Connect to a transit-style relay (``tcp://`` or ``ws://``) and ask to be paired.

    Returns once the request is sent; ``peer_up`` is set when ``ok`` arrives
    (the relay sends it only once both sides are there).
    """
    request = _relay_request(token, side)
    scheme, _, rest = url.partition("://")
    if scheme == "ws":
        ws = await trio_websocket.connect_websocket_url(
            nursery,
            url,
            message_queue_size=4,
            max_message_size=1 << 20,
            receive_buffer_size=READ_SIZE,
        )
        endpoint = Endpoint(name, ws=ws, credit_limited=False)
        await ws.send_message(request)

        async def ws_handshake() -> None:
            answer = await ws.get_message()
            if answer != b"ok\n":
                raise RuntimeError(f"transit relay said {answer!r}")
            endpoint.joined.set()
            endpoint.peer_up.set()
            await endpoint.reader()

        nursery.start_soon(ws_handshake)
        return endpoint
    host, _, port = rest.rstrip("/").rpartition(":")
    stream: trio.abc.Stream = await trio.open_tcp_stream(host, int(port))
    if tls:
        stream = trio.SSLStream(stream, _client_tls(), server_hostname=host)
    endpoint = Endpoint(name, stream=stream, credit_limited=False)
    await stream.send_all(request)

    async def handshake() -> None:
        data = b""
        while b"\n" not in data:
            chunk = await stream.receive_some(READ_SIZE)
            if not chunk:
                raise RuntimeError("relay closed before ok")
            data += chunk
        line, _, leftover = data.partition(b"\n")
        if line != b"ok":
            raise RuntimeError(f"relay said {line!r}")
        endpoint.joined.set()
        endpoint.peer_up.set()
        await endpoint.reader(endpoint.feed_leftover(leftover))

    nursery.start_soon(handshake)
    return endpoint


def new_token() -> tuple[bytes, bytes, bytes]:
    """A pairing token and two sides for the transit protocol."""
    return os.urandom(32), os.urandom(8), os.urandom(8)


# -- m42d ---------------------------------------------------------------------------


class RoomKeys:
    """What a benchmark needs to join both seats of one room (from ROOM_CREATED)."""

    __slots__ = ("room_id", "ticket", "token_a", "token_b")

    def __init__(self, created: RoomCreated) -> None:
        self.ticket = created.ticket
        self.token_a = created.token_a
        self.token_b = created.token_b
        self.room_id = Ticket.parse(created.ticket).room_id


async def create_rooms(tls_url: str, count: int) -> list[RoomKeys]:
    """``count`` rooms over one lobby connection, pipelined (the relay answers in order)."""
    host, port = _host_port(tls_url)
    stream = trio.SSLStream(
        await trio.open_tcp_stream(host, port), _client_tls(), server_hostname=host
    )
    scanner = StreamScanner()
    rooms: list[RoomKeys] = []
    request = encode_stream(CreateRoom(WIRE_VERSION, b""))
    try:
        while len(rooms) < count:
            step = min(200, count - len(rooms))
            await stream.send_all(request * step)
            got = 0
            while got < step:
                data = await stream.receive_some(READ_SIZE)
                if not data:
                    raise RuntimeError("relay closed the lobby connection")
                for kind, body in scanner.feed(data):
                    assert isinstance(body, bytes)
                    frame = decode(bytes((kind,)) + body)
                    if not isinstance(frame, RoomCreated):
                        raise RuntimeError(f"relay answered {frame!r}")
                    rooms.append(RoomKeys(frame))
                    got += 1
    finally:
        await trio.aclose_forcefully(stream)
    return rooms


def _host_port(url: str) -> tuple[str, int]:
    rest = url.partition("://")[2].rstrip("/")
    host, _, port = rest.rpartition(":")
    return host.strip("[]"), int(port)


async def connect_m42d(
    nursery: trio.Nursery, url: str, room: RoomKeys, seat: Seat, *, name: str = "m42d"
) -> Endpoint:
    """Connect over ``tls://`` or ``ws://``, send JOIN, start the reader; wait with ``joined``."""
    token = room.token_a if seat is Seat.A else room.token_b
    join = Join(seat=seat, ticket=room.ticket, token=token)
    scheme = url.partition("://")[0]
    host, port = _host_port(url)
    if scheme == "ws":
        ws = await trio_websocket.connect_websocket(
            nursery,
            host,
            port,
            f"/m42/v1/room/{room.room_id.hex()}",
            use_ssl=False,
            message_queue_size=4,
            max_message_size=1 << 20,
            receive_buffer_size=READ_SIZE,
        )
        endpoint = Endpoint(name, ws=ws, credit_limited=True)
        await ws.send_message(encode(join))
    else:
        stream = trio.SSLStream(
            await trio.open_tcp_stream(host, port), _client_tls(), server_hostname=host
        )
        endpoint = Endpoint(name, stream=stream, credit_limited=True)
        await stream.send_all(encode_stream(join))
    nursery.start_soon(endpoint.reader)
    return endpoint
