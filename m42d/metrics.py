"""Prometheus metrics and ``/healthz`` on a small HTTP listener of their own.

prometheus_client supplies the registry and the text exposition format;
its own HTTP servers (threads, WSGI) do not belong in a trio daemon, so the
listener here is a minimal HTTP/1.1 responder on trio:

* ``GET /metrics`` (or ``HEAD``): the exposition, rendered at scrape time
  from :meth:`m42d.relay.Relay.statistics` by a custom collector, so the
  relay keeps plain counters and pays nothing between scrapes;
* ``GET /healthz``: ``200 ok`` while serving, ``503 stopping`` once the
  graceful stop began, so a load balancer drains the node first;
* any other path: 404; another method: 405.

Rules of the responder: one request per connection (``Connection: close``);
the request head is read within :data:`READ_TIMEOUT` seconds and at most
:data:`MAX_REQUEST` bytes (431 beyond, 408 on the deadline).  At most
:data:`MAX_CLIENTS` connections are held at once, and a new one always
gets in: past the cap the oldest connection still waiting for its
request head (else the oldest of all) is closed to make room.  So idle
connections can never starve ``/healthz``: a load balancer's probe sends
its request at once and is answered within milliseconds, and whoever
holds connections open without sending loses them to the next client.
It binds loopback by default (``metrics_listen = "127.0.0.1:9442"``): the
numbers are not secret, but they tell an observer how busy the relay is.

Privacy rule: no label value ever carries a room id, token or address.
Label values come from fixed sets (lanes, timeout kinds, error code
names, transport schemes) and each one is checked against
:data:`_LABEL_VALUE` anyway; anything else is reported as ``other``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import resource
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Final, final

import trio
from prometheus_client import generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from m42d import __version__
from m42d.errors import TransportError
from m42d.relay.stats import RelayStatistics
from m42d.transport import STREAM_ERRORS, format_url
from m42d.wire import ErrorCode

__all__ = [
    "MAX_CLIENTS",
    "MAX_REQUEST",
    "READ_TIMEOUT",
    "MetricsServer",
    "RelayCollector",
    "build_registry",
    "open_metrics_server",
]

logger = logging.getLogger("m42d.metrics")

MAX_REQUEST: Final = 8192
"""Bytes of request head accepted; a scraper sends a few hundred."""

READ_TIMEOUT: Final = 2.0
"""Seconds a client has to send its request head (slow-loris bound); a scraper
or health probe sends it with the connection."""

WRITE_TIMEOUT: Final = 10.0
"""Seconds to write a response before the connection is dropped."""

LINGER_TIMEOUT: Final = 1.0
LINGER_BYTES: Final = 64 * 1024
"""Bounds of the lingering close (see ``MetricsServer._send``)."""

MAX_CLIENTS: Final = 64
"""Connections held at once; Prometheus uses one per scrape, a probe one per check.
Past it the oldest idle connection is closed for the new one."""

LANES: Final = ("control", "bulk")
TIMEOUT_KINDS: Final = ("join", "idle", "write")
_LABEL_VALUE: Final = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,23}")
"""Names, not data: no dots or colons (addresses), at most 24 characters
(a room id is 32 hex digits, a token longer still)."""
_OTHER: Final = "other"

_REASONS: Final = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}


def _label(value: str) -> str:
    """A label value from a fixed vocabulary; anything unexpected becomes ``other``."""
    return value if _LABEL_VALUE.fullmatch(value) else _OTHER


def _by_label(values: dict[str, int], known: Iterable[str]) -> dict[str, int]:
    """Known label values first (present at 0, so ``rate()`` works from the start)."""
    out = dict.fromkeys(known, 0)
    for key, count in values.items():
        label = _label(key)
        out[label] = out.get(label, 0) + count
    return out


def _labelled(
    name: str, documentation: str, label: str, values: dict[str, int], known: Iterable[str]
) -> CounterMetricFamily:
    """One counter family with one label, its known values present at 0."""
    family = CounterMetricFamily(name, documentation, labels=[label])
    for value, count in _by_label(values, known).items():
        family.add_metric([value], count)
    return family


@final
class RelayCollector(Collector):
    """Turns one :class:`RelayStatistics` snapshot per scrape into metric families.

    Args:
        statistics: returns the snapshot (``relay.statistics``).
        transports: the installed transport schemes, reported at 0 when idle.
        stopping: True once the graceful stop began.
    """

    def __init__(
        self,
        statistics: Callable[[], RelayStatistics],
        *,
        transports: Sequence[str] = (),
        stopping: Callable[[], bool] = lambda: False,
    ) -> None:
        self._statistics = statistics
        self._transports = tuple(transports)
        self._stopping = stopping

    def collect(self) -> Iterable[Metric]:
        s = self._statistics()
        info = GaugeMetricFamily("m42d_build_info", "m42d version (always 1).", labels=["version"])
        info.add_metric([__version__], 1)  # our own constant, not outside data
        yield info
        yield GaugeMetricFamily(
            "m42d_stopping", "1 once the graceful stop began, else 0.", value=int(self._stopping())
        )
        yield GaugeMetricFamily("m42d_rooms", "Rooms with at least one seat joined.", value=s.rooms)
        yield GaugeMetricFamily("m42d_peers", "Joined connections (seats).", value=s.peers)
        connections = GaugeMetricFamily(
            "m42d_connections", "Open connections by transport.", labels=["transport"]
        )
        for transport, count in _by_label(s.connections_by_transport, self._transports).items():
            connections.add_metric([transport], count)
        yield connections
        yield _labelled(
            "m42d_frames_relayed",
            "CONTROL and BULK frames received from joined clients.",
            "lane",
            s.frames_by_lane,
            LANES,
        )
        yield _labelled(
            "m42d_relayed_bytes", "Payload bytes of those frames.", "lane", s.bytes_by_lane, LANES
        )
        yield CounterMetricFamily(
            "m42d_frames_dropped",
            "CONTROL/BULK frames dropped because the other seat was absent.",
            value=s.frames_dropped,
        )
        yield CounterMetricFamily(
            "m42d_credit_stalls",
            "Times a sender's bulk credit fell below one full frame.",
            value=s.credit_stalls,
        )
        yield CounterMetricFamily("m42d_rooms_created", "Rooms created.", value=s.rooms_created)
        yield CounterMetricFamily("m42d_joins", "Seats joined.", value=s.joins)
        yield _labelled(
            "m42d_refused",
            "Connections or requests refused, by ERROR code name.",
            "reason",
            s.refused,
            (code.name for code in ErrorCode),
        )
        yield _labelled(
            "m42d_timeouts",
            "Connections closed by a deadline, by kind.",
            "kind",
            s.timeouts,
            TIMEOUT_KINDS,
        )
        yield from _queue_metrics(s)
        yield from _store_metrics(s)


def _queue_metrics(s: RelayStatistics) -> Iterator[Metric]:
    """What the relay's lanes hold: the figures behind docs/operations.md's memory bound."""
    yield GaugeMetricFamily(
        "m42d_queued_bulk_bytes",
        "BULK payload bytes waiting in the relay's bulk lanes now.",
        value=s.queued_bulk_bytes,
    )
    yield GaugeMetricFamily(
        "m42d_queued_bulk_bytes_high_water",
        "The largest m42d_queued_bulk_bytes seen since start.",
        value=s.queued_bulk_high_water,
    )
    yield GaugeMetricFamily(
        "m42d_queued_bytes",
        "Bytes the relay's lanes hold now (frames at payload + 128, writes in progress).",
        value=s.queued_bytes,
    )
    yield GaugeMetricFamily(
        "m42d_queued_bytes_high_water",
        "The largest m42d_queued_bytes seen since start.",
        value=s.queued_high_water,
    )
    yield GaugeMetricFamily(
        "m42d_queued_control_frames",
        "Frames waiting in the relay's control lanes now.",
        value=s.queued_control_frames,
    )


def _store_metrics(s: RelayStatistics) -> Iterator[Metric]:
    """Only on a node that shares a store with others (docs/scale-out.md)."""
    if s.store_up is not None:
        yield GaugeMetricFamily(
            "m42d_store_up",
            "1 while the shared store (Valkey/Redis) answers, else 0.",
            value=int(s.store_up),
        )
        yield CounterMetricFamily(
            "m42d_rooms_moved",
            "Lone seats told to reconnect because another node holds their room.",
            value=s.rooms_moved,
        )


_STARTED: Final = time.time()


@final
class ProcessCollector(Collector):
    """The standard ``process_*`` metrics, without what the sandbox hides.

    prometheus_client's own collector needs ``/proc/stat`` (boot time) and
    yields nothing without it; the unit's ``ProcSubset=pid`` hides that
    file.  CPU and limits come from the C library here, memory and
    descriptors from ``/proc/self`` (visible under ``ProcSubset=pid``), and
    the start time is when this module was imported.
    """

    def collect(self) -> Iterable[Metric]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        yield CounterMetricFamily(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds.",
            value=usage.ru_utime + usage.ru_stime,
        )
        yield GaugeMetricFamily(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            value=_STARTED,
        )
        yield GaugeMetricFamily(
            "process_max_fds",
            "Maximum number of open file descriptors.",
            value=resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        )
        with contextlib.suppress(OSError):
            yield GaugeMetricFamily(
                "process_open_fds",
                "Number of open file descriptors.",
                value=len(os.listdir("/proc/self/fd")),
            )
        with contextlib.suppress(OSError, ValueError, IndexError):
            with open("/proc/self/statm", "rb") as statm:
                pages = statm.read().split()
            page = os.sysconf("SC_PAGE_SIZE")
            yield GaugeMetricFamily(
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                value=int(pages[0]) * page,
            )
            yield GaugeMetricFamily(
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                value=int(pages[1]) * page,
            )


def build_registry(
    statistics: Callable[[], RelayStatistics],
    *,
    transports: Sequence[str] = (),
    stopping: Callable[[], bool] = lambda: False,
    process: bool = True,
) -> CollectorRegistry:
    """A private registry (never the global one) with the relay's and the process's metrics.

    A private registry keeps library-registered defaults and other
    embedders' metrics out, so the exposition is exactly what
    docs/operations.md lists.
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RelayCollector(statistics, transports=transports, stopping=stopping))
    if process:
        registry.register(ProcessCollector())
    return registry


