"""The real ``m42d serve`` process under a fake systemd: notify socket, watchdog, activation.

Rules of this module: the daemon is always a subprocess (``python -m
m42d``), the "systemd" side is a real kernel object (an abstract AF_UNIX
datagram socket, listening TCP sockets passed as descriptors 3 and 4),
and every wait has a deadline.  Clients speak real relay frames through the
installed transport plugins.  The helpers at the top (``running_daemon``,
``open_pair``...) are shared with tests/test_metrics.py and
tests/test_nginx.py.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import functools
import itertools
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import attrs
import pytest
import trio

from m42d.ticket import Seat, Ticket
from m42d.transport import FrameConnection, Transport, load_transports
from m42d.wire import (
    Bulk,
    Control,
    CreateRoom,
    Credit,
    Frame,
    Join,
    Joined,
    PeerUp,
    Ping,
    Pong,
    RoomCreated,
)

F = TypeVar("F", bound=Frame)
STEP = 30.0
"""Deadline for one step against the subprocess (generous: 2 loaded cores)."""

SYSTEMD_VARS = (
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_PID",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
    "CREDENTIALS_DIRECTORY",
    "STATE_DIRECTORY",
)


def clean_env(**extra: str) -> dict[str, str]:
    """Our environment without systemd's variables (tests may run under a unit), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in SYSTEMD_VARS}
    env.update(extra)
    return env


def transports_or_skip(*schemes: str) -> dict[str, Transport]:
    transports = load_transports()
    missing = [s for s in schemes if s not in transports]
    if missing:
        pytest.skip(f"built-in transports not installed: {missing} (pip install -e .)")
    return transports


# --- the daemon subprocess ---------------------------------------------------------


@attrs.define
class Daemon:
    proc: trio.Process
    log: str = ""
    eof: bool = False
    changed: trio.Event = attrs.field(factory=trio.Event)

    def listening(self) -> dict[str, str]:
        """scheme -> URL from the ``listening on`` lines."""
        found = re.findall(r"m42d: listening on ((\w+)://\S+)", self.log)
        return {scheme: url for url, scheme in found}

    @property
    def pin(self) -> bytes:
        match = re.search(r"TLS certificate pin (\S+)", self.log)
        assert match is not None, self.log
        return base64.urlsafe_b64decode(match.group(1) + "=")

    @property
    def metrics_port(self) -> int:
        match = re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", self.log)
        assert match is not None, self.log
        return int(match.group(1))

    async def wait_log(self, predicate: Callable[[str], bool], within: float = STEP) -> None:
        with trio.fail_after(within):
            while not predicate(self.log):
                assert not self.eof, f"the daemon closed stderr:\n{self.log}"
                await self.changed.wait()

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        while chunk := await self.proc.stderr.receive_some():
            self.log += chunk.decode("utf-8", "replace")
            self.changed.set()
            self.changed = trio.Event()
        self.eof = True
        self.changed.set()

    async def stop(self, within: float = STEP) -> int:
        """SIGTERM and the exit status, within ``within`` seconds."""
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        return await self.wait(within)

    async def wait(self, within: float = STEP) -> int:
        """The exit status (after a signal the test sent itself; a second one stops hard)."""
        with trio.fail_after(within):
            return await self.proc.wait()


def serve_argv(state_dir: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "m42d", "serve", "--state-dir", str(state_dir), *args]


@contextlib.asynccontextmanager
async def running_daemon(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    pass_fds: Sequence[int] = (),
    wait_for: str = "TLS certificate pin",
) -> AsyncIterator[Daemon]:
    """Start the daemon, yield once ``wait_for`` is logged; kill it if the test left it running."""
    proc = await trio.lowlevel.open_process(
        list(argv),
        stderr=subprocess.PIPE,
        env=dict(env if env is not None else clean_env()),
        pass_fds=tuple(pass_fds),
    )
    daemon = Daemon(proc)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(daemon._read)
            await daemon.wait_log(lambda log: wait_for in log or "m42d: error:" in log)
            assert wait_for in daemon.log, daemon.log
            yield daemon
            nursery.cancel_scope.cancel()
    finally:
        if proc.returncode is None:
            proc.kill()
            with trio.CancelScope(shield=True):
                await proc.wait()


# --- relay frames through a transport ----------------------------------------------


async def expect(conn: FrameConnection, kind: type[F], within: float = STEP) -> F:
    """The next frame of ``kind``, skipping CREDIT and PONG unless asked for."""
    with trio.fail_after(within):
        while True:
            frame = await conn.receive()
            if isinstance(frame, kind):
                return frame
            assert isinstance(frame, Credit | Pong), f"expected {kind.__name__}, got {frame!r}"


async def create_room(transport: Transport, url: str, **connect: Any) -> RoomCreated:
    async with transport.connect(url, **connect) as conn:
        await conn.send(CreateRoom())
        return await expect(conn, RoomCreated)


