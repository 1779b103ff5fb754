"""Relay limits and graceful stop, on memory streams and the autojump clock."""

from __future__ import annotations

from collections.abc import Sequence

import trio
import trio.testing

from m42d.relay import MemoryBurnList, RateLimiter, RelayLimits, serve_relay
from m42d.relay.limits import address_key
from m42d.ticket import Seat
from m42d.transport import FrameHandler, StreamFrameConnection
from m42d.wire import Control, Error, ErrorCode, GoAway, Join, Joined, PeerDown, PeerUp
from tests.test_relay_harness import expect, expect_closed, make_harness


async def test_max_connections_and_per_address(nursery: trio.Nursery) -> None:
    harness = make_harness(nursery, RelayLimits(max_connections=3, max_connections_per_address=2))
    # One at a time: trio may start handlers in any order.
    a1 = await harness.connect(address="203.0.113.1")
    await trio.testing.wait_all_tasks_blocked()
    a2 = await harness.connect(address="203.0.113.1")
    await trio.testing.wait_all_tasks_blocked()
    a3 = await harness.connect(address="203.0.113.1")
    assert (await expect(a3, Error)).code == ErrorCode.RATE_LIMITED
    await expect_closed(a3)
    b1 = await harness.connect(address="203.0.113.2")
    await trio.testing.wait_all_tasks_blocked()
    b2 = await harness.connect(address="203.0.113.2")
    assert (await expect(b2, Error)).code == ErrorCode.UNAVAILABLE
    await trio.testing.wait_all_tasks_blocked()
    stats = harness.relay.statistics()
    assert stats.connections == 3
    assert stats.refused == {"RATE_LIMITED": 1, "UNAVAILABLE": 1}
    del a1, a2, b1


async def test_join_rate_limit(nursery: trio.Nursery) -> None:
    harness = make_harness(nursery, RelayLimits(join_rate=2))
    room = harness.mint()
    for _ in range(2):
        c = await harness.join(room, Seat.A)
        await expect(c, Joined)
    c = await harness.join(room, Seat.A)
    assert (await expect(c, Error)).code == ErrorCode.RATE_LIMITED


def test_rate_limiter_refills_and_forgets() -> None:
    limiter = RateLimiter(60)  # one per second, bursts of 60
    assert all(limiter.allow("a", 0.0) for _ in range(60))
    assert not limiter.allow("a", 0.0)
    assert limiter.allow("a", 1.0)
    assert limiter.allow("", 0.0)  # no address, no limit
    limiter.allow("b", 1.0)
    limiter.prune(1000.0)
    assert len(limiter) == 0


def test_memory_burn_list() -> None:
    burned = MemoryBurnList()
    burned.burn(b"r" * 16, 100)
    burned.burn(b"r" * 16, 50)  # never shortens
    assert burned.is_burned(b"r" * 16, 100)
    assert not burned.is_burned(b"r" * 16, 101)
    assert not burned.is_burned(b"s" * 16, 0)
    assert len(burned) == 1


