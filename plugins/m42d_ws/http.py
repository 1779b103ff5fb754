"""The WebSocket listener's HTTP side: read one request head, route it, answer plain requests.

Every connection to a ``ws://``/``wss://`` listener starts as HTTP/1.1.  The
head is read with h11 (bounded: :data:`HEAD_LIMIT` bytes, and the caller's
deadline) and routed:

* a WebSocket upgrade on an m42 path (:func:`is_m42_path`) is checked
  against RFC 6455 4.2.1 and accepted (:func:`accept_upgrade`), after which
  only wsproto's frame protocol runs (:mod:`m42d_ws.server`): the request
  is parsed once, by h11, not a second time by wsproto's handshake;
* a plain request on an m42 path is answered ``426 Upgrade Required``;
* an upgrade on any other path is answered ``404``;
* any other plain request is the browser client's: :func:`answer_plain`
  hands it to :func:`m42d.web.pages.respond` (``GET /`` is the page, then its
  modules; ``HEAD`` gets the same headers and no body; other methods ``405``;
  a missing or malformed ``Host`` ``400``).  The page is thus served from
  the WebSocket endpoint's own origin, and its CSP names that origin's
  ``ws://``/``wss://`` form, taken from the validated ``Host``;
* bytes that are not HTTP/1.1 get ``400`` (``431`` for an oversized head).

A plain request is bounded like an upgrade: its head by :data:`HEAD_LIMIT`,
the whole exchange (head and answer) by the listener's handshake deadline,
and it runs on its connection's own task, so a client that sends or reads
slowly holds only its own connection.  One request per connection
(``Connection: close``): the page's few dozen files cost as many short
connections, which keeps the listener free of keep-alive state.

Paths (docs/protocol.md, "Transports and framing"): ``P/m42/v1`` and
``P/m42/v1/room/<32 lowercase hex digits>``, where ``P`` is any prefix (the
relay cannot know which prefix a proxy in front leaves in place, so it
ignores it: a client joins its URL's path, trailing ``/`` removed, to
``/m42/v1``).  A query string is ignored.  ``Origin`` is ignored too:
admission rests on the ticket and seat token in JOIN, never on an ambient
credential a page of another origin could borrow.

The listener's own answers (426, 404 to an upgrade, 400, 431) are short
``text/plain`` bodies with ``Content-Length``, ``Connection: close``,
``Cache-Control: no-store`` and ``X-Content-Type-Options: nosniff``; the
browser client's answers carry :mod:`m42d.web.pages`' headers instead
(plus ``Connection: close``).  The connection closes after one.
"""

from __future__ import annotations

import re
from typing import Final, final

import attrs
import h11
from wsproto.utilities import generate_accept_token

from m42d.web import pages

__all__ = [
    "HEAD_LIMIT",
    "Answer",
    "PlainAnswer",
    "accept_upgrade",
    "answer_plain",
    "error_answer",
    "header",
    "is_m42_path",
    "is_websocket_upgrade",
    "serialize",
    "upgrade_required",
]

HEAD_LIMIT: Final = 16 * 1024
"""Bytes of request head read at most (an upgrade request is a few hundred)."""

_M42_PATH: Final = re.compile(r"(?:/[^/]*)*/m42/v1(?:/room/[0-9a-f]{32})?")
"""Any prefix, then an m42 path; room ids in lowercase hex, as the spec writes them."""

_REASONS: Final = {
    200: b"OK",
    400: b"Bad Request",
    404: b"Not Found",
    405: b"Method Not Allowed",
    426: b"Upgrade Required",
    431: b"Request Header Fields Too Large",
}


@final
@attrs.frozen
class PlainAnswer:
    """A complete HTTP answer to a request that is not a WebSocket upgrade."""

    status: int
    body: bytes
    headers: tuple[tuple[bytes, bytes], ...] = ()
    content_type: bytes = b"text/plain; charset=utf-8"


Answer = PlainAnswer | pages.Response
"""What a request that is not upgraded gets: the listener's own answer, or the page's."""


def is_m42_path(target: bytes) -> bool:
    """Whether ``target`` (path and query, as sent) names an m42 endpoint."""
    path = target.split(b"?", 1)[0]
    try:
        text = path.decode("ascii")
    except UnicodeDecodeError:
        return False
    return _M42_PATH.fullmatch(text) is not None