async def ping(transport: Transport, url: str, **connect: Any) -> None:
    async with transport.connect(url, **connect) as conn:
        await conn.send(Ping(b"alive"))
        assert await expect(conn, Pong) == Pong(b"alive")


@contextlib.asynccontextmanager
async def open_pair(
    transport: Transport, url: str, **connect: Any
) -> AsyncIterator[tuple[FrameConnection, FrameConnection]]:
    """A fresh room with both seats joined (A has seen PEER_UP)."""
    created = await create_room(transport, url, **connect)
    room_id = Ticket.parse(created.ticket).room_id
    async with (
        transport.connect(url, room_id=room_id, **connect) as a,
        transport.connect(url, room_id=room_id, **connect) as b,
    ):
        await a.send(Join(Seat.A, created.ticket, created.token_a))
        await expect(a, Joined)
        await b.send(Join(Seat.B, created.ticket, created.token_b))
        assert (await expect(b, Joined)).peer_online
        await expect(a, PeerUp)
        yield a, b


async def exchange(a: FrameConnection, b: FrameConnection, bulk: bytes = b"\x42" * 70_000) -> None:
    """CONTROL both ways, then BULK from A to B (in max-size pieces) intact."""
    await a.send(Control(b"hello from A"))
    assert (await expect(b, Control)).payload == b"hello from A"
    await b.send(Control(b"hello from B"))
    assert (await expect(a, Control)).payload == b"hello from B"
    pieces = [bulk[i : i + 65_536] for i in range(0, len(bulk), 65_536)]
    for piece in pieces:
        await a.send(Bulk(piece))
    received = b""
    while len(received) < len(bulk):
        received += (await expect(b, Bulk)).payload
    assert received == bulk


# --- a fake notify socket ---------------------------------------------------------


@attrs.define
class NotifyReceiver:
    """What systemd does for Type=notify: an AF_UNIX datagram socket, recorded with times."""

    sock: trio.socket.SocketType
    address: str
    messages: list[tuple[float, str]] = attrs.field(factory=list)

    def seen(self, prefix: str) -> list[tuple[float, str]]:
        return [(t, m) for t, m in self.messages if m.startswith(prefix)]

    async def until(self, predicate: Callable[[NotifyReceiver], bool], within: float) -> None:
        """Receive datagrams until ``predicate`` holds (waiting on the socket, with a deadline)."""
        with trio.fail_after(within):
            while not predicate(self):
                data = await self.sock.recv(4096)
                self.messages.append((trio.current_time(), data.decode("utf-8")))


@contextlib.asynccontextmanager
async def notify_receiver() -> AsyncIterator[NotifyReceiver]:
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = f"m42d-test-notify-{secrets.token_hex(8)}"
    with sock:
        await sock.bind("\0" + name)
        yield NotifyReceiver(sock, "@" + name)


def _ready_count(n: NotifyReceiver) -> int:
    return len(n.seen("READY=1"))


# --- notify protocol ---------------------------------------------------------------


async def test_notify_ready_status_watchdog_reload_stopping(tmp_path: Path) -> None:
    transports = transports_or_skip("ws", "tls")
    argv = serve_argv(tmp_path / "state", "--listen", "ws://127.0.0.1:0")
    argv += ["--listen", "tls://127.0.0.1:0"]
    async with notify_receiver() as notify:
        env = clean_env(NOTIFY_SOCKET=notify.address, WATCHDOG_USEC="400000")
        # Start and wait for READY=1 on the notify socket alone: the log is
        # read only to learn the ports.
        async with running_daemon(argv, env=env, wait_for="m42d: state directory") as daemon:
            await notify.until(lambda n: _ready_count(n) == 1, STEP)
            # Listeners accept the moment READY=1 is out: real frames on both.
            # (The log lines were written before READY=1, but our reader of
            # stderr may not have taken them yet: wait for them, not for time.)
            await daemon.wait_log(lambda log: "TLS certificate pin" in log)
            urls = daemon.listening()
            assert set(urls) == {"ws", "tls"}
            await create_room(transports["ws"], urls["ws"])
            await ping(transports["tls"], urls["tls"], pin=daemon.pin)
            # READY=1 came after every "listening on" line.
            assert daemon.log.index("listening on tls://") < daemon.log.index("TLS certificate pin")

            # STATUS follows the counts: a held connection shows up.
            await notify.until(lambda n: bool(n.seen("STATUS=0 rooms, 0 connections")), STEP)
            async with transports["ws"].connect(urls["ws"]) as held:
                await held.send(Ping(b"x"))
                await expect(held, Pong)
                await notify.until(lambda n: bool(n.seen("STATUS=0 rooms, 1 connection")), STEP)
            await notify.until(lambda n: len(n.seen("STATUS=0 rooms, 0 connections")) == 2, STEP)

            # The watchdog pings at half of WATCHDOG_USEC (0.2 s): a few arrive
            # within a deadline, never faster than the period.
            await notify.until(lambda n: len(n.seen("WATCHDOG=1")) >= 4, STEP)
            pings = [t for t, _ in notify.seen("WATCHDOG=1")]
            gaps = [b - a for a, b in itertools.pairwise(pings)]
            assert min(gaps) > 0.1

            # SIGHUP: RELOADING=1 (with its timestamp), then READY=1 again.
            daemon.proc.send_signal(signal.SIGHUP)
            await notify.until(lambda n: _ready_count(n) == 2, STEP)
            (reloading,) = notify.seen("RELOADING=1")
            assert re.fullmatch(r"RELOADING=1\nMONOTONIC_USEC=\d+", reloading[1])
            assert reloading[0] <= notify.seen("READY=1")[1][0]

            # SIGTERM: STOPPING=1, then a clean exit.
            daemon.proc.send_signal(signal.SIGTERM)
            await notify.until(lambda n: bool(n.seen("STOPPING=1")), STEP)
            assert await daemon.wait() == 0
        await notify.until(lambda n: bool(n.seen("STATUS=stopping")), STEP)
    assert "m42d: stopped" in daemon.log


