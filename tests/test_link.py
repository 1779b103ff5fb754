"""Links: known answer, round trips, every refusal with its message, fuzzing, secrecy."""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from m42d.errors import LinkError, M42Error
from m42d.link import (
    DEFAULT_PORTS,
    MAX_LINK_LENGTH,
    MAX_RELAY_URL_LENGTH,
    Link,
    RelayAddress,
    make_links,
    parse_relay_url,
)
from m42d.ticket import Seat, TicketKeyRing

# Known-answer vector; the same values are printed in docs/protocol.md.
KAT_KEY = bytes(range(32))
KAT_ROOM_ID = bytes.fromhex("00112233445566778899aabbccddeeff")
KAT_EXPIRES = 1767225600
KAT_TICKET = bytes.fromhex(
    "010100112233445566778899aabbccddeeff000000006955b900da9ce54f051a612e08a1b0e369036ae6"
)
KAT_TOKEN_A = bytes.fromhex("cbfba2f68c2a73fd4b3735faf3522bee")
KAT_TOKEN_B = bytes.fromhex("7481ae6f54ecb0cac6386e0fb894b2a4")
KAT_SECRET = bytes(range(0x20, 0x40))
KAT_PIN = hashlib.sha256(b"example certificate").digest()
KAT_RELAY = "wss://relay.example.org"
KAT_LINK_A = (
    "wss://relay.example.org#m42.1.A"
    ".AQEAESIzRFVmd4iZqrvM3e7_AAAAAGlVuQDanOVPBRphLgihsONpA2rm"
    ".y_ui9owqc_1LNzX681Ir7g"
    ".ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8"
    ".YKP8gM2NCHvIFo9lcCadxQCGOzN0JKB6pxuaEE3CXH8"
)
KAT_LINK_B_NO_PIN = (
    "wss://relay.example.org#m42.1.B"
    ".AQEAESIzRFVmd4iZqrvM3e7_AAAAAGlVuQDanOVPBRphLgihsONpA2rm"
    ".dIGub1TssMrGOG4PuJSypA"
    ".ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8"
)

FRAGMENT_HELP = "expected 6 or 7 (m42.1.<seat>.<ticket>.<token>.<secret>[.<pin>])"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def fragment(
    seat: str = "A",
    ticket: str = b64(KAT_TICKET),
    token: str = b64(KAT_TOKEN_A),
    secret: str = b64(KAT_SECRET),
    *more: str,
) -> str:
    return ".".join(["m42", "1", seat, ticket, token, secret, *more])


def kat_link(**changes: Any) -> Link:
    link = Link(KAT_RELAY, Seat.A, KAT_TICKET, KAT_TOKEN_A, KAT_SECRET, KAT_PIN)
    return attrs.evolve(link, **changes)


# -- known answer ---------------------------------------------------------------------


def test_known_answer_links() -> None:
    ring = TicketKeyRing({1: KAT_KEY}, current=1)
    issued = ring.mint(now=KAT_EXPIRES - 3600, ttl=3600, room_id=KAT_ROOM_ID)
    link_a, link_b = make_links(KAT_RELAY, issued, KAT_SECRET, pin=KAT_PIN)
    assert link_a.format() == KAT_LINK_A
    assert attrs.evolve(link_b, pin=None).format() == KAT_LINK_B_NO_PIN
    assert make_links(KAT_RELAY, issued, KAT_SECRET)[1].format() == KAT_LINK_B_NO_PIN
    assert Link.parse(KAT_LINK_A) == link_a
    for link in (link_a, link_b):
        assert ring.verify(link.ticket, link.seat, link.token, now=KAT_EXPIRES) == issued.ticket


def test_known_answer_fields() -> None:
    link = Link.parse(KAT_LINK_B_NO_PIN)
    assert link.relay == KAT_RELAY
    assert link.seat is Seat.B
    assert link.ticket == KAT_TICKET
    assert link.token == KAT_TOKEN_B
    assert link.secret == KAT_SECRET
    assert link.pin is None
    assert link.room_id == KAT_ROOM_ID
    assert link.expires == KAT_EXPIRES
    assert link.parsed_ticket.key_id == 1
    assert link.scheme == "wss"
    assert link.relay_host == "relay.example.org"
    assert link.relay_port == 443


