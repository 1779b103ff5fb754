"""Relay core on memory streams: join, relay both lanes, errors, replacement, burn."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from m42d.relay import RelayLimits
from m42d.ticket import Seat, TicketKeyRing
from m42d.wire import (
    MAX_PAYLOAD,
    Bulk,
    Burn,
    Control,
    CreateRoom,
    Credit,
    Error,
    ErrorCode,
    Join,
    Joined,
    PeerDown,
    PeerUp,
    Ping,
    Pong,
    RoomCreated,
)
from tests.test_relay_harness import (
    NOW,
    V1_PAYLOAD,
    Harness,
    expect,
    expect_closed,
    make_harness,
    receive,
)


@pytest.fixture
def harness(nursery: trio.Nursery) -> Harness:
    return make_harness(nursery)


async def joined_pair(harness: Harness) -> tuple:  # type: ignore[type-arg]
    room = harness.mint()
    a = await harness.join(room, Seat.A)
    joined_a = await expect(a, Joined, skip_credit=False)
    credit_a = await expect(a, Credit, skip_credit=False)
    b = await harness.join(room, Seat.B)
    joined_b = await expect(b, Joined, skip_credit=False)
    credit_b = await expect(b, Credit, skip_credit=False)
    await expect(a, PeerUp)
    assert not joined_a.peer_online
    assert joined_b.peer_online
    window = harness.relay.limits.bulk_window
    assert joined_a.bulk_window == joined_b.bulk_window == window
    assert joined_a.max_payload == MAX_PAYLOAD
    assert credit_a.amount == credit_b.amount == window
    return room, a, b


async def test_join_both_seats_and_relay_both_lanes_both_ways(harness: Harness) -> None:
    _, a, b = await joined_pair(harness)
    await a.send(Control(b"hello from A"))
    assert (await expect(b, Control)).payload == b"hello from A"
    await b.send(Control(b"hello from B"))
    assert (await expect(a, Control)).payload == b"hello from B"
    await a.send(Bulk(b"x" * 1000))
    assert (await expect(b, Bulk)).payload == b"x" * 1000
    # A still holds most of its window, so the 1000 bytes of credit wait and
    # ride along with the next frame the relay writes to A.
    await a.send(Ping(b"p"))
    assert await expect(a, Pong, skip_credit=False) == Pong(b"p")
    assert (await expect(a, Credit, skip_credit=False)).amount == 1000
    await b.send(Bulk(b"y" * 70))
    assert (await expect(a, Bulk)).payload == b"y" * 70
    await b.send(Ping(b"q"))
    assert await expect(b, Pong, skip_credit=False) == Pong(b"q")
    assert (await expect(b, Credit, skip_credit=False)).amount == 70
    stats = harness.relay.statistics()
    assert stats.rooms == 1
    assert stats.peers == 2
    assert stats.connections_by_transport == {"memory": 2}
    assert stats.frames_by_lane == {"control": 2, "bulk": 2}
    assert stats.bytes_by_lane["bulk"] == 1070
    assert stats.queued_bulk_bytes == 0


@pytest.mark.parametrize("paced", [False, True], ids=["fast", "paced"])
@pytest.mark.parametrize("window", [V1_PAYLOAD, 3 * V1_PAYLOAD, 1 << 20])
async def test_credit_gathers_but_a_sender_is_never_stranded(
    nursery: trio.Nursery, window: int, paced: bool
) -> None:
    """A sender that obeys its credit streams many windows; CREDIT comes in batches.

    *fast*: the sender sends whenever its credit allows, so it is always low;
    it must simply never stall.  *paced*: the sender waits for each frame to
    reach B first, as a client whose disk or CPU is the bottleneck does.  It
    then still holds most of a 1 MiB window, so the relay gathers its credit
    (one CREDIT per 256 KiB instead of one per frame).  With a window of one
    frame every frame's credit must go back at once.
    """
    harness = make_harness(nursery, RelayLimits(max_payload=V1_PAYLOAD, bulk_window=window))
    room = harness.mint()
    a = await harness.join(room, Seat.A)
    await expect(a, Joined, skip_credit=False)
    credit = (await expect(a, Credit, skip_credit=False)).amount
    b = await harness.join(room, Seat.B)
    await expect(b, Joined)
    await expect(a, PeerUp)
    frames = 40
    payload = bytes(V1_PAYLOAD)
    credit_frames = 0
    for _ in range(frames):
        while credit < V1_PAYLOAD:
            frame = await receive(a)
            assert isinstance(frame, Credit), frame
            credit += frame.amount
            credit_frames += 1
        await a.send(Bulk(payload))
        credit -= V1_PAYLOAD
        if paced:
            assert len((await expect(b, Bulk)).payload) == V1_PAYLOAD
    if not paced:
        for _ in range(frames):
            assert len((await expect(b, Bulk)).payload) == V1_PAYLOAD
    await trio.testing.wait_all_tasks_blocked()
    assert harness.relay.statistics().queued_bulk_bytes == 0
    if window == V1_PAYLOAD:
        assert credit_frames == frames - 1  # always low: each frame's credit at once
    elif window == 1 << 20 and paced:
        # 40 frames of 64 KiB are 2.5 MiB (protocol 1's frames: at 256 KiB every frame
        # is a batch): about one CREDIT per 256 KiB, and
        # none needed at all before half the window is spent.
        assert credit_frames <= frames * V1_PAYLOAD // (256 * 1024)


async def test_joined_seats_are_closed_with_410_when_the_room_expires(
    harness: Harness, autojump_clock: trio.testing.MockClock
) -> None:
    """A room ends at its ticket's expiry even for seats that stay connected and active."""
    room = harness.mint(ttl=100)
    a = await harness.join(room, Seat.A)
    b = await harness.join(room, Seat.B)
    await expect(a, Joined)
    await expect(b, Joined)
    await expect(a, PeerUp)
    start = trio.current_time()
    # Both keep talking (so no idle timeout), past the expiry.
    while trio.current_time() - start < 90:
        await a.send(Control(b"still here"))
        assert (await expect(b, Control)).payload == b"still here"
        await b.send(Ping(b"x"))
        await expect(b, Pong)
        await trio.sleep(10)
    assert harness.relay.statistics().peers == 2  # not before the expiry
    for connection in (a, b):
        while True:
            frame = await receive(connection, 30)
            if isinstance(frame, Error):
                break
            assert isinstance(frame, (Control, Ping, PeerDown, Credit)), frame
        assert frame.code == ErrorCode.EXPIRED
        await expect_closed(connection)
    stats = harness.relay.statistics()
    assert stats.peers == 0
    assert stats.rooms == 0
    assert stats.timeouts.get("expiry", 0) >= 1


