"""Transport URLs (``scheme://host[:port][/path]``) as plugins parse and show them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import final
from urllib.parse import SplitResult, urlsplit

import attrs

from m42d.errors import TransportError

__all__ = ["TransportURL", "format_url", "parse_url"]


@final
@attrs.frozen
class TransportURL:
    """The parts of a transport URL a plugin needs."""

    scheme: str
    host: str
    port: int
    path: str


def parse_url(
    url: str, schemes: Sequence[str], default_port: int | Callable[[str], int]
) -> TransportURL:
    """Split ``scheme://host[:port][/path]``; IPv6 hosts in brackets.

    Raises:
        TransportError: another scheme, no host, or a bad port.
    """
    try:
        parts: SplitResult = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise TransportError(f"invalid transport URL {url!r}: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme not in schemes:
        raise TransportError(f"URL scheme {scheme!r} is not one of {', '.join(schemes)}")
    if not parts.hostname:
        raise TransportError(f"transport URL {url!r} has no host")
    if port is None:
        port = default_port(scheme) if callable(default_port) else default_port
    return TransportURL(scheme, parts.hostname, port, parts.path)


def format_url(scheme: str, host: str, port: int, path: str = "") -> str:
    """The inverse of :func:`parse_url`, bracketing IPv6 literals."""
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}:{port}{path}"
