"""The relays under test, each started as its own process so its CPU can be read.

Every server binds 127.0.0.1 only.  CPU time comes from ``/proc/PID/stat``
(utime + stime, clock ticks), memory from ``/proc/PID/status`` (VmRSS):
both are what the kernel charged to that one process, so the load clients
running in the benchmark process do not count against the relay.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Final, final

import attrs

__all__ = [
    "BIN",
    "Relay",
    "free_port",
    "m42d_relay",
    "mailbox_server",
    "naive_relay",
    "raise_fd_limit",
    "transit_relay",
]

BIN: Final = Path(sys.executable).parent
"""The venv's bin directory: m42d, m42, twistd and wormhole live next to python."""

_TICKS: Final = os.sysconf("SC_CLK_TCK")
FD_LIMIT: Final = 200_000
START_TIMEOUT: Final = 30.0


def raise_fd_limit(limit: int = FD_LIMIT) -> None:
    """Lift RLIMIT_NOFILE: the scale run holds 20,000 sockets on each side (root may raise it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, limit), max(hard, limit)))


def free_port() -> int:
    """A port the kernel just handed out on 127.0.0.1 (for servers that cannot report port 0)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early:\n{log.read_text(errors='replace')[-2000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"server did not listen on {port}")


@final
@attrs.define
class Relay:
    """A running server process and the URLs it listens on."""

    name: str
    proc: subprocess.Popen[bytes]
    urls: dict[str, str]
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu_seconds(self) -> float:
        """utime + stime of the process so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICKS

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _spawn(
    argv: Sequence[str], log: Path, cwd: Path, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            list(argv),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=cwd,
            env=None if env is None else dict(env),
            preexec_fn=raise_fd_limit,
        )


_M42D_CONFIG: Final = """\
listen = [{listen}]
state_dir = "{state}"
log_level = "warning"

[limits]
max_connections = 100000
max_connections_per_address = 100000
create_rate = 100000000
join_rate = 100000000
idle_timeout = 600.0
ping_interval = 300.0
join_timeout = 60.0
"""


@contextlib.contextmanager
def m42d_relay(
    work: Path,
    schemes: Sequence[str] = ("tls", "ws"),
    *,
    env: Mapping[str, str] | None = None,
    tag: str = "",
) -> Iterator[Relay]:
    """``m42d serve`` on port 0 for each scheme, limits lifted for one-address load.

    ``env`` runs another tree's relay (a baseline's PYTHONPATH); ``tag`` keeps
    its state, config and log apart from the current tree's in the same ``work``.
    """
    state = work / f"m42d-state{tag}"
    config = work / f"m42d{tag}.toml"
    listen = ", ".join(f'"{s}://127.0.0.1:0"' for s in schemes)
    config.write_text(_M42D_CONFIG.format(listen=listen, state=state))
    log = work / f"m42d{tag}.log"
    # log_level warning hides "listening on"; ask for info from the command line.
    proc = _spawn(
        [str(BIN / "m42d"), "serve", "--config", str(config), "--log-level", "info"],
        log,
        work,
        env,
    )
    relay = Relay("m42d", proc, {}, log)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            text = log.read_text(errors="replace")
            if "TLS certificate pin" in text:
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"m42d did not start:\n{text[-2000:]}")
            time.sleep(0.05)
        for line in text.splitlines():
            if "listening on " in line:
                url = line.split("listening on ", 1)[1].strip()
                relay.urls[url.partition("://")[0]] = url
        yield relay
    finally:
        relay.stop()


@contextlib.contextmanager
def transit_relay(work: Path) -> Iterator[Relay]:
    """magic-wormhole's transit relay, raw TCP and WebSocket endpoints."""
    tcp, ws = free_port(), free_port()
    log = work / "transit.log"
    proc = _spawn(
        [
            str(BIN / "twistd"),
            "-n",
            "--pidfile=",
            "transitrelay",
            f"--port=tcp:{tcp}:interface=127.0.0.1",
            f"--websocket=tcp:{ws}:interface=127.0.0.1",
            f"--websocket-url=ws://127.0.0.1:{ws}/",
        ],
        log,
        work,
    )
    relay = Relay(
        "transit", proc, {"tcp": f"tcp://127.0.0.1:{tcp}", "ws": f"ws://127.0.0.1:{ws}/"}, log
    )
    try:
        _wait_port(tcp, proc, log)
        _wait_port(ws, proc, log)
        yield relay
    finally:
        relay.stop()


@contextlib.contextmanager
def mailbox_server(work: Path) -> Iterator[Relay]:
    """magic-wormhole's mailbox (rendezvous) server."""
    port = free_port()
    log = work / "mailbox.log"
    proc = _spawn(
        [
            str(BIN / "twistd"),
            "-n",
            "--pidfile=",
            "wormhole-mailbox",
            f"--port=tcp:{port}:interface=127.0.0.1",
            f"--channel-db={work / 'mailbox.sqlite'}",
        ],
        log,
        work,
    )
    relay = Relay("mailbox", proc, {"ws": f"ws://127.0.0.1:{port}/v1"}, log)
    try:
        _wait_port(port, proc, log)
        yield relay
    finally:
        relay.stop()


@contextlib.contextmanager
def naive_relay(work: Path, *, tls: bool, read_size: int = 65536) -> Iterator[Relay]:
    """bench/naive_relay.py: the ceiling, a trio byte pipe with transit-style pairing."""
    port = free_port()
    name = "naive-tls" if tls else "naive-tcp"
    log = work / f"{name}.log"
    argv = [
        sys.executable,
        "-m",
        "bench.naive_relay",
        "--port",
        str(port),
        "--read-size",
        str(read_size),
    ]
    if tls:
        cert, key = _self_signed(work)
        argv += ["--cert", str(cert), "--key", str(key)]
    proc = _spawn(argv, log, Path(__file__).resolve().parent.parent)
    relay = Relay(name, proc, {"tcp": f"tcp://127.0.0.1:{port}"}, log)
    try:
        _wait_port(port, proc, log)
        yield relay
    finally:
        relay.stop()


def _self_signed(work: Path) -> tuple[Path, Path]:
    cert, key = work / "naive-cert.pem", work / "naive-key.pem"
    if not cert.exists():
        import trustme

        ca = trustme.CA()
        server = ca.issue_cert("127.0.0.1", "localhost")
        server.cert_chain_pems[0].write_to_path(str(cert))
        server.private_key_pem.write_to_path(str(key))
    return cert, key


def scratch_dir() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="m42-bench-")