def test_link_lengths_stay_qr_friendly() -> None:
    """Fragment: 131 characters, 175 with a pin; plus the relay URL and '#'."""
    assert len(KAT_LINK_B_NO_PIN) == len(KAT_RELAY) + 1 + 131 == 155
    assert len(KAT_LINK_A) == len(KAT_RELAY) + 1 + 175 == 199


# -- round trips ----------------------------------------------------------------------

_LABEL = st.from_regex(r"[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,12}[a-zA-Z0-9])?", fullmatch=True)
_HOST_NAME = (
    st.lists(_LABEL, min_size=1, max_size=4)
    .map(".".join)
    .filter(lambda host: not host.split(".")[-1].isdigit())
)
_HOST = st.one_of(
    _HOST_NAME,
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(lambda ip: f"[{ip}]"),
    st.ip_addresses(v=6).map(lambda ip: f"[{ip.exploded.upper()}]"),
)
_SCHEME = st.one_of(
    st.sampled_from(sorted(DEFAULT_PORTS)),
    st.from_regex(r"[a-zA-Z][a-zA-Z0-9+.-]{0,8}", fullmatch=True).filter(
        lambda scheme: scheme.lower() != "unix"
    ),
)
_SEGMENT = st.from_regex(r"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@]|%[0-9A-Fa-f]{2}){0,8}", fullmatch=True)
_PATH = st.lists(_SEGMENT, max_size=4).map(lambda segments: "".join("/" + s for s in segments))
_PORT = st.one_of(st.just(""), st.integers(1, 65535).map(lambda port: f":{port}"))
_NETWORK_RELAY = st.builds(
    lambda s, h, p, path: f"{s}://{h}{p}{path}", _SCHEME, _HOST, _PORT, _PATH
)
_UNIX_RELAY = st.lists(_SEGMENT.filter(bool), min_size=1, max_size=4).map(
    lambda segments: "unix://" + "".join("/" + s for s in segments)
)
_RELAY = st.one_of(_NETWORK_RELAY, _UNIX_RELAY)

_LINKS = st.builds(
    Link,
    relay=_RELAY,
    seat=st.sampled_from(list(Seat)),
    ticket=st.binary(min_size=41, max_size=41).map(lambda rest: b"\x01" + rest),
    token=st.binary(min_size=16, max_size=16),
    secret=st.binary(min_size=32, max_size=32),
    pin=st.none() | st.binary(min_size=32, max_size=32),
)


@settings(max_examples=300, deadline=None)
@given(_LINKS)
def test_link_round_trip(link: Link) -> None:
    text = link.format()
    assert Link.parse(text) == link
    assert Link.parse(f"\n  {text}\r\n\t") == link
    assert len(text) <= MAX_LINK_LENGTH


@settings(max_examples=300, deadline=None)
@given(_RELAY)
def test_relay_url_round_trip(url: str) -> None:
    """Normalising only lower-cases scheme and host; the path is kept byte for byte."""
    address = parse_relay_url(url)
    assert parse_relay_url(address.url) == address
    assert str(address) == address.url
    prefix = url[: len(url) - len(address.path)]
    assert address.url == prefix.lower() + address.path
    assert url.endswith(address.path)


