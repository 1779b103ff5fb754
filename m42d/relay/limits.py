"""Numbers that bound the relay, and the per-address rate limiter.

:class:`RelayLimits` is the one set of limits: the configuration's
``[limits]`` table builds it, the relay reads it.
"""

from __future__ import annotations

import ipaddress
from typing import Final, final

import attrs

from m42d.checks import checked, positive_int, positive_number
from m42d.errors import ConfigError
from m42d.wire import MAX_PAYLOAD

__all__ = [
    "FILE_PAYLOAD",
    "FRAME_COST",
    "MAX_BULK_WINDOW",
    "MAX_SHUTDOWN_GRACE",
    "MIN_PAYLOAD",
    "RateLimiter",
    "RelayLimits",
    "address_key",
]

MIB: Final = 1024 * 1024
CONTROL_WINDOW: Final = 512 * 1024
QUEUED_PER_ADDRESS: Final = 8 * MIB
MIN_PAYLOAD: Final = 1024
"""Lower bound for ``max_payload``: below it even control messages would not fit."""
FILE_PAYLOAD: Final = 16 + 262144 + 16
"""The BULK payload of a full file chunk from the standard clients: file id and index
(16 bytes), a 256 KiB STREAM chunk and its tag.  A relay whose ``max_payload`` is
below it carries text but refuses every full chunk (413); see :meth:`RelayLimits.warnings`.
Kept here as a number, not imported from the session, because the relay never
interprets payloads; a test holds it equal to the session's sizes."""
MAX_BULK_WINDOW: Final = 0xFFFF_FFFF
"""Credit travels as a 32-bit count on the wire."""
MAX_SHUTDOWN_GRACE: Final = 0xFFFF_FFFF / 1000
"""GOAWAY carries the grace period as a 32-bit count of milliseconds (~49.7 days)."""
FRAME_COST: Final = 128
"""Bytes a queued frame is counted as on top of its payload: the ``Relayed``
object, its ``bytes`` header and the lane's slot.  tracemalloc measures 111
bytes for a queued 1-byte BULK (72 for a WebSocket CONTROL); 128 rounds up
for the allocator.  Without it, 1 MiB of credit spent in 1-byte BULK frames
held ~111 MiB."""


@final
@attrs.frozen
class RelayLimits:
    """Resource limits of the relay; every one bounds memory, file descriptors or abuse.

    Times are seconds, sizes bytes, rates events per minute per client address.
    The daemon reads them from the ``[limits]`` table of its configuration
    (``m42d.config``), with the same names; code builds them directly.
    """

    max_connections: int = checked(10_000, positive_int)
    max_connections_per_address: int = checked(64, positive_int)
    join_timeout: float = checked(10.0, positive_number)
    idle_timeout: float = checked(120.0, positive_number)
    ping_interval: float = checked(30.0, positive_number)
    max_payload: int = checked(MAX_PAYLOAD, positive_int)
    bulk_window: int = checked(1024 * 1024, positive_int)
    control_queue: int = checked(256, positive_int)
    control_window: int = checked(CONTROL_WINDOW, positive_int)
    """Bytes the control lane towards one connection may hold (a frame: payload + FRAME_COST)."""
    max_queued_per_address: int = checked(QUEUED_PER_ADDRESS, positive_int)
    """Bytes queued towards all the connections of one client address, both lanes."""
    create_rate: int = checked(30, positive_int)
    join_rate: int = checked(120, positive_int)
    shutdown_grace: float = checked(5.0, positive_number)
    ipv6_prefix: int = checked(64, positive_int)
    """IPv6 clients count as one address per prefix of this length (see :func:`address_key`)."""
    write_timeout: float = checked(30.0, positive_number)
    """A write to a client that does not progress for this long closes it (it is not reading)."""
    close_timeout: float = checked(2.0, positive_number)
    """Deadline for the last ERROR or GOAWAY write before a connection is closed."""

    def __attrs_post_init__(self) -> None:
        # Rules across fields: each one, if broken, makes the relay misbehave
        # in a way no single value would show.
        if self.ping_interval >= self.idle_timeout:
            raise ConfigError(
                "ping_interval must be less than idle_timeout, or idle peers that "
                "answer pings would still be dropped"
            )
        if not MIN_PAYLOAD <= self.max_payload <= MAX_PAYLOAD:
            raise ConfigError(
                f"max_payload must be between {MIN_PAYLOAD} and {MAX_PAYLOAD} bytes "
                f"(the wire maximum; a file chunk from the standard clients is {FILE_PAYLOAD})"
            )
        if self.bulk_window > MAX_BULK_WINDOW:
            raise ConfigError(f"bulk_window must be at most {MAX_BULK_WINDOW} (32-bit credit)")
        if self.bulk_window < self.max_payload:
            raise ConfigError(
                f"bulk_window must be at least max_payload ({self.max_payload}), "
                "or a full bulk frame could never be sent"
            )
        if self.max_connections_per_address > self.max_connections:
            raise ConfigError("max_connections_per_address must not exceed max_connections")
        if self.control_window < self.max_payload + FRAME_COST:
            raise ConfigError(
                f"control_window must be at least max_payload + {FRAME_COST} "
                f"({self.max_payload + FRAME_COST}: one full frame and what it costs to queue)"
            )
        if self.max_queued_per_address < self.control_window + self.bulk_window:
            raise ConfigError(
                "max_queued_per_address must be at least control_window + bulk_window "
                "(one peer's two lanes)"
            )
        if self.ipv6_prefix > 128:
            raise ConfigError("ipv6_prefix must be between 1 and 128 (bits of an IPv6 address)")
        if self.shutdown_grace > MAX_SHUTDOWN_GRACE:
            raise ConfigError(
                f"shutdown_grace must be at most {MAX_SHUTDOWN_GRACE:.0f} seconds "
                "(GOAWAY carries it as 32-bit milliseconds)"
            )

    def warnings(self) -> list[str]:
        """Settings that are valid but break what users expect; said at start and by check-config.

        A ``max_payload`` below :data:`FILE_PAYLOAD` is the one today: protocol 1's
        example config set ``max_payload = 65600``, which a relay of protocol 2
        still accepts, and with which every file transfer would end in a 413.
        """
        if self.max_payload < FILE_PAYLOAD:
            return [
                f"limits.max_payload = {self.max_payload} is below a file chunk "
                f"({FILE_PAYLOAD} bytes): texts get through, file transfers fail; "
                f"remove the line to use the default ({MAX_PAYLOAD})"
            ]
        return []


