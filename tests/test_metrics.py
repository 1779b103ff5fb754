"""m42d.metrics: the exposition (parsed back with prometheus_client) and the HTTP responder.

Rules of this module: scrapes go over loopback TCP (port 0) to a real
listener, and the exposition is read back with prometheus_client's own
parser, so a format slip fails here.  The relay is real (in-process, with
the ws plugin) except where a statistics snapshot is built by hand to feed
hostile label values.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import attrs
import pytest
import trio
import trio.testing
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from m42d.metrics import (
    MAX_CLIENTS,
    MAX_REQUEST,
    MetricsServer,
    build_registry,
    open_metrics_server,
)
from m42d.relay import Relay, serve_relay
from m42d.relay.stats import RelayStatistics
from m42d.ticket import TicketKeyRing
from m42d.wire import ErrorCode
from tests.test_daemon_systemd import (
    STEP,
    exchange,
    open_pair,
    running_daemon,
    serve_argv,
    transports_or_skip,
)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """Every sample as {(name, sorted labels): value}, via prometheus_client's parser."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


@attrs.frozen
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


async def http(port: int, request: bytes) -> Reply:
    """Send raw request bytes, read to EOF (the server closes), parse the reply."""
    with trio.fail_after(STEP):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            with contextlib.suppress(trio.BrokenResourceError):
                await stream.send_all(request)
            data = b""
            while chunk := await stream.receive_some():
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        key, _, val = line.partition(":")
        headers[key.strip().lower()] = val.strip()
    return Reply(int(status_line.split(" ")[1]), headers, body)


async def get(port: int, path: str, method: str = "GET") -> Reply:
    return await http(port, f"{method} {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())


# --- the collector --------------------------------------------------------------


def _stats(**changes: object) -> RelayStatistics:
    base = RelayStatistics(
        rooms=0,
        peers=0,
        connections=0,
        connections_by_transport={},
        frames_by_lane={},
        bytes_by_lane={},
        frames_dropped=0,
        credit_stalls=0,
        rooms_created=0,
        joins=0,
        refused={},
        timeouts={},
        queued_bulk_bytes=0,
        queued_bulk_high_water=0,
        queued_control_frames=0,
    )
    return attrs.evolve(base, **changes)  # type: ignore[arg-type]


def _render(registry: CollectorRegistry) -> str:
    from prometheus_client import generate_latest

    return generate_latest(registry).decode()


def test_known_labels_are_present_at_zero() -> None:
    registry = build_registry(_stats, transports=["tls", "ws"], process=False)
    samples = parse(_render(registry))
    for code in ErrorCode:
        assert value(samples, "m42d_refused_total", reason=code.name) == 0
    for lane in ("control", "bulk"):
        assert value(samples, "m42d_frames_relayed_total", lane=lane) == 0
        assert value(samples, "m42d_relayed_bytes_total", lane=lane) == 0
    for kind in ("join", "idle", "write"):
        assert value(samples, "m42d_timeouts_total", kind=kind) == 0
    assert value(samples, "m42d_connections", transport="ws") == 0
    assert value(samples, "m42d_connections", transport="tls") == 0
    assert value(samples, "m42d_stopping") == 0


def test_label_values_that_look_like_data_become_other() -> None:
    """Defence in depth: an address, a room id or a token never becomes a label."""
    room_hex = "a" * 32
    stats = _stats(
        refused={"192.0.2.7": 2, room_hex: 3, "BAD_TOKEN": 1},
        connections_by_transport={"[2001:db8::1]": 1, "ws": 4},
        timeouts={"idle": 5, "tok-" + "Z" * 40: 1},
    )
    text = _render(build_registry(lambda: stats, process=False))
    assert "192.0.2.7" not in text
    assert room_hex not in text
    assert "2001:db8" not in text
    samples = parse(text)
    assert value(samples, "m42d_refused_total", reason="other") == 5
    assert value(samples, "m42d_refused_total", reason="BAD_TOKEN") == 1
    assert value(samples, "m42d_connections", transport="other") == 1
    assert value(samples, "m42d_connections", transport="ws") == 4
    assert value(samples, "m42d_timeouts_total", kind="other") == 1
    assert value(samples, "m42d_timeouts_total", kind="idle") == 5


def test_process_metrics_are_included_by_default() -> None:
    samples = parse(_render(build_registry(_stats)))
    assert value(samples, "process_resident_memory_bytes") > 0
    assert value(samples, "process_virtual_memory_bytes") >= value(
        samples, "process_resident_memory_bytes"
    )
    assert 0 < value(samples, "process_open_fds") <= value(samples, "process_max_fds")
    assert value(samples, "process_cpu_seconds_total") > 0
    assert value(samples, "process_start_time_seconds") > 1.7e9


# --- over HTTP, with a real relay -------------------------------------------------------


@attrs.define
class Served:
    relay: Relay
    ws_url: str
    port: int
    server: MetricsServer
    healthy: list[bool]


@contextlib.asynccontextmanager
async def served(read_timeout: float = 5.0) -> AsyncIterator[Served]:
    transports = transports_or_skip("ws")
    relay = Relay(TicketKeyRing.generate())
    listener = await transports["ws"].open_listener("ws://127.0.0.1:0")
    healthy = [True]
    registry = build_registry(relay.statistics, transports=["ws"], stopping=lambda: not healthy[0])
    server = await open_metrics_server(
        "127.0.0.1:0", registry, lambda: healthy[0], read_timeout=read_timeout
    )
    port = int(server.urls[0].rsplit(":", 1)[1].split("/")[0])
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_relay, relay, [listener])
        await nursery.start(server.serve)
        yield Served(relay, listener.urls[0], port, server, healthy)
        nursery.cancel_scope.cancel()