def _response(status: int, body: bytes, content_type: str, *, head: bool = False) -> bytes:
    lines = [
        f"HTTP/1.1 {status} {_REASONS[status]}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "Cache-Control: no-store",
        "Connection: close",
    ]
    if status == 405:
        lines.append("Allow: GET, HEAD")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + (b"" if head else body)


_TEXT: Final = "text/plain; charset=utf-8"

EXPOSITION_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
"""The classic text format, which every Prometheus release reads.  Our names
and labels are all legacy-valid, so generate_latest's output is exactly
that format (newer prometheus_client labels it 1.0.0 by default)."""


@final
class MetricsServer:
    """The bound metrics listener; :meth:`serve` answers scrapes until cancelled."""

    def __init__(
        self,
        listeners: Sequence[trio.SocketListener],
        registry: CollectorRegistry,
        healthy: Callable[[], bool],
        *,
        read_timeout: float = READ_TIMEOUT,
    ) -> None:
        self._listeners = list(listeners)
        self._registry = registry
        self._healthy = healthy
        self._read_timeout = read_timeout
        self._live: dict[trio.CancelScope, bool] = {}
        """Every connection held, oldest first -> still waiting for its request head."""

    @property
    def urls(self) -> list[str]:
        urls = []
        for listener in self._listeners:
            name = listener.socket.getsockname()
            urls.append(format_url("http", str(name[0]), int(name[1]), "/metrics"))
        return urls

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(trio.serve_listeners, self._handle, self._listeners)
                task_status.started()
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        for listener in self._listeners:
            await trio.aclose_forcefully(listener)

    async def _handle(self, stream: trio.SocketStream) -> None:
        live = self._live
        if len(live) >= MAX_CLIENTS:
            self._evict()
        scope = trio.CancelScope()
        live[scope] = True
        try:
            with scope:
                head = await self._read_head(stream)
                live[scope] = False
                await self._send(stream, self._respond(head))
        finally:
            live.pop(scope, None)  # gone already if evicted
            await trio.aclose_forcefully(stream)

    def _evict(self) -> None:
        """Close the oldest connection still waiting for its head (else the oldest).

        It leaves the count at once; its task closes the socket at its next
        checkpoint.
        """
        live = self._live
        victim = next((scope for scope, idle in live.items() if idle), None)
        if victim is None:
            victim = next(iter(live))
        del live[victim]
        victim.cancel()

    async def _send(self, stream: trio.SocketStream, data: bytes) -> None:
        """Write the response, then a lingering close.

        Closing a socket with unread input makes the kernel send RST, which
        can destroy the response before the client reads it (the 431 for an
        oversize request would be lost).  So: half-close, read and discard
        what the client still sends, bounded in bytes and time; the caller
        closes.
        """
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            with trio.move_on_after(WRITE_TIMEOUT):
                await stream.send_all(data)
                await stream.send_eof()
            drained = 0
            with trio.move_on_after(LINGER_TIMEOUT):
                while drained <= LINGER_BYTES and (chunk := await stream.receive_some()):
                    drained += len(chunk)

    async def _read_head(self, stream: trio.SocketStream) -> bytes | int:
        """The request head, or the error status to answer with."""
        buffer = bytearray()
        with trio.move_on_after(self._read_timeout):
            while b"\r\n\r\n" not in buffer:
                if len(buffer) > MAX_REQUEST:
                    return 431
                try:
                    chunk = await stream.receive_some(MAX_REQUEST + 1)
                except STREAM_ERRORS:
                    return 400
                if not chunk:
                    return 400
                buffer += chunk
            head = bytes(buffer).partition(b"\r\n\r\n")[0]
            return 431 if len(head) > MAX_REQUEST else head
        return 408

    def _respond(self, head: bytes | int) -> bytes:
        if isinstance(head, int):
            return _response(head, f"{_REASONS[head].lower()}\n".encode(), _TEXT)
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = request_line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            return _response(400, b"bad request\n", _TEXT)
        method, target, _version = parts
        path = target.split("?", 1)[0]
        if method not in ("GET", "HEAD"):
            return _response(405, b"method not allowed\n", _TEXT)
        is_head = method == "HEAD"
        if path == "/metrics":
            return _response(200, generate_latest(self._registry), EXPOSITION_TYPE, head=is_head)
        if path == "/healthz":
            if self._healthy():
                return _response(200, b"ok\n", _TEXT, head=is_head)
            return _response(503, b"stopping\n", _TEXT, head=is_head)
        return _response(404, b"not found\n", _TEXT, head=is_head)


def _split_host_port(host_port: str) -> tuple[str, int]:
    host, _, port = host_port.rpartition(":")
    return host.strip("[]"), int(port)


async def open_metrics_server(
    host_port: str,
    registry: CollectorRegistry,
    healthy: Callable[[], bool],
    *,
    sock: socket.socket | None = None,
    read_timeout: float = READ_TIMEOUT,
) -> MetricsServer:
    """Bind ``host:port`` (``[::1]:9442`` for IPv6; port 0 picks one) or adopt ``sock``.

    Raises:
        TransportError: the bind failed.
    """
    if sock is not None:
        listeners = [trio.SocketListener(trio.socket.from_stdlib_socket(sock))]
    else:
        host, port = _split_host_port(host_port)
        try:
            listeners = await trio.open_tcp_listeners(port, host=host)
        except OSError as exc:
            raise TransportError(
                f"cannot listen for metrics on {host_port}: {exc.strerror}"
            ) from exc
    return MetricsServer(listeners, registry, healthy, read_timeout=read_timeout)