@pytest.mark.parametrize(
    ("url", "scheme", "host", "port", "effective_port", "path", "normal"),
    [
        (
            "WSS://Relay.Example.ORG:8443/M42",
            "wss",
            "relay.example.org",
            8443,
            8443,
            "/M42",
            "wss://relay.example.org:8443/M42",
        ),
        ("wss://h", "wss", "h", None, 443, "", "wss://h"),
        ("ws://h/", "ws", "h", None, 80, "/", "ws://h/"),
        ("https://h", "https", "h", None, 443, "", "https://h"),
        ("http://h", "http", "h", None, 80, "", "http://h"),
        ("tls://127.0.0.1", "tls", "127.0.0.1", None, 8043, "", "tls://127.0.0.1"),
        ("tls://h:1", "tls", "h", 1, 1, "", "tls://h:1"),
        ("wss://h:65535", "wss", "h", 65535, 65535, "", "wss://h:65535"),
        ("wss://[::1]", "wss", "::1", None, 443, "", "wss://[::1]"),
        (
            "wss://[2001:DB8::1]:8443/x",
            "wss",
            "2001:db8::1",
            8443,
            8443,
            "/x",
            "wss://[2001:db8::1]:8443/x",
        ),
        ("ws://[::ffff:1.2.3.4]/", "ws", "::ffff:1.2.3.4", None, 80, "/", "ws://[::ffff:1.2.3.4]/"),
        ("quic+x://h:9", "quic+x", "h", 9, 9, "", "quic+x://h:9"),
        ("my-plugin://h", "my-plugin", "h", None, None, "", "my-plugin://h"),
        (
            "unix:///run/m42d.sock",
            "unix",
            "",
            None,
            None,
            "/run/m42d.sock",
            "unix:///run/m42d.sock",
        ),
        (
            "  wss://h/a%2Fb;c=d:e@f \n",
            "wss",
            "h",
            None,
            443,
            "/a%2Fb;c=d:e@f",
            "wss://h/a%2Fb;c=d:e@f",
        ),
    ],
)
def test_parse_relay_url(
    url: str,
    scheme: str,
    host: str,
    port: int | None,
    effective_port: int | None,
    path: str,
    normal: str,
) -> None:
    address = parse_relay_url(url)
    assert address == RelayAddress(scheme, host, port, path)
    assert address.effective_port == effective_port
    assert address.url == normal
    link = kat_link(relay=url)
    assert link.relay == normal
    assert (link.scheme, link.relay_host, link.relay_port) == (scheme, host, effective_port)
    assert Link.parse(link.format()) == link


def test_unix_socket_path_is_percent_decoded() -> None:
    address = parse_relay_url("unix:///run/m42d/relay%20one.sock")
    assert address.socket_path == "/run/m42d/relay one.sock"
    assert address.host == ""
    assert address.effective_port is None


def test_default_ports() -> None:
    assert DEFAULT_PORTS == {"ws": 80, "wss": 443, "http": 80, "https": 443, "tls": 8043}


def test_with_relay() -> None:
    link = kat_link()
    moved = link.with_relay("TLS://[::1]:9000")
    assert moved.relay == "tls://[::1]:9000"
    assert attrs.evolve(moved, relay=link.relay) == link
    with pytest.raises(LinkError, match="relay URL has no host"):
        link.with_relay("wss://")


def test_make_links_share_ticket_and_secret() -> None:
    ring = TicketKeyRing.generate()
    issued = ring.mint(now=0, ttl=60)
    link_a, link_b = make_links("ws://[::1]:8042/r", issued, KAT_SECRET)
    assert (link_a.seat, link_b.seat) == (Seat.A, Seat.B)
    assert link_a.ticket == link_b.ticket == issued.ticket.to_bytes()
    assert (link_a.token, link_b.token) == (issued.token_a, issued.token_b)
    assert link_a.secret == link_b.secret == KAT_SECRET
    assert link_a.room_id == issued.room_id
    assert link_a.pin is None


# -- refusals ---------------------------------------------------------------------------

