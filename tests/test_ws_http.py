"""The WebSocket listener's HTTP side, against docs/protocol.md ("Transports and framing").

What the spec left an implementer to guess: how a path prefix joins
``/m42/v1``, whether room ids must be lowercase, what any other request
gets (the spec said 404, the relay answered 400), what ``Origin`` changes,
whether compression is negotiated, and that CREATE_ROOM may be followed by
JOIN on one connection.  Then the browser client the listener serves on
plain requests: the page and its modules with m42d.web.pages' headers, the
CSP naming the origin the request came to, and slow clients bounded.
"""

from __future__ import annotations

import contextlib
import ssl

import pytest
import trio
import trustme
from m42d_ws import WebSocketListener, room_path

from m42d.relay import Relay, serve_relay
from m42d.ticket import Seat, TicketKeyRing
from m42d.transport import FrameHandler, Transport, load_transports
from m42d.web import pages
from m42d.wire import CreateRoom, Credit, Join, Joined, Ping, RoomCreated, encode
from tests.test_transport_loopback import TIMEOUT, _masked_frame, _recording, echo

KEY = "dGhlIHNhbXBsZSBub25jZQ=="
ROOM = "0123456789abcdef" * 2


async def exchange(url: str, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw request bytes; the status, headers and body of the answer."""
    host, port = url.removeprefix("ws://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(request)
        data = b""
        with trio.move_on_after(TIMEOUT):
            while b"\r\n\r\n" not in data or (
                not data.startswith(b"HTTP/1.1 101") and not _complete(data)
            ):
                chunk = await stream.receive_some(4096)
                if not chunk:
                    break
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split(" ")[1]), headers, body


def _complete(data: bytes) -> bool:
    head, _, body = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return True


def upgrade(path: str, *extra: str) -> bytes:
    lines = [
        f"GET {path} HTTP/1.1",
        "Host: relay.example",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {KEY}",
        "Sec-WebSocket-Version: 13",
        *extra,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def plain(method: str, path: str) -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: relay.example\r\n\r\n".encode()


@pytest.fixture(scope="module")
def transports() -> dict[str, Transport]:
    return load_transports()


async def listen_ws(
    transports: dict[str, Transport], nursery: trio.Nursery, handler: FrameHandler
) -> str:
    listener = await transports["ws"].open_listener("ws://127.0.0.1:0")
    await nursery.start(listener.serve, handler)
    return listener.urls[0]


@pytest.fixture
async def url(transports: dict[str, Transport], nursery: trio.Nursery) -> str:
    return await listen_ws(transports, nursery, echo)


@pytest.mark.parametrize(
    "path",
    [
        "/m42/v1",
        f"/m42/v1/room/{ROOM}",
        f"/relay/m42/v1/room/{ROOM}",  # a prefix a proxy left in place
        "/a/b/m42/v1",
        f"//m42/v1/room/{ROOM}",  # a prefix "/" joined without removing its "/"
        "/m42/v1?ignored=1",
    ],
)
async def test_upgrades_on_m42_paths_after_any_prefix(url: str, path: str) -> None:
    status, headers, _ = await exchange(url, upgrade(path))
    assert status == 101
    assert headers["upgrade"].lower() == "websocket"


@pytest.mark.parametrize(
    "path",
    [
        f"/m42/v1/room/{ROOM.upper()}",  # room ids are lowercase hex
        f"/m42/v1/room/{ROOM[:-1]}",
        "/m42/v1/",
        "/m42/v2",
        "/m42/v1x",
        "/",
        "/elsewhere",
    ],
)
async def test_other_paths_get_404_even_as_upgrades(url: str, path: str) -> None:
    status, headers, body = await exchange(url, upgrade(path))
    assert (status, body) == (404, b"not found\n")
    assert headers["connection"] == "close"


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/index.html"), ("GET", "/m42/v1/room/ZZ"), ("GET", "/lib/"), ("GET", "/../pages.py")],
)
async def test_plain_requests_to_unknown_paths_get_404_with_a_short_body(
    url: str, method: str, path: str
) -> None:
    """It used to be 400 for any plain request (wsproto's answer to a missing upgrade)."""
    status, headers, body = await exchange(url, plain(method, path))
    assert (status, body) == (404, b"not found\n")
    assert headers["content-type"] == "text/plain; charset=utf-8"
    assert headers["content-length"] == str(len(body))
    assert headers["connection"] == "close"
    assert headers["cache-control"] == "no-store"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["content-security-policy"].startswith("default-src 'none'")


async def test_get_slash_is_the_browser_page_with_its_security_headers(url: str) -> None:
    status, headers, body = await exchange(url, plain("GET", "/"))
    expected = pages.respond("GET", "/", host="relay.example", tls=False)
    assert status == 200
    assert body == expected.body
    assert body.startswith(b"<!doctype html>")
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert headers["content-length"] == str(len(body))
    assert headers["connection"] == "close"
    for name in (
        "content-security-policy",
        "referrer-policy",
        "cross-origin-opener-policy",
        "cross-origin-resource-policy",
        "permissions-policy",
        "x-content-type-options",
        "cache-control",
    ):
        assert headers[name] == expected.header(name), name
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["cache-control"] == "no-store"
    csp = headers["content-security-policy"]
    assert "connect-src 'self' ws://relay.example wss://relay.example;" in csp
    assert "'unsafe-inline'" not in csp


async def test_every_served_file_comes_from_the_listener(url: str) -> None:
    """The page's modules are served too (what ``GET /`` loads next), each as pages says."""
    for path in sorted(pages.served_paths()):
        status, headers, body = await exchange(url, plain("GET", path))
        expected = pages.respond("GET", path, host="relay.example", tls=False)
        assert (status, body) == (200, expected.body), path
        assert headers["content-type"] == expected.header("content-type"), path


async def test_the_csp_names_the_host_the_request_came_to(url: str) -> None:
    request = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8042\r\n\r\n"
    status, headers, _ = await exchange(url, request)
    assert status == 200
    csp = headers["content-security-policy"]
    assert "connect-src 'self' ws://127.0.0.1:8042 wss://127.0.0.1:8042;" in csp


async def test_a_wss_listener_allows_only_wss_in_the_csp(
    transports: dict[str, Transport], nursery: trio.Nursery
) -> None:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    listener = await transports["wss"].open_listener("wss://127.0.0.1:0", ssl_context=server_ctx)
    await nursery.start(listener.serve, echo)
    port = int(listener.urls[0].rsplit(":", 1)[1])
    with trio.fail_after(TIMEOUT):
        tcp = await trio.open_tcp_stream("127.0.0.1", port)
        tls = trio.SSLStream(tcp, client_ctx, server_hostname="127.0.0.1")
        async with tls:
            await tls.send_all(f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
            reply = b""
            with contextlib.suppress(trio.BrokenResourceError):
                while chunk := await tls.receive_some():
                    reply += chunk
    assert reply.startswith(b"HTTP/1.1 200 OK\r\n")
    head = reply.partition(b"\r\n\r\n")[0].decode()
    assert f"connect-src 'self' wss://127.0.0.1:{port};" in head
    assert "ws://" not in head


@pytest.mark.parametrize(
    "host_line",
    ["", "Host: \r\n", "Host: evil.example; script-src *\r\n", "Host: a b\r\n"],
    ids=["none", "empty", "csp injection", "space"],
)
async def test_a_missing_or_malformed_host_gets_400_and_a_locked_csp(
    url: str, host_line: str
) -> None:
    """No Host at all is h11's 400 (HTTP/1.1 requires one); a bad one is pages' 400."""
    request = f"GET / HTTP/1.1\r\n{host_line}\r\n".encode()
    status, headers, body = await exchange(url, request)
    assert status == 400
    assert headers["content-type"] == "text/plain; charset=utf-8"
    assert b"<" not in body
    if host_line:
        csp = headers["content-security-policy"]
        assert csp.startswith("default-src 'none'")
        assert "script-src" not in csp
        assert "evil" not in csp


async def test_other_methods_get_405(url: str) -> None:
    status, headers, _ = await exchange(url, plain("POST", "/"))
    assert status == 405
    assert headers["allow"] == "GET, HEAD"


async def test_head_gets_the_headers_without_the_body(url: str) -> None:
    status, headers, body = await exchange(url, plain("HEAD", "/"))
    assert (status, body) == (200, b"")
    page = pages.respond("GET", "/", host="relay.example", tls=False)
    assert headers["content-length"] == str(len(page.body))
    status, headers, body = await exchange(url, plain("HEAD", "/nothing-here"))
    assert (status, body) == (404, b"")
    assert headers["content-length"] == str(len(b"not found\n"))


async def test_a_slow_http_client_holds_only_its_own_connection(
    transports: dict[str, Transport], nursery: trio.Nursery
) -> None:
    """A client that sends half a head and stalls: others get the page meanwhile."""
    listener = await transports["ws"].open_listener("ws://127.0.0.1:0")
    await nursery.start(listener.serve, echo)
    host, port = listener.urls[0].removeprefix("ws://").rsplit(":", 1)
    with trio.fail_after(TIMEOUT):
        slow = await trio.open_tcp_stream(host, int(port))
        async with slow:
            await slow.send_all(b"GET / HTTP/1.1\r\nHost: rel")
            for _ in range(3):
                status, _, body = await exchange(listener.urls[0], plain("GET", "/"))
                assert status == 200
                assert body.startswith(b"<!doctype html>")


async def test_a_stalled_http_request_is_closed_at_the_handshake_deadline(
    nursery: trio.Nursery,
) -> None:
    sockets = await trio.open_tcp_listeners(0, host="127.0.0.1")
    listener = WebSocketListener("ws", sockets, None, handshake_timeout=0.2)
    await nursery.start(listener.serve, echo)
    port = sockets[0].socket.getsockname()[1]
    with trio.fail_after(TIMEOUT):
        for stalled in (b"GET / HTTP/1.1\r\nHost: rel", b""):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                await stream.send_all(stalled)
                # The relay closes it, with nothing sent: reading sees EOF.
                assert await stream.receive_some(4096) == b""


async def test_a_plain_request_to_an_m42_path_gets_426(url: str) -> None:
    status, headers, body = await exchange(url, plain("GET", "/m42/v1"))
    assert status == 426
    assert headers["upgrade"] == "websocket"
    assert headers["sec-websocket-version"] == "13"
    assert b"WebSocket" in body


async def test_a_bad_upgrade_on_an_m42_path_gets_wsprotos_answer(url: str) -> None:
    request = upgrade("/m42/v1").replace(b"Sec-WebSocket-Version: 13", b"Sec-WebSocket-Version: 8")
    status, headers, _ = await exchange(url, request)
    assert status == 426
    assert headers["sec-websocket-version"] == "13"


async def test_not_http_gets_400_and_an_oversized_head_431(url: str) -> None:
    status, _, body = await exchange(url, b"\x16\x03\x01\x02\x00garbage\r\n\r\n")
    assert (status, body) == (400, b"bad request\n")
    status, _, _ = await exchange(url, b"GET / HTTP/1.1\r\nX-Pad: " + b"a" * 20_000)
    assert status == 431


async def test_origin_is_ignored_and_no_extension_is_negotiated(url: str) -> None:
    status, headers, _ = await exchange(
        url,
        upgrade(
            "/m42/v1",
            "Origin: https://somewhere-else.example",
            "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits",
        ),
    )
    assert status == 101
    assert "sec-websocket-extensions" not in headers


def test_room_path_joins_a_prefix_without_doubling_its_slash() -> None:
    assert room_path("") == "/m42/v1"
    assert room_path("/") == "/m42/v1"
    assert room_path("//") == "/m42/v1"
    assert room_path("/relay/", bytes(16)) == "/relay/m42/v1/room/" + "00" * 16
    assert room_path("/Relay", bytes.fromhex(ROOM)) == f"/Relay/m42/v1/room/{ROOM}"


async def test_create_room_then_join_on_one_websocket_connection(
    transports: dict[str, Transport], nursery: trio.Nursery
) -> None:
    """docs/protocol.md: after ROOM_CREATED the connection stays in the lobby and may JOIN."""
    relay = Relay(TicketKeyRing.generate())
    listener = await transports["ws"].open_listener("ws://127.0.0.1:0")
    await nursery.start(serve_relay, relay, [listener])
    with trio.fail_after(TIMEOUT):
        async with transports["ws"].connect(listener.urls[0]) as conn:
            await conn.send(CreateRoom())
            created = await conn.receive()
            assert isinstance(created, RoomCreated)
            await conn.send(Join(Seat.A, created.ticket, created.token_a))
            joined = await conn.receive()
            assert isinstance(joined, Joined)
            assert not joined.peer_online
            assert isinstance(await conn.receive(), Credit)
    relay.stop()


async def test_a_compressed_frame_is_a_protocol_error(
    transports: dict[str, Transport], nursery: trio.Nursery
) -> None:
    """No extension was negotiated, so a frame with RSV1 (permessage-deflate's bit) closes 1002."""
    got, done, record = _recording()
    frame = bytearray(_masked_frame(0x2, encode(Ping())))
    frame[0] |= 0x40  # RSV1
    with trio.fail_after(TIMEOUT):
        relay_url = await listen_ws(transports, nursery, record)
        host, port = relay_url.removeprefix("ws://").rsplit(":", 1)
        stream = await trio.open_tcp_stream(host, int(port))
        async with stream:
            await stream.send_all(upgrade("/m42/v1") + bytes(frame))
            await done.wait()
    assert got == ["websocket protocol error (1002)"]


@pytest.mark.parametrize(
    "request_bytes",
    [
        upgrade("/m42/v1").replace(b"GET ", b"POST "),
        upgrade("/m42/v1").replace(b"Sec-WebSocket-Key: " + KEY.encode() + b"\r\n", b""),
        upgrade("/m42/v1").replace(b"Sec-WebSocket-Version: 13\r\n", b""),
        upgrade("/m42/v1").replace(b"Connection: Upgrade", b"Connection: keep-alive"),
        upgrade("/m42/v1").replace(b"Host: relay.example\r\n", b""),
    ],
    ids=["not GET", "no key", "no version", "no Connection: upgrade", "no Host"],
)
async def test_an_upgrade_that_breaks_rfc_6455_gets_400(url: str, request_bytes: bytes) -> None:
    status, _, body = await exchange(url, request_bytes)
    assert (status, body) == (400, b"bad request\n")