async def test_frames_for_an_absent_peer_are_dropped_and_credit_returned(harness: Harness) -> None:
    room = harness.mint()
    a = await harness.join(room, Seat.A)
    await expect(a, Joined)
    await expect(a, Credit, skip_credit=False)
    await a.send(Control(b"nobody home"))
    await a.send(Bulk(b"z" * 500))
    await a.send(Ping(b"0"))  # A still holds most of its window: the credit rides along
    assert await expect(a, Pong, skip_credit=False) == Pong(b"0")
    assert (await expect(a, Credit, skip_credit=False)).amount == 500
    await trio.testing.wait_all_tasks_blocked()
    assert harness.relay.statistics().frames_dropped == 2
    b = await harness.join(room, Seat.B)
    await expect(b, Joined)
    await b.send(Ping(b"1"))
    assert await expect(b, Pong) == Pong(b"1")  # nothing from before B joined


async def test_peer_down_and_room_forgotten_when_empty(harness: Harness) -> None:
    _, a, b = await joined_pair(harness)
    await b.aclose()
    await expect(a, PeerDown)
    assert harness.relay.statistics().rooms == 1
    await a.aclose()
    await trio.testing.wait_all_tasks_blocked()
    stats = harness.relay.statistics()
    assert (stats.rooms, stats.peers, stats.connections) == (0, 0, 0)


