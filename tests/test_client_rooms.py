"""Creating a room as a client function (``m42 new`` prints what it returns)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import trio

from m42d.client import events as ev
from m42d.client.rooms import create_room, first_use_pin, link_relay_url
from m42d.errors import TransportError
from m42d.link import parse_relay_url
from m42d.ticket import Seat
from m42d.transport import FrameConnection, load_transports
from m42d.wire import CreateRoom, Joined, Ping, Pong
from tests.client_harness import Recorder, running_relay


async def test_the_two_links_join_one_room(tmp_path: Path) -> None:
    async with running_relay("ws") as relay:
        address = parse_relay_url(relay.url)
        room = await create_room(address, relay.transports["ws"])
        other = await create_room(address, relay.transports["ws"])
        assert (room.link_a.seat, room.link_b.seat) == (Seat.A, Seat.B)
        assert room.link_a.room_id == room.link_b.room_id != other.link_a.room_id
        assert room.link_a.secret == room.link_b.secret != other.link_a.secret
        assert room.link_a.token != room.link_b.token
        assert room.expires > time.time()
        assert room.link_a.relay == room.link_b.relay == relay.url.replace("ws://", "http://")
        async with trio.open_nursery() as nursery:
            seats = []
            for link in (room.link_a, room.link_b):
                seat = Recorder(relay.client(link, tmp_path))
                nursery.start_soon(seat.run)
                await nursery.start(seat.client.run)
                seats.append(seat)
            for seat in seats:
                await seat.wait_for(lambda r: r.of(ev.SafetyWords))
            nursery.cancel_scope.cancel()


async def test_pings_are_answered_and_nonsense_is_an_error() -> None:
    """A relay that PINGs before answering gets its PONG; any other frame is refused."""
    pongs: list[bytes] = []

    async def relay(conn: FrameConnection) -> None:
        assert isinstance(await conn.receive(), CreateRoom)
        await conn.send(Ping(b"are you there"))
        answer = await conn.receive()
        assert isinstance(answer, Pong)
        pongs.append(answer.data)
        await conn.send(Joined(peer_online=False, max_payload=1, bulk_window=1))

    transport = load_transports()["ws"]
    listener = await transport.open_listener("ws://127.0.0.1:0")
    async with trio.open_nursery() as nursery:
        await nursery.start(listener.serve, relay)
        with pytest.raises(TransportError, match="the relay answered JOINED"):
            await create_room(parse_relay_url(listener.urls[0]), transport, limit=10.0)
        nursery.cancel_scope.cancel()
    assert pongs == [b"are you there"]


async def test_only_tls_relays_are_pinned_on_first_use() -> None:
    assert await first_use_pin(parse_relay_url("ws://127.0.0.1:1")) is None
    assert await first_use_pin(parse_relay_url("wss://127.0.0.1:1")) is None


@pytest.mark.parametrize(
    ("given", "in_links"),
    [
        ("ws://127.0.0.1:8042", "http://127.0.0.1:8042"),
        ("wss://relay.example.org", "https://relay.example.org"),
        ("WSS://Relay.Example.org:8443/m42/", "https://relay.example.org:8443/m42/"),
        ("ws://[::1]:8042", "http://[::1]:8042"),
        ("http://127.0.0.1:8042", "http://127.0.0.1:8042"),
        ("https://relay.example.org", "https://relay.example.org"),
        ("tls://relay.example.org:8043", "tls://relay.example.org:8043"),
        ("unix:///run/m42d.sock", "unix:///run/m42d.sock"),
    ],
)
def test_links_name_a_websocket_relay_in_the_form_a_browser_opens(
    given: str, in_links: str
) -> None:
    assert link_relay_url(parse_relay_url(given)) == in_links
