"""The built-in transports on real loopback sockets (port 0, trustme certificates).

Rules: 127.0.0.1 only, port 0, a ``fail_after`` on every test that does I/O.
"""

from __future__ import annotations

import hashlib
import itertools
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from functools import partial

import pytest
import trio
import trio.testing
import trustme
from m42d_ws import WebSocketFrameConnection, room_path
from m42d_ws import server as m42d_ws_server
from m42d_ws.server import MAX_FRAGMENTS
from wsproto.connection import Connection, ConnectionType

from m42d.errors import ConnectionClosed, TransportError, WireError
from m42d.relay import Relay, RelayLimits, serve_relay
from m42d.ticket import Seat, TicketKeyRing
from m42d.transport import (
    FrameConnection,
    FrameHandler,
    FrameListener,
    Transport,
    load_transports,
)
from m42d.wire import (
    MAX_FRAME,
    MAX_PAYLOAD,
    Bulk,
    Control,
    CreateRoom,
    Credit,
    Frame,
    Join,
    Joined,
    PeerUp,
    Ping,
    Pong,
    RoomCreated,
    decode,
    encode,
)

TIMEOUT = 10
SCHEMES = ["ws", "wss", "tls"]


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_cert(ca: trustme.CA) -> trustme.LeafCert:
    return ca.issue_cert("127.0.0.1", "localhost")


@pytest.fixture(scope="module")
def server_context(server_cert: trustme.LeafCert) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_cert.configure_cert(context)
    return context


@pytest.fixture(scope="module")
def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


@pytest.fixture(scope="module")
def pin(server_cert: trustme.LeafCert) -> bytes:
    pem = server_cert.cert_chain_pems[0].bytes().decode()
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).digest()


@pytest.fixture(scope="module")
def transports() -> dict[str, Transport]:
    return load_transports()


async def listen(
    transports: dict[str, Transport],
    scheme: str,
    server_context: ssl.SSLContext,
    nursery: trio.Nursery,
    handler: Callable[[FrameConnection], Awaitable[None]],
) -> str:
    listener = await transports[scheme].open_listener(
        f"{scheme}://127.0.0.1:0", ssl_context=None if scheme == "ws" else server_context
    )
    await nursery.start(listener.serve, handler)
    (url,) = listener.urls
    assert url.startswith(f"{scheme}://127.0.0.1:")
    assert not url.endswith(":0")
    return url


async def echo(connection: FrameConnection) -> None:
    try:
        while True:
            frame = await connection.receive()
            await connection.send_many([frame, Pong(b"echo")])
    except ConnectionClosed:
        pass


def client(
    transports: dict[str, Transport],
    url: str,
    context: ssl.SSLContext | None = None,
    pin: bytes | None = None,
    room_id: bytes | None = None,
) -> AbstractAsyncContextManager[FrameConnection]:
    scheme = url.split(":", 1)[0]
    return transports[scheme].connect(url, ssl_context=context, pin=pin, room_id=room_id)


def test_builtin_transports_are_found_by_entry_point(transports: dict[str, Transport]) -> None:
    assert {"ws", "wss", "http", "https", "tls"} <= set(transports)
    assert all(isinstance(t, Transport) for t in transports.values())


@pytest.mark.parametrize("scheme", SCHEMES)
async def test_frames_both_ways(
    scheme: str,
    transports: dict[str, Transport],
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
    nursery: trio.Nursery,
) -> None:
    with trio.fail_after(TIMEOUT):
        url = await listen(transports, scheme, server_context, nursery, echo)
        async with client(transports, url, client_context) as conn:
            assert conn.transport == scheme
            frames: list[Frame] = [Control(b"hi"), Bulk(b"\x00" * MAX_PAYLOAD), Ping(b"p")]
            for frame in frames:
                await conn.send(frame)
                assert await conn.receive() == frame
                assert await conn.receive() == Pong(b"echo")
            await conn.send_many([Control(b"1"), Control(b"2")])
            got = [await conn.receive() for _ in range(4)]
            assert got == [Control(b"1"), Pong(b"echo"), Control(b"2"), Pong(b"echo")]


