"""Sections a, c, d and e: relay throughput, latency, scale and small messages.

Each function takes running relay processes (bench/procs.py), drives them
with the clients of bench/clients.py from this process, and returns plain
dicts for the JSON report.  Relay CPU is read from /proc around the timed
part only, so setup (TLS handshakes, pairing) does not count.
"""

from __future__ import annotations

import statistics
import struct
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, Final

import trio

from bench.clients import (
    BULK_PAYLOAD,
    Endpoint,
    connect_m42d,
    connect_pipe,
    create_rooms,
    new_token,
)
from bench.procs import Relay
from m42d.ticket import Seat

__all__ = ["bulk", "latency", "messages", "scale"]

GIB: Final = 1 << 30
PAIR_TIMEOUT: Final = 30.0
RUN_TIMEOUT: Final = 300.0

KINDS: Final = {
    # kind: (relay name, url key, tls on the client side)
    "m42d-tls": ("m42d", "tls", True),
    "m42d-ws": ("m42d", "ws", False),
    "transit-tcp": ("transit", "tcp", False),
    "transit-ws": ("transit", "ws", False),
    "naive-tcp": ("naive-tcp", "tcp", False),
    "naive-tls": ("naive-tls", "tcp", True),
}


async def open_pair(
    nursery: trio.Nursery, kind: str, relays: Mapping[str, Relay]
) -> tuple[Endpoint, Endpoint]:
    """Two endpoints paired through the relay of ``kind``; both see their peer."""
    relay_name, key, tls = KINDS[kind]
    url = relays[relay_name].urls[key]
    if relay_name == "m42d":
        (room,) = await create_rooms(relays["m42d"].urls["tls"], 1)
        b = await connect_m42d(nursery, url, room, Seat.B, name=f"{kind}-B")
        with trio.fail_after(PAIR_TIMEOUT):
            await b.joined.wait()
        a = await connect_m42d(nursery, url, room, Seat.A, name=f"{kind}-A")
    else:
        token, side_a, side_b = new_token()
        b = await connect_pipe(nursery, url, token, side_b, tls=tls, name=f"{kind}-B")
        a = await connect_pipe(nursery, url, token, side_a, tls=tls, name=f"{kind}-A")
    with trio.fail_after(PAIR_TIMEOUT):
        await a.peer_up.wait()
        await b.peer_up.wait()
    return a, b


async def _close(*endpoints: Endpoint) -> None:
    with trio.CancelScope(shield=True):
        for endpoint in endpoints:
            await endpoint.aclose()


@asynccontextmanager
async def paired(
    kind: str, relays: Mapping[str, Relay]
) -> AsyncIterator[tuple[Endpoint, Endpoint, trio.Nursery]]:
    """A pair and a nursery for its tasks; the sockets close only after every task ended.

    Closing a socket while a task that was already woken (but not yet run)
    still holds it makes that task fail with ClosedResourceError instead of
    seeing its cancellation, so the close waits for the nursery to exit.
    """
    endpoints: list[Endpoint] = []
    try:
        async with trio.open_nursery() as nursery:
            a, b = await open_pair(nursery, kind, relays)
            endpoints += (a, b)
            yield a, b, nursery
            nursery.cancel_scope.cancel()
    finally:
        await _close(*endpoints)


# -- a: bulk throughput ----------------------------------------------------------------