async def test_seat_replacement_tells_the_old_connection_409(harness: Harness) -> None:
    room, a1, b = await joined_pair(harness)
    a2 = await harness.join(room, Seat.A)
    error = await expect(a1, Error)
    assert error.code == ErrorCode.SEAT_TAKEN
    assert error.message == ErrorCode.SEAT_TAKEN.sentence
    await expect_closed(a1)
    assert (await expect(a2, Joined)).peer_online
    await expect(b, PeerDown)
    await expect(b, PeerUp)
    await a2.send(Control(b"new A"))
    assert (await expect(b, Control)).payload == b"new A"
    assert harness.relay.statistics().peers == 2


async def test_new_sender_is_granted_window_minus_what_is_still_queued(
    nursery: trio.Nursery,
) -> None:
    limits = RelayLimits(max_payload=V1_PAYLOAD, bulk_window=200_000)
    harness = make_harness(nursery, limits)
    room = harness.mint()
    b = await harness.join(room, Seat.B, lockstep=True)
    await expect(b, Joined)
    await expect(b, Credit, skip_credit=False)
    a1 = await harness.join(room, Seat.A)
    await expect(a1, Joined)
    await expect(a1, Credit, skip_credit=False)
    await expect(b, PeerUp)
    for _ in range(3):
        await a1.send(Bulk(b"q" * 50_000))
    await trio.testing.wait_all_tasks_blocked()  # B's writer is stuck on the first frame
    assert harness.relay.statistics().queued_bulk_bytes == 150_000
    a2 = await harness.join(room, Seat.A)
    await expect(a2, Joined)
    assert (await expect(a2, Credit, skip_credit=False)).amount == 50_000
    # B drains: the old frames still arrive, and their credit goes to A's new connection.
    got = 0
    while got < 3:
        frame = await receive(b)
        got += isinstance(frame, Bulk)
    total = 0
    while total < 150_000:
        total += (await expect(a2, Credit, skip_credit=False)).amount
    assert total == 150_000


async def test_ping_answered_before_and_after_join(harness: Harness) -> None:
    c = await harness.connect()
    await c.send(Ping(b"lobby"))
    assert await expect(c, Pong) == Pong(b"lobby")
    _, a, _ = await joined_pair(harness)
    await a.send(Ping(b"room"))
    assert await expect(a, Pong) == Pong(b"room")


@pytest.mark.parametrize(
    ("mutate", "code"),
    [
        ("token", ErrorCode.BAD_TOKEN),
        ("seat", ErrorCode.BAD_TOKEN),
        ("mac", ErrorCode.UNKNOWN_ROOM),
        ("key", ErrorCode.UNKNOWN_ROOM),
        ("garbage", ErrorCode.BAD_FRAME),
        ("version", ErrorCode.UNSUPPORTED_VERSION),
    ],
)
async def test_refused_joins_get_their_code_then_close(
    harness: Harness, mutate: str, code: ErrorCode
) -> None:
    room = harness.mint()
    ticket = room.ticket.to_bytes()
    join = Join(Seat.A, ticket, room.token_a)
    if mutate == "token":
        join = Join(Seat.A, ticket, bytes(16))
    elif mutate == "seat":
        join = Join(Seat.B, ticket, room.token_a)
    elif mutate == "mac":
        join = Join(Seat.A, ticket[:-1] + bytes([ticket[-1] ^ 1]), room.token_a)
    elif mutate == "key":
        other = TicketKeyRing({200: bytes(range(32))}, 200).mint(now=NOW, ttl=60)
        join = Join(Seat.A, other.ticket.to_bytes(), other.token_a)
    elif mutate == "garbage":
        join = Join(Seat.A, b"\xff" * len(ticket), room.token_a)
    elif mutate == "version":
        join = Join(Seat.A, ticket, room.token_a, version=9)
    c = await harness.connect()
    await c.send(join)
    error = await expect(c, Error)
    assert error.code == code
    assert error.message == code.sentence
    await expect_closed(c)
    stats = harness.relay.statistics()
    assert stats.refused == {code.name: 1}
    assert stats.rooms == 0


async def test_expired_room_is_refused_410(harness: Harness) -> None:
    room = harness.mint(ttl=60)
    harness.wall[0] = NOW + 61
    c = await harness.join(room, Seat.A)
    assert (await expect(c, Error)).code == ErrorCode.EXPIRED
    await expect_closed(c)


