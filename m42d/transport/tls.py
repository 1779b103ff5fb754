"""TLS for transports: the client's context and certificate pin, and both handshakes.

Every TLS-carrying transport (``tls``, ``wss``, a plugin's) dials, pins and
accepts the same way, so the rules live once: a pin replaces the CA chain
and host name check with "exactly this certificate"; a server handshake has
a deadline (a client that never finishes TLS must not hold a slot).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import ssl
from typing import Any

import trio

from m42d.errors import TransportError
from m42d.transport.api import PIN_SIZE
from m42d.transport.edges import dialing

__all__ = ["check_pin", "client_ssl_context", "open_tls_stream", "tls_server_handshake"]

logger = logging.getLogger("m42d.transport")


def client_ssl_context(ssl_context: ssl.SSLContext | None, pin: bytes | None) -> ssl.SSLContext:
    """The context to connect with: the caller's, the system CAs, or pin-only.

    With a pin, chain and host name checks are off because :func:`check_pin`
    replaces them with a stricter rule: exactly that certificate.
    """
    if pin is not None:
        if len(pin) != PIN_SIZE:
            raise TransportError(f"a certificate pin is {PIN_SIZE} bytes (SHA-256), got {len(pin)}")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return ssl_context if ssl_context is not None else ssl.create_default_context()


def check_pin(stream: trio.SSLStream[Any], pin: bytes | None) -> None:
    """After the handshake: refuse a server whose certificate is not the pinned one.

    Raises:
        TransportError: the certificate's SHA-256 differs from ``pin``.
    """
    if pin is None:
        return
    der = stream.getpeercert(binary_form=True)
    if der is None or not hmac.compare_digest(hashlib.sha256(der).digest(), pin):
        raise TransportError("the relay's certificate does not match the pin in the link")


async def open_tls_stream(
    host: str,
    port: int,
    *,
    target: str,
    seconds: float,
    ssl_context: ssl.SSLContext | None = None,
    pin: bytes | None = None,
    tls: bool = True,
    https_compatible: bool = False,
) -> trio.SocketStream | trio.SSLStream[trio.SocketStream]:
    """Dial ``host:port`` within ``seconds``; then TLS and the pin check unless ``tls`` is False.

    Nothing is sent on the connection before the pin has been checked, and
    a stream that fails any step is closed here.

    Raises:
        TransportError: timed out, refused, TLS failed or the pin did not match
            (the message names ``target``).
    """
    with dialing(target), trio.fail_after(seconds):
        tcp = await trio.open_tcp_stream(host, port)
        if not tls:
            return tcp
        stream = trio.SSLStream(
            tcp,
            client_ssl_context(ssl_context, pin),
            server_hostname=host,
            https_compatible=https_compatible,
        )
        try:
            await stream.do_handshake()
            check_pin(stream, pin)
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        return stream


async def tls_server_handshake(
    raw: trio.SocketStream,
    ssl_context: ssl.SSLContext,
    *,
    seconds: float,
    https_compatible: bool = False,
) -> trio.SSLStream[trio.SocketStream] | None:
    """The relay's side of TLS, within ``seconds``; None (and closed) if it failed.

    A failed or slow handshake is a client's problem, never the listener's:
    it is logged at debug level and the socket is closed.
    """
    stream = trio.SSLStream(raw, ssl_context, server_side=True, https_compatible=https_compatible)
    try:
        with trio.fail_after(seconds):
            await stream.do_handshake()
    except (trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError):
        logger.debug("TLS handshake failed or timed out")
        await trio.aclose_forcefully(stream)
        return None
    return stream
