"""Room links: one pasteable string per seat carrying everything a client needs.

::

    <relay-url>#m42.1.<seat>.<ticket>.<token>.<secret>[.<pin>]

The relay URL picks the transport; the fragment carries the 42-byte ticket,
the seat's 16-byte token, the 32-byte room secret R and optionally the
SHA-256 pin of the relay's TLS certificate, each in unpadded base64url.
Everything after ``#`` stays out of HTTP requests, proxies and access logs
when a link is opened in a browser; only the relay address travels.

Parsing is strict (the only leniency is surrounding whitespace, since links
get pasted with newlines): exactly one encoding is accepted for each link, so
two different strings never mean the same room, and every rejection names the
part that is wrong.  Messages never echo input text, because the input may be
a whole link with its secret.  Scheme and host are case-insensitive by RFC
3986 and are normalised to lower case.

Normative text: ``docs/protocol.md``, section "Links and tickets".
"""

from __future__ import annotations

import base64
import ipaddress
import re
import urllib.parse
from typing import Any, Final, final

import attrs

from m42d.errors import LinkError
from m42d.ticket import TICKET_SIZE, TOKEN_SIZE, IssuedRoom, MalformedTicket, Seat, Ticket

LINK_PREFIX: Final = "m42"
LINK_VERSION: Final = 1
SECRET_SIZE: Final = 32
PIN_SIZE: Final = 32

MAX_RELAY_URL_LENGTH: Final = 1024
"""Generous for any real address, small enough to keep links QR-friendly."""
MAX_LINK_LENGTH: Final = MAX_RELAY_URL_LENGTH + 256
"""The longest fragment (with a pin) is 175 characters; 256 leaves slack for a version 2."""

UNIX_SCHEME: Final = "unix"
DEFAULT_PORTS: Final[dict[str, int]] = {
    "ws": 80,
    "wss": 443,
    "http": 80,
    "https": 443,
    "tls": 8043,
}
"""Ports used when a relay URL names none.  Other schemes belong to plugins."""

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")
_PORT = re.compile(r"[1-9][0-9]{0,4}")
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_IPV6_CHARS = re.compile(r"[0-9A-Fa-f:.]+")
_PATH = re.compile(r"(?:/(?:[A-Za-z0-9\-._~!$&'()*+,;=:@]|%[0-9A-Fa-f]{2})*)*")
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")
_VERSION = re.compile(r"[0-9]{1,9}")


@final
@attrs.frozen
class RelayAddress:
    """A parsed relay URL; build it with :func:`parse_relay_url`, which validates.

    Attributes:
        scheme: lower case; selects the transport plugin.
        host: lower case; an IPv6 literal without its brackets; ``""`` for ``unix``.
        port: the port written in the URL, or None (see :attr:`effective_port`).
        path: ``""`` or starting with ``/``, percent-encoded as written.
    """

    scheme: str
    host: str
    port: int | None
    path: str

    @property
    def effective_port(self) -> int | None:
        """The written port, else the scheme's default, else None (``unix``, plugins)."""
        return self.port if self.port is not None else DEFAULT_PORTS.get(self.scheme)

    @property
    def socket_path(self) -> str:
        """The filesystem path of a ``unix`` relay, percent-decoded."""
        return urllib.parse.unquote(self.path)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = "" if self.port is None else f":{self.port}"
        return f"{self.scheme}://{host}{port}{self.path}"

    def __str__(self) -> str:
        return self.url


def parse_relay_url(url: str) -> RelayAddress:
    """Validate ``scheme://host[:port][/path]`` (or ``unix:///abs/path``).

    Which schemes exist is up to the transport plugins; this checks syntax
    only: no user info, query or fragment, a valid host for every scheme but
    ``unix``, whose host must be empty and whose path must be absolute.

    Raises:
        LinkError: naming the rule broken; the URL itself is never echoed.
    """
    return _parse_relay(url.strip())


