"""A real relay on loopback for client tests (no tests here).

The relay runs in-process (``serve_relay``) on the real transport plugins
bound to port 0; clients connect through the same plugins, so these tests
cross the whole stack except the process boundary.
"""

from __future__ import annotations

import hashlib
import os
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import attrs
import trio
import trustme

from m42d.client.engine import Client
from m42d.client.events import ClientEvent
from m42d.client.keystore import FileKeyStore
from m42d.client.rooms import BROWSER_SCHEMES
from m42d.link import Link, make_links
from m42d.relay import Relay, RelayLimits, serve_relay
from m42d.ticket import TicketKeyRing
from m42d.transport import FrameConnection, FrameListener, Transport, load_transports

E = TypeVar("E")
STEP = 10.0


@attrs.define
class TrackingTransport:
    """Wraps a transport and remembers the client-side connections it opened."""

    inner: Transport
    connections: list[FrameConnection] = attrs.field(factory=list)

    async def open_listener(self, url: str, **kwargs: Any) -> FrameListener:
        return await self.inner.open_listener(url, **kwargs)

    @asynccontextmanager
    async def connect(self, url: str, **kwargs: Any) -> AsyncIterator[FrameConnection]:
        async with self.inner.connect(url, **kwargs) as conn:
            self.connections.append(conn)
            yield conn


@attrs.define
class RelayUnderTest:
    relay: Relay
    url: str
    scheme: str
    pin: bytes | None
    transports: dict[str, Transport]
    tracker: TrackingTransport

    def links(self, secret: bytes | None = None) -> tuple[Link, Link]:
        issued = self.relay.keyring.mint(now=int(self.relay.wall_clock()), ttl=3600)
        return make_links(self.url, issued, secret or os.urandom(32), pin=self.pin)

    def client(self, link: Link, tmp: Path, **kwargs: Any) -> Client:
        keys = kwargs.pop("keys", None) or FileKeyStore(tmp / f"keys-{link.seat.value}")
        kwargs.setdefault("backoff_base", 0.01)
        kwargs.setdefault("backoff_cap", 0.2)
        kwargs.setdefault("tick_interval", 0.05)
        kwargs.setdefault("transports", self.transports)
        return Client(link, keys, **kwargs)


def _server_context(ca: trustme.CA) -> tuple[ssl.SSLContext, bytes]:
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)
    pem = cert.cert_chain_pems[0].bytes()
    der = ssl.PEM_cert_to_DER_cert(pem.decode("ascii"))
    return ctx, hashlib.sha256(der).digest()


@asynccontextmanager
async def running_relay(
    scheme: str, limits: RelayLimits | None = None
) -> AsyncIterator[RelayUnderTest]:
    plugins = load_transports()
    base = plugins[scheme]
    tracker = TrackingTransport(base)
    ssl_context = None
    pin = None
    if scheme in ("tls", "wss"):
        ssl_context, pin = _server_context(trustme.CA())
    listener = await base.open_listener(f"{scheme}://127.0.0.1:0", ssl_context=ssl_context)
    relay = Relay(TicketKeyRing.generate(), limits=limits or RelayLimits())
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_relay, relay, [listener])
        url = listener.urls[0]
        transports: dict[str, Transport] = {scheme: tracker}
        if scheme in BROWSER_SCHEMES:  # links from create_room name http(s)://
            transports[BROWSER_SCHEMES[scheme]] = tracker
        yield RelayUnderTest(relay, url, scheme, pin, transports, tracker)
        nursery.cancel_scope.cancel()


async def next_event(client: Client, kind: type[E], limit: float = STEP) -> E:
    """Skip events until one of ``kind`` arrives."""
    with trio.fail_after(limit):
        while True:
            event: ClientEvent = await client.events.receive()
            if isinstance(event, kind):
                return event


def file_digest(path: str | Path) -> bytes:
    return hashlib.sha256(Path(path).read_bytes()).digest()


def file_mode(path: str | Path) -> int:
    return Path(path).stat().st_mode & 0o777


@attrs.define
class Recorder:
    """Collects every event of a client in the background."""

    client: Client
    seen: list[ClientEvent] = attrs.field(factory=list)
    _changed: trio.Event = attrs.field(factory=trio.Event)

    async def run(self) -> None:
        async for event in self.client.events:
            self.seen.append(event)
            self._changed.set()
            self._changed = trio.Event()

    def of(self, kind: type[E]) -> list[E]:
        return [e for e in self.seen if isinstance(e, kind)]

    async def wait_for(self, predicate: Any, limit: float = STEP) -> None:
        with trio.fail_after(limit):
            while not predicate(self):
                await self._changed.wait()