async def test_burn_closes_both_seats_and_refuses_the_room_until_expiry(harness: Harness) -> None:
    room, a, b = await joined_pair(harness)
    await b.send(Burn())
    for conn in (a, b):
        assert (await expect(conn, Error)).code == ErrorCode.BURNED
        await expect_closed(conn)
    again = await harness.join(room, Seat.A)
    assert (await expect(again, Error)).code == ErrorCode.BURNED
    await expect_closed(again)
    assert harness.relay.burned.is_burned(room.room_id, NOW)
    assert not harness.relay.burned.is_burned(room.room_id, room.ticket.expires + 1)


async def test_create_room_then_join_on_the_same_connection(harness: Harness) -> None:
    c = await harness.connect()
    await c.send(CreateRoom())
    created = await expect(c, RoomCreated)
    ticket = harness.relay.keyring.verify(created.ticket, Seat.B, created.token_b, now=NOW)
    assert ticket.expires == NOW + harness.relay.room_ttl
    await c.send(Join(Seat.A, created.ticket, created.token_a))
    assert not (await expect(c, Joined)).peer_online
    assert harness.relay.statistics().rooms_created == 1


async def test_creation_secret_is_required_when_set(nursery: trio.Nursery) -> None:
    harness = make_harness(nursery, creation_secret=b"open sesame")
    c = await harness.connect()
    await c.send(CreateRoom(creation_secret=b"open sesame"))
    await expect(c, RoomCreated)
    for wrong in (b"", b"open sesamE"):
        d = await harness.connect()
        await d.send(CreateRoom(creation_secret=wrong))
        assert (await expect(d, Error)).code == ErrorCode.FORBIDDEN
        await expect_closed(d)


async def test_create_room_rate_limited_per_address(nursery: trio.Nursery) -> None:
    harness = make_harness(nursery, RelayLimits(create_rate=2))
    c = await harness.connect(address="198.51.100.7")
    await c.send(CreateRoom())
    await expect(c, RoomCreated)
    await c.send(CreateRoom())
    await expect(c, RoomCreated)
    await c.send(CreateRoom())
    assert (await expect(c, Error)).code == ErrorCode.RATE_LIMITED
    other = await harness.connect(address="198.51.100.8")
    await other.send(CreateRoom())
    await expect(other, RoomCreated)


async def test_unexpected_frames_are_refused_400(harness: Harness) -> None:
    c = await harness.connect()
    await c.send(Control(b"too early"))
    error = await expect(c, Error)
    assert error.code == ErrorCode.BAD_FRAME
    await expect_closed(c)
    _, a, _ = await joined_pair(harness)
    await a.send(CreateRoom())
    assert (await expect(a, Error)).code == ErrorCode.BAD_FRAME
    await expect_closed(a)


async def test_malformed_bytes_are_refused_before_and_after_join(harness: Harness) -> None:
    c = await harness.connect()
    await c._stream.send_all(b"\x00\x00\x00\x01\x7f")  # unknown kind
    assert (await expect(c, Error)).code == ErrorCode.BAD_FRAME
    _, a, b = await joined_pair(harness)
    await a._stream.send_all((10_000_000).to_bytes(4, "big") + b"\x10")
    assert (await expect(a, Error)).code == ErrorCode.TOO_LARGE
    await expect_closed(a)
    await expect(b, PeerDown)


async def test_payload_over_max_payload_is_413(nursery: trio.Nursery) -> None:
    harness = make_harness(nursery, RelayLimits(max_payload=1024, bulk_window=5120))
    for frame in (Control(b"c" * 1025), Bulk(b"b" * 1025)):
        room = harness.mint()
        a = await harness.join(room, Seat.A)
        assert (await expect(a, Joined)).max_payload == 1024
        await a.send(frame)
        assert (await expect(a, Error)).code == ErrorCode.TOO_LARGE


