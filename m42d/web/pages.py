"""HTTP responses for the browser client's static files, as pure functions.

The WebSocket listener answers a plain (non-upgrade) HTTP request with
:func:`respond`: no sockets, no trio, so the table of files, the content
types and the security headers are tested without a server.

Rules:

* Only files that ship in this package are served, looked up by exact path in
  a table built once from the package's own resources.  No request path is
  ever joined onto a filesystem path, so ``..``, ``%2e%2e``, backslashes and
  symlinks cannot reach anything else; there is no directory listing.
* ``/`` is ``index.html`` and is the page's only address (``/index.html`` is
  404), so the page can derive the relay URL of a room it creates from its own
  location.  The EFF word list that ``lib/sas.js`` needs is served at
  :data:`WORDLIST_PATH`.  Test doubles (``ui/fake-engine.js``) are not served.
* Every response, errors included, carries the same security headers.  The
  Content-Security-Policy allows scripts, styles, images and workers from the
  page's own origin only and WebSocket connections to the listener's own
  host (taken from the request's ``Host``, which is validated first); Trusted
  Types are enforced, so an ``innerHTML`` assignment throws in the browsers
  that implement them instead of parsing markup.
* ``Cache-Control: no-store``: a relay upgrade takes effect at the next load
  and nothing of the client lingers in shared caches.
* GET and HEAD only; HEAD gets GET's headers (with its Content-Length) and no
  body.
"""

from __future__ import annotations

import functools
import importlib.resources
import re
from collections.abc import Iterator, Mapping
from importlib.resources.abc import Traversable
from typing import Final, final

import attrs

__all__ = [
    "CONTENT_TYPES",
    "INDEX_PATH",
    "NOT_SERVED",
    "TRUSTED_TYPES_POLICY",
    "WORDLIST_PATH",
    "Response",
    "content_security_policy",
    "respond",
    "served_paths",
]

INDEX_PATH: Final = "/"
"""The page itself; links whose relay URL is ``http(s)://host`` open it."""

WORDLIST_PATH: Final = "/eff_large_wordlist.txt"
"""The SAS word list (m42d/crypto/data), fetched by the page relative to itself."""

TRUSTED_TYPES_POLICY: Final = "m42-worker-url"
"""The one Trusted Types policy the page may create: it vets the OPFS worker's URL."""

CONTENT_TYPES: Final[Mapping[str, str]] = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}
"""What is served, by suffix; anything else in the package (Python, licences,
type declarations) is not part of the page."""

NOT_SERVED: Final = frozenset({"/index.html", "/ui/fake-engine.js"})
"""Package files that are never served: the page's second name (see the module
rules) and the scripted engine that only the UI tests load."""

_WEB_PACKAGE: Final = "m42d.web"
_WORDLIST: Final = ("m42d.crypto", "data/eff_large_wordlist.txt")
_TEXT_PLAIN: Final = "text/plain; charset=utf-8"
_MAX_TARGET: Final = 2048

# A Host header as RFC 9110 and m42d/link.py allow host names: DNS labels, an
# IPv4 literal or a bracketed IPv6 literal, and an optional port.  Anything
# else could smuggle text into the CSP header, so it is refused.
_LABEL: Final = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOST_RE: Final = re.compile(
    rf"(?:{_LABEL}(?:\.{_LABEL})*|\[[0-9a-f:.]{{2,45}}\])(?::[1-9][0-9]{{0,4}})?"
)

_PERMISSIONS: Final = (
    "accelerometer",
    "autoplay",
    "camera",
    "display-capture",
    "encrypted-media",
    "fullscreen",
    "geolocation",
    "gyroscope",
    "hid",
    "idle-detection",
    "magnetometer",
    "microphone",
    "midi",
    "payment",
    "picture-in-picture",
    "publickey-credentials-get",
    "screen-wake-lock",
    "serial",
    "usb",
    "xr-spatial-tracking",
    "clipboard-read",
)
PERMISSIONS_POLICY: Final = ", ".join(
    [f"{feature}=()" for feature in _PERMISSIONS] + ["clipboard-write=(self)"]
)
"""Every powerful feature off, except writing the clipboard (the copy buttons)."""