_BAD_RELAYS = [
    ("", "relay URL is empty"),
    (" \n", "relay URL is empty"),
    ("wss://" + "a" * MAX_RELAY_URL_LENGTH, "relay URL is longer than 1024 characters"),
    (
        "wss://r\u00e9lay.org",
        "relay URL must be ASCII (write international host names in punycode)",
    ),
    ("relay.example.org", "relay URL has no valid scheme (expected scheme://host[:port][/path])"),
    ("1ws://h", "relay URL has no valid scheme (expected scheme://host[:port][/path])"),
    ("w_s://h", "relay URL has no valid scheme (expected scheme://host[:port][/path])"),
    ("://h", "relay URL has no valid scheme (expected scheme://host[:port][/path])"),
    ("wss:h", "relay URL must have the form scheme://host[:port][/path]"),
    ("wss:/h", "relay URL must have the form scheme://host[:port][/path]"),
    ("wss://h/?a=1", "relay URL must not contain a query ('?')"),
    ("wss://h?", "relay URL must not contain a query ('?')"),
    ("wss://user@h", "relay URL must not contain user info ('@')"),
    ("wss://user:pw@h/x", "relay URL must not contain user info ('@')"),
    (
        "wss://h/a b",
        "relay URL path has a character that must be percent-encoded, or a bad '%' escape",
    ),
    (
        "wss://h/%zz",
        "relay URL path has a character that must be percent-encoded, or a bad '%' escape",
    ),
    (
        "wss://h/%4",
        "relay URL path has a character that must be percent-encoded, or a bad '%' escape",
    ),
    (
        "wss://h/\\x",
        "relay URL path has a character that must be percent-encoded, or a bad '%' escape",
    ),
    ("wss://[::1", "relay host has '[' without ']'"),
    ("wss://[::1]x", "relay host literal ']' must be followed by ':port' or '/'"),
    ("wss://[fe80::1%25eth0]", "relay host in brackets is not a valid IPv6 address"),
    ("wss://[::g]", "relay host in brackets is not a valid IPv6 address"),
    ("wss://[1:2:3]", "relay host in brackets is not a valid IPv6 address"),
    ("wss://[]", "relay host in brackets is not a valid IPv6 address"),
    ("wss://[1.2.3.4]", "relay host in brackets is not a valid IPv6 address"),
    ("wss://::1", "relay host: IPv6 addresses must be written in brackets"),
    ("wss://h:", "relay port must be a decimal number 1-65535 without leading zeros"),
    ("wss://h:0", "relay port must be a decimal number 1-65535 without leading zeros"),
    ("wss://h:080", "relay port must be a decimal number 1-65535 without leading zeros"),
    ("wss://h:65536", "relay port must be a decimal number 1-65535 without leading zeros"),
    ("wss://h:123456", "relay port must be a decimal number 1-65535 without leading zeros"),
    ("wss://h:x", "relay port must be a decimal number 1-65535 without leading zeros"),
    ("wss://h:+1", "relay port must be a decimal number 1-65535 without leading zeros"),
    ("wss://[::1]:", "relay port must be a decimal number 1-65535 without leading zeros"),
    ("wss://[::1]:0", "relay port must be a decimal number 1-65535 without leading zeros"),
    (
        "wss://-h",
        "relay host is not a valid host name (letters, digits, '-' and '.'; no trailing dot)",
    ),
    (
        "wss://h-",
        "relay host is not a valid host name (letters, digits, '-' and '.'; no trailing dot)",
    ),
    (
        "wss://a..b",
        "relay host is not a valid host name (letters, digits, '-' and '.'; no trailing dot)",
    ),
    (
        "wss://a.b.",
        "relay host is not a valid host name (letters, digits, '-' and '.'; no trailing dot)",
    ),
    (
        "wss://a_b",
        "relay host is not a valid host name (letters, digits, '-' and '.'; no trailing dot)",
    ),
    (
        "wss://a%41",
        "relay host is not a valid host name (letters, digits, '-' and '.'; no trailing dot)",
    ),
    (
        "wss://" + "a" * 64 + ".org",
        "relay host is not a valid host name (letters, digits, '-' and '.'; no trailing dot)",
    ),
    (
        "wss://" + ".".join(["a" * 60] * 5),
        "relay host is not a valid host name (letters, digits, '-' and '.'; no trailing dot)",
    ),
    ("wss://1.2.3", "relay host is not a valid IPv4 address"),
    ("wss://999.1.1.1", "relay host is not a valid IPv4 address"),
    ("wss://01.2.3.4", "relay host is not a valid IPv4 address"),
    ("wss://a.1", "relay host is not a valid IPv4 address"),
    ("wss://", "relay URL has no host"),
    ("wss:///path", "relay URL has no host"),
    ("wss://:443", "relay URL has no host"),
    ("unix://host/x.sock", "unix relay URL must have an empty host: unix:///path/to.sock"),
    ("unix://:5/x.sock", "unix relay URL must have an empty host: unix:///path/to.sock"),
    ("unix:///", "unix relay URL needs an absolute socket path: unix:///path/to.sock"),
    ("unix://", "unix relay URL needs an absolute socket path: unix:///path/to.sock"),
]