@pytest.mark.parametrize("scheme", ["wss", "tls"])
async def test_pin_accepted_and_rejected(
    scheme: str,
    transports: dict[str, Transport],
    server_context: ssl.SSLContext,
    pin: bytes,
    nursery: trio.Nursery,
) -> None:
    with trio.fail_after(TIMEOUT):
        url = await listen(transports, scheme, server_context, nursery, echo)
        # The CA is not trusted here: only the pin makes the certificate acceptable.
        async with client(transports, url, pin=pin) as conn:
            await conn.send(Ping(b"x"))
            assert await conn.receive() == Ping(b"x")
        with pytest.raises(TransportError, match="pin"):
            async with client(transports, url, pin=bytes(32)):
                pytest.fail("connected despite a wrong pin")  # pragma: no cover
        with pytest.raises(TransportError, match="TLS handshake"):
            async with client(transports, url):  # neither CA nor pin
                pytest.fail("connected to an untrusted certificate")  # pragma: no cover


async def test_ws_oversize_message_closes_with_1009(
    transports: dict[str, Transport], server_context: ssl.SSLContext, nursery: trio.Nursery
) -> None:
    seen: list[BaseException] = []

    async def record(connection: FrameConnection) -> None:
        try:
            await connection.receive()
        except ConnectionClosed as exc:
            seen.append(exc)

    with trio.fail_after(TIMEOUT):
        url = await listen(transports, "ws", server_context, nursery, record)
        async with client(transports, url) as conn:
            assert isinstance(conn, WebSocketFrameConnection)
            await conn._ws.send_message(b"\x11" + b"\x00" * MAX_FRAME)
            with pytest.raises(ConnectionClosed):
                await conn.receive()
            assert conn.close_code == 1009
    assert len(seen) == 1


