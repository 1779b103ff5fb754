"""A real ``m42d serve`` subprocess and ``m42`` client subprocesses (no tests here).

End-to-end tests cross every boundary a user crosses: the daemon is started
as ``python -m m42d serve`` on loopback with port 0, and each client is the
``m42`` entry point in its own process with its own ``XDG_DATA_HOME``.
Links travel in ``$M42_LINK``, never in argv (argv is visible in ``ps``).

Rules
-----
* No sleeps as synchronisation: the daemon is ready when its stderr has
  said ``listening on URL`` for every listener and the TLS pin; a client
  has reached a point when a line saying so appeared on its output.  Every
  wait has a deadline and fails with the processes' output attached.
* The daemon's stderr is drained by a thread for its whole life (a full
  pipe would stall the relay); a client's stdout and stderr by trio tasks.
* Every process started here is killed and reaped on the way out, pass or
  fail.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

import attrs
import trio

STARTUP: Final = 20.0
"""Seconds a daemon may take to start listening (a loaded 2-core CI box is slow)."""
STEP: Final = 30.0
"""Default deadline for one client-side step (a process exiting, a line appearing)."""

M42_COMMAND: Final = (
    sys.executable,
    "-c",
    "import sys; from m42d.cli import main; sys.exit(main())",
)
"""The ``m42`` console script, without depending on where it was installed."""

_LISTENING = "m42d: listening on "
_PIN = "m42d: TLS certificate pin "


class DaemonFailed(AssertionError):
    """The daemon did not come up (or went away); the message carries its log."""


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("M42_")}
    # Coverage of subprocesses, colours and the like must not change output.
    env.pop("NOTIFY_SOCKET", None)
    env.pop("LISTEN_FDS", None)
    env.pop("LISTEN_PID", None)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def random_file(path: Path, size: int) -> str:
    """Write ``size`` random bytes to ``path``; returns their SHA-256 (hex)."""
    digest = hashlib.sha256()
    with path.open("wb") as f:
        left = size
        while left:
            block = os.urandom(min(left, 4 << 20))
            digest.update(block)
            f.write(block)
            left -= len(block)
    return digest.hexdigest()


# -- the daemon -----------------------------------------------------------------------


@attrs.define(eq=False)
class RelayDaemon:
    """``m42d serve`` in a subprocess; synchronous, so it also works in module fixtures.

    ``urls`` maps a scheme to the concrete URL the daemon listens on (real
    ports, not 0); :meth:`restart` binds the same URLs again, and the state
    directory (ticket keys, TLS certificate) is kept, so links stay valid.
    """

    state_dir: Path
    listen: Sequence[str]
    proc: subprocess.Popen[bytes] | None = None
    urls: dict[str, str] = attrs.field(factory=dict)
    pin: str = ""
    log: list[str] = attrs.field(factory=list)
    _lines: queue.Queue[str | None] = attrs.field(factory=queue.Queue)
    _reader: threading.Thread | None = None

    def start(self, listen: Sequence[str] | None = None, limit: float = STARTUP) -> None:
        """Start and wait (at most ``limit`` seconds) until every listener accepts."""
        assert self.proc is None, "already running"
        listen = list(listen if listen is not None else self.listen)
        cmd = [sys.executable, "-m", "m42d", "serve", "--state-dir", str(self.state_dir)]
        for url in listen:
            cmd += ["--listen", url]
        self._lines = queue.Queue()
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=_clean_env(),
        )
        self._reader = threading.Thread(
            target=self._drain, args=(self.proc, self._lines), daemon=True
        )
        self._reader.start()
        urls: dict[str, str] = {}
        pin = ""
        deadline = time.monotonic() + limit
        while len(urls) < len(listen) or not pin:
            left = deadline - time.monotonic()
            try:
                line = self._lines.get(timeout=max(left, 0.0))
            except queue.Empty:
                self.kill()
                raise DaemonFailed(f"m42d did not start within {limit} s:\n{self.output}") from None
            if line is None:
                self.kill()
                raise DaemonFailed(f"m42d exited during startup:\n{self.output}")
            if line.startswith(_LISTENING):
                url = line[len(_LISTENING) :].strip()
                urls[url.partition("://")[0]] = url
            elif line.startswith(_PIN):
                pin = line[len(_PIN) :].strip()
        self.urls = urls
        self.pin = pin

    def _drain(self, proc: subprocess.Popen[bytes], lines: queue.Queue[str | None]) -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.log.append(line)
            lines.put(line)
        lines.put(None)

    @property
    def output(self) -> str:
        return "\n".join(self.log)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def url(self, scheme: str) -> str:
        return self.urls[scheme]

    def kill(self) -> None:
        """SIGKILL: no GOAWAY, no goodbye; the kernel resets every connection."""
        self._stop(signal.SIGKILL)

    def terminate(self, limit: float = STEP) -> int:
        """SIGTERM (graceful: GOAWAY, grace period); returns the exit code."""
        return self._stop(signal.SIGTERM, limit)

    def _stop(self, sig: signal.Signals, limit: float = STEP) -> int:
        proc = self.proc
        if proc is None:
            return 0
        if proc.poll() is None:
            proc.send_signal(sig)
        try:
            code = proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        if self._reader is not None:
            self._reader.join(timeout=limit)
        if proc.stderr is not None:
            proc.stderr.close()
        self.proc = None
        self._reader = None
        return code

    def restart(self, limit: float = STARTUP) -> None:
        """Start again on the same concrete addresses, with the same state directory."""
        if self.proc is not None:
            self.kill()
        self.start(list(self.urls.values()), limit)


def listen_urls(tmp: Path, schemes: Sequence[str]) -> list[str]:
    """Port-0 loopback listen URLs for ``schemes`` (a socket path under ``tmp`` for unix)."""
    out = []
    for scheme in schemes:
        if scheme == "unix":
            out.append(f"unix://{tmp / 'relay.sock'}")
        else:
            out.append(f"{scheme}://127.0.0.1:0")
    return out


def start_daemon(tmp: Path, schemes: Sequence[str]) -> RelayDaemon:
    tmp.mkdir(parents=True, exist_ok=True)
    daemon = RelayDaemon(tmp / "state", listen_urls(tmp, schemes))
    daemon.start()
    return daemon


# -- client processes -------------------------------------------------------------------


@attrs.define(eq=False)
class OutputLines:
    """Lines of one pipe, collected by a background task; waiters wake on each new line."""

    lines: list[str] = attrs.field(factory=list)
    eof: bool = False
    _changed: trio.Event = attrs.field(factory=trio.Event)

    async def pump(self, stream: trio.abc.ReceiveStream) -> None:
        buffer = b""
        try:
            while chunk := await stream.receive_some(1 << 16):
                buffer += chunk
                *complete, buffer = buffer.split(b"\n")
                if complete:
                    self.lines.extend(line.decode("utf-8", "replace") for line in complete)
                    self._wake()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            if buffer:
                self.lines.append(buffer.decode("utf-8", "replace"))
            self.eof = True
            self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, predicate: Callable[[str], bool], start: int = 0) -> int:
        """Index of the first line from ``start`` on that satisfies ``predicate``.

        Raises:
            EOFError: the pipe closed without such a line.
        """
        index = start
        while True:
            while index < len(self.lines):
                if predicate(self.lines[index]):
                    return index
                index += 1
            if self.eof:
                raise EOFError("output ended")
            await self._changed.wait()

    async def wait_eof(self) -> None:
        while not self.eof:
            await self._changed.wait()

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@attrs.define(eq=False)
class M42Process:
    """One ``m42`` subprocess and its collected output."""

    name: str
    argv: tuple[str, ...]
    proc: trio.Process
    home: Path
    stdout: OutputLines
    stderr: OutputLines

    def describe(self) -> str:
        return (
            f"--- m42 {' '.join(self.argv)} ({self.name}, exit {self.proc.returncode})\n"
            f"stdout:\n{self.stdout.text}\nstderr:\n{self.stderr.text}"
        )

    async def wait(self, limit: float = STEP) -> int:
        """Exit code, once the process ended and its output was read to the end."""
        try:
            with trio.fail_after(limit):
                code = await self.proc.wait()
                await self.stdout.wait_eof()
                await self.stderr.wait_eof()
        except trio.TooSlowError:
            raise AssertionError(f"still running after {limit} s\n{self.describe()}") from None
        return code

    async def expect_exit(self, code: int, limit: float = STEP) -> None:
        got = await self.wait(limit)
        assert got == code, f"exit {got}, expected {code}\n{self.describe()}"

    def events(self) -> list[dict[str, Any]]:
        """The JSON objects printed so far (``--jsonl``)."""
        out = []
        for line in self.stdout.lines:
            if line.startswith("{"):
                out.append(json.loads(line))
        return out

    async def wait_event(
        self, predicate: Callable[[dict[str, Any]], bool], limit: float = STEP, start: int = 0
    ) -> tuple[int, dict[str, Any]]:
        """The first ``--jsonl`` event from line ``start`` on that satisfies ``predicate``."""

        def matches(line: str) -> bool:
            return line.startswith("{") and predicate(json.loads(line))

        index = await self.wait_line(matches, limit, start)
        return index, json.loads(self.stdout.lines[index])

    async def wait_line(
        self, predicate: Callable[[str], bool], limit: float = STEP, start: int = 0
    ) -> int:
        """Index of the first stdout line from ``start`` on that satisfies ``predicate``."""
        try:
            with trio.fail_after(limit):
                return await self.stdout.wait_for(predicate, start)
        except trio.TooSlowError:
            raise AssertionError(f"no such line within {limit} s\n{self.describe()}") from None
        except EOFError:
            await self.wait(5.0)
            raise AssertionError(f"output ended without such a line\n{self.describe()}") from None

    async def type(self, line: str) -> None:
        """Write one line to the process's stdin (an interactive user typing)."""
        assert self.proc.stdin is not None
        with trio.fail_after(STEP):
            await self.proc.stdin.send_all(line.encode("utf-8") + b"\n")

    async def close_stdin(self) -> None:
        if self.proc.stdin is not None:
            await self.proc.stdin.aclose()