async def test_no_watchdog_and_no_notify_socket_is_quiet(tmp_path: Path) -> None:
    """Outside systemd nothing is sent and nothing breaks (the notify calls are no-ops)."""
    transports = transports_or_skip("ws")
    argv = serve_argv(tmp_path / "state", "--listen", "ws://127.0.0.1:0")
    async with running_daemon(argv) as daemon:
        await create_room(transports["ws"], daemon.listening()["ws"])
        assert await daemon.stop() == 0
    assert "could not notify" not in daemon.log


# --- socket activation ---------------------------------------------------------------


def _high_dup(sock: socket.socket) -> int:
    """A close-on-exec copy at 200+, so ``3<&N`` in bash never clobbers a source at 3 or 4."""
    return fcntl.fcntl(sock.fileno(), fcntl.F_DUPFD_CLOEXEC, 200)


async def test_inherited_sockets_are_served_instead_of_configured_urls(tmp_path: Path) -> None:
    """An exec harness does what systemd does: fds 3 and 4, LISTEN_PID=$$, then exec.

    The configured URLs are the very addresses of the inherited sockets, so
    had the daemon tried to bind them itself it would fail with "address in
    use": serving proves it used the sockets it was given.
    """
    transports = transports_or_skip("ws", "tls")
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash is not installed")
    with (
        socket.create_server(("127.0.0.1", 0)) as ws,
        socket.create_server(("127.0.0.1", 0)) as tls,
    ):
        ws_port, tls_port = ws.getsockname()[1], tls.getsockname()[1]
        argv = serve_argv(tmp_path / "state", "--listen", f"ws://127.0.0.1:{ws_port}")
        argv += ["--listen", f"tls://127.0.0.1:{tls_port}"]
        ws_fd, tls_fd = _high_dup(ws), _high_dup(tls)
        script = (
            "export LISTEN_PID=$$ LISTEN_FDS=2 LISTEN_FDNAMES=ws:tls; "
            f"exec {shlex.join(argv)} 3<&{ws_fd} 4<&{tls_fd} {ws_fd}<&- {tls_fd}<&-"
        )
        async with notify_receiver() as notify:
            env = clean_env(NOTIFY_SOCKET=notify.address)
            try:
                starting = running_daemon([bash, "-c", script], env=env, pass_fds=(ws_fd, tls_fd))
                async with starting as daemon:
                    os.close(ws_fd)
                    os.close(tls_fd)
                    ws_fd = tls_fd = -1
                    await notify.until(lambda n: _ready_count(n) == 1, STEP)
                    assert "socket activation: 1 socket(s) named ws" in daemon.log
                    assert daemon.listening() == {
                        "ws": f"ws://127.0.0.1:{ws_port}",
                        "tls": f"tls://127.0.0.1:{tls_port}",
                    }
                    async with open_pair(transports["ws"], f"ws://127.0.0.1:{ws_port}") as (a, b):
                        await exchange(a, b)
                    await ping(transports["tls"], f"tls://127.0.0.1:{tls_port}", pin=daemon.pin)
                    assert await daemon.stop() == 0
            finally:
                for fd in (ws_fd, tls_fd):
                    if fd >= 0:
                        os.close(fd)


