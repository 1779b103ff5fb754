"""Every transport yields to other tasks while it parses, whatever a client sends.

The relay is one event loop.  A client that sends a binary message as tens
of thousands of one-byte WebSocket fragments, or a read's worth of tiny
frames, used to be parsed in one go without a checkpoint: every other room
waited (round trips of 1.2-1.6 s at p99).  These tests count how often a
second task gets to run while a connection is read; no clocks involved.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing
from m42d_ws.server import MAX_FRAGMENTS, ServerWebSocket
from wsproto import ConnectionType
from wsproto.connection import Connection

from m42d.errors import ConnectionClosed
from m42d.transport import FRAMES_PER_TURN, StreamFrameConnection
from m42d.wire import Ping, encode, encode_stream
from tests.test_transport_loopback import _masked_frame

MESSAGES = 20_000


async def _ticks_while(work: Callable[[], Awaitable[None]]) -> int:
    """How many scheduling rounds another task got while ``work`` ran."""
    ticks = 0
    done = False

    async def ticker() -> None:
        nonlocal ticks
        while not done:
            await trio.lowlevel.checkpoint()
            ticks += 1

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ticker)
        await trio.lowlevel.checkpoint()  # the ticker runs from here on
        ticks = 0
        try:
            await work()
        finally:
            done = True
    return ticks


async def _ws_fed(wire: bytes) -> ServerWebSocket:
    client, server = trio.testing.memory_stream_pair()
    await client.send_all(wire)
    await client.send_eof()
    ws = Connection(ConnectionType.SERVER)
    return ServerWebSocket(server, ws, transport="ws", address="192.0.2.1")  # type: ignore[arg-type]


async def test_ws_many_tiny_messages_are_parsed_in_bounded_turns() -> None:
    connection = await _ws_fed(b"".join([_masked_frame(0x2, encode(Ping()))] * MESSAGES))
    got = 0

    async def read_all() -> None:
        nonlocal got
        while got < MESSAGES:
            got += len(await connection.receive_relayed())

    ticks = await _ticks_while(read_all)
    assert got == MESSAGES
    assert ticks >= MESSAGES // FRAMES_PER_TURN - 2, ticks


async def test_ws_a_message_in_tens_of_thousands_of_fragments_is_closed_early() -> None:
    """65,601 one-byte fragments: closed with 1009 after MAX_FRAGMENTS, the rest unparsed."""
    pieces = 65_601
    wire = _masked_frame(0x2, b"\x10", fin=False)
    wire += b"".join([_masked_frame(0x0, b"x", fin=False)] * (pieces - 2))
    wire += _masked_frame(0x0, b"x")
    connection = await _ws_fed(wire)

    async def read() -> None:
        with pytest.raises(ConnectionClosed, match="1009"):
            await connection.receive()

    ticks = await _ticks_while(read)
    assert connection.close_code == 1009
    assert ticks >= MAX_FRAGMENTS // FRAMES_PER_TURN - 1, ticks
    # Parsing stopped at the cap: nearly all of the message is still unread bytes.
    assert connection._events is None


async def test_stream_many_tiny_frames_are_handed_on_in_bounded_turns() -> None:
    client, server = trio.testing.memory_stream_pair()
    await client.send_all(encode_stream(Ping()) * MESSAGES)
    connection = StreamFrameConnection(server, transport="memory")
    got = 0

    async def read_all() -> None:
        nonlocal got
        while got < MESSAGES:
            batch = await connection.receive_relayed()
            assert len(batch) <= FRAMES_PER_TURN
            got += len(batch)

    ticks = await _ticks_while(read_all)
    assert got == MESSAGES
    assert ticks >= MESSAGES // FRAMES_PER_TURN - 2, ticks


async def test_stream_receive_yields_every_turn_too() -> None:
    """The lobby reads with ``receive``, one frame per call: the same bound."""
    client, server = trio.testing.memory_stream_pair()
    await client.send_all(encode_stream(Ping()) * MESSAGES)
    connection = StreamFrameConnection(server, transport="memory")

    async def read_all() -> None:
        for _ in range(MESSAGES):
            await connection.receive()

    ticks = await _ticks_while(read_all)
    assert ticks >= MESSAGES // FRAMES_PER_TURN - 2, ticks