@attrs.define(eq=False)
class M42Runner:
    """Starts ``m42`` subprocesses, one home (``XDG_DATA_HOME`` and cwd) per user name."""

    nursery: trio.Nursery
    base: Path
    started: list[M42Process] = attrs.field(factory=list)

    def home(self, user: str) -> Path:
        path = self.base / user
        path.mkdir(parents=True, exist_ok=True)
        return path

    async def start(
        self, user: str, *argv: str, link: str | None = None, stdin: bool = False
    ) -> M42Process:
        """Start ``m42 ARGV`` as ``user``; the link goes in ``$M42_LINK``."""
        home = self.home(user)
        env = _clean_env(XDG_DATA_HOME=str(home / "data"))
        if link is not None:
            env["M42_LINK"] = link
        proc = await trio.lowlevel.open_process(
            [*M42_COMMAND, *argv],
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=home,
        )
        assert proc.stdout is not None
        assert proc.stderr is not None
        run = M42Process(user, tuple(argv), proc, home, OutputLines(), OutputLines())
        self.nursery.start_soon(run.stdout.pump, proc.stdout)
        self.nursery.start_soon(run.stderr.pump, proc.stderr)
        self.started.append(run)
        return run

    async def run(
        self, user: str, *argv: str, link: str | None = None, limit: float = STEP
    ) -> M42Process:
        """Run ``m42 ARGV`` to its end."""
        run = await self.start(user, *argv, link=link)
        await run.wait(limit)
        return run

    async def new_room(self, relay_url: str, *extra: str) -> tuple[str, str]:
        """``m42 new --relay URL --json``: (Link A, Link B)."""
        run = await self.run("creator", "--debug", "new", "--relay", relay_url, "--json", *extra)
        assert run.proc.returncode == 0, run.describe()
        doc = json.loads(run.stdout.lines[0])
        assert set(doc) == {"link_a", "link_b", "expires"}
        return doc["link_a"], doc["link_b"]

    async def aclose(self) -> None:
        for run in self.started:
            if run.proc.returncode is None:
                run.proc.kill()
            with trio.move_on_after(STEP):
                await run.proc.wait()
            if run.proc.stdin is not None:
                await run.proc.stdin.aclose()


@asynccontextmanager
async def m42_runner(base: Path) -> AsyncIterator[M42Runner]:
    async with trio.open_nursery() as nursery:
        runner = M42Runner(nursery, base)
        try:
            yield runner
        finally:
            with trio.CancelScope(shield=True):
                await runner.aclose()
            nursery.cancel_scope.cancel()
