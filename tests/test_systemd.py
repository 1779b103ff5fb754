"""m42d.systemd against real sockets: a fake notify socket and inherited listeners.

Rules of this module: the "systemd" side is always a real kernel object (an
AF_UNIX datagram socket bound in tmp_path or in the abstract namespace,
listening sockets on loopback port 0 or in tmp_path), never a mock of
``socket``.  Timing is checked on trio's autojump clock.  Descriptors 3..n
are borrowed only inside :func:`_at_listen_fds`, which puts back whatever
pytest had there.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import select
import shlex
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import trio
import trio.testing

from m42d import systemd
from m42d.systemd import SocketActivationError

ENV_VARS = (
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_PID",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
)
LISTEN_VARS = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")
CHILD_TIMEOUT = 30.0


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests may run under a real systemd unit: never talk to the real manager."""
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(params=["path", "abstract"])
def notify_socket(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[socket.socket]:
    """What systemd does: a bound AF_UNIX datagram socket named in $NOTIFY_SOCKET."""
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    with receiver:
        if request.param == "path":
            address = str(tmp_path / "notify")
            receiver.bind(address)
            monkeypatch.setenv("NOTIFY_SOCKET", address)
        else:
            name = f"m42d-test-notify-{secrets.token_hex(8)}"
            receiver.bind("\0" + name)
            monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        yield receiver


def _drain(receiver: socket.socket) -> list[str]:
    """Every datagram queued so far (notify() sends synchronously, so they are all there)."""
    out: list[str] = []
    receiver.setblocking(False)
    while True:
        try:
            out.append(receiver.recv(4096).decode("utf-8"))
        except BlockingIOError:
            return out


# --- notify ---------------------------------------------------------------------


def test_notifications_arrive_verbatim(notify_socket: socket.socket) -> None:
    assert systemd.ready() is True
    assert systemd.status("3 rooms, 6 connections") is True
    assert systemd.watchdog_ping() is True
    assert systemd.stopping() is True
    assert systemd.notify("EXTEND_TIMEOUT_USEC=5000000") is True
    assert _drain(notify_socket) == [
        "READY=1",
        "STATUS=3 rooms, 6 connections",
        "WATCHDOG=1",
        "STOPPING=1",
        "EXTEND_TIMEOUT_USEC=5000000",
    ]


def test_status_cannot_inject_assignments(notify_socket: socket.socket) -> None:
    systemd.status("room\nREADY=1\r\nMAINPID=1")
    (datagram,) = _drain(notify_socket)
    assert "\n" not in datagram
    assert "\r" not in datagram
    assert datagram.startswith("STATUS=room ")


def test_reloading_carries_monotonic_timestamp(notify_socket: socket.socket) -> None:
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert systemd.reloading() is True
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    (datagram,) = _drain(notify_socket)
    match = re.fullmatch(r"RELOADING=1\nMONOTONIC_USEC=(\d+)", datagram)
    assert match is not None
    assert before <= int(match.group(1)) <= after


def test_reload_cycle_ends_ready_even_when_reload_fails(notify_socket: socket.socket) -> None:
    with systemd.reload_cycle():
        assert _drain(notify_socket)[0].startswith("RELOADING=1\n")
    assert _drain(notify_socket) == ["READY=1"]

    with pytest.raises(RuntimeError, match="bad certificate"), systemd.reload_cycle():
        raise RuntimeError("bad certificate")
    sent = _drain(notify_socket)
    assert [line.partition("\n")[0] for line in sent] == ["RELOADING=1", "READY=1"]


def test_no_notify_socket_is_a_no_op(tmp_path: Path) -> None:
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    with receiver:
        receiver.bind(str(tmp_path / "notify"))
        assert systemd.ready() is False
        assert systemd.stopping() is False
        assert systemd.reloading() is False
        assert systemd.status("x") is False
        assert systemd.watchdog_ping() is False
        assert _drain(receiver) == []


@pytest.mark.parametrize("value", ["", "vsock:2:1234", "relative/path"])
def test_unusable_notify_socket_values_are_ignored(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", value)
    assert systemd.ready() is False


def test_missing_notify_socket_is_logged_not_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))
    assert systemd.status("secret-free status") is False
    assert "could not notify systemd (STATUS)" in caplog.text
    # The log names the field, never the value.
    assert "secret-free status" not in caplog.text