def _parse_relay(text: str) -> RelayAddress:
    if not text:
        raise LinkError("relay URL is empty")
    if len(text) > MAX_RELAY_URL_LENGTH:
        raise LinkError(f"relay URL is longer than {MAX_RELAY_URL_LENGTH} characters")
    if not text.isascii():
        raise LinkError("relay URL must be ASCII (write international host names in punycode)")
    scheme, colon, rest = text.partition(":")
    if not colon or not _SCHEME.fullmatch(scheme):
        raise LinkError("relay URL has no valid scheme (expected scheme://host[:port][/path])")
    scheme = scheme.lower()
    if not rest.startswith("//"):
        raise LinkError("relay URL must have the form scheme://host[:port][/path]")
    if "#" in rest:
        raise LinkError("relay URL must not contain a fragment ('#')")
    if "?" in rest:
        raise LinkError("relay URL must not contain a query ('?')")
    authority, slash, path = rest[2:].partition("/")
    path = slash + path
    if "@" in authority:
        raise LinkError("relay URL must not contain user info ('@')")
    if not _PATH.fullmatch(path):
        raise LinkError(
            "relay URL path has a character that must be percent-encoded, or a bad '%' escape"
        )
    host, port = _parse_authority(authority)
    if scheme == UNIX_SCHEME:
        if host or port is not None:
            raise LinkError("unix relay URL must have an empty host: unix:///path/to.sock")
        if len(path) < 2:
            raise LinkError("unix relay URL needs an absolute socket path: unix:///path/to.sock")
    elif not host:
        raise LinkError("relay URL has no host")
    return RelayAddress(scheme, host, port, path)


def _parse_authority(authority: str) -> tuple[str, int | None]:
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            raise LinkError("relay host has '[' without ']'")
        host, port_part = authority[1:end], authority[end + 1 :]
        if port_part and not port_part.startswith(":"):
            raise LinkError("relay host literal ']' must be followed by ':port' or '/'")
        if not _IPV6_CHARS.fullmatch(host):
            raise LinkError("relay host in brackets is not a valid IPv6 address")
        try:
            ipaddress.IPv6Address(host)
        except ValueError as exc:
            raise LinkError("relay host in brackets is not a valid IPv6 address") from exc
        host = host.lower()
    else:
        if authority.count(":") > 1:
            raise LinkError("relay host: IPv6 addresses must be written in brackets")
        host = authority.partition(":")[0]
        port_part = authority[len(host) :]
        if host:
            host = _check_host_name(host.lower())
    port = None
    if port_part:
        port_text = port_part[1:]
        if not _PORT.fullmatch(port_text) or int(port_text) > 65535:
            raise LinkError("relay port must be a decimal number 1-65535 without leading zeros")
        port = int(port_text)
    return host, port


def _check_host_name(host: str) -> str:
    labels = host.split(".")
    if len(host) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise LinkError(
            "relay host is not a valid host name (letters, digits, '-' and '.'; no trailing dot)"
        )
    if labels[-1].isdigit():  # WHATWG rule: a numeric last label makes it an IPv4 address
        try:
            ipaddress.IPv4Address(host)
        except ValueError as exc:
            raise LinkError("relay host is not a valid IPv4 address") from exc
    return host


def _normalise_relay(relay: str) -> str:
    return parse_relay_url(relay).url


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str, what: str) -> bytes:
    """Decode unpadded base64url, accepting only the one canonical spelling."""
    if "=" in text:
        raise LinkError(f"{what} must be base64url without '=' padding")
    if not _BASE64URL.fullmatch(text) or len(text) % 4 == 1:
        raise LinkError(f"{what} is not valid base64url")
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64encode(data) != text:
        raise LinkError(f"{what} is not valid base64url (non-zero trailing bits)")
    return data


def _check_size(what: str, value: object, size: int) -> None:
    if not isinstance(value, bytes):
        raise LinkError(f"{what} must be bytes")
    if len(value) != size:
        raise LinkError(f"{what} must be {size} bytes, got {len(value)}")


def _hex_repr(value: bytes | None) -> str:
    return "None" if value is None else f"'{value.hex()}'"


def _validate_seat(_inst: Any, _attr: Any, value: Any) -> None:
    if not isinstance(value, Seat):
        raise LinkError("seat must be A or B")


def _validate_ticket(_inst: Any, _attr: Any, value: Any) -> None:
    _check_size("ticket", value, TICKET_SIZE)
    assert isinstance(value, bytes)
    try:
        Ticket.parse(value)
    except MalformedTicket as exc:
        raise LinkError(f"ticket is malformed: {exc}") from exc


def _validate_token(_inst: Any, _attr: Any, value: Any) -> None:
    _check_size("seat token", value, TOKEN_SIZE)


def _validate_secret(_inst: Any, _attr: Any, value: Any) -> None:
    _check_size("room secret", value, SECRET_SIZE)


def _validate_pin(_inst: Any, _attr: Any, value: Any) -> None:
    if value is not None:
        _check_size("certificate pin", value, PIN_SIZE)


