"""In-memory relay harness shared by the relay tests (no tests here): no sockets, no sleeps."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, TypeVar

import attrs
import trio
import trio.testing

from m42d.relay import Relay, RelayLimits
from m42d.ticket import IssuedRoom, Seat, TicketKeyRing
from m42d.transport import StreamFrameConnection
from m42d.wire import Credit, Frame, Join

NOW: Final = 1_700_000_000
STEP: Final = 5.0
V1_PAYLOAD: Final = 65536 + 64
"""Protocol 1's ``max_payload``: the relay mechanics tests size their windows in 64 KiB
frames, which the relay still allows (``max_payload`` is a setting), so they keep it."""
"""Deadline for one expected frame; with the autojump clock a hang fails fast."""

F = TypeVar("F")


@attrs.define
class Harness:
    relay: Relay
    nursery: trio.Nursery
    wall: list[float] = attrs.field(factory=lambda: [float(NOW)])

    def mint(self, ttl: int = 3600) -> IssuedRoom:
        return self.relay.keyring.mint(now=int(self.wall[0]), ttl=ttl)

    async def connect(
        self, *, address: str = "192.0.2.1", lockstep: bool = False
    ) -> StreamFrameConnection:
        pair = trio.testing.lockstep_stream_pair if lockstep else trio.testing.memory_stream_pair
        client_stream, server_stream = pair()
        server = StreamFrameConnection(server_stream, transport="memory", address=address)
        client = StreamFrameConnection(client_stream, transport="memory")
        self.nursery.start_soon(self._serve, server)
        return client

    async def _serve(self, connection: StreamFrameConnection) -> None:
        try:
            await self.relay.handle_connection(connection)
        finally:
            await connection.aclose()

    async def join(
        self, room: IssuedRoom, seat: Seat, *, lockstep: bool = False, address: str = "192.0.2.1"
    ) -> StreamFrameConnection:
        client = await self.connect(lockstep=lockstep, address=address)
        await client.send(Join(seat, room.ticket.to_bytes(), room.token(seat)))
        return client


def make_harness(
    nursery: trio.Nursery, limits: RelayLimits | None = None, **kwargs: object
) -> Harness:
    wall = [float(NOW)]
    relay = Relay(
        TicketKeyRing.generate(),
        limits=limits or RelayLimits(),
        wall_clock=lambda: wall[0],
        **kwargs,  # type: ignore[arg-type]
    )
    return Harness(relay, nursery, wall)


async def receive(connection: StreamFrameConnection, seconds: float = STEP) -> Frame:
    with trio.fail_after(seconds):
        return await connection.receive()


async def expect(
    connection: StreamFrameConnection,
    cls: type[F],
    *,
    skip_credit: bool = True,
    seconds: float = STEP,
) -> F:
    """The next frame, which must be a ``cls`` (CREDIT frames skipped unless asked for)."""
    while True:
        frame = await receive(connection, seconds)
        if skip_credit and isinstance(frame, Credit) and cls is not Credit:
            continue
        assert isinstance(frame, cls), f"expected {cls.__name__}, got {frame!r}"
        return frame


async def expect_closed(connection: StreamFrameConnection) -> None:
    from m42d.errors import ConnectionClosed

    with trio.fail_after(STEP):
        while True:
            try:
                frame = await connection.receive()
            except ConnectionClosed:
                return
            assert isinstance(frame, Credit), f"expected the connection to close, got {frame!r}"


def drain_credit(frames: list[Frame]) -> int:
    return sum(f.amount for f in frames if isinstance(f, Credit))


Predicate = Callable[[Frame], bool]