def is_websocket_upgrade(request: h11.Request) -> bool:
    """The client asks for a WebSocket (``Upgrade: websocket``); wsproto checks the rest."""
    for name, value in request.headers:
        if name == b"upgrade":
            tokens = [token.strip().lower() for token in value.split(b",")]
            if b"websocket" in tokens:
                return True
    return False


def _tokens(value: bytes) -> list[bytes]:
    return [token.strip().lower() for token in value.split(b",")]


def accept_upgrade(request: h11.Request) -> bytes | PlainAnswer:
    """The ``101`` that accepts a WebSocket upgrade, or the answer that refuses it.

    The checks of RFC 6455 4.2.1 (``Host`` is h11's): ``GET``, ``Connection``
    naming ``upgrade``, ``Upgrade: websocket``, ``Sec-WebSocket-Version: 13``
    (another version: ``426`` naming 13), a ``Sec-WebSocket-Key``.  No
    subprotocol and no extension is accepted, ``permessage-deflate``
    included: the answer names none.
    """
    connection: list[bytes] = []
    upgrade: list[bytes] = []
    version: bytes | None = None
    key: bytes | None = None
    for name, value in request.headers:
        if name == b"connection":
            connection += _tokens(value)
        elif name == b"upgrade":
            upgrade += _tokens(value)
        elif name == b"sec-websocket-version":
            version = value.strip()
        elif name == b"sec-websocket-key":
            key = value.strip()
    if request.method != b"GET" or b"upgrade" not in connection or b"websocket" not in upgrade:
        return error_answer(400)
    if version != b"13":
        if version is None:
            return error_answer(400)
        return PlainAnswer(
            426, b"websocket version 13 only\n", ((b"Sec-WebSocket-Version", b"13"),)
        )
    if not key:
        return error_answer(400)
    return (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + generate_accept_token(key) + b"\r\n\r\n"
    )


def header(request: h11.Request, name: bytes) -> bytes | None:
    """The value of the request's header ``name`` (lowercase; h11 lowercases names)."""
    return next((value for key, value in request.headers if key == name), None)


def answer_plain(request: h11.Request, *, tls: bool) -> Answer:
    """The answer to any request that is not an accepted upgrade.

    ``tls``: the listener itself speaks TLS (``wss://``), which narrows the
    page's ``connect-src`` to ``wss://`` (see
    :func:`m42d.web.pages.content_security_policy`).
    """
    if is_m42_path(request.target):
        return upgrade_required()
    if is_websocket_upgrade(request):
        return error_answer(404)  # a socket only on an m42 path, never the page's
    return pages.respond(request.method, request.target, host=header(request, b"host"), tls=tls)


def upgrade_required() -> PlainAnswer:
    return PlainAnswer(
        426,
        b"m42 relay endpoint: connect with a WebSocket\n",
        ((b"Upgrade", b"websocket"), (b"Sec-WebSocket-Version", b"13")),
    )


def error_answer(status: int) -> PlainAnswer:
    """400, 404 or 431 with its reason phrase as the body."""
    return PlainAnswer(status, _REASONS.get(status, b"Error").lower() + b"\n")


def serialize(answer: Answer, *, head: bool = False) -> bytes:
    """The bytes of ``answer`` (without a body for a HEAD request)."""
    reason = _REASONS.get(answer.status, b"Error")
    lines = [b"HTTP/1.1 %d %s" % (answer.status, reason)]
    if isinstance(answer, pages.Response):
        # pages already left the body out for HEAD and set every header but this one.
        headers = [(n.encode("ascii"), v.encode("ascii")) for n, v in answer.headers]
        headers.append((b"Connection", b"close"))
        body = answer.body
    else:
        headers = [
            (b"Content-Type", answer.content_type),
            (b"Content-Length", str(len(answer.body)).encode()),
            (b"Connection", b"close"),
            (b"Cache-Control", b"no-store"),
            (b"X-Content-Type-Options", b"nosniff"),
            *answer.headers,
        ]
        body = b"" if head else answer.body
    lines += [name + b": " + value for name, value in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body