@pytest.mark.parametrize(("url", "message"), _BAD_RELAYS)
def test_bad_relay_url(url: str, message: str) -> None:
    with pytest.raises(LinkError) as info:
        parse_relay_url(url)
    assert str(info.value) == message
    with pytest.raises(LinkError) as info:
        Link.parse(f"{url}#{fragment()}")
    assert str(info.value) == message


@pytest.mark.parametrize("url", ["wss://h/#", "wss://h#x"], ids=["empty-fragment", "fragment"])
def test_relay_url_with_fragment(url: str) -> None:
    with pytest.raises(LinkError, match=re.escape("relay URL must not contain a fragment ('#')")):
        parse_relay_url(url)


_NON_ASCII = "AQ\u00e9A"
_SHORT_PIN = b64(bytes(20))
_TICKET_V2 = b64(b"\x02" + KAT_TICKET[1:])
_TOKEN_B64 = b64(KAT_TOKEN_A)
_NON_CANONICAL_TOKEN = _TOKEN_B64[:-1] + chr(ord(_TOKEN_B64[-1]) + 1)

_BAD_LINKS = [
    (KAT_RELAY, "link has no '#' fragment (the room secret is missing)"),
    (fragment(), "link has no '#' fragment (the room secret is missing)"),
    (f"{KAT_RELAY}#{fragment()}#", "link has more than one '#'"),
    (f"{KAT_RELAY}##{fragment()}", "link has more than one '#'"),
    (f"{KAT_RELAY}#", "link fragment must start with 'm42.'"),
    (f"{KAT_RELAY}#m42", "link fragment must start with 'm42.'"),
    (f"{KAT_RELAY}#M42.1", "link fragment must start with 'm42.'"),
    (f"{KAT_RELAY}# m42.1", "link fragment must start with 'm42.'"),
    (f"{KAT_RELAY}#m43.1.A", "link fragment must start with 'm42.'"),
    (f"{KAT_RELAY}#m42.", "link version is not a decimal number"),
    (f"{KAT_RELAY}#m42.x.A", "link version is not a decimal number"),
    (f"{KAT_RELAY}#m42.-1.A", "link version is not a decimal number"),
    (f"{KAT_RELAY}#m42.1234567890", "link version is not a decimal number"),
    (f"{KAT_RELAY}#m42.\u0661.A", "link version is not a decimal number"),
    (f"{KAT_RELAY}#m42.7", "unsupported link version 7"),
    (f"{KAT_RELAY}#{fragment().replace('.1.', '.2.')}", "unsupported link version 2"),
    (f"{KAT_RELAY}#m42.01.A", "unsupported link version 01"),
    (f"{KAT_RELAY}#m42.1", f"link fragment has 2 fields, {FRAGMENT_HELP}"),
    (f"{KAT_RELAY}#m42.1.A.b.c", f"link fragment has 5 fields, {FRAGMENT_HELP}"),
    (f"{KAT_RELAY}#{fragment()}.pin.more", f"link fragment has 8 fields, {FRAGMENT_HELP}"),
    (f"{KAT_RELAY}#{fragment('a')}", "seat must be A or B"),
    (f"{KAT_RELAY}#{fragment('C')}", "seat must be A or B"),
    (f"{KAT_RELAY}#{fragment('')}", "seat must be A or B"),
    (f"{KAT_RELAY}#{fragment('AB')}", "seat must be A or B"),
    (
        f"{KAT_RELAY}#{fragment(ticket=b64(KAT_TICKET) + '=')}",
        "ticket must be base64url without '=' padding",
    ),
    (f"{KAT_RELAY}#{fragment(ticket='AQ+/')}", "ticket is not valid base64url"),
    (f"{KAT_RELAY}#{fragment(ticket='AQ E')}", "ticket is not valid base64url"),
    (f"{KAT_RELAY}#{fragment(ticket='A')}", "ticket is not valid base64url"),
    (f"{KAT_RELAY}#{fragment(ticket='AQEAE')}", "ticket is not valid base64url"),
    (f"{KAT_RELAY}#{fragment(ticket=_NON_ASCII)}", "ticket is not valid base64url"),
    (f"{KAT_RELAY}#{fragment(ticket=b64(bytes(10)))}", "ticket must be 42 bytes, got 10"),
    (f"{KAT_RELAY}#{fragment(ticket='')}", "ticket must be 42 bytes, got 0"),
    (
        f"{KAT_RELAY}#{fragment(ticket=_TICKET_V2)}",
        "ticket is malformed: unsupported ticket version 2",
    ),
    (
        f"{KAT_RELAY}#{fragment(token=_TOKEN_B64 + '==')}",
        "seat token must be base64url without '=' padding",
    ),
    (f"{KAT_RELAY}#{fragment(token='!' * 22)}", "seat token is not valid base64url"),
    (
        f"{KAT_RELAY}#{fragment(token=_NON_CANONICAL_TOKEN)}",
        "seat token is not valid base64url (non-zero trailing bits)",
    ),
    (f"{KAT_RELAY}#{fragment(token=b64(bytes(15)))}", "seat token must be 16 bytes, got 15"),
    (f"{KAT_RELAY}#{fragment(token=b64(bytes(17)))}", "seat token must be 16 bytes, got 17"),
    (f"{KAT_RELAY}#{fragment(secret=b64(bytes(31)))}", "room secret must be 32 bytes, got 31"),
    (f"{KAT_RELAY}#{fragment(secret='')}", "room secret must be 32 bytes, got 0"),
    (f"{KAT_RELAY}#{fragment(secret='~')}", "room secret is not valid base64url"),
    (
        f"{KAT_RELAY}#{fragment(secret=b64(KAT_SECRET) + '=')}",
        "room secret must be base64url without '=' padding",
    ),
    (f"{KAT_RELAY}#{fragment()}.", "certificate pin must be 32 bytes, got 0"),
    (
        f"{KAT_RELAY}#{fragment()}.{_SHORT_PIN}",
        "certificate pin must be 32 bytes, got 20",
    ),
    (f"{KAT_RELAY}#{fragment()}.*", "certificate pin is not valid base64url"),
    ("x" * (MAX_LINK_LENGTH + 1), f"link is longer than {MAX_LINK_LENGTH} characters"),
]