async def test_scrape_reflects_relayed_frames_and_leaks_no_room_or_address() -> None:
    transports = transports_or_skip("ws")
    async with served() as s:
        assert s.server.urls == [f"http://127.0.0.1:{s.port}/metrics"]
        before = await get(s.port, "/metrics")
        assert before.status == 200
        assert before.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
        assert int(before.headers["content-length"]) == len(before.body)
        zero = parse(before.body.decode())
        assert value(zero, "m42d_frames_relayed_total", lane="bulk") == 0

        async with open_pair(transports["ws"], s.ws_url) as (a, b):
            await exchange(a, b, bulk=b"\x01" * 5000)
            during = await get(s.port, "/metrics")
            samples = parse(during.body.decode())
            assert value(samples, "m42d_rooms") == 1
            assert value(samples, "m42d_peers") == 2
            assert value(samples, "m42d_connections", transport="ws") == 2
            ids = [room.hex() for room in s.relay._rooms]
        assert value(samples, "m42d_rooms_created_total") == 1
        assert value(samples, "m42d_joins_total") == 2
        assert value(samples, "m42d_frames_relayed_total", lane="control") == 2
        assert value(samples, "m42d_frames_relayed_total", lane="bulk") == 1
        assert value(samples, "m42d_relayed_bytes_total", lane="bulk") == 5000
        assert value(samples, "m42d_relayed_bytes_total", lane="control") == len(
            b"hello from A" + b"hello from B"
        )
        text = during.body.decode()
        assert ids
        assert all(room_id not in text for room_id in ids)
        assert "127.0.0.1" not in text
        label_names = {name for _, labels in samples for name, _ in labels}
        assert label_names == {"lane", "reason", "kind", "transport", "version"}


async def test_healthz_follows_stopping() -> None:
    async with served() as s:
        ok = await get(s.port, "/healthz")
        assert (ok.status, ok.body) == (200, b"ok\n")
        s.healthy[0] = False
        stopping = await get(s.port, "/healthz")
        assert (stopping.status, stopping.body) == (503, b"stopping\n")
        samples = parse((await get(s.port, "/metrics")).body.decode())
        assert value(samples, "m42d_stopping") == 1


