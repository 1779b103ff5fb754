"""The little state several m42d nodes share, kept in Valkey or Redis.

A single node needs none of this: tickets are stateless and the burn list
is a local file.  Nodes behind one load balancer share two things, and
nothing else:

* **burns**, so a room burned on one node is refused on every other;
* **which node holds a room**, so a room whose two seats landed on two
  nodes (the node set changed between their connects) can be healed.

Keys (``<room>`` is the room id in lowercase hex, ``<node>`` a node's name):

=========================  ======================  =============================
key                        value                   expires
=========================  ======================  =============================
``m42d:burn:<room>``       ``1``                   one second after the ticket
``m42d:room:<room>``       the holding node        one second after the ticket,
                                                   or deleted when the room empties
``m42d:node:<node>``       ``1``                   ``3 x heartbeat`` after the
                                                   node's last heartbeat
=========================  ======================  =============================

Every call has a deadline and every failure of the store (refused,
timed out, a protocol error) is one :class:`StoreUnavailable`: callers
decide what an unreachable store means for them (see
:mod:`m42d.relay.cluster`).  The client is coredis: typed, maintained,
and built on anyio, so it runs on trio without a thread per call.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, Protocol, final

import trio

from m42d.errors import M42Error

if TYPE_CHECKING:
    import coredis

__all__ = ["KEY_PREFIX", "SharedStore", "StoreUnavailable", "ValkeyStore", "open_store"]

KEY_PREFIX: Final = "m42d:"
CALL_TIMEOUT: Final = 1.0
"""Seconds one store call (or pipeline) may take before the store counts as unreachable."""

_RELEASE: Final = (
    "for i, key in ipairs(KEYS) do "
    "if redis.call('GET', key) == ARGV[1] then redis.call('DEL', key) end "
    "end return 0"
)
"""Delete room keys only where this node still holds them (a newer holder keeps its claim)."""


class StoreUnavailable(M42Error):
    """The shared store did not answer in time, refused the connection, or failed."""


class SharedStore(Protocol):
    """What :class:`~m42d.relay.cluster.Cluster` needs from the store (tests fake it)."""

    async def is_burned(self, room_id: bytes) -> bool: ...

    async def burn(self, room_id: bytes, expires: int) -> None: ...

    async def heartbeat(self, node: str, ttl: float) -> None: ...

    async def claim(self, node: str, rooms: Mapping[bytes, int]) -> None: ...

    async def release(self, node: str, rooms: Sequence[bytes]) -> None: ...

    async def holders(self, rooms: Sequence[bytes]) -> list[str | None]: ...

    async def alive(self, nodes: Sequence[str]) -> set[str]: ...


def burn_key(room_id: bytes) -> str:
    return f"{KEY_PREFIX}burn:{room_id.hex()}"


def room_key(room_id: bytes) -> str:
    return f"{KEY_PREFIX}room:{room_id.hex()}"


def node_key(node: str) -> str:
    return f"{KEY_PREFIX}node:{node}"


@contextlib.contextmanager
def _store_errors(what: str) -> Iterator[None]:
    """Map everything a store call can raise to one exception, with a deadline."""
    from coredis.exceptions import RedisError

    try:
        with trio.fail_after(CALL_TIMEOUT):
            yield
    except trio.TooSlowError as exc:
        raise StoreUnavailable(f"shared store: {what} timed out") from exc
    except (RedisError, OSError) as exc:
        raise StoreUnavailable(f"shared store: {what} failed ({type(exc).__name__})") from exc
    except BaseExceptionGroup as group:
        # coredis runs pipelines in a task group: its failures come grouped.
        inner, rest = group.split((RedisError, OSError))
        if inner is None or rest is not None:
            raise
        first = inner.exceptions[0]
        raise StoreUnavailable(f"shared store: {what} failed ({type(first).__name__})") from group


def _decode(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


@final
class ValkeyStore:
    """:class:`SharedStore` on a Valkey or Redis server (a ``coredis`` client inside)."""

    def __init__(self, client: coredis.Redis[bytes]) -> None:
        self._client = client

    async def is_burned(self, room_id: bytes) -> bool:
        with _store_errors("burn lookup"):
            return bool(await self._client.exists([burn_key(room_id)]))

    async def burn(self, room_id: bytes, expires: int) -> None:
        with _store_errors("burn"):
            await self._client.set(burn_key(room_id), "1", exat=expires + 1)

    async def heartbeat(self, node: str, ttl: float) -> None:
        with _store_errors("heartbeat"):
            await self._client.set(node_key(node), "1", px=max(1, int(ttl * 1000)))

    async def claim(self, node: str, rooms: Mapping[bytes, int]) -> None:
        if not rooms:
            return
        with _store_errors("room claim"):
            async with self._client.pipeline(transaction=False) as pipe:
                for room_id, expires in rooms.items():
                    pipe.set(room_key(room_id), node, exat=expires + 1)

    async def release(self, node: str, rooms: Sequence[bytes]) -> None:
        if not rooms:
            return
        with _store_errors("room release"):
            await self._client.eval(_RELEASE, [room_key(r) for r in rooms], [node])

    async def holders(self, rooms: Sequence[bytes]) -> list[str | None]:
        if not rooms:
            return []
        with _store_errors("room lookup"):
            values: Sequence[Any] = await self._client.mget([room_key(r) for r in rooms])
        return [_decode(value) for value in values]

    async def alive(self, nodes: Sequence[str]) -> set[str]:
        if not nodes:
            return set()
        with _store_errors("node lookup"):
            values: Sequence[Any] = await self._client.mget([node_key(n) for n in nodes])
        return {node for node, value in zip(nodes, values, strict=True) if value is not None}


@contextlib.asynccontextmanager
async def open_store(url: str) -> AsyncIterator[ValkeyStore]:
    """A store client for ``redis://``, ``rediss://`` or ``unix://`` URLs, closed on exit.

    Nothing is sent until the first call, so a store that is down at start
    does not stop the node: calls fail with :class:`StoreUnavailable` until
    it is back.

    Raises:
        StoreUnavailable: coredis is not installed.
    """
    try:
        import coredis
    except ImportError as exc:  # pragma: no cover - the test extra installs it
        raise StoreUnavailable(
            "store_url needs the coredis package: pip install 'm42d[store]'"
        ) from exc
    client: coredis.Redis[bytes] = coredis.Redis.from_url(
        url, connect_timeout=CALL_TIMEOUT, stream_timeout=CALL_TIMEOUT
    )
    async with client:
        yield ValkeyStore(client)