@pytest.mark.parametrize(("text", "message"), _BAD_LINKS)
def test_bad_link(text: str, message: str) -> None:
    with pytest.raises(LinkError) as info:
        Link.parse(text)
    assert str(info.value) == message


def test_fragment_helper_builds_a_valid_link() -> None:
    """Guards the error table: its base must be valid, so each case breaks one thing."""
    assert Link.parse(f"{KAT_RELAY}#{fragment()}") == kat_link(pin=None)


@pytest.mark.parametrize(
    ("relay", "message"),
    [
        ("wss://h ", "relay host is not a valid host name"),
        ("wss://h/\n", "relay URL path has a character that must be percent-encoded"),
        ("\n", "relay URL is empty"),
    ],
)
def test_inner_whitespace_is_refused(relay: str, message: str) -> None:
    with pytest.raises(LinkError, match=re.escape(message)):
        Link.parse(f"{relay}#{fragment()}")


def test_relay_errors_come_before_fragment_errors() -> None:
    with pytest.raises(LinkError, match="relay URL has no host"):
        Link.parse("wss://#m42.9")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"relay": "wss://u@h"}, "relay URL must not contain user info ('@')"),
        ({"seat": "A"}, "seat must be A or B"),
        ({"ticket": "ticket"}, "ticket must be bytes"),
        ({"ticket": bytearray(KAT_TICKET)}, "ticket must be bytes"),
        ({"ticket": KAT_TICKET[:-1]}, "ticket must be 42 bytes, got 41"),
        ({"ticket": b"\x00" + KAT_TICKET[1:]}, "ticket is malformed: unsupported ticket version 0"),
        ({"token": bytes(32)}, "seat token must be 16 bytes, got 32"),
        ({"secret": bytes(16)}, "room secret must be 32 bytes, got 16"),
        ({"secret": None}, "room secret must be bytes"),
        ({"pin": bytes(16)}, "certificate pin must be 32 bytes, got 16"),
    ],
)
def test_constructor_validates(changes: dict[str, object], message: str) -> None:
    with pytest.raises(LinkError) as info:
        kat_link(**changes)
    assert str(info.value) == message


