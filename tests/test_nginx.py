"""The documented nginx config (docs/nginx/m42d.conf) in front of a real m42d, over wss.

Rules of this module: the config under test is the documentation file
itself; only its addresses and certificate paths are rewritten (each
rewrite must match, so an edited snippet that drifts from what is tested
fails here).  nginx is Debian's (``apt-get install nginx-light``), started
in a temp dir on a loopback port; it is never installed by the test, and
the module skips when ``nginx`` is absent.  Readiness is nginx's own
"start worker process" notice on stderr, not a sleep.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import attrs
import pytest
import trio
import trustme

from m42d.client import events as ev
from m42d.client.engine import Client
from m42d.client.keystore import FileKeyStore
from m42d.link import Link
from m42d.ticket import Seat
from m42d.transport import Transport
from tests.test_daemon_systemd import (
    STEP,
    Daemon,
    _free_port,
    create_room,
    exchange,
    open_pair,
    running_daemon,
    serve_argv,
    transports_or_skip,
)

NGINX = shutil.which("nginx") or next(
    (p for p in ("/usr/sbin/nginx", "/sbin/nginx") if os.access(p, os.X_OK)), None
)
SNIPPET = Path(__file__).resolve().parent.parent / "docs" / "nginx" / "m42d.conf"

pytestmark = [
    pytest.mark.nginx,
    pytest.mark.skipif(
        NGINX is None, reason="nginx is not installed (Debian: apt-get install nginx-light)"
    ),
]


def rewrite(text: str, old: str, new: str, *, count: int = 1) -> str:
    """Replace a directive line; the documented line must be there exactly ``count`` times."""
    pattern = re.compile(old, re.MULTILINE)
    found = len(pattern.findall(text))
    assert found == count, f"docs/nginx/m42d.conf: {old!r} found {found} times, not {count}"
    return pattern.sub(new, text)


def nginx_config(
    tmp: Path, ws_port: int, nginx_port: int, cert: Path, key: Path
) -> tuple[str, str]:
    """A main nginx.conf, and docs/nginx/m42d.conf with loopback ports and test certificates."""
    text = SNIPPET.read_text()
    text = rewrite(text, r"^    listen 443 ssl;$", f"    listen 127.0.0.1:{nginx_port} ssl;")
    text = rewrite(text, r"^    listen \[::\]:443 ssl;\n", "")
    text = rewrite(text, r"^    server 127\.0\.0\.1:8042;$", f"    server 127.0.0.1:{ws_port};")
    text = rewrite(text, r"^    ssl_certificate     \S+;$", f"    ssl_certificate {cert};")
    text = rewrite(text, r"^    ssl_certificate_key \S+;$", f"    ssl_certificate_key {key};")
    temp = {name: tmp / name for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")}
    for path in temp.values():
        path.mkdir()
    temps = "\n".join(f"    {name}_temp_path {path};" for name, path in temp.items())
    # As root, nginx's workers would switch to "nobody", who cannot enter
    # pytest's 0700 temp dirs; run them as ourselves.
    user = "user root;\n" if os.geteuid() == 0 else ""
    return (
        f"{user}worker_processes 1;\n"
        "events { worker_connections 64; }\n"
        "http {\n"
        f"{temps}\n"
        f"    include {tmp / 'm42d.conf'};\n"
        "}\n"
    ), text


@attrs.define
class Proxied:
    daemon: Daemon
    url: str
    ssl_context: ssl.SSLContext
    transports: dict[str, Transport]


@contextlib.asynccontextmanager
async def nginx_in_front(tmp_path: Path) -> AsyncIterator[Proxied]:
    assert NGINX is not None
    transports = transports_or_skip("ws", "wss")
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    leaf.private_key_pem.write_to_path(str(key))
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)

    argv = serve_argv(tmp_path / "state", "--listen", "ws://127.0.0.1:0")
    async with running_daemon(argv) as daemon:
        ws_port = int(daemon.listening()["ws"].rsplit(":", 1)[1])
        nginx_port = _free_port()
        prefix = tmp_path / "nginx"
        prefix.mkdir()
        main, snippet = nginx_config(prefix, ws_port, nginx_port, cert, key)
        (prefix / "m42d.conf").write_text(snippet)
        (prefix / "nginx.conf").write_text(main)
        directives = f"daemon off; pid {prefix / 'nginx.pid'}; error_log stderr notice;"
        proc = await trio.lowlevel.open_process(
            [NGINX, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-g", directives],
            stderr=subprocess.PIPE,
        )
        try:
            assert proc.stderr is not None
            log = b""
            with trio.fail_after(STEP):
                while b"start worker process" not in log:
                    chunk = await proc.stderr.receive_some()
                    assert chunk, f"nginx exited: {log.decode(errors='replace')}"
                    log += chunk
            async with trio.open_nursery() as nursery:
                # Keep reading nginx's stderr so it never blocks on a full pipe.
                nursery.start_soon(_drain, proc.stderr)
                yield Proxied(daemon, f"wss://127.0.0.1:{nginx_port}", client_ctx, transports)
                nursery.cancel_scope.cancel()
        finally:
            proc.terminate()
            with trio.CancelScope(shield=True), trio.move_on_after(STEP):
                await proc.wait()
            if proc.returncode is None:
                proc.kill()
                with trio.CancelScope(shield=True):
                    await proc.wait()
        assert await daemon.stop() == 0


async def _drain(stream: trio.abc.ReceiveStream) -> None:
    while await stream.receive_some():
        pass


async def test_frames_cross_nginx_both_lanes(tmp_path: Path) -> None:
    """Room creation and both seats' joins go through nginx; CONTROL and BULK arrive intact."""
    async with nginx_in_front(tmp_path) as p:
        wss = p.transports["wss"]
        async with open_pair(wss, p.url, ssl_context=p.ssl_context) as (a, b):
            await exchange(a, b, bulk=os.urandom(200_000))
            # The other direction too, and a second round after the first.
            await exchange(b, a, bulk=os.urandom(65_536))