async def test_inherited_socket_with_unknown_name_is_a_config_error(tmp_path: Path) -> None:
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash is not installed")
    with socket.create_server(("127.0.0.1", 0)) as sock:
        fd = _high_dup(sock)
        argv = serve_argv(tmp_path / "state", "--listen", "ws://127.0.0.1:0")
        script = (
            "export LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=gopher; "
            f"exec {shlex.join(argv)} 3<&{fd} {fd}<&-"
        )
        try:
            proc = await trio.run_process(
                [bash, "-c", script],
                env=clean_env(),
                pass_fds=(fd,),
                capture_stderr=True,
                check=False,
            )
        finally:
            os.close(fd)
    assert proc.returncode == 2
    assert "named 'gopher', which is no installed transport" in proc.stderr.decode()


def _free_port() -> int:
    """A port nobody listens on right now (systemd-socket-activate needs a fixed one)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.mark.skipif(
    shutil.which("systemd-socket-activate") is None,
    reason="systemd-socket-activate (Debian package systemd) is not installed",
)
async def test_systemd_socket_activate_serves_a_ws_room(tmp_path: Path) -> None:
    transports = transports_or_skip("ws")
    activator = shutil.which("systemd-socket-activate")
    assert activator is not None
    port = _free_port()
    argv = [activator, "-l", f"127.0.0.1:{port}", "--fdname=ws"]
    argv += serve_argv(tmp_path / "state", "--listen", "ws://127.0.0.1:0")
    async with running_daemon(argv, wait_for=f"Listening on 127.0.0.1:{port}") as daemon:
        # The first connection makes systemd-socket-activate exec m42d, which
        # then accepts it from the inherited socket.
        url = f"ws://127.0.0.1:{port}"
        async with open_pair(transports["ws"], url) as (a, b):
            await exchange(a, b, bulk=b"\x07" * 1000)
        assert daemon.listening() == {"ws": url}
        assert await daemon.stop() == 0


# --- in-process: serve() with inherited sockets (the same paths, measurable) -------------


async def test_serve_in_process_with_inherited_ws_and_metrics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """serve() given sockets by name: ws and metrics from TCP sockets, a watchdog, no bind."""
    from m42d import daemon as daemon_mod
    from m42d.config import RelayConfig
    from m42d.relay.state import RelayState
    from tests.test_metrics import get

    transports = transports_or_skip("ws")
    for name in SYSTEMD_VARS:
        monkeypatch.delenv(name, raising=False)
    async with notify_receiver() as notify:
        monkeypatch.setenv("NOTIFY_SOCKET", notify.address)
        monkeypatch.setenv("WATCHDOG_USEC", "10000000")
        state = RelayState.open(tmp_path / "state", environ={})
        ws_sock = socket.create_server(("127.0.0.1", 0))
        metrics_sock = socket.create_server(("127.0.0.1", 0))
        ws_port, metrics_port = ws_sock.getsockname()[1], metrics_sock.getsockname()[1]
        config = RelayConfig(listen=("ws://127.0.0.1:1",))  # would fail to bind (port 1)
        inherited = {"ws": [ws_sock], "metrics": [metrics_sock]}
        async with trio.open_nursery() as nursery:
            await nursery.start(
                functools.partial(daemon_mod.serve, config, state, inherited=inherited)
            )
            await notify.until(lambda n: _ready_count(n) == 1, STEP)
            assert notify.seen("WATCHDOG=1")
            await create_room(transports["ws"], f"ws://127.0.0.1:{ws_port}")
            assert (await get(metrics_port, "/healthz")).status == 200
            nursery.cancel_scope.cancel()


async def test_two_metrics_sockets_refused_and_unix_socket_url(
    tmp_path: Path,
) -> None:
    from m42d import daemon as daemon_mod
    from m42d.config import RelayConfig
    from m42d.errors import ConfigError
    from m42d.relay.state import RelayState

    transports_or_skip("ws")
    state = RelayState.open(tmp_path / "state", environ={})
    config = RelayConfig(listen=("ws://127.0.0.1:0",))
    with (
        socket.create_server(("127.0.0.1", 0)) as one,
        socket.create_server(("127.0.0.1", 0)) as two,
        pytest.raises(ConfigError, match="2 inherited sockets are named metrics"),
    ):
        await daemon_mod.serve(config, state, inherited={"metrics": [one, two]})
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with unix:
        unix.bind(str(tmp_path / "u.sock"))
        unix.listen()
        assert daemon_mod._inherited_url("unix", unix) == f"unix://{tmp_path / 'u.sock'}"


def test_metrics_option_is_checked_and_applied() -> None:
    from m42d.daemon import build_parser, resolve_config
    from m42d.errors import ConfigError

    args = build_parser().parse_args(["serve", "--metrics", "127.0.0.1:9442"])
    assert resolve_config(args).metrics_listen == "127.0.0.1:9442"
    bad = build_parser().parse_args(["serve", "--metrics", "http://x/metrics"])
    with pytest.raises(ConfigError, match="--metrics"):
        resolve_config(bad)