def test_link_error_is_an_m42_error_only() -> None:
    # One tree with single inheritance (m42d/errors.py): callers catch M42Error, never ValueError.
    with pytest.raises(M42Error, match="no '#' fragment"):
        Link.parse("wss://h")
    assert not issubclass(LinkError, ValueError)


# -- fuzzing ------------------------------------------------------------------------------

_SECRET_TEXTS = (
    b64(KAT_SECRET),
    KAT_SECRET.hex(),
    b64(KAT_TOKEN_A),
    KAT_TOKEN_A.hex(),
)


def _parse_or_link_error(text: str) -> Link | None:
    try:
        return Link.parse(text)
    except LinkError as exc:
        message = str(exc)
        assert all(secret not in message for secret in _SECRET_TEXTS)
        return None


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_fuzz_arbitrary_text(text: str) -> None:
    assert _parse_or_link_error(text) is None


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="wsunix:/[]@?#.%m42AB1-_=+:0123456789abcdefABCDEF", max_size=80))
def test_fuzz_link_alphabet(text: str) -> None:
    link = _parse_or_link_error(text)
    if link is not None:
        assert Link.parse(link.format()) == link


_ALPHABET = "".join(chr(c) for c in range(32, 127)) + "\n\t\u00e9\u0661\uff21\x00"


@settings(max_examples=500, deadline=None)
@given(st.data())
def test_fuzz_mutated_link(data: st.DataObject) -> None:
    text = KAT_LINK_A
    for _ in range(data.draw(st.integers(1, 4), label="mutations")):
        op = data.draw(st.sampled_from(["insert", "delete", "replace", "truncate"]))
        index = data.draw(st.integers(0, len(text)), label="index")
        char = data.draw(st.sampled_from(_ALPHABET), label="char")
        if op == "insert":
            text = text[:index] + char + text[index:]
        elif op == "delete":
            text = text[:index] + text[index + 1 :]
        elif op == "replace":
            text = text[:index] + char + text[index + 1 :]
        else:
            text = text[:index]
    link = _parse_or_link_error(text)
    if link is not None:
        assert Link.parse(link.format()) == link


# -- secrecy -------------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(_LINKS)
def test_repr_and_str_hide_token_and_secret(link: Link) -> None:
    """The text of a link does not depend on its token or secret at all."""
    flipped = attrs.evolve(
        link,
        token=bytes(b ^ 0xFF for b in link.token),
        secret=bytes(b ^ 0xFF for b in link.secret),
    )
    assert repr(flipped) == repr(link)
    assert str(flipped) == str(link)
    assert f"{flipped}" == f"{link}"
    assert link.relay in repr(link)
    assert link.ticket.hex() in repr(link)


def test_kat_text_hides_secrets() -> None:
    link = Link.parse(KAT_LINK_A)
    for text in (repr(link), str(link), repr(link.relay_address)):
        for secret in _SECRET_TEXTS:
            assert secret not in text
        assert repr(KAT_SECRET) not in text
        assert repr(KAT_TOKEN_A) not in text


def test_kat_repr() -> None:
    assert repr(kat_link(pin=None)) == (
        f"Link(relay='{KAT_RELAY}', seat=<Seat.A: 'A'>, ticket='{KAT_TICKET.hex()}', pin=None)"
    )


def test_parts_are_checked_left_to_right() -> None:
    """A short ticket is reported before a badly encoded token, and so on."""
    text = f"{KAT_RELAY}#{fragment(ticket=b64(bytes(10)), token='!', secret='')}"
    with pytest.raises(LinkError, match=r"^ticket must be 42 bytes, got 10$"):
        Link.parse(text)
    text = f"{KAT_RELAY}#{fragment(token=b64(bytes(3)), secret='!')}"
    with pytest.raises(LinkError, match=r"^seat token must be 16 bytes, got 3$"):
        Link.parse(text)
    text = f"{KAT_RELAY}#{fragment(secret=b64(bytes(3)))}.!"
    with pytest.raises(LinkError, match=r"^room secret must be 32 bytes, got 3$"):
        Link.parse(text)
