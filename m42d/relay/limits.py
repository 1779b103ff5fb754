"""Numbers that bound the relay, and the per-address rate limiter.

:class:`RelayLimits` uses the same field names and units as
``m42d.config.Limits`` (so the daemon maps one onto the other with
``RelayLimits(**attrs.asdict(config.limits))``) plus two write deadlines the
configuration does not expose yet.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Final, final

import attrs

from m42d.errors import ConfigError
from m42d.wire import MAX_PAYLOAD

__all__ = ["FRAME_COST", "RateLimiter", "RelayLimits", "address_key"]

MIB: Final = 1024 * 1024
CONTROL_WINDOW: Final = 512 * 1024
QUEUED_PER_ADDRESS: Final = 8 * MIB
FRAME_COST: Final = 128
"""Bytes a queued frame is counted as on top of its payload: the ``Relayed``
object, its ``bytes`` header and the lane's slot.  tracemalloc measures 111
bytes for a queued 1-byte BULK (72 for a WebSocket CONTROL); 128 rounds up
for the allocator.  Without it, 1 MiB of credit spent in 1-byte BULK frames
held ~111 MiB."""


def _positive(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value > 0:
        raise ConfigError(f"{attribute.name} must be positive")


@final
@attrs.frozen
class RelayLimits:
    """Resource limits; times are seconds, sizes bytes, rates events per minute per address."""

    max_connections: int = attrs.field(default=10_000, validator=_positive)
    max_connections_per_address: int = attrs.field(default=64, validator=_positive)
    join_timeout: float = attrs.field(default=10.0, validator=_positive)
    idle_timeout: float = attrs.field(default=120.0, validator=_positive)
    ping_interval: float = attrs.field(default=30.0, validator=_positive)
    max_payload: int = attrs.field(default=MAX_PAYLOAD, validator=_positive)
    bulk_window: int = attrs.field(default=MIB, validator=_positive)
    control_queue: int = attrs.field(default=256, validator=_positive)
    control_window: int = attrs.field(default=CONTROL_WINDOW, validator=_positive)
    """Bytes the control lane towards one peer may hold (a frame: payload + :data:`FRAME_COST`)."""
    max_queued_per_address: int = attrs.field(default=QUEUED_PER_ADDRESS, validator=_positive)
    """Bytes queued towards all the peers of one client address, both lanes."""
    create_rate: int = attrs.field(default=30, validator=_positive)
    join_rate: int = attrs.field(default=120, validator=_positive)
    shutdown_grace: float = attrs.field(default=5.0, validator=_positive)
    write_timeout: float = attrs.field(default=30.0, validator=_positive)
    """A write to a client that does not progress for this long closes it (it is not reading)."""
    ipv6_prefix: int = attrs.field(default=64, validator=_positive)
    """IPv6 clients count as one address per prefix of this length (see :func:`address_key`)."""
    close_timeout: float = attrs.field(default=2.0, validator=_positive)
    """Deadline for the last ERROR or GOAWAY write before a connection is closed."""

    def __attrs_post_init__(self) -> None:
        if self.max_payload > MAX_PAYLOAD:
            raise ConfigError(f"max_payload must be at most {MAX_PAYLOAD} bytes")
        if self.bulk_window < self.max_payload:
            raise ConfigError("bulk_window must be at least max_payload")
        if self.bulk_window > 0xFFFF_FFFF:
            raise ConfigError("bulk_window must fit in 32 bits")
        if self.ipv6_prefix > 128:
            raise ConfigError("ipv6_prefix must be at most 128")
        if self.control_window < self.max_payload + FRAME_COST:
            raise ConfigError("control_window must hold one frame of max_payload")
        if self.max_queued_per_address < self.control_window + self.bulk_window:
            raise ConfigError(
                "max_queued_per_address must hold one peer's lanes (control_window + bulk_window)"
            )
        if self.shutdown_grace * 1000 > 0xFFFF_FFFF:
            raise ConfigError("shutdown_grace must fit GOAWAY's 32-bit milliseconds")


def address_key(peer: str, ipv6_prefix: int) -> str:
    """The key per-address limits count ``peer`` under.

    Anyone with an IPv6 /64 (the usual end-user allocation) holds 2^64
    addresses, so keying on the full address would multiply every
    per-address limit by that; IPv6 addresses count per ``ipv6_prefix``
    bits instead (``2001:db8:1:2::/64``).  An IPv4-mapped IPv6 address
    (``::ffff:192.0.2.1``, what a dual-stack socket reports) is the IPv4
    address it maps.  Anything that is not an IP address (a plugin's own
    notion of a peer, or ``""``) is its own key.
    """
    if not peer:
        return peer
    try:
        ip = ipaddress.ip_address(peer.partition("%")[0])  # no zone: fe80::1%eth0
    except ValueError:
        return peer
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
