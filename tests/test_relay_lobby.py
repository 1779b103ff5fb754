"""The lobby (before JOIN) under clients that do not play along: every deadline is counted."""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing

from m42d.relay import RelayLimits
from m42d.transport import StreamFrameConnection
from m42d.wire import Ping
from tests.test_relay_harness import make_harness


@pytest.mark.parametrize(
    ("limits", "kind", "after"),
    [
        # The lobby's own deadline comes first: the write is cut at join_timeout.
        (RelayLimits(join_timeout=10.0, write_timeout=30.0), "join", 10.0),
        # A write deadline shorter than the lobby's: the write is cut at write_timeout.
        (RelayLimits(join_timeout=10.0, write_timeout=3.0), "write", 3.0),
    ],
)
async def test_a_pre_join_client_that_never_reads_ends_in_a_counted_timeout(
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
    limits: RelayLimits,
    kind: str,
    after: float,
) -> None:
    """PINGs, then silence and no reading: the PONG cannot be written.

    It used to escape as an uncaught ``trio.TooSlowError`` after
    ``close_timeout``, logged as "relay failed".
    """
    harness = make_harness(nursery, limits)
    # Lockstep: a write completes only when the other side reads, and this
    # client never reads.
    client_stream, server_stream = trio.testing.lockstep_stream_pair()
    server = StreamFrameConnection(server_stream, transport="memory", address="192.0.2.1")
    client = StreamFrameConnection(client_stream, transport="memory")
    start = trio.current_time()
    with trio.fail_after(100):
        async with trio.open_nursery() as handling:
            handling.start_soon(harness.relay.handle_connection, server)
            await client.send(Ping(b"are you there"))
    # handle_connection returned (the listener closes the connection next).
    assert harness.relay.statistics().timeouts == {kind: 1}
    assert trio.current_time() - start == pytest.approx(after)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
