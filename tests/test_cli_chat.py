"""``m42 chat`` driven through a scripted stdin against an engine peer."""

from __future__ import annotations

import queue
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
import trio.lowlevel

from m42d.cli import main
from m42d.client import events as ev
from tests.client_harness import Recorder, RelayUnderTest, running_relay


class ScriptedStdin:
    """A stdin whose lines the test supplies one at a time ("" is end of input)."""

    def __init__(self) -> None:
        self.lines: queue.Queue[str] = queue.Queue()

    def readline(self) -> str:
        return self.lines.get(timeout=30)

    def feed(self, line: str) -> None:
        self.lines.put(line + "\n")


class WatchedStdout:
    """A stdout the test can wait on: "has the chat printed X yet?"."""

    def __init__(self) -> None:
        self.text = ""
        self._cond = threading.Condition()

    def write(self, data: str) -> int:
        with self._cond:
            self.text += data
            self._cond.notify_all()
        return len(data)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False

    async def wait_for(self, needle: str) -> None:
        def wait() -> bool:
            with self._cond:
                return self._cond.wait_for(lambda: needle in self.text, timeout=20)

        assert await trio.to_thread.run_sync(wait), f"chat never printed {needle!r}"


@pytest.fixture
async def ws_relay() -> AsyncIterator[RelayUnderTest]:
    async with running_relay("ws") as relay:
        yield relay


async def test_chat_session(
    ws_relay: RelayUnderTest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    link_a, link_b = ws_relay.links()
    stdin = ScriptedStdin()
    monkeypatch.setattr("sys.stdin", stdin)
    stdout = WatchedStdout()
    monkeypatch.setattr("sys.stdout", stdout)
    monkeypatch.setenv("M42_LINK", link_a.format())
    (tmp_path / "doc.txt").write_bytes(b"file body")
    down_b = tmp_path / "b"
    down_b.mkdir()
    down_a = tmp_path / "a"
    (tmp_path / "offer.txt").write_bytes(b"from b")
    result: list[int] = []
    finished = trio.Event()

    async def chat() -> None:
        argv = ["chat", "--keys-dir", str(tmp_path / "ka"), "--out", str(down_a)]
        with trio.fail_after(30):
            result.append(await trio.to_thread.run_sync(main, argv))
        finished.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(chat)
        b = Recorder(ws_relay.client(link_b, tmp_path, download_dir=down_b, accept="all"))
        nursery.start_soon(b.run)
        await nursery.start(b.client.run)
        await b.wait_for(lambda r: r.client.established)
        stdin.feed("hello b")
        stdin.feed("//slash text")
        await b.wait_for(lambda r: len(r.of(ev.TextIn)) == 2)
        assert [t.text for t in b.of(ev.TextIn)] == ["hello b", "/slash text"]
        b.client.send_text("evil \x1b[2J\nsecond line")
        stdin.feed("/verify")
        stdin.feed("/nonsense")
        stdin.feed("/help")
        stdin.feed(f"/send {tmp_path / 'doc.txt'}")
        stdin.feed("/send /does/not/exist")
        await b.wait_for(lambda r: r.of(ev.FileDone))
        assert (down_b / "doc.txt").read_bytes() == b"file body"
        await b.client.send_file(tmp_path / "offer.txt")
        await stdout.wait_for("accept? (y/n)")
        stdin.feed("y")
        await b.wait_for(lambda r: any(d.outgoing for d in r.of(ev.FileDone)))
        stdin.feed("/trust")
        await stdout.wait_for("no changed peer key")
        stdin.feed("/quit")
        with trio.fail_after(20):
            await finished.wait()
        b.client.close()
    assert result == [0]
    out = stdout.text
    assert "peer online" in out
    assert "secure session; safety words:" in out
    assert "you: hello b" in out
    assert "delivered #1" in out
    assert "peer: evil \\x1b[2J\n           | second line" in out
    assert "\x1b" not in out
    assert "safety words: " in out
    assert "unknown command /nonsense" in out
    assert "/send PATH" in out
    assert "doc.txt delivered" in out
    assert "usage: /send PATH" in out
    assert "peer offers offer.txt" in out
    assert (down_a / "offer.txt").read_bytes() == b"from b"
    assert "no changed peer key" in out