@final
@attrs.frozen
class Link:
    """One seat's link.  ``repr``/``str`` hide the token and the secret.

    Construction validates and normalises every field (raising
    :class:`LinkError`), so a ``Link`` in hand always formats to a link that
    :meth:`parse` reads back equal.
    """

    relay: str = attrs.field(converter=_normalise_relay)
    seat: Seat = attrs.field(validator=_validate_seat)
    ticket: bytes = attrs.field(validator=_validate_ticket, repr=_hex_repr)
    token: bytes = attrs.field(repr=False, validator=_validate_token)
    secret: bytes = attrs.field(repr=False, validator=_validate_secret)
    pin: bytes | None = attrs.field(default=None, validator=_validate_pin, repr=_hex_repr)

    @property
    def relay_address(self) -> RelayAddress:
        return parse_relay_url(self.relay)

    @property
    def scheme(self) -> str:
        return self.relay_address.scheme

    @property
    def relay_host(self) -> str:
        """Host to connect to: IPv6 without brackets, ``""`` for ``unix``."""
        return self.relay_address.host

    @property
    def relay_port(self) -> int | None:
        """Written port or scheme default; None where neither exists."""
        return self.relay_address.effective_port

    @property
    def parsed_ticket(self) -> Ticket:
        return Ticket.parse(self.ticket)

    @property
    def room_id(self) -> bytes:
        return self.parsed_ticket.room_id

    @property
    def expires(self) -> int:
        """Ticket expiry (unix seconds), as the relay claims it; unauthenticated here."""
        return self.parsed_ticket.expires

    def format(self) -> str:
        """The link text.  It contains the room secret: show it only to its owner."""
        parts = [
            LINK_PREFIX,
            str(LINK_VERSION),
            self.seat.value,
            _b64encode(self.ticket),
            _b64encode(self.token),
            _b64encode(self.secret),
        ]
        if self.pin is not None:
            parts.append(_b64encode(self.pin))
        return f"{self.relay}#{'.'.join(parts)}"

    def with_relay(self, relay: str) -> Link:
        """The same seat reached through another relay address (same key holders)."""
        return attrs.evolve(self, relay=relay)

    @classmethod
    def parse(cls, text: str) -> Link:
        """Read a link; surrounding whitespace is ignored, nothing else is forgiven.

        Raises:
            LinkError: naming the part that is wrong, never echoing secret text.
        """
        text = text.strip()
        if len(text) > MAX_LINK_LENGTH:
            raise LinkError(f"link is longer than {MAX_LINK_LENGTH} characters")
        relay, hash_sign, fragment = text.partition("#")
        if not hash_sign:
            raise LinkError("link has no '#' fragment (the room secret is missing)")
        if "#" in fragment:
            raise LinkError("link has more than one '#'")
        relay = _parse_relay(relay).url  # no strip: whitespace before '#' is not "surrounding"
        fields = fragment.split(".")
        if fields[0] != LINK_PREFIX or len(fields) < 2:
            raise LinkError(f"link fragment must start with '{LINK_PREFIX}.'")
        if not _VERSION.fullmatch(fields[1]):
            raise LinkError("link version is not a decimal number")
        if fields[1] != str(LINK_VERSION):
            raise LinkError(f"unsupported link version {fields[1]}")
        if len(fields) not in (6, 7):
            raise LinkError(
                f"link fragment has {len(fields)} fields, expected 6 or 7 "
                "(m42.1.<seat>.<ticket>.<token>.<secret>[.<pin>])"
            )
        if fields[2] not in ("A", "B"):
            raise LinkError("seat must be A or B")
        # Each part is decoded and checked before the next one is looked at,
        # so the first broken part (reading left to right) is the one reported.
        ticket = _b64decode(fields[3], "ticket")
        _validate_ticket(None, None, ticket)
        token = _b64decode(fields[4], "seat token")
        _validate_token(None, None, token)
        secret = _b64decode(fields[5], "room secret")
        _validate_secret(None, None, secret)
        pin = _b64decode(fields[6], "certificate pin") if len(fields) == 7 else None
        return cls(relay, Seat(fields[2]), ticket, token, secret, pin)


def make_links(
    relay: str, issued: IssuedRoom, secret: bytes, *, pin: bytes | None = None
) -> tuple[Link, Link]:
    """Both seats' links for a freshly issued room, A first."""
    ticket = issued.ticket.to_bytes()
    return (
        Link(relay, Seat.A, ticket, issued.token_a, secret, pin),
        Link(relay, Seat.B, ticket, issued.token_b, secret, pin),
    )
