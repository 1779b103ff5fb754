"""Creating a room: ask the relay for a ticket, draw the room secret here, make the two links.

The relay answers CREATE_ROOM with a ticket and the two seat tokens
(docs/protocol.md "Room creation"); the 256-bit room secret is drawn on this
machine and goes only into the links' fragments, never to the relay.

A ``tls://`` relay usually has a self-signed certificate: without a pin
given, :func:`first_use_pin` reads the certificate it presents now (trust on
first use), and that pin goes into both links.

A WebSocket relay goes into the links in its ``http://``/``https://`` form
(:func:`link_relay_url`): m42d's WebSocket listener serves the browser
client at that address, so a person can open the link in a browser, while
``m42`` connects to the same URL over WebSocket either way (``http`` and
``https`` are entry points of the WebSocket transport).
"""

from __future__ import annotations

import hashlib
import os
import ssl
from typing import Final, final

import attrs
import trio

from m42d.client.connection import RelayRefused
from m42d.errors import TransportError
from m42d.link import Link, RelayAddress
from m42d.ticket import Seat, Ticket
from m42d.transport import Transport
from m42d.wire import WIRE_VERSION, CreateRoom, Credit, Error, Ping, Pong, RoomCreated

__all__ = [
    "BROWSER_SCHEMES",
    "NewRoom",
    "create_room",
    "first_use_pin",
    "link_relay_url",
    "probe_certificate_pin",
]

SECRET_SIZE: Final = 32
"""Bytes of the room secret R."""

BROWSER_SCHEMES: Final = {"ws": "http", "wss": "https"}
"""The scheme a browser opens for each WebSocket scheme: same host, port and path."""


def link_relay_url(address: RelayAddress) -> str:
    """The relay URL written into a room's links: a WebSocket relay as ``http(s)://``.

    The default ports match (ws/http 80, wss/https 443), so a URL without a
    port keeps meaning the same relay.  Other schemes (``tls``, ``unix``,
    plugins') are not for browsers and stay as they are.
    """
    scheme = BROWSER_SCHEMES.get(address.scheme)
    return address.url if scheme is None else attrs.evolve(address, scheme=scheme).url


@final
@attrs.frozen
class NewRoom:
    """A room the relay just made: one link per seat, both holding the room secret."""

    link_a: Link
    link_b: Link
    expires: int
    """Unix time after which the relay refuses the ticket."""


async def probe_certificate_pin(host: str, port: int, *, limit: float = 10.0) -> bytes:
    """SHA-256 of the certificate a TLS server presents (trust on first use).

    Raises:
        TransportError: the connection or the TLS handshake failed.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with trio.fail_after(limit):
            tcp = await trio.open_tcp_stream(host, port)
            tls = trio.SSLStream(tcp, context, server_hostname=host)
            try:
                await tls.do_handshake()
                der = tls.getpeercert(binary_form=True)
            finally:
                await trio.aclose_forcefully(tls)
    except trio.TooSlowError as exc:
        raise TransportError("the relay did not complete TLS in time") from exc
    except (OSError, trio.BrokenResourceError) as exc:
        # trio's BrokenResourceError has no text of its own; the SSL or OS
        # error behind it says what happened.
        cause = exc.__cause__ or exc.__context__ or exc
        raise TransportError(
            f"cannot reach the relay over TLS: {cause or type(cause).__name__}"
        ) from exc
    if not der:
        raise TransportError("the relay presented no certificate")
    return hashlib.sha256(der).digest()


async def first_use_pin(address: RelayAddress) -> bytes | None:
    """The pin to trust on first use for a relay given without one, or None.

    Only ``tls://`` is pinned this way; the other schemes check certificates
    against the system's authorities (``wss``) or have none (``ws``).

    Raises:
        TransportError: the TLS relay could not be reached.
    """
    if address.scheme != "tls":
        return None
    port = address.effective_port
    assert port is not None
    return await probe_certificate_pin(address.host, port)


async def create_room(
    address: RelayAddress,
    transport: Transport,
    *,
    pin: bytes | None = None,
    creation_secret: bytes = b"",
    limit: float = 10.0,
) -> NewRoom:
    """Ask the relay at ``address`` for a room; ``limit`` seconds bound the wait for its answer.

    Raises:
        RelayRefused: the relay answered ERROR (a wrong creation secret, a limit).
        TransportError: the connection failed, or the relay answered nonsense.
        trio.TooSlowError: no answer within ``limit``.
    """
    async with transport.connect(address.url, pin=pin) as conn:
        await conn.send(CreateRoom(WIRE_VERSION, creation_secret))
        with trio.fail_after(limit):
            while True:
                frame = await conn.receive()
                if isinstance(frame, RoomCreated):
                    break
                if isinstance(frame, Error):
                    raise RelayRefused(frame.code, frame.message)
                if isinstance(frame, Ping):
                    await conn.send(Pong(frame.data))
                elif not isinstance(frame, Credit | Pong):
                    raise TransportError(f"the relay answered {frame.kind.name}")
    secret = os.urandom(SECRET_SIZE)
    relay = link_relay_url(address)
    return NewRoom(
        link_a=Link(relay, Seat.A, frame.ticket, frame.token_a, secret, pin),
        link_b=Link(relay, Seat.B, frame.ticket, frame.token_b, secret, pin),
        expires=Ticket.parse(frame.ticket).expires,
    )