@final
@attrs.frozen
class Response:
    """One HTTP response: what the listener writes with h11."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        """The value of header ``name`` (case-insensitive), or None."""
        name = name.lower()
        return next((value for key, value in self.headers if key == name), None)


@final
@attrs.frozen
class _File:
    content_type: str
    body: bytes


def content_security_policy(host: str, *, tls: bool) -> str:
    """The page's CSP for a listener reached as ``host`` (a validated Host value).

    A TLS listener is reached only as ``wss://``; a plain one may sit behind a
    TLS-terminating proxy (docs/nginx), where the page is ``https://`` and its
    socket ``wss://`` although the listener itself is ``ws://``, so both are
    allowed (a browser refuses ``ws://`` from an ``https://`` page anyway).
    """
    sockets = f"wss://{host}" if tls else f"ws://{host} wss://{host}"
    return "; ".join(
        [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self'",
            f"connect-src 'self' {sockets}",
            "worker-src 'self'",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
            "require-trusted-types-for 'script'",
            f"trusted-types {TRUSTED_TYPES_POLICY}",
        ]
    )


def _security_headers(csp: str) -> list[tuple[str, str]]:
    return [
        ("content-security-policy", csp),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("cross-origin-opener-policy", "same-origin"),
        ("cross-origin-resource-policy", "same-origin"),
        ("permissions-policy", PERMISSIONS_POLICY),
        ("x-frame-options", "DENY"),
        ("cache-control", "no-store"),
    ]


# What an error response gets when the Host cannot be trusted: nothing may load.
_LOCKED_CSP: Final = (
    "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def _walk(node: Traversable, prefix: str) -> Iterator[tuple[str, Traversable]]:
    for child in sorted(node.iterdir(), key=lambda c: c.name):
        path = f"{prefix}/{child.name}"
        if child.is_dir():
            if child.name != "__pycache__":
                yield from _walk(child, path)
        elif child.is_file():
            yield path, child


@functools.cache
def _files() -> Mapping[str, _File]:
    """Path -> file, read once: the whole client is a few hundred KiB."""
    table: dict[str, _File] = {}
    for path, resource in _walk(importlib.resources.files(_WEB_PACKAGE), ""):
        suffix = path[path.rfind(".") :] if "." in path.rsplit("/", 1)[-1] else ""
        content_type = CONTENT_TYPES.get(suffix)
        if content_type is None or path in NOT_SERVED:
            continue
        table[path] = _File(content_type, resource.read_bytes())
    table[INDEX_PATH] = _File(CONTENT_TYPES[".html"], _read(_WEB_PACKAGE, "index.html"))
    package, name = _WORDLIST
    table[WORDLIST_PATH] = _File(_TEXT_PLAIN, _read(package, name))
    return table


def _read(package: str, name: str) -> bytes:
    resource = importlib.resources.files(package)
    for part in name.split("/"):
        resource = resource.joinpath(part)
    return resource.read_bytes()


def _valid_host(host: str) -> bool:
    if len(host) > 261 or not _HOST_RE.fullmatch(host):
        return False
    port = host.rsplit(":", 1)[1] if ":" in host.rsplit("]", 1)[-1] else "1"
    return int(port) <= 65535


def served_paths() -> frozenset[str]:
    """Every path :func:`respond` answers with 200."""
    return frozenset(_files())


def _text(value: str | bytes) -> str:
    """h11 hands over bytes; a non-ASCII byte simply never matches anything."""
    return value.decode("latin-1") if isinstance(value, bytes) else value


def _plain(
    status: int, message: str, csp: str, *, head: bool, extra: tuple[tuple[str, str], ...] = ()
) -> Response:
    body = f"{message}\n".encode()
    headers = [
        ("content-type", _TEXT_PLAIN),
        ("content-length", str(len(body))),
        *extra,
        *_security_headers(csp),
    ]
    return Response(status, tuple(headers), b"" if head else body)


def respond(
    method: str | bytes, target: str | bytes, *, host: str | bytes | None, tls: bool
) -> Response:
    """The response to a plain HTTP request for the static client.

    Args:
        method: the request method (``GET``, ``HEAD``; anything else is 405).
        target: the request target in origin form (``/path?query``); the query
            is ignored (the page reads nothing from it).
        host: the request's ``Host`` header, or None if it had none (400).
        tls: whether the listener itself speaks TLS (``wss://`` vs ``ws://``).

    Returns:
        The status, headers and body; the body is empty for HEAD.
    """
    method_text = _text(method)
    head = method_text == "HEAD"
    host_text = _text(host).strip().lower() if host is not None else ""
    if not _valid_host(host_text):
        return _plain(400, "bad request: missing or invalid Host header", _LOCKED_CSP, head=head)
    csp = content_security_policy(host_text, tls=tls)
    if method_text not in ("GET", "HEAD"):
        return _plain(405, "method not allowed", csp, head=False, extra=(("allow", "GET, HEAD"),))
    target_text = _text(target)
    if len(target_text) > _MAX_TARGET or not target_text.startswith("/"):
        return _plain(400, "bad request: the target must be a path", csp, head=head)
    path = target_text.split("?", 1)[0]
    file = _files().get(path)
    if file is None:
        return _plain(404, "not found", csp, head=head)
    headers = [
        ("content-type", file.content_type),
        ("content-length", str(len(file.body))),
        *_security_headers(csp),
    ]
    return Response(200, tuple(headers), b"" if head else file.body)