async def _https(port: int, ssl_context: ssl.SSLContext, request: str) -> bytes:
    """One raw HTTPS exchange through nginx, read to the end (send ``Connection: close``)."""
    with trio.fail_after(STEP):
        tcp = await trio.open_tcp_stream("127.0.0.1", port)
        tls = trio.SSLStream(tcp, ssl_context, server_hostname="127.0.0.1")
        async with tls:
            await tls.send_all(request.encode())
            reply = b""
            with contextlib.suppress(trio.BrokenResourceError):
                while chunk := await tls.receive_some():
                    reply += chunk
    return reply


async def test_nginx_passes_the_page_through_and_refuses_the_rest(tmp_path: Path) -> None:
    """``location /`` proxies GETs of the browser client, m42d's headers intact.

    A raw HTTPS request rather than the wss transport: the transport's
    handshake-refused path is tested elsewhere, here only nginx matters.
    """
    async with nginx_in_front(tmp_path) as p:
        port = int(p.url.rsplit(":", 1)[1])
        host = f"127.0.0.1:{port}"
        req = f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        page = await _https(port, p.ssl_context, req)
        head, _, body = page.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 "), head[:80]
        assert body.startswith(b"<!doctype html>")
        text = head.decode().lower()
        # m42d's CSP, with the host and port the browser used (nginx's $http_host).
        assert f"connect-src 'self' ws://{host} wss://{host};" in text
        for line in ("referrer-policy: no-referrer", "cache-control: no-store"):
            assert line in text
        req = f"HEAD /app.js HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        head_only = await _https(port, p.ssl_context, req)
        assert head_only.startswith(b"HTTP/1.1 200 ")
        assert head_only.endswith(b"\r\n\r\n")
        for path in ("/index.html", "/metrics"):  # m42d's 404, with its headers
            req = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
            reply = await _https(port, p.ssl_context, req)
            assert reply.startswith(b"HTTP/1.1 404 "), (path, reply[:80])
            assert b"content-security-policy: default-src 'none'" in reply.lower()
        # Only GET/HEAD reach m42d: nginx refuses a POST itself.
        req = f"POST / HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        reply = await _https(port, p.ssl_context, req)
        assert reply.startswith(b"HTTP/1.1 403 "), reply[:80]
        assert b"Server: nginx" in reply


async def test_two_clients_chat_and_send_a_file_through_nginx(tmp_path: Path) -> None:
    """Two m42 client engines: texts both ways, then a file whose hash must match."""
    async with nginx_in_front(tmp_path) as p:
        created = await create_room(p.transports["wss"], p.url, ssl_context=p.ssl_context)
        secret = os.urandom(32)
        links = [
            Link(p.url, Seat.A, created.ticket, created.token_a, secret),
            Link(p.url, Seat.B, created.ticket, created.token_b, secret),
        ]
        down = tmp_path / "down"
        down.mkdir()
        src = tmp_path / "report.bin"
        data = os.urandom(300_000)
        src.write_bytes(data)

        def client(link: Link, **kwargs: object) -> Client:
            keys = FileKeyStore(tmp_path / f"keys-{link.seat.value}")
            return Client(
                link,
                keys,
                ssl_context=p.ssl_context,
                backoff_base=0.05,
                **kwargs,  # type: ignore[arg-type]
            )

        a, b = client(links[0]), client(links[1], download_dir=down, accept="all")
        seen: dict[str, list[ev.ClientEvent]] = {"a": [], "b": []}
        changed = trio.Event()

        async def record(name: str, c: Client) -> None:
            nonlocal changed
            async for event in c.events:
                seen[name].append(event)
                changed.set()
                changed = trio.Event()

        async def until(name: str, kind: type[ev.ClientEvent], n: int = 1) -> None:
            while len([e for e in seen[name] if isinstance(e, kind)]) < n:
                await changed.wait()

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(record, "a", a)
                nursery.start_soon(record, "b", b)
                await nursery.start(a.run)
                await nursery.start(b.run)
                await until("a", ev.SafetyWords)
                await until("b", ev.SafetyWords)
                a.send_text("hello through nginx")
                b.send_text("hello back")
                await until("b", ev.TextIn)
                await until("a", ev.TextIn)
                await a.send_file(src)
                await until("b", ev.TransferDone)
                await until("a", ev.TransferDone)
                a.close()
                b.close()
                nursery.cancel_scope.cancel()
    texts_b = [e.text for e in seen["b"] if isinstance(e, ev.TextIn)]
    texts_a = [e.text for e in seen["a"] if isinstance(e, ev.TextIn)]
    assert texts_b == ["hello through nginx"]
    assert texts_a == ["hello back"]
    (done,) = [e for e in seen["b"] if isinstance(e, ev.TransferDone)]
    assert done.path is not None
    received = await trio.Path(done.path).read_bytes()
    assert hashlib.sha256(received).digest() == hashlib.sha256(data).digest()