async def http_get(url: str, path: str) -> bytes:
    host, port = url.removeprefix("ws://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        return await stream.receive_some(4096)


async def test_ws_paths(
    transports: dict[str, Transport], server_context: ssl.SSLContext, nursery: trio.Nursery
) -> None:
    with trio.fail_after(TIMEOUT):
        url = await listen(transports, "ws", server_context, nursery, echo)
        assert (await http_get(url, "/elsewhere")).startswith(b"HTTP/1.1 404")
        assert (await http_get(url, "/m42/v1/room/xyz")).startswith(b"HTTP/1.1 404")
        assert (await http_get(url, "/m42/v1")).startswith(b"HTTP/1.1 101")
        assert (await http_get(url, "/m42/v1/room/" + "ab" * 16)).startswith(b"HTTP/1.1 101")
    assert room_path("/prefix/", bytes(16)) == "/prefix/m42/v1/room/" + "00" * 16
    assert room_path() == "/m42/v1"


def _masked_frame(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    """One client-to-server WebSocket frame (masked, as RFC 6455 requires of clients)."""
    key = b"\x01\x02\x03\x04"
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 1 << 16:
        head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


_UPGRADE = (
    b"GET /m42/v1 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


async def _raw_ws(url: str) -> trio.SocketStream:
    host, port = url.removeprefix("ws://").rsplit(":", 1)
    return await trio.open_tcp_stream(host, int(port))


def _recording() -> tuple[list[Frame | str], trio.Event, FrameHandler]:
    """A handler that records every frame, then how the connection ended, then sets done."""
    got: list[Frame | str] = []
    done = trio.Event()

    async def record(connection: FrameConnection) -> None:
        try:
            while True:
                got.append(await connection.receive())
        except ConnectionClosed as exc:
            got.append(str(exc))
        done.set()

    return got, done, record


async def test_ws_server_takes_frames_sent_with_the_upgrade_then_ends_in_order(
    transports: dict[str, Transport], server_context: ssl.SSLContext, nursery: trio.Nursery
) -> None:
    """Pipelined behind the request: two frames (one fragmented), a ping, then a close.

    The relay sees both frames, in order, before the close; the ping gets its
    pong and the close its answer.
    """
    got, done, record = _recording()
    first = encode(Control(b"one"))
    with trio.fail_after(TIMEOUT):
        url = await listen(transports, "ws", server_context, nursery, record)
        stream = await _raw_ws(url)
        async with stream:
            await stream.send_all(
                _UPGRADE
                + _masked_frame(0x2, first)
                + _masked_frame(0x2, encode(Control(b"tw")), fin=False)
                + _masked_frame(0x0, b"o")
                + _masked_frame(0x9, b"are you there")
                + _masked_frame(0x8, (1000).to_bytes(2, "big"))
            )
            await done.wait()
            answer = b""
            while b"\x88\x02\x03\xe8" not in answer:  # the close answer, code 1000
                data = await stream.receive_some(4096)
                assert data, answer
                answer += data
    assert answer.startswith(b"HTTP/1.1 101")
    assert b"\x8a\x0dare you there" in answer  # the pong
    assert got == [Control(b"one"), Control(b"two"), "websocket closed (1000)"]


def _fragmented(message: bytes, pieces: int) -> bytes:
    """``message`` as ``pieces`` masked WebSocket frames (one binary, then continuations)."""
    cuts = [len(message) * i // pieces for i in range(pieces + 1)]
    parts = [message[a:b] for a, b in itertools.pairwise(cuts)]
    assert len(parts) == pieces
    assert all(parts)
    wire = _masked_frame(0x2, parts[0], fin=len(parts) == 1)
    wire += b"".join(_masked_frame(0x0, p, fin=False) for p in parts[1:-1])
    if len(parts) > 1:
        wire += _masked_frame(0x0, parts[-1])
    return wire


@pytest.mark.parametrize(
    ("tail", "ending"),
    [
        # A message in more frames than MAX_FRAGMENTS: closed before it is complete.
        (_fragmented(encode(Control(bytes(1000))), MAX_FRAGMENTS + 1), "websocket closed (1009)"),
        # Fragments adding up past MAX_FRAME.
        (
            _masked_frame(0x2, bytes(MAX_FRAME // 2 + 1), fin=False)
            + _masked_frame(0x0, bytes(MAX_FRAME // 2 + 1)),
            "websocket closed (1009)",
        ),
    ],
)
async def test_ws_server_joins_fragments_and_bounds_them(
    transports: dict[str, Transport],
    server_context: ssl.SSLContext,
    nursery: trio.Nursery,
    tail: bytes,
    ending: str,
) -> None:
    """A frame in MAX_FRAGMENTS fragments arrives whole; more, or too many bytes, close 1009."""
    got, done, record = _recording()
    body = encode(Control(bytes(range(256)) * 24))  # 6,145 bytes
    with trio.fail_after(TIMEOUT):
        url = await listen(transports, "ws", server_context, nursery, record)
        stream = await _raw_ws(url)
        async with stream:
            await stream.send_all(_UPGRADE + _fragmented(body, MAX_FRAGMENTS) + tail)
            await done.wait()
    assert got == [decode(body), ending]


async def test_ws_server_refuses_text_and_non_websocket_requests(
    transports: dict[str, Transport], server_context: ssl.SSLContext, nursery: trio.Nursery
) -> None:
    errors: list[BaseException] = []
    failed = trio.Event()

    async def record(connection: FrameConnection) -> None:
        try:
            await connection.receive()
        except (WireError, ConnectionClosed) as exc:
            errors.append(exc)
            failed.set()

    with trio.fail_after(TIMEOUT):
        url = await listen(transports, "ws", server_context, nursery, record)
        stream = await _raw_ws(url)
        async with stream:
            await stream.send_all(_UPGRADE + _masked_frame(0x1, b"hello"))
            await failed.wait()
        assert isinstance(errors[0], WireError)
        stream = await _raw_ws(url)
        async with stream:
            await stream.send_all(b"GET /m42/v1 HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await stream.receive_some(4096)).startswith(b"HTTP/1.1 426")


async def test_ws_undecodable_headers_get_400_and_the_listener_lives_on(
    transports: dict[str, Transport], server_context: ssl.SSLContext, nursery: trio.Nursery
) -> None:
    """Header bytes h11 accepts but wsproto cannot decode: 400 for that client only."""
    with trio.fail_after(TIMEOUT):
        url = await listen(transports, "ws", server_context, nursery, echo)
        stream = await _raw_ws(url)
        async with stream:
            await stream.send_all(
                _UPGRADE.replace(b"Connection: Upgrade", b"Connection: Upgrade\xff")
            )
            assert (await stream.receive_some(4096)).startswith(b"HTTP/1.1 400")
        async with client(transports, url) as conn:
            await conn.send(Ping(b"still here"))
            assert await conn.receive() == Ping(b"still here")


async def test_ws_protocol_error_closes_at_once(
    transports: dict[str, Transport],
    server_context: ssl.SSLContext,
    nursery: trio.Nursery,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An unmasked frame (1002): the relay closes without waiting for a close answer.

    wsproto stops parsing after the bad frame, so waiting would only pile up
    what the client keeps sending.  With the close wait made very long, the
    socket must still close while the client is streaming junk at it.
    """
    monkeypatch.setattr(m42d_ws_server, "CLOSE_TIMEOUT", 3600.0)
    seen: list[str] = []

    async def record(connection: FrameConnection) -> None:
        try:
            await connection.receive()
        except ConnectionClosed as exc:
            seen.append(str(exc))

    with trio.fail_after(TIMEOUT):
        url = await listen(transports, "ws", server_context, nursery, record)
        stream = await _raw_ws(url)
        async with stream:
            await stream.send_all(_UPGRADE + b"\x82\x03abc")  # unmasked: not allowed from a client
            with pytest.raises(trio.BrokenResourceError):
                await _send_until_closed(stream)
    assert seen == ["websocket protocol error (1002)"]


async def _send_until_closed(stream: trio.SocketStream) -> None:
    junk = bytes(1 << 16)
    while True:
        await stream.send_all(junk)


async def test_ws_server_aclose_when_cancelled_closes_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Closing under a cancelled scope (a relay being stopped) does not wait for an answer."""
    client_end, server_end = trio.testing.memory_stream_pair()
    conn = m42d_ws_server.ServerWebSocket(
        server_end,  # type: ignore[arg-type]
        Connection(ConnectionType.SERVER),
        transport="ws",
        address="192.0.2.1",
    )
    start = trio.current_time()
    with trio.CancelScope() as scope:
        scope.cancel()
        await conn.aclose()
    assert trio.current_time() - start < 0.5  # virtual time: no 2 s wait for an answer
    assert await client_end.receive_some(10) == b""  # closed


async def test_ws_server_close_is_a_close_handshake(
    transports: dict[str, Transport], server_context: ssl.SSLContext, nursery: trio.Nursery
) -> None:
    """The relay closing sends its last frame, then close 1000, and the client sees both."""

    async def goodbye(connection: FrameConnection) -> None:
        await connection.send(Pong(b"bye"))

    with trio.fail_after(TIMEOUT):
        url = await listen(transports, "ws", server_context, nursery, goodbye)
        async with client(transports, url) as conn:
            assert await conn.receive() == Pong(b"bye")
            with pytest.raises(ConnectionClosed):
                await conn.receive()
            assert isinstance(conn, WebSocketFrameConnection)
            assert conn.close_code == 1000


async def test_tls_oversize_length_prefix_is_a_wire_error(
    transports: dict[str, Transport],
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
    nursery: trio.Nursery,
) -> None:
    seen: list[BaseException] = []

    async def record(connection: FrameConnection) -> None:
        try:
            await connection.receive()
        except WireError as exc:
            seen.append(exc)

    with trio.fail_after(TIMEOUT):
        url = await listen(transports, "tls", server_context, nursery, record)
        host, port = url.removeprefix("tls://").rsplit(":", 1)
        stream = await trio.open_ssl_over_tcp_stream(host, int(port), ssl_context=client_context)
        await stream.send_all((MAX_FRAME + 1).to_bytes(4, "big") + b"\x11")
        assert await stream.receive_some(10) == b""  # the server closed
        await stream.aclose()
    assert len(seen) == 1


async def test_connect_failures_are_transport_errors(transports: dict[str, Transport]) -> None:
    with trio.fail_after(TIMEOUT):
        probe = trio.socket.socket()
        await probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()  # nothing listens there now
        for scheme in SCHEMES:
            with pytest.raises(TransportError, match="cannot connect"):
                async with transports[scheme].connect(f"{scheme}://127.0.0.1:{port}"):
                    pytest.fail("connected to a closed port")  # pragma: no cover


async def test_ws_refused_upgrade_is_an_error_and_the_socket_is_closed(
    transports: dict[str, Transport],
) -> None:
    """A server answering the upgrade with 404 (a proxy on the wrong path): clear error, no leak.

    The server then waits for the client to hang up while the test still
    holds the error (and so its traceback): the client must have closed
    the socket itself, not left it to the garbage collector.
    """
    hung_up = trio.Event()
    error: list[BaseException] = []

    async def refuse(stream: trio.SocketStream) -> None:
        request = b""
        while b"\r\n\r\n" not in request:
            data = await stream.receive_some(4096)
            if not data:
                return
            request += data
        await stream.send_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot here\n"
        )
        while await stream.receive_some(4096):
            pass
        hung_up.set()

    async with trio.open_nursery() as nursery:
        (listener,) = await nursery.start(partial(trio.serve_tcp, refuse, 0, host="127.0.0.1"))
        port = listener.socket.getsockname()[1]
        with trio.fail_after(TIMEOUT):
            try:
                async with transports["ws"].connect(f"ws://127.0.0.1:{port}"):
                    pytest.fail("connected through a refused upgrade")  # pragma: no cover
            except Exception as exc:  # kept alive on purpose: checked below
                error.append(exc)
            await hung_up.wait()
        nursery.cancel_scope.cancel()
    assert isinstance(error[0], TransportError), repr(error[0])
    assert "404" in str(error[0])


async def test_ws_server_closing_during_the_handshake_fails_fast(
    transports: dict[str, Transport],
) -> None:
    """A relay that closes instead of answering the upgrade (over its connection limit).

    The client must say so at once, not sit out its connect timeout (here
    far longer than the test's own) and then report a timeout.
    """

    async def hang_up(stream: trio.SocketStream) -> None:
        await stream.receive_some(4096)
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, hang_up, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        with trio.fail_after(TIMEOUT):
            with pytest.raises(TransportError, match="closed the connection during the websocket"):
                async with transports["ws"].connect(
                    f"ws://127.0.0.1:{port}", connect_timeout=10 * TIMEOUT
                ):
                    pytest.fail("connected to a server that hung up")  # pragma: no cover
        nursery.cancel_scope.cancel()


async def test_listener_refuses_missing_certificate_and_bad_urls(
    transports: dict[str, Transport],
) -> None:
    for url in ("tls://127.0.0.1:0", "wss://127.0.0.1:0"):
        with pytest.raises(TransportError, match="certificate"):
            await transports[url.split(":", 1)[0]].open_listener(url)
    with pytest.raises(TransportError, match="scheme"):
        await transports["tls"].open_listener("ws://127.0.0.1:0")
    with pytest.raises(TransportError, match="no host"):
        await transports["ws"].open_listener("ws://:80")


# -- the relay over each real transport --------------------------------------------


@pytest.fixture
async def relay_url(
    request: pytest.FixtureRequest,
    transports: dict[str, Transport],
    server_context: ssl.SSLContext,
    nursery: trio.Nursery,
) -> AsyncIterator[tuple[Relay, str]]:
    scheme = request.param
    relay = Relay(TicketKeyRing.generate(), limits=RelayLimits(bulk_window=4 * MAX_PAYLOAD))
    listener: FrameListener = await transports[scheme].open_listener(
        f"{scheme}://127.0.0.1:0", ssl_context=None if scheme == "ws" else server_context
    )
    await nursery.start(serve_relay, relay, [listener])
    yield relay, listener.urls[0]
    relay.stop()


@pytest.mark.parametrize("relay_url", SCHEMES, indirect=True)
async def test_two_clients_relay_control_and_bulk(
    relay_url: tuple[Relay, str], transports: dict[str, Transport], client_context: ssl.SSLContext
) -> None:
    relay, url = relay_url
    with trio.fail_after(TIMEOUT):
        async with client(transports, url, client_context) as creator:
            await creator.send(CreateRoom())
            created = await creator.receive()
            assert isinstance(created, RoomCreated)
        room_id = created.ticket[2:18]
        async with (
            client(transports, url, client_context, room_id=room_id) as a,
            client(transports, url, client_context, room_id=room_id) as b,
        ):
            await a.send(Join(Seat.A, created.ticket, created.token_a))
            assert isinstance(await a.receive(), Joined)
            assert isinstance(await a.receive(), Credit)
            await b.send(Join(Seat.B, created.ticket, created.token_b))
            assert (await b.receive()) == Joined(True, MAX_PAYLOAD, 4 * MAX_PAYLOAD)
            assert isinstance(await b.receive(), Credit)
            assert isinstance(await a.receive(), PeerUp)
            await a.send(Control(b"hello"))
            assert await b.receive() == Control(b"hello")
            chunks = [bytes([i]) * MAX_PAYLOAD for i in range(8)]  # twice the window
            async with trio.open_nursery() as n:

                async def send_bulk() -> None:
                    credit = 4 * MAX_PAYLOAD
                    for chunk in chunks:
                        while credit < len(chunk):
                            frame = await a.receive()
                            assert isinstance(frame, Credit)
                            credit += frame.amount
                        await a.send(Bulk(chunk))
                        credit -= len(chunk)

                n.start_soon(send_bulk)
                for chunk in chunks:
                    assert await b.receive() == Bulk(chunk)
            await b.send(Control(b"thanks"))
            while (frame := await a.receive()) != Control(b"thanks"):
                assert isinstance(frame, Credit)
    assert relay.statistics().bytes_by_lane["bulk"] == 8 * MAX_PAYLOAD


@pytest.mark.parametrize("scheme", SCHEMES)
async def test_over_cap_address_refused_before_its_handshake(
    scheme: str,
    transports: dict[str, Transport],
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
    nursery: trio.Nursery,
) -> None:
    """Connections still in their TLS/HTTP handshake count toward the
    per-address cap, and one over it is closed at accept (no handshake paid)."""
    relay = Relay(TicketKeyRing.generate(), limits=RelayLimits(max_connections_per_address=2))
    listener: FrameListener = await transports[scheme].open_listener(
        f"{scheme}://127.0.0.1:0", ssl_context=None if scheme == "ws" else server_context
    )
    await nursery.start(serve_relay, relay, [listener])
    url = listener.urls[0]
    port = int(url.rsplit(":", 1)[1])
    with trio.fail_after(TIMEOUT):
        async with client(transports, url, client_context) as joined:
            await joined.send(Ping(b"a"))
            assert await joined.receive() == Pong(b"a")
            silent = await trio.open_tcp_stream("127.0.0.1", port)  # stays mid-handshake
            await trio.testing.wait_all_tasks_blocked()
            third = await trio.open_tcp_stream("127.0.0.1", port)
            assert await third.receive_some() == b""  # closed at accept: no handshake paid
            await third.aclose()
            assert relay.statistics().refused["RATE_LIMITED"] == 1
        # One place came free when the first connection ended.
        async with client(transports, url, client_context) as conn:
            await conn.send(Ping(b"y"))
            assert await conn.receive() == Pong(b"y")
        await silent.aclose()
    relay.stop()