async def test_sending_past_credit_is_402(nursery: trio.Nursery) -> None:
    harness = make_harness(nursery, RelayLimits(max_payload=V1_PAYLOAD, bulk_window=100_000))
    room = harness.mint()
    b = await harness.join(room, Seat.B, lockstep=True)
    a = await harness.join(room, Seat.A)
    await expect(a, Joined)
    assert (await expect(a, Credit, skip_credit=False)).amount == 100_000
    await a.send(Bulk(b"1" * 60_000))
    await a.send(Bulk(b"2" * 60_000))
    error = await expect(a, Error)
    assert error.code == ErrorCode.CREDIT_EXCEEDED
    await expect_closed(a)
    del b


async def test_join_timeout_408(harness: Harness, autojump_clock: trio.testing.MockClock) -> None:
    start = trio.current_time()
    c = await harness.connect()
    error = await expect(c, Error, seconds=100)
    assert error.code == ErrorCode.JOIN_TIMEOUT
    assert trio.current_time() - start == pytest.approx(harness.relay.limits.join_timeout)
    await expect_closed(c)
    assert harness.relay.statistics().timeouts == {"join": 1}


async def test_idle_peer_is_pinged_then_closed(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    harness = make_harness(nursery, RelayLimits(ping_interval=10, idle_timeout=25))
    room = harness.mint()
    a = await harness.join(room, Seat.A)
    await expect(a, Joined)
    start = trio.current_time()
    assert await expect(a, Ping, seconds=100) == Ping()
    assert trio.current_time() - start == pytest.approx(10)
    await a.send(Pong())  # an answer counts as life
    assert await expect(a, Ping, seconds=100) == Ping()
    assert trio.current_time() - start == pytest.approx(20)
    # No answer from now on: one more ping, then closed 25 s after the last frame.
    assert await expect(a, Ping, seconds=100) == Ping()
    assert trio.current_time() - start == pytest.approx(30)
    error = await expect(a, Error, seconds=100)
    assert error.code == ErrorCode.JOIN_TIMEOUT
    assert trio.current_time() - start == pytest.approx(35)
    await expect_closed(a)
    assert harness.relay.statistics().timeouts == {"idle": 1}


class _WriteBreaks:
    """A server-side connection whose writes fail once ``broken``; its reads wait for that.

    Models a client that sent its last frames and closed: the relay's writer
    to it fails while its reader still has those frames to pass on.
    """

    def __init__(self, inner: object) -> None:
        from m42d.transport import StreamFrameConnection

        assert isinstance(inner, StreamFrameConnection)
        self.inner = inner
        self.broken = False
        self.failed = trio.Event()
        self.transport = inner.transport
        self.address = inner.address

    def _check(self) -> None:
        from m42d.errors import ConnectionClosed

        if self.broken:
            self.failed.set()
            raise ConnectionClosed("the client closed")

    async def send(self, frame: object) -> None:
        self._check()
        await self.inner.send(frame)  # type: ignore[arg-type]

    async def send_many(self, frames: object) -> None:
        self._check()
        await self.inner.send_many(frames)  # type: ignore[arg-type]

    async def send_batch(self, items: object) -> None:
        self._check()
        await self.inner.send_batch(items)  # type: ignore[arg-type]

    async def receive(self) -> object:
        return await self.inner.receive()

    async def receive_relayed(self) -> object:
        return await self.inner.receive_relayed()

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_frames_read_before_a_failed_write_are_still_relayed(harness: Harness) -> None:
    """The writer to a closing client fails; what it sent just before still goes on."""
    from m42d.transport import StreamFrameConnection

    room = harness.mint()
    a = await harness.join(room, Seat.A)
    await expect(a, Joined)
    client_stream, server_stream = trio.testing.memory_stream_pair()
    server = _WriteBreaks(
        StreamFrameConnection(server_stream, transport="memory", address="192.0.2.2")
    )
    client_b = StreamFrameConnection(client_stream, transport="memory")
    harness.nursery.start_soon(harness.relay.handle_connection, server)
    await client_b.send(Join(Seat.B, room.ticket.to_bytes(), room.token(Seat.B)))
    await expect(client_b, Joined)
    await expect(a, PeerUp)
    server.broken = True
    await a.send(Control(b"for B"))  # makes the relay write to B: that write fails
    with trio.fail_after(5):
        await server.failed.wait()
    await client_b.send(Control(b"last words"))  # sent before B's close reached the relay
    assert (await expect(a, Control)).payload == b"last words"
