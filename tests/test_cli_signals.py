"""``m42 recv`` and ``m42 chat`` as processes, stopped by a signal in the middle of a transfer.

The relay runs in the test's process (loopback, port 0); the sender is an
engine there too, whose file stalls after its first megabyte so that the
receiver is still writing the partial file when the signal comes.  Every
exit path (Ctrl-C, ``kill``, a closed terminal) must leave like the
command's own end: acknowledgements owed go out, partial files it owns are
removed, and the exit code says which signal it was.  A SIGKILL leaves a
partial behind that nobody could remove: the next run of the seat does.
"""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

import attrs
import pytest
import trio

from m42d.client import events as ev
from m42d.crypto.stream import CHUNK_SIZE
from m42d.session import FILE_ACK_EVERY
from m42d.transport import FrameConnection, Transport
from m42d.wire import Bulk, Frame
from tests.client_harness import Recorder, RelayUnderTest, running_relay
from tests.e2e_harness import M42Process, M42Runner, m42_runner

STEP: Final = 30.0
PASSED_CHUNKS: Final = FILE_ACK_EVERY  # the receiver reports progress after these


@attrs.define(eq=False)
class StallingTransport:
    """The sender's transport: after ``PASSED_CHUNKS`` file chunks, its writes stop for good."""

    inner: Transport
    chunks: int = 0

    async def open_listener(self, url: str, **kwargs: Any) -> Any:  # pragma: no cover
        return await self.inner.open_listener(url, **kwargs)

    @asynccontextmanager
    async def connect(self, url: str, **kwargs: Any) -> AsyncIterator[FrameConnection]:
        async with self.inner.connect(url, **kwargs) as conn:
            yield _Stalling(conn, self)


@attrs.define(eq=False)
class _Stalling:
    conn: FrameConnection
    owner: StallingTransport

    @property
    def transport(self) -> str:
        return self.conn.transport

    @property
    def address(self) -> str:
        return self.conn.address

    async def send(self, frame: Frame) -> None:
        if isinstance(frame, Bulk):
            self.owner.chunks += 1
            if self.owner.chunks > PASSED_CHUNKS:
                await trio.sleep_forever()
        await self.conn.send(frame)

    async def send_many(self, frames: Sequence[Frame]) -> None:
        await self.conn.send_many(frames)

    async def receive(self) -> Frame:
        return await self.conn.receive()

    async def aclose(self) -> None:
        await self.conn.aclose()


@attrs.define
class Scene:
    relay: RelayUnderTest
    runner: M42Runner
    sender: Recorder
    link_b: str
    down: Path

    def partials(self) -> list[str]:
        return sorted(p.name for p in self.down.iterdir() if p.name.endswith(".m42part"))


@asynccontextmanager
async def scene(tmp_path: Path) -> AsyncIterator[Scene]:
    down = tmp_path / "down"
    down.mkdir()
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(4 * PASSED_CHUNKS * CHUNK_SIZE))
    async with running_relay("ws") as relay, m42_runner(tmp_path / "users") as runner:
        link_a, link_b = relay.links()
        stalling = StallingTransport(relay.tracker.inner)
        sender = Recorder(relay.client(link_a, tmp_path, transports={"ws": stalling}))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender.run)
            await nursery.start(sender.client.run)
            sender.client.send_text("a text before the file")
            await sender.client.send_file(src)
            yield Scene(relay, runner, sender, link_b.format(), down)
            nursery.cancel_scope.cancel()


async def start_receiving(s: Scene, command: str) -> M42Process:
    """``m42 recv`` or ``m42 chat`` as seat B, once it has the first megabyte on disk."""
    if command == "recv":
        proc = await s.runner.start("bob", "recv", "--jsonl", "--out", str(s.down), link=s.link_b)
        await proc.wait_event(lambda e: e["event"] == "file_progress", STEP)
    else:
        proc = await s.runner.start(
            "bob", "chat", "--accept", "--out", str(s.down), link=s.link_b, stdin=True
        )
        await proc.wait_line(lambda line: "receiving big.bin" in line, STEP)
    assert len(s.partials()) == 1, proc.describe()
    await s.sender.wait_for(lambda r: r.of(ev.Delivered), STEP)  # the text's ack came
    return proc


@pytest.mark.parametrize(
    ("command", "sig", "code"),
    [
        ("recv", signal.SIGTERM, 128 + signal.SIGTERM),
        ("recv", signal.SIGHUP, 128 + signal.SIGHUP),
        ("recv", signal.SIGINT, 130),
        ("chat", signal.SIGTERM, 128 + signal.SIGTERM),
        ("chat", signal.SIGHUP, 128 + signal.SIGHUP),
    ],
    ids=["recv-TERM", "recv-HUP", "recv-INT", "chat-TERM", "chat-HUP"],
)
async def test_a_signal_leaves_cleanly_mid_transfer(
    tmp_path: Path, command: str, sig: signal.Signals, code: int
) -> None:
    async with scene(tmp_path) as s:
        proc = await start_receiving(s, command)
        proc.proc.send_signal(sig)
        await proc.expect_exit(code, limit=STEP)
        assert s.partials() == [], proc.describe()
        assert "Traceback" not in proc.stderr.text, proc.describe()
        # The sender hears the receiver go (no error); the file simply waits for it.
        await s.sender.wait_for(lambda r: r.of(ev.PeerOffline), STEP)
        assert not s.sender.of(ev.TransferFailed)


async def test_a_killed_run_leaves_a_partial_that_the_next_run_removes(tmp_path: Path) -> None:
    async with scene(tmp_path) as s:
        proc = await start_receiving(s, "recv")
        [left] = s.partials()
        proc.proc.kill()  # SIGKILL: no handler runs, nothing is cleaned up
        await proc.wait(STEP)
        assert s.partials() == [left]
        other = s.down / ".someone-elses.txt.m42part"
        other.write_text("not ours: never touched")
        again = await s.runner.start(
            "bob", "recv", "--out", str(s.down), "--timeout", "2", link=s.link_b
        )
        await again.expect_exit(0, limit=STEP)
        assert s.partials() == [".someone-elses.txt.m42part"], again.describe()
        assert other.read_text() == "not ours: never touched"