def address_key(address: str, ipv6_prefix: int) -> str:
    """The key per-address limits count ``address`` under.

    Anyone with an IPv6 /64 (the usual end-user allocation) holds 2^64
    addresses, so keying on the full address would multiply every
    per-address limit by that; IPv6 addresses count per ``ipv6_prefix``
    bits instead (``2001:db8:1:2::/64``).  An IPv4-mapped IPv6 address
    (``::ffff:192.0.2.1``, what a dual-stack socket reports) is the IPv4
    address it maps.  Anything that is not an IP address (a plugin's own
    notion of an address, or ``""``) is its own key.
    """
    if not address:
        return address
    try:
        ip = ipaddress.ip_address(address.partition("%")[0])  # no zone: fe80::1%eth0
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv4Address):
        return str(ip)
    mapped = ip.ipv4_mapped
    if mapped is not None:
        return str(mapped)
    return str(ipaddress.IPv6Network((ip, ipv6_prefix), strict=False))


@final
@attrs.define
class RateLimiter:
    """Token buckets per client address: ``per_minute`` events, bursts of the same size.

    Buckets that have refilled completely are forgotten, so memory follows
    the number of recently active addresses, not every address ever seen.
    An empty address (a transport without one, such as a Unix socket) is
    not limited.
    """

    per_minute: int
    _buckets: dict[str, tuple[float, float]] = attrs.field(factory=dict, init=False, repr=False)
    _prune_at: int = attrs.field(default=1024, init=False, repr=False)

    def allow(self, address: str, now: float) -> bool:
        """Take one token for ``address`` at monotonic time ``now``; False when empty."""
        if not address:
            return True
        capacity = float(self.per_minute)
        rate = capacity / 60.0
        tokens, stamp = self._buckets.get(address, (capacity, now))
        tokens = min(capacity, tokens + max(0.0, now - stamp) * rate)
        allowed = tokens >= 1.0
        self._buckets[address] = (tokens - 1.0 if allowed else tokens, now)
        if len(self._buckets) >= self._prune_at:
            self.prune(now)
        return allowed

    def prune(self, now: float) -> None:
        """Forget addresses whose bucket is full again."""
        capacity = float(self.per_minute)
        rate = capacity / 60.0
        self._buckets = {
            address: (tokens, stamp)
            for address, (tokens, stamp) in self._buckets.items()
            if tokens + (now - stamp) * rate < capacity
        }
        self._prune_at = max(1024, 2 * len(self._buckets))

    def __len__(self) -> int:
        return len(self._buckets)