class MemoryListener:
    """A FrameListener fed by the test: each ``connect`` is one accepted connection."""

    def __init__(self) -> None:
        self.send, self.receive = trio.open_memory_channel[StreamFrameConnection](0)
        self.closed = False

    @property
    def urls(self) -> Sequence[str]:
        return ["memory://test"]

    async def serve(
        self,
        handler: FrameHandler,
        *,
        handler_nursery: trio.Nursery | None = None,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        assert handler_nursery is not None
        task_status.started()
        async for server_side in self.receive:
            handler_nursery.start_soon(self._run, handler, server_side)

    async def _run(self, handler: FrameHandler, connection: StreamFrameConnection) -> None:
        try:
            await handler(connection)
        finally:
            await connection.aclose()

    async def connect(self) -> StreamFrameConnection:
        client, server = trio.testing.memory_stream_pair()
        await self.send.send(StreamFrameConnection(server, transport="memory", address="192.0.2.9"))
        return StreamFrameConnection(client, transport="memory")

    async def aclose(self) -> None:
        self.closed = True


class CrashingListener(MemoryListener):
    async def serve(self, handler: FrameHandler, **kwargs: object) -> None:
        raise RuntimeError("plugin bug")


async def test_graceful_stop_goaway_then_grace_deadline(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    harness = make_harness(nursery, RelayLimits(shutdown_grace=7))
    listener = MemoryListener()
    done = trio.Event()

    async def run() -> None:
        await serve_relay(harness.relay, [CrashingListener(), listener])
        done.set()

    await nursery.start(_started, run)
    room = harness.mint()
    a = await listener.connect()
    await a.send(Join(Seat.A, room.ticket.to_bytes(), room.token_a))
    await expect(a, Joined)
    b = await listener.connect()
    await b.send(Join(Seat.B, room.ticket.to_bytes(), room.token_b))
    await expect(b, Joined)
    await expect(a, PeerUp)
    lobby = await listener.connect()
    await trio.testing.wait_all_tasks_blocked()
    start = trio.current_time()
    harness.relay.stop()
    harness.relay.stop()  # idempotent
    assert await expect(lobby, GoAway) == GoAway(0, "relay shutting down")
    await expect_closed(lobby)
    goaway = await expect(a, GoAway)
    assert goaway.grace_ms == 7000
    await expect(b, GoAway)
    # Joined peers keep relaying during the grace period.
    await a.send(Control(b"bye"))
    assert (await expect(b, Control)).payload == b"bye"
    await b.aclose()
    with trio.fail_after(60):
        await done.wait()
    assert trio.current_time() - start == 7
    assert listener.closed
    await expect(a, PeerDown)
    await expect_closed(a)


async def _started(run: object, *, task_status: trio.TaskStatus[None]) -> None:
    task_status.started()
    await run()  # type: ignore[operator]


def test_admission_before_the_handshake_counts_handshakes_in_flight() -> None:
    """The TLS listener asks before paying for a handshake; the relay answers
    from the same caps it applies after it (handshakes in flight included)."""
    from m42d.relay.server import Relay
    from m42d.ticket import TicketKeyRing
    from m42d.transport import Admission

    relay = Relay(
        TicketKeyRing.generate(),
        limits=RelayLimits(max_connections=5, max_connections_per_address=2),
    )
    admission: Admission = relay
    assert admission.admit("10.0.0.1")
    assert admission.admit("10.0.0.1")
    assert not admission.admit("10.0.0.1")  # two handshakes in flight: at the cap
    assert admission.admit("10.0.0.2")
    admission.release("10.0.0.1")
    assert admission.admit("10.0.0.1")  # a place came free
    assert admission.admit("10.0.0.3")
    assert admission.admit("")  # an address-less transport: only the total counts
    assert not admission.admit("10.0.0.4")  # five in flight: the total cap
    assert relay.statistics().refused["RATE_LIMITED"] == 1
    assert relay.statistics().refused["UNAVAILABLE"] == 1
    relay.stop()
    admission.release("10.0.0.3")
    assert not admission.admit("10.0.0.5")  # stopping: nothing new


def test_address_key_aggregates_ipv6_by_prefix_and_unmaps_ipv4() -> None:
    assert address_key("2001:db8:1:2:aaaa::1", 64) == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:2:ffff:ffff:ffff:ffff", 64) == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:3::1", 64) == "2001:db8:1:3::/64"
    assert address_key("2001:db8:1:3::1", 48) == "2001:db8:1::/48"
    assert address_key("2001:db8::1", 128) == "2001:db8::1/128"
    assert address_key("fe80::1%eth0", 64) == "fe80::/64"
    assert address_key("::ffff:192.0.2.7", 64) == "192.0.2.7"
    assert address_key("192.0.2.7", 64) == "192.0.2.7"
    assert address_key("", 64) == ""
    assert address_key("not-an-ip", 64) == "not-an-ip"


async def test_per_address_limits_count_an_ipv6_prefix_as_one_address(
    nursery: trio.Nursery,
) -> None:
    """Every address of one /64 shares the connection cap and the rate limits.

    Keyed on the full address, anyone with a /64 had 2^64 times each limit.
    """
    harness = make_harness(nursery, RelayLimits(max_connections_per_address=2))
    held = []
    for address in ("2001:db8:1:2::1", "2001:db8:1:2:ffff::2"):
        held.append(await harness.connect(address=address))
        await trio.testing.wait_all_tasks_blocked()
    refused = await harness.connect(address="2001:db8:1:2:dead:beef:0:3")
    assert (await expect(refused, Error)).code == ErrorCode.RATE_LIMITED
    other_prefix = await harness.connect(address="2001:db8:1:3::1")
    await trio.testing.wait_all_tasks_blocked()
    assert harness.relay.statistics().connections == 3
    del held, other_prefix

    # The join rate (3 a minute), spent from three addresses of one /64.
    harness = make_harness(nursery, RelayLimits(join_rate=3))
    room = harness.mint()
    for i in range(3):
        joiner = await harness.join(room, Seat.A, address=f"2001:db8:9:9::{i + 1}")
        await expect(joiner, Joined)
    late = await harness.join(room, Seat.A, address="2001:db8:9:9::ff")
    assert (await expect(late, Error)).code == ErrorCode.RATE_LIMITED


async def test_ipv4_mapped_ipv6_counts_as_the_ipv4_address(nursery: trio.Nursery) -> None:
    harness = make_harness(nursery, RelayLimits(max_connections_per_address=1))
    first = await harness.connect(address="192.0.2.44")
    await trio.testing.wait_all_tasks_blocked()
    mapped = await harness.connect(address="::ffff:192.0.2.44")
    assert (await expect(mapped, Error)).code == ErrorCode.RATE_LIMITED
    del first


def test_admission_counts_an_ipv6_prefix_and_survives_a_prefix_reload() -> None:
    from m42d.relay.server import Relay
    from m42d.ticket import TicketKeyRing

    relay = Relay(TicketKeyRing.generate(), limits=RelayLimits(max_connections_per_address=2))
    assert relay.admit("2001:db8::1")
    assert relay.admit("2001:db8::2")
    assert not relay.admit("2001:db8::3")  # same /64, two handshakes in flight
    assert relay.admit("2001:db8:0:1::1")
    # A reload changes the prefix while handshakes are in flight: each
    # release still gives back what its admit took.
    relay.limits = RelayLimits(max_connections_per_address=2, ipv6_prefix=128)
    for peer in ("2001:db8::1", "2001:db8::2", "2001:db8:0:1::1"):
        relay.release(peer)
    assert not relay._handshaking
    assert not relay._handshake_keys