async def bulk(kind: str, relays: Mapping[str, Relay], nbytes: int) -> dict[str, Any]:
    """A sends ``nbytes`` of BULK to B through the relay; MB/s and relay CPU s/GiB."""
    relay = relays[KINDS[kind][0]]
    frames = max(1, nbytes // BULK_PAYLOAD)
    total = frames * BULK_PAYLOAD
    async with paired(kind, relays) as (a, b, nursery):
        b.bulk_target = total
        cpu0, t0 = relay.cpu_seconds(), time.perf_counter()
        nursery.start_soon(a.send_bulk, frames)
        with trio.fail_after(RUN_TIMEOUT):
            await b.bulk_done.wait()
        t1, cpu1 = time.perf_counter(), relay.cpu_seconds()
    seconds = t1 - t0
    return {
        "kind": kind,
        "bytes": total,
        "seconds": seconds,
        "mb_per_s": total / seconds / 1e6,
        "relay_cpu_s": cpu1 - cpu0,
        "relay_cpu_s_per_gib": (cpu1 - cpu0) / (total / GIB),
    }


# -- c: latency ---------------------------------------------------------------------------


_PING: Final = struct.Struct(">Q")
PING_PAD: Final = bytes(56)
"""A 64-byte message: about one short encrypted text."""


async def _pings(a: Endpoint, count: int, interval: float) -> list[float]:
    sent: dict[int, float] = {}
    rtts: list[float] = []
    all_back = trio.Event()

    async def on_reply(body: bytes) -> None:
        (seq,) = _PING.unpack_from(body)
        rtts.append(time.perf_counter() - sent.pop(seq))
        if len(rtts) == count:
            all_back.set()

    a.on_control = on_reply
    for seq in range(count):
        sent[seq] = time.perf_counter()
        await a.send_encoded([a.frame(0x10, _PING.pack(seq) + PING_PAD)])
        await trio.sleep(interval)
    with trio.move_on_after(PAIR_TIMEOUT):
        await all_back.wait()
    a.on_control = None
    return rtts


def _percentiles(rtts: list[float]) -> dict[str, float]:
    if len(rtts) < 2:
        return {"p50_ms": float("nan"), "p99_ms": float("nan"), "n": len(rtts)}
    q = statistics.quantiles(rtts, n=100, method="inclusive")
    return {"p50_ms": q[49] * 1e3, "p99_ms": q[98] * 1e3, "n": len(rtts)}


async def latency(
    kind: str, relays: Mapping[str, Relay], count: int, interval: float = 0.005
) -> dict[str, Any]:
    """Round trips of 64-byte messages A -> B -> A, idle and while A streams BULK to B.

    The bulk and the messages share A's one connection (and B's), so the
    relay decides what waits: m42d's lanes, or one FIFO byte pipe.  A's own
    client sends one chunk-sized frame per write, so a message waits at most one
    frame in the client.
    """
    async with paired(kind, relays) as (a, b, nursery):

        async def echo(body: bytes) -> None:
            await b.send_encoded([b.frame(0x10, body)])

        b.on_control = echo
        idle = await _pings(a, count, interval)
        nursery.start_soon(partial(a.send_bulk, None, batch=1))
        await trio.sleep(0.2)  # let the pipes fill
        before = b.bulk_received
        t0 = time.perf_counter()
        busy = await _pings(a, count, interval)
        moved = b.bulk_received - before
        elapsed = time.perf_counter() - t0
    result: dict[str, Any] = {"kind": kind}
    result["idle"] = _percentiles(idle)
    result["busy"] = _percentiles(busy)
    result["bulk_mb_per_s_during"] = moved / elapsed / 1e6
    return result


# -- d: scale ----------------------------------------------------------------------------------


HANDSHAKE: Final = ((0, 96), (1, 144), (0, 64))
"""Noise XX-sized messages (seat, bytes): e; e, ee, s, es; s, se with tags and lane header."""


async def _wait_controls(endpoint: Endpoint, count: int) -> None:
    endpoint.controls_done = trio.Event()
    endpoint.controls_target = count
    if endpoint.controls_received < count:
        await endpoint.controls_done.wait()


async def scale(kind: str, relay: Relay, rooms: int, *, concurrency: int = 64) -> dict[str, Any]:
    """``rooms`` rooms, both seats joined, a handshake-sized exchange done; RSS per room."""
    relays = {relay.name: relay}
    relay_name, key, tls = KINDS[kind]
    url = relay.urls[key]
    keys = await create_rooms(relay.urls["tls"], rooms) if relay_name == "m42d" else []
    rss0 = relay.rss_bytes()
    pairs: list[tuple[Endpoint, Endpoint]] = []
    limiter = trio.CapacityLimiter(concurrency)
    del relays

    async with trio.open_nursery() as nursery:

        async def join(i: int) -> None:
            async with limiter:
                if relay_name == "m42d":
                    b = await connect_m42d(nursery, url, keys[i], Seat.B)
                    a = await connect_m42d(nursery, url, keys[i], Seat.A)
                else:
                    token, side_a, side_b = new_token()
                    b = await connect_pipe(nursery, url, token, side_b, tls=tls)
                    a = await connect_pipe(nursery, url, token, side_a, tls=tls)
                await a.peer_up.wait()
                await b.peer_up.wait()
                pairs.append((a, b))

        async def shake(a: Endpoint, b: Endpoint) -> None:
            async with limiter:
                counts = [0, 0]
                for seat, size in HANDSHAKE:
                    src, dst = (a, b) if seat == 0 else (b, a)
                    await src.send_encoded([src.frame(0x10, bytes(size))])
                    counts[1 - seat] += 1
                    await _wait_controls(dst, counts[1 - seat])

        cpu0, t0 = relay.cpu_seconds(), time.perf_counter()
        with trio.fail_after(RUN_TIMEOUT):
            async with trio.open_nursery() as joins:
                for i in range(rooms):
                    joins.start_soon(join, i)
        t1, cpu1 = time.perf_counter(), relay.cpu_seconds()
        with trio.fail_after(RUN_TIMEOUT):
            async with trio.open_nursery() as shakes:
                for a, b in pairs:
                    shakes.start_soon(shake, a, b)
        t2 = time.perf_counter()
        await trio.sleep(0.5)
        rss1 = relay.rss_bytes()
        nursery.cancel_scope.cancel()
    with trio.CancelScope(shield=True):
        for a, b in pairs:
            await a.aclose()
            await b.aclose()
    per_room = (rss1 - rss0) / rooms
    return {
        "kind": kind,
        "rooms": rooms,
        "rss_before_mib": rss0 / 2**20,
        "rss_after_mib": rss1 / 2**20,
        "rss_per_room_kib": per_room / 1024,
        "rss_projected_10k_mib": (rss0 + per_room * 10_000) / 2**20,
        "join_seconds": t1 - t0,
        "joins_per_s": 2 * rooms / (t1 - t0),
        # The clients share the 2 cores (TLS/WebSocket handshakes for both
        # seats): the relay's own cost per join says what the relay could do.
        "relay_cpu_ms_per_join": (cpu1 - cpu0) / (2 * rooms) * 1e3,
        "handshake_seconds": t2 - t1,
    }


# -- e: small messages -------------------------------------------------------------------------


async def messages(
    kind: str, relays: Mapping[str, Relay], count: int, size: int = 64, batch: int = 64
) -> dict[str, Any]:
    """A sends ``count`` CONTROL frames of ``size`` bytes, ``batch`` per write; B counts."""
    relay = relays[KINDS[kind][0]]
    async with paired(kind, relays) as (a, b, _):
        frames = [a.frame(0x10, bytes(size))] * batch
        b.controls_target = count
        b.controls_done = trio.Event()
        cpu0, t0 = relay.cpu_seconds(), time.perf_counter()
        with trio.fail_after(RUN_TIMEOUT):
            sent = 0
            while sent < count:
                k = min(batch, count - sent)
                await a.send_encoded(frames[:k])
                sent += k
            await b.controls_done.wait()
        t1, cpu1 = time.perf_counter(), relay.cpu_seconds()
    return {
        "kind": kind,
        "messages": count,
        "seconds": t1 - t0,
        "msgs_per_s": count / (t1 - t0),
        "relay_cpu_us_per_msg": (cpu1 - cpu0) / count * 1e6,
    }
