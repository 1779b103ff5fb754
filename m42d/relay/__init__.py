"""The m42d relay: rooms, seats, lanes, credit, limits and the serve loop.

How the daemon runs it::

    from m42d.relay import Relay, RelayLimits, serve_relay
    from m42d.transport import load_transports

    relay = Relay(
        keyring,                              # TicketKeyRing from the state directory
        limits=config.limits,                 # a RelayLimits, from the [limits] table
        burned=state.deny_list,               # anything with is_burned()/burn()
        creation_secret=secret_bytes_or_None,
        room_ttl=config.room_ttl,
        log_addresses=config.log_addresses,
    )
    transports = load_transports()
    listeners = [
        await transports[scheme].open_listener(url, ssl_context=ctx, sock=inherited)
        for ...
    ]
    for listener in listeners:
        log.info("listening on %s", ", ".join(listener.urls))
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_relay, relay, listeners)
        ...                      # on SIGTERM/SIGINT: relay.stop()
                                 # on SIGHUP: relay.limits = ...; relay.keyring = ...

``serve_relay`` returns after ``relay.stop()`` once the last connection has
left or ``limits.shutdown_grace`` has passed.  ``relay.statistics()`` is a
snapshot of counters for metrics.
"""

from __future__ import annotations

from m42d.relay.burns import BurnList, MemoryBurnList
from m42d.relay.limits import RateLimiter, RelayLimits
from m42d.relay.occupant import Occupant
from m42d.relay.room import Room, room_tag
from m42d.relay.server import DEFAULT_ROOM_TTL, Relay, serve_relay
from m42d.relay.stats import RelayStatistics

__all__ = [
    "DEFAULT_ROOM_TTL",
    "BurnList",
    "MemoryBurnList",
    "Occupant",
    "RateLimiter",
    "Relay",
    "RelayLimits",
    "RelayStatistics",
    "Room",
    "room_tag",
    "serve_relay",
]