async def test_http_errors() -> None:
    async with served(read_timeout=0.3) as s:
        missing = await get(s.port, "/metrics/../secret")
        assert (missing.status, missing.body) == (404, b"not found\n")
        assert (await get(s.port, "/")).status == 404
        post = await get(s.port, "/metrics", method="POST")
        assert post.status == 405
        assert post.headers["allow"] == "GET, HEAD"
        head = await get(s.port, "/healthz", method="HEAD")
        assert (head.status, head.body, head.headers["content-length"]) == (200, b"", "3")
        with_query = await get(s.port, "/healthz?probe=1")
        assert with_query.status == 200
        assert (await http(s.port, b"GARBAGE\r\n\r\n")).status == 400
        assert (await http(s.port, b"GET /metrics SPDY/3\r\n\r\n")).status == 400
        assert (await http(s.port, b"GET /metr")).status == 408  # stalled: read deadline
        oversize = b"GET /metrics HTTP/1.1\r\nX-Pad: " + b"a" * (2 * MAX_REQUEST)
        assert (await http(s.port, oversize)).status == 431
        long_head = b"GET /metrics HTTP/1.1\r\nX-Pad: " + b"a" * MAX_REQUEST + b"\r\n\r\n"
        assert (await http(s.port, long_head)).status == 431
        # The server still answers after all that.
        assert (await get(s.port, "/healthz")).status == 200


async def test_client_that_vanishes_is_harmless() -> None:
    async with served() as s:
        stream = await trio.open_tcp_stream("127.0.0.1", s.port)
        await stream.send_all(b"GET /met")
        await stream.aclose()
        assert (await get(s.port, "/healthz")).status == 200


async def test_idle_connections_cannot_starve_healthz() -> None:
    """Connections that never finish a request used to hold all 16 slots: 503 "busy".

    Now a new connection always gets in, closing the oldest idle one.
    """
    async with served(read_timeout=60) as s, contextlib.AsyncExitStack() as stack:
        idle = []
        for i in range(2 * MAX_CLIENTS):
            stream = await trio.open_tcp_stream("127.0.0.1", s.port)
            await stack.enter_async_context(stream)
            if i % 2:
                await stream.send_all(b"G")  # half a request line
            idle.append(stream)
        # Every server task has accepted its connection and waits for the rest
        # of a request head (trio polls for I/O before declaring all blocked).
        await trio.testing.wait_all_tasks_blocked()
        reply = await get(s.port, "/healthz")
        assert (reply.status, reply.body) == (200, b"ok\n")
        assert (await get(s.port, "/metrics")).status == 200
        # The oldest idle connections were closed to make room: MAX_CLIENTS
        # for the second half of the idle ones, one more for the probe.
        for stream in idle[: MAX_CLIENTS + 1]:
            with trio.fail_after(STEP):
                with contextlib.suppress(trio.BrokenResourceError):
                    assert await stream.receive_some() == b""
        assert len(s.server._live) <= MAX_CLIENTS


async def test_bind_failure_is_a_transport_error() -> None:
    from m42d.errors import TransportError

    async with served() as s:
        with pytest.raises(TransportError, match="cannot listen for metrics"):
            await open_metrics_server(f"127.0.0.1:{s.port}", CollectorRegistry(), lambda: True)


# --- through the daemon ---------------------------------------------------------------


async def test_daemon_serves_metrics_and_reports_503_while_draining(tmp_path: Path) -> None:
    transports = transports_or_skip("ws")
    argv = serve_argv(
        tmp_path / "state", "--listen", "ws://127.0.0.1:0", "--metrics", "127.0.0.1:0"
    )
    async with running_daemon(argv) as daemon:
        port = daemon.metrics_port
        assert (await get(port, "/healthz")).status == 200
        url = daemon.listening()["ws"]
        async with open_pair(transports["ws"], url) as (a, b):
            await exchange(a, b, bulk=b"\x02" * 100)
            samples = parse((await get(port, "/metrics")).body.decode())
            assert value(samples, "m42d_connections", transport="ws") == 2
            assert value(samples, "m42d_relayed_bytes_total", lane="bulk") == 100
            # Joined peers keep the graceful stop open: /healthz says 503 meanwhile.
            # The log line is written in the same step that starts the stop.
            daemon.proc.send_signal(signal.SIGTERM)
            await daemon.wait_log(lambda log: "SIGTERM: stopping" in log)
            assert (await get(port, "/healthz")).status == 503
        assert await daemon.wait() == 0


async def test_inherited_socket_serves_metrics() -> None:
    """Socket activation hands the metrics listener an already-listening socket."""
    import socket

    listening = socket.create_server(("127.0.0.1", 0))
    port = listening.getsockname()[1]
    server = await open_metrics_server("", build_registry(_stats), lambda: True, sock=listening)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        assert (await get(port, "/healthz")).status == 200
        nursery.cancel_scope.cancel()