def test_full_queue_drops_instead_of_blocking(notify_socket: socket.socket) -> None:
    """A wedged manager must not freeze the event loop that calls notify()."""
    results = [systemd.watchdog_ping() for _ in range(5000)]
    assert results[0] is True
    assert False in results  # the receiver never reads: the queue filled and we did not block
    assert len(_drain(notify_socket)) == results.count(True)


# --- watchdog -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        (None, None, None),
        ("30000000", None, 30.0),
        ("1500000", "self", 1.5),
        ("30000000", "other", None),
        ("30000000", "nonsense", None),
        ("soon", None, None),
        ("0", None, None),
        ("-5", None, None),
    ],
)
def test_watchdog_interval(
    usec: str | None, pid: str | None, expected: float | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    if usec is not None:
        monkeypatch.setenv("WATCHDOG_USEC", usec)
    if pid == "self":
        monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    elif pid == "other":
        monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    elif pid is not None:
        monkeypatch.setenv("WATCHDOG_PID", pid)
    assert systemd.watchdog_interval() == expected


async def test_watchdog_pings_at_half_the_interval(
    notify_socket: socket.socket, autojump_clock: trio.testing.MockClock
) -> None:
    receiver = trio.socket.from_stdlib_socket(notify_socket)
    arrivals: list[tuple[float, bytes]] = []

    async def record() -> None:
        while True:
            datagram = await receiver.recv(4096)
            arrivals.append((trio.current_time(), datagram))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(record)
        start = trio.current_time()
        await nursery.start(systemd.run_watchdog, 30.0)
        # Stop between two pings (at 100 s the last was at 90 s) so no tie.
        await trio.sleep(100.0)
        nursery.cancel_scope.cancel()

    assert [payload for _, payload in arrivals] == [b"WATCHDOG=1"] * 7
    assert [round(at - start, 6) for at, _ in arrivals] == [0, 15, 30, 45, 60, 75, 90]


@pytest.mark.parametrize("interval", [0.0, -1.0, float("nan"), float("inf")])
async def test_watchdog_rejects_bad_interval(interval: float) -> None:
    with pytest.raises(ValueError, match="positive"):
        await systemd.run_watchdog(interval)


# --- socket activation: environment -----------------------------------------------------


def _set_listen_env(
    monkeypatch: pytest.MonkeyPatch, count: str, names: str | None, pid: int | str | None = None
) -> None:
    monkeypatch.setenv("LISTEN_PID", str(os.getpid() if pid is None else pid))
    monkeypatch.setenv("LISTEN_FDS", count)
    if names is not None:
        monkeypatch.setenv("LISTEN_FDNAMES", names)


def test_no_listen_environment_means_no_sockets() -> None:
    assert systemd.listen_fds() == []
    assert systemd.listen_fds_by_name() == {}


def test_other_pid_gets_nothing_and_environment_is_cleared(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _set_listen_env(monkeypatch, "2", "ws:tls", pid=os.getpid() + 1)
    assert systemd.listen_fds() == []
    assert not any(name in os.environ for name in LISTEN_VARS)


def test_unset_environment_false_keeps_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    _set_listen_env(monkeypatch, "0", None)
    assert systemd.listen_fds(unset_environment=False) == []
    assert os.environ["LISTEN_FDS"] == "0"


@pytest.mark.parametrize(
    ("pid", "count", "names", "message"),
    [
        ("abc", "1", None, r"\$LISTEN_PID is not a number"),
        (None, "x", None, r"\$LISTEN_FDS is not a number"),
        (None, "-1", None, r"\$LISTEN_FDS is negative"),
        (None, "2", "ws", r"1 names for 2 descriptors"),
        (None, "1", "ws:tls", r"2 names for 1 descriptors"),
    ],
)
def test_malformed_listen_environment(
    pid: str | None,
    count: str,
    names: str | None,
    message: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _set_listen_env(monkeypatch, count, names, pid=pid)
    with pytest.raises(SocketActivationError, match=message):
        systemd.listen_fds()
    assert not any(name in os.environ for name in LISTEN_VARS)


# --- socket activation: real descriptors in this process -------------------------------------


@contextlib.contextmanager
def _at_listen_fds(sources: Sequence[int]) -> Iterator[list[socket.socket]]:
    """Put ``sources`` at fds 3.. (inheritable, as systemd leaves them); restore after.

    Yields a list: append every socket adopted from fds 3.. so it is detached
    (not closed) before the original descriptors are put back; a socket
    object that still owned fd 3 would otherwise close pytest's fd 3 when
    collected.
    """
    targets = range(systemd.SD_LISTEN_FDS_START, systemd.SD_LISTEN_FDS_START + len(sources))
    # High copies first, so no source or saved copy can sit in the target range.
    copies = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 200) for fd in sources]
    saved: dict[int, tuple[int, bool] | None] = {}
    for target in targets:
        try:
            saved[target] = (
                fcntl.fcntl(target, fcntl.F_DUPFD_CLOEXEC, 200),
                os.get_inheritable(target),
            )
        except OSError:
            saved[target] = None
    adopted: list[socket.socket] = []
    try:
        for target, copy in zip(targets, copies, strict=True):
            os.dup2(copy, target, inheritable=True)
            os.close(copy)
        yield adopted
    finally:
        for sock in adopted:
            sock.detach()
        for target, entry in saved.items():
            if entry is None:
                with contextlib.suppress(OSError):
                    os.close(target)
            else:
                fd, inheritable = entry
                os.dup2(fd, target, inheritable=inheritable)
                os.close(fd)


@pytest.fixture
def tcp_listener() -> Iterator[socket.socket]:
    sock = socket.create_server(("127.0.0.1", 0))
    with sock:
        yield sock


@pytest.fixture
def unix_listener(tmp_path: Path) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with sock:
        sock.bind(str(tmp_path / "tls.sock"))
        sock.listen()
        yield sock


def _accepts(listener: socket.socket, address: str | tuple[str, int]) -> bool:
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as client:
        client.settimeout(5)
        client.connect(address)
        client.sendall(b"hello")
        listener.settimeout(5)
        conn, _ = listener.accept()
        with conn:
            return conn.recv(5) == b"hello"


def test_listen_fds_adopts_named_inet_and_unix_sockets(
    tcp_listener: socket.socket, unix_listener: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    tcp_address = tcp_listener.getsockname()
    unix_address = unix_listener.getsockname()
    _set_listen_env(monkeypatch, "2", "ws:tls")
    with _at_listen_fds([tcp_listener.fileno(), unix_listener.fileno()]) as adopted:
        fds = systemd.listen_fds()
        adopted.extend(sock for _, sock in fds)
        assert [name for name, _ in fds] == ["ws", "tls"]
        (_, ws), (_, tls) = fds
        assert [ws.fileno(), tls.fileno()] == [3, 4]
        assert (ws.family, ws.type) == (socket.AF_INET, socket.SOCK_STREAM)
        assert (tls.family, tls.type) == (socket.AF_UNIX, socket.SOCK_STREAM)
        assert ws.getsockname() == tcp_address
        assert tls.getsockname() == unix_address
        # close-on-exec was set: an exec'd child does not inherit the listeners
        assert not os.get_inheritable(3)
        assert not os.get_inheritable(4)
        assert _accepts(ws, tcp_address)
        assert _accepts(tls, unix_address)
    assert not any(name in os.environ for name in LISTEN_VARS)


def test_listen_fds_without_names_and_grouped(
    tcp_listener: socket.socket, unix_listener: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    _set_listen_env(monkeypatch, "2", None)
    with _at_listen_fds([tcp_listener.fileno(), unix_listener.fileno()]) as adopted:
        grouped = systemd.listen_fds_by_name()
        adopted.extend(grouped.get("unknown", []))
        assert list(grouped) == ["unknown"]
        assert [sock.fileno() for sock in grouped["unknown"]] == [3, 4]


def test_listen_fds_rejects_a_non_socket_and_closes_what_it_adopted(
    tcp_listener: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    read_end, write_end = os.pipe()
    try:
        _set_listen_env(monkeypatch, "2", "ws:fifo")
        with _at_listen_fds([tcp_listener.fileno(), read_end]):
            with pytest.raises(SocketActivationError, match=r"descriptor 4 \(fifo\)"):
                systemd.listen_fds()
            with pytest.raises(OSError, match="Bad file descriptor"):
                os.fstat(3)  # the socket adopted before the failure was closed again
    finally:
        os.close(read_end)
        os.close(write_end)


# --- socket activation: a real exec'd process ---------------------------------------------

CHILD = textwrap.dedent(
    """
    import json, os, sys
    from m42d.systemd import listen_fds

    fds = listen_fds()
    report = {
        "names": [name for name, _ in fds],
        "families": [sock.family.name for _, sock in fds],
        "inheritable": [os.get_inheritable(sock.fileno()) for _, sock in fds],
        "leftover_env": sorted(k for k in os.environ if k.startswith("LISTEN_")),
    }
    for name, sock in fds:
        sock.settimeout(30)
        conn, _ = sock.accept()
        with conn:
            conn.sendall(json.dumps(dict(report, served=name)).encode())
    """
)


def _collect(
    family: socket.AddressFamily, addresses: Sequence[str | tuple[str, int]]
) -> list[dict[str, object]]:
    """Connect to every address first (the child accepts in fd order), then read each report."""
    with contextlib.ExitStack() as stack:
        clients = []
        for address in addresses:
            client = stack.enter_context(socket.socket(family, socket.SOCK_STREAM))
            client.settimeout(CHILD_TIMEOUT)
            client.connect(address)
            clients.append(client)
        return [_report(client) for client in clients]


def _report(client: socket.socket) -> dict[str, object]:
    chunks = []
    while chunk := client.recv(4096):
        chunks.append(chunk)
    report = json.loads(b"".join(chunks))
    assert isinstance(report, dict)
    return report


def test_exec_harness_passes_named_tcp_sockets(tmp_path: Path) -> None:
    """A shell places the sockets at 3 and 4, sets LISTEN_PID=$$ and execs: the pid survives.

    Same contract as systemd: the child is a fresh process image that finds
    its sockets only through the environment.
    """
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash is not installed")
    child = tmp_path / "child.py"
    child.write_text(CHILD)
    with (
        socket.create_server(("127.0.0.1", 0)) as ws,
        socket.create_server(("127.0.0.1", 0)) as tls,
    ):
        # High copies, so that "3<&N" can never clobber a source that is itself 3 or 4.
        ws_fd = fcntl.fcntl(ws.fileno(), fcntl.F_DUPFD_CLOEXEC, 200)
        tls_fd = fcntl.fcntl(tls.fileno(), fcntl.F_DUPFD_CLOEXEC, 200)
        script = (
            "export LISTEN_PID=$$ LISTEN_FDS=2 LISTEN_FDNAMES=ws:tls; "
            f"exec {shlex.quote(sys.executable)} {shlex.quote(str(child))} "
            f"3<&{ws_fd} 4<&{tls_fd} {ws_fd}<&- {tls_fd}<&-"
        )
        try:
            # bash, not sh: dash only redirects single-digit descriptors.
            proc = subprocess.Popen([bash, "-c", script], pass_fds=(ws_fd, tls_fd))
        finally:
            os.close(ws_fd)
            os.close(tls_fd)
        try:
            reports = _collect(socket.AF_INET, [ws.getsockname(), tls.getsockname()])
        finally:
            assert proc.wait(timeout=CHILD_TIMEOUT) == 0
    assert [report["served"] for report in reports] == ["ws", "tls"]
    for report in reports:
        assert report["names"] == ["ws", "tls"]
        assert report["families"] == ["AF_INET", "AF_INET"]
        assert report["inheritable"] == [False, False]
        assert report["leftover_env"] == []


@pytest.mark.skipif(
    shutil.which("systemd-socket-activate") is None,
    reason="systemd-socket-activate (Debian package systemd) is not installed",
)
def test_systemd_socket_activate_passes_named_fds(tmp_path: Path) -> None:
    child = tmp_path / "child.py"
    child.write_text(CHILD)
    ws_path, tls_path = str(tmp_path / "ws.sock"), str(tmp_path / "tls.sock")
    activator = shutil.which("systemd-socket-activate")
    assert activator is not None
    proc = subprocess.Popen(
        [activator, "-l", ws_path, "-l", tls_path, "--fdname=ws:tls", sys.executable, str(child)],
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        # Wait for "Listening on ... as 3." and "... as 4." with a deadline, not a
        # sleep.  Raw reads: a buffered readline could swallow both lines at once
        # and leave select() waiting for a third.
        output = b""
        deadline = time.monotonic() + CHILD_TIMEOUT
        while output.count(b"Listening on") < 2:
            remaining = deadline - time.monotonic()
            readable, _, _ = select.select([proc.stderr], [], [], max(remaining, 0))
            assert readable, "systemd-socket-activate did not start listening"
            chunk = os.read(proc.stderr.fileno(), 4096)
            assert chunk, f"systemd-socket-activate exited early: {output!r}"
            output += chunk
        # The first connection makes it exec the child with both descriptors.
        reports = _collect(socket.AF_UNIX, [ws_path, tls_path])
        assert proc.wait(timeout=CHILD_TIMEOUT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
    assert [report["served"] for report in reports] == ["ws", "tls"]
    for report in reports:
        assert report["names"] == ["ws", "tls"]
        assert report["families"] == ["AF_UNIX", "AF_UNIX"]
        assert report["inheritable"] == [False, False]
        assert report["leftover_env"] == []
