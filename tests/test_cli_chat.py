"""``m42 chat``: through ``main()`` on a scripted stdin, and its screen driven directly.

The direct tests feed :class:`~m42d.cli.chat.ChatScreen` typed lines and
engine events and read the lines it writes: a recording engine for the
command table, real engines on an in-process relay for the whole path.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import attrs
import pytest
import trio
import trio.lowlevel
import trio.testing

from m42d.cli import EXIT_ERROR, EXIT_OK, EXIT_REFUSED, EXIT_USAGE, main
from m42d.cli.chat import CHAT_CONTINUATION, CHAT_HELP, COMMANDS, ChatScreen, run_chat
from m42d.cli.output import progress_line
from m42d.cli.running import with_client
from m42d.client import events as ev
from m42d.client import outgoing
from m42d.client.engine import Client
from m42d.errors import M42Error
from m42d.link import make_links
from m42d.session import FileCode
from m42d.ticket import Seat, TicketKeyRing
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
        await b.wait_for(lambda r: r.of(ev.TransferDone))
        assert (down_b / "doc.txt").read_bytes() == b"file body"
        await b.client.send_file(tmp_path / "offer.txt")
        await stdout.wait_for("accept? (y/n)")
        stdin.feed("y")
        await b.wait_for(lambda r: any(d.outgoing for d in r.of(ev.TransferDone)))
        stdin.feed("/trust")
        await stdout.wait_for("no changed key waits to be trusted")
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
    assert "cannot send /does/not/exist: no such file" in out
    assert "peer offers offer.txt" in out
    assert (down_a / "offer.txt").read_bytes() == b"from b"
    assert "no changed key waits to be trusted" in out


# -- the chat screen, driven directly (no terminal, no thread, no main()) ---------------------

T = "12:00:00"


@attrs.define
class Lines:
    """A ChatOutput that keeps every line, and lets a test wait for one."""

    lines: list[str] = attrs.field(factory=list)
    in_place: bool = False
    """Whether it redraws transfers in place (a terminal with a line editor) or not (a pipe)."""
    live: list[tuple[str, ...]] = attrs.field(factory=list)
    _changed: trio.Event = attrs.field(factory=trio.Event)

    def show(self, line: str) -> None:
        self.lines.append(line)
        self._changed.set()
        self._changed = trio.Event()

    def show_in_place(self, lines: Sequence[str]) -> bool:
        if self.in_place:
            self.live.append(tuple(lines))
        return self.in_place

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def take(self) -> list[str]:
        taken, self.lines = self.lines, []
        return taken

    async def wait_for(self, needle: str, limit: float = 20.0) -> None:
        with trio.fail_after(limit):
            while needle not in self.text:
                await self._changed.wait()


@attrs.define
class FakeEngine:
    """A ChatEngine that records what the screen asked of it."""

    words: tuple[str, ...] = ()
    calls: list[tuple[object, ...]] = attrs.field(factory=list)
    trust_error: M42Error | None = None
    send_error: OSError | None = None
    next_id: int = 0

    compared: float | None = None

    @property
    def safety_words(self) -> tuple[str, ...]:
        return self.words

    @property
    def compared_at(self) -> float | None:
        return self.compared

    def mark_compared(self, when: float) -> None:
        self.calls.append(("compared",))
        self.compared = when

    def send_text(self, text: str) -> int:
        self.calls.append(("text", text))
        return len([c for c in self.calls if c[0] == "text"])

    async def send_file(self, path: Path, name: str | None = None) -> int:
        if self.send_error is not None:
            raise self.send_error
        self.next_id += 1
        self.calls.append(("send_file", path, self.next_id))
        return self.next_id

    def outgoing_size(self, file_id: int) -> int:
        return 2048

    def accept_file(self, file_id: int) -> Path:
        self.calls.append(("accept", file_id))
        return Path("partial")

    def reject_file(
        self, file_id: int, reason: str = "declined", code: FileCode = FileCode.DECLINED
    ) -> None:
        self.calls.append(("reject", file_id, reason, code))

    def cancel_file(self, file_id: int) -> None:
        self.calls.append(("cancel", file_id))

    def trust(self) -> None:
        if self.trust_error is not None:
            raise self.trust_error
        self.calls.append(("trust",))

    def burn(self) -> None:
        self.calls.append(("burn",))


def screen_on(engine: FakeEngine | Client) -> tuple[ChatScreen, Lines]:
    out = Lines()
    return ChatScreen(engine, out, clock=lambda: T), out


async def test_lines_become_texts_and_unknown_commands_are_not_sent() -> None:
    engine = FakeEngine()
    screen, out = screen_on(engine)
    assert not await screen.enter("hello")
    assert not await screen.enter("//not a command")
    assert not await screen.enter("   ")
    assert not await screen.enter("/nonsense \x1b[2J")
    assert not await screen.enter("no")  # no offer waits: an ordinary word
    assert engine.calls == [("text", "hello"), ("text", "/not a command"), ("text", "no")]
    assert out.take() == [
        f"[{T}] you: hello  (sent #1)",
        f"[{T}] you: /not a command  (sent #2)",
        "! unknown command /nonsense; /help lists them",
        f"[{T}] you: no  (sent #3)",
    ]
    assert not screen.show(ev.Delivered(2))
    assert out.take() == [f"[{T}] \u2713 delivered #2: /not a command"]


@pytest.mark.parametrize("letter", ["y", "N"])
async def test_a_lone_y_or_n_without_an_offer_is_not_sent(letter: str) -> None:
    engine = FakeEngine()
    screen, out = screen_on(engine)
    assert not await screen.enter(f" {letter} ")
    assert engine.calls == []
    assert out.take() == [
        f"! '{letter.lower()}' was not sent: no file offer or question waits for an answer"
    ]


@pytest.mark.parametrize("answer", ["n", "", "burn it", "/verify"])
async def test_burn_asks_first_and_anything_but_yes_keeps_the_room(answer: str) -> None:
    engine = FakeEngine()
    screen, out = screen_on(engine)
    await screen.enter("/burn")
    assert out.take()[0].startswith("? burn the room?")
    await screen.enter(answer)
    if answer:
        await screen.enter("y")  # the question is gone: a stray letter now
    assert ("burn",) not in engine.calls
    shown = out.take()
    if answer:
        assert shown[0] == "* the room was not burned"
        assert shown[-1].startswith("! 'y' was not sent")
    if answer == "burn it":
        assert engine.calls == [("text", "burn it")]  # a text is sent, not swallowed
    await screen.enter("/burn")
    await screen.enter("YES")
    assert engine.calls[-1] == ("burn",)


async def test_quit_with_undelivered_messages_says_how_many_and_asks(tmp_path: Path) -> None:
    engine = FakeEngine()
    screen, out = screen_on(engine)
    for text in ("one", "two", "three"):
        await screen.enter(text)
    (tmp_path / "f.bin").write_bytes(b"x")
    await screen.enter(f"/send {tmp_path / 'f.bin'}")
    screen.show(ev.Delivered(1))
    out.take()
    assert not await screen.enter("/quit")
    assert out.take() == [
        "? 2 messages and 1 file not delivered yet (the other person has not got them): "
        "leave anyway? (y/n)"
    ]
    assert not await screen.enter("n")
    assert out.take() == ["* staying"]
    assert not screen.leaving
    screen.show(ev.Delivered(2))
    screen.show(ev.TransferDone(1, True, "f.bin", 1, None))
    await screen.enter("/quit")
    assert out.take()[-1].startswith("? 1 message not delivered yet")
    assert await screen.enter("y")
    assert screen.leaving
    screen, out = screen_on(FakeEngine())
    assert await screen.enter("/quit")  # nothing owed: no question


def test_help_is_two_straight_columns() -> None:
    """A summary longer than a fixed width used to push its neighbour out of
    its column ("/compared ... the words /accept")."""
    rows = CHAT_HELP.splitlines()[1:-1]
    right = [COMMANDS[2 * at + 1].name for at in range(len(COMMANDS) // 2)]
    starts = {row.index(" " + name) for row, name in zip(rows, right, strict=False)}
    assert len(starts) == 1, CHAT_HELP
    assert all(len(row) <= 80 for row in rows), CHAT_HELP


async def test_help_lists_every_command_of_the_table() -> None:
    screen, out = screen_on(FakeEngine())
    await screen.enter("/help")
    assert out.take() == [CHAT_HELP]
    for command in COMMANDS:
        assert f"  {command.name}" in CHAT_HELP or f" {command.name} " in CHAT_HELP
    assert [c.name for c in COMMANDS] == [
        "/send", "/verify", "/compared", "/accept", "/reject", "/cancel", "/trust", "/burn",
        "/quit", "/help",
    ]  # fmt: skip


async def test_the_chat_says_when_the_words_were_last_compared() -> None:
    engine = FakeEngine(words=("w1", "w2", "w3", "w4", "w5", "w6", "w7", "w8"))
    screen, out = screen_on(engine)
    screen.show(ev.SafetyWords(engine.words, first_contact=True))
    assert "then type /compared" in out.lines[-1]
    screen.show(ev.SafetyWords(engine.words, first_contact=False))
    assert out.lines[-1].endswith(
        "(not compared yet: read them to each other by voice, then type /compared)"
    )
    await screen.enter("/compared")
    assert engine.calls[-1] == ("compared",)
    assert out.lines[-1] == "* noted: you compared the safety words just now"
    engine.compared = time.time() - 3 * 86400 - 5
    screen.show(ev.SafetyWords(engine.words, first_contact=False))
    assert out.lines[-1].endswith("(you compared them 3 days ago)")
    await screen.enter("/verify")
    assert out.lines[-1] == "safety words: w1 w2 w3 w4 w5 w6 w7 w8 (you compared them 3 days ago)"


async def test_compared_before_any_words_is_refused_in_words() -> None:
    engine = FakeEngine()
    screen, out = screen_on(engine)
    await screen.enter("/compared")
    assert out.lines[-1] == "! no safety words yet: wait for the other person"
    assert ("compared",) not in engine.calls


async def test_offers_are_answered_oldest_first_in_any_case() -> None:
    engine = FakeEngine()
    screen, out = screen_on(engine)
    screen.show(ev.FileOffer(7, "a.txt", 10))
    screen.show(ev.FileOffer(8, "b\x1b[2J.txt", 4096))
    assert out.take() == [
        f"[{T}] * peer offers a.txt (10 B); accept? (y/n)",
        f"[{T}] * peer offers b\\x1b[2J.txt (4.0 KiB); accept? (y/n)",
    ]
    await screen.enter("YES")
    await screen.enter("/reject")
    assert engine.calls == [("accept", 7), ("reject", 8, "declined", FileCode.DECLINED)]
    assert out.take() == [f"[{T}] * receiving a.txt", f"[{T}] * declined b\\x1b[2J.txt"]
    await screen.enter("/accept")
    await screen.enter("/reject")
    assert out.take() == ["! no file offer to accept", "! no file offer to refuse"]
    assert len(engine.calls) == 2


async def test_an_offer_taken_by_accept_all_is_said_and_not_asked() -> None:
    engine = FakeEngine()
    screen, out = screen_on(engine)
    screen.show(ev.FileOffer(9, "auto.bin", 10, accepted=True))
    await screen.enter("y")
    assert engine.calls == []
    assert out.take() == [
        f"[{T}] * receiving auto.bin (10 B)",
        "! 'y' was not sent: no file offer or question waits for an answer",
    ]
    await screen.enter("/cancel")  # it is a transfer in flight
    assert engine.calls == [("reject", 9, "cancelled by the receiver", FileCode.CANCELLED)]


async def test_send_checks_the_path_and_reports_what_fails(tmp_path: Path) -> None:
    engine = FakeEngine()
    screen, out = screen_on(engine)
    (tmp_path / "doc.txt").write_bytes(b"x")
    await screen.enter("/send")
    await screen.enter(f"/send {tmp_path / 'missing'}")
    await screen.enter(f"/send {tmp_path}")
    await screen.enter(f"/send {tmp_path / 'bad'}\x1b[2J")
    assert out.take() == [
        "! usage: /send PATH (the file to offer)",
        f"! cannot send {tmp_path / 'missing'}: no such file",
        f"! cannot send {tmp_path}: it is a directory (send the files in it one by one)",
        f"! cannot send {tmp_path / 'bad'}\\x1b[2J: no such file",
    ]
    await screen.enter(f"/send   {tmp_path / 'doc.txt'}  ")
    assert engine.calls == [("send_file", tmp_path / "doc.txt", 1)]
    assert out.take() == [f"[{T}] * offering doc.txt (2.0 KiB)"]
    engine.send_error = PermissionError(13, "Permission denied")
    await screen.enter(f"/send {tmp_path / 'doc.txt'}")
    assert out.take() == [f"! cannot send {tmp_path / 'doc.txt'}: Permission denied"]


def test_send_names_the_file_it_cannot_send(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    issued = TicketKeyRing.generate().mint(now=int(time.time()), ttl=3600)
    link = make_links("ws://127.0.0.1:9", issued, os.urandom(32))[0]  # nobody listens there
    missing = tmp_path / "missing.txt"
    argv = ["send", "--keys-dir", str(tmp_path), link.format(), "--file", str(missing)]
    assert main(argv) == EXIT_USAGE
    assert f"cannot send {missing}: no such file" in capsys.readouterr().err


async def test_cancel_stops_every_transfer_in_both_directions(tmp_path: Path) -> None:
    engine = FakeEngine()
    screen, out = screen_on(engine)
    await screen.enter("/cancel")
    assert out.take() == ["! no transfer to cancel"]
    (tmp_path / "out.bin").write_bytes(b"x")
    await screen.enter(f"/send {tmp_path / 'out.bin'}")
    screen.show(ev.FileOffer(20, "in.bin", 10))
    await screen.enter("y")
    out.take()
    engine.calls.clear()
    await screen.enter("/cancel")
    assert engine.calls == [
        ("cancel", 1),
        ("reject", 20, "cancelled by the receiver", FileCode.CANCELLED),
    ]
    assert out.take() == [f"[{T}] * cancelled out.bin", f"[{T}] * cancelled in.bin"]
    await screen.enter("/cancel")
    assert out.take() == ["! no transfer to cancel"]


async def test_a_finished_transfer_is_not_cancelled_again() -> None:
    engine = FakeEngine()
    screen, out = screen_on(engine)
    screen.show(ev.FileOffer(3, "in.bin", 10))
    await screen.enter("y")
    screen.show(ev.TransferDone(3, False, "in.bin", 10, "/down/in.bin"))
    assert out.take()[-1] == f"[{T}] * saved /down/in.bin"
    await screen.enter("/cancel")
    assert out.take() == ["! no transfer to cancel"]


async def test_verify_trust_burn_and_quit() -> None:
    engine = FakeEngine()
    screen, out = screen_on(engine)
    await screen.enter("/verify")
    engine.words = ("alpha", "bravo", "charlie")
    await screen.enter("/verify")
    engine.trust_error = M42Error("no changed peer key to trust \x07")
    await screen.enter("/trust")
    engine.trust_error = None
    await screen.enter("/trust")
    await screen.enter("/burn")
    await screen.enter("y")
    assert out.take() == [
        "no secure session yet",
        "safety words: alpha bravo charlie (not compared yet: read them to each other by voice, "
        "then type /compared)",
        "! no changed peer key to trust \\x07",
        "* trusting the new key; reconnecting the session",
        "? burn the room? It ends for both of you and both links stop working, for good. (y/n)",
        "* burning the room",
    ]
    assert engine.calls == [("trust",), ("burn",)]
    assert not screen.leaving
    assert await screen.enter("/quit")
    assert screen.leaving
    assert screen.exit_code == EXIT_OK


async def test_events_from_the_peer_and_the_relay_are_escaped() -> None:
    screen, out = screen_on(FakeEngine())
    screen.show(ev.TextIn(1, "evil \x1b[2J\n[12:00:00] * saved /etc/passwd"))
    screen.show(ev.Reconnecting(0.5, "relay said \x1b[31mno"))
    screen.show(ev.Reconnecting(1.0, "again"))
    screen.show(ev.Connected("ws://relay"))
    screen.show(ev.TransferFailed(4, True, "x\x1b.bin", 7, "peer says \x1b[2J"))
    screen.show(ev.Problem("odd \x1b frame"))
    assert out.take() == [
        f"[{T}] peer: evil \\x1b[2J\n{CHAT_CONTINUATION}[12:00:00] * saved /etc/passwd",
        f"[{T}] * can't reach the relay: relay said \\x1b[31mno (retrying in 0.5 s)",
        f"[{T}] * still no relay: again (retrying in 1.0 s)",
        f"[{T}] * connected to the relay",
        f"[{T}] * waiting for the other person to open their link",
        f"[{T}] ! sending x\\x1b.bin failed: peer says \\x1b[2J",
        f"[{T}] ! odd \\x1b frame",
    ]
    assert "\x1b" not in out.text


async def test_the_relay_and_the_wait_for_the_other_person_are_said_once_each() -> None:
    """A chat whose peer has not come yet used to show only its greeting,
    which looks like a hang; a relay never reached was "lost"."""
    screen, out = screen_on(FakeEngine())
    screen.greet(Seat.A)
    out.take()
    screen.show(ev.Connected("ws://relay"))
    screen.show(ev.Reconnecting(0.5, "the connection to the relay broke"))
    screen.show(ev.Connected("ws://relay", peer_online=True))
    screen.show(ev.Reconnecting(0.5, "broke"))
    screen.show(ev.Connected("ws://relay"))
    assert out.take() == [
        f"[{T}] * waiting for the other person to open Link B",
        f"[{T}] * lost the relay: the connection to the relay broke (retrying in 0.5 s)",
        f"[{T}] * connected to the relay again",
        f"[{T}] * lost the relay: broke (retrying in 0.5 s)",
        f"[{T}] * connected to the relay again",
    ]
    screen, out = screen_on(FakeEngine())
    screen.show(ev.Connected("ws://relay", peer_online=True))
    assert out.take() == []  # a PeerOnline follows: nothing to wait for


async def test_peer_offline_is_shown_unless_we_are_leaving() -> None:
    screen, out = screen_on(FakeEngine())
    screen.show(ev.PeerOnline())
    screen.show(ev.PeerOffline())
    screen.leave()
    screen.show(ev.PeerOffline())
    assert out.take() == [f"[{T}] * peer online", f"[{T}] * peer offline"]


@pytest.mark.parametrize(("code", "exit_code"), [(411, EXIT_REFUSED), (None, EXIT_ERROR)])
async def test_a_fatal_problem_ends_the_chat(code: int | None, exit_code: int) -> None:
    screen, out = screen_on(FakeEngine())
    assert not screen.show(ev.Problem("passing trouble"))
    assert screen.exit_code == EXIT_OK
    assert screen.show(ev.Problem("the room was burned", fatal=True, code=code))
    assert screen.exit_code == exit_code
    assert screen.leaving
    assert out.take()[-1] == f"[{T}] ! the room was burned"


async def test_progress_shows_a_line_a_second_and_always_the_last(
    autojump_clock: trio.testing.MockClock,
) -> None:
    screen, out = screen_on(FakeEngine())
    for done in (0, 10, 20):
        screen.show(ev.Progress(5, False, "big.bin", done, 100, 10.0, 8.0))
    await trio.sleep(1.0)
    screen.show(ev.Progress(5, False, "big.bin", 30, 100, 10.0, 7.0))
    screen.show(ev.Progress(5, False, "big.bin", 100, 100, 10.0, 0.0))
    shown = [line.split("(")[1].split(")")[0] for line in out.take()]
    assert shown == ["0%", "30%", "100%"]
    await screen.enter("/cancel")  # a transfer seen only through its progress counts too
    assert out.take() == [f"[{T}] * cancelled big.bin"]


async def test_progress_is_redrawn_in_place_where_the_output_can() -> None:
    out = Lines(in_place=True)
    screen = ChatScreen(FakeEngine(), out, clock=lambda: T)
    for done in (0, 10, 20, 30):
        screen.show(ev.Progress(5, False, "big.bin", done, 100, 10.0, 8.0))
    screen.show(ev.Progress(6, True, "out.bin", 1, 2, 10.0, 8.0))
    assert out.lines == []  # nothing scrolled: each update replaced the one before
    assert len(out.live) == 5
    assert out.live[3] == (progress_line(ev.Progress(5, False, "big.bin", 30, 100, 10.0, 8.0)),)
    assert [line.split(" ")[1] for line in out.live[-1]] == ["big.bin:", "out.bin:"]
    screen.show(ev.Progress(5, False, "big.bin", 100, 100, 10.0, 0.0))
    assert out.take() == [f"[{T}] receiving big.bin: 100 B of 100 B (100%) at 10 B/s"]
    assert [line.split(" ")[1] for line in out.live[-1]] == ["out.bin:"]
    screen.show(ev.TransferFailed(6, True, "out.bin", 1, "peer cancelled"))
    assert out.live[-1] == ()  # the bar goes once nothing is in flight
    screen.show(ev.Progress(7, True, "third.bin", 1, 4, 10.0, 8.0))
    await screen.enter("/cancel")
    assert out.live[-1] == ()
    assert out.take()[-1] == f"[{T}] * cancelled third.bin"


async def test_screen_on_real_engines_sends_and_accepts_files(
    ws_relay: RelayUnderTest, tmp_path: Path
) -> None:
    """The screen drives a real engine; its caller feeds it the engine's events."""
    link_a, link_b = ws_relay.links()
    down_a, down_b = tmp_path / "a", tmp_path / "b"
    down_a.mkdir()
    down_b.mkdir()
    (tmp_path / "doc.txt").write_bytes(b"file body")
    (tmp_path / "offer.txt").write_bytes(b"from b")
    a = ws_relay.client(link_a, tmp_path, download_dir=down_a)
    screen, out = screen_on(a)

    async def feed() -> None:
        async for event in a.events:
            screen.show(event)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(feed)
        await nursery.start(a.run)
        b = Recorder(ws_relay.client(link_b, tmp_path, download_dir=down_b, accept="all"))
        nursery.start_soon(b.run)
        await nursery.start(b.client.run)
        await out.wait_for("secure session; safety words:")
        await screen.enter("hello b")
        await out.wait_for("delivered #1: hello b")
        await screen.enter(f"/send {tmp_path / 'doc.txt'}")
        await out.wait_for("\u2713 doc.txt delivered")
        assert (down_b / "doc.txt").read_bytes() == b"file body"
        await b.client.send_file(tmp_path / "offer.txt")
        await out.wait_for("accept? (y/n)")
        await screen.enter("y")
        await out.wait_for("* saved ")
        assert (down_a / "offer.txt").read_bytes() == b"from b"
        await screen.enter("/trust")
        await out.wait_for("no changed key waits to be trusted")
        await b.wait_for(lambda r: [t.text for t in r.of(ev.TextIn)] == ["hello b"])
        nursery.cancel_scope.cancel()


@attrs.define
class QueuedInput:
    """A ChatInput fed by the test; closing it is the end of input."""

    send: trio.MemorySendChannel[str]
    receive: trio.MemoryReceiveChannel[str]

    @classmethod
    def make(cls) -> QueuedInput:
        send, receive = trio.open_memory_channel[str](16)
        return cls(send, receive)

    async def read_line(self) -> str | None:
        try:
            return await self.receive.receive()
        except trio.EndOfChannel:
            return None


@pytest.mark.parametrize("ending", ["/quit", "end of input"])
async def test_run_chat_leaves_on_quit_or_end_of_input(
    ws_relay: RelayUnderTest, tmp_path: Path, ending: str
) -> None:
    """run_chat feeds the screen from an input and from the engine until the user leaves."""
    link_a, link_b = ws_relay.links()
    a = ws_relay.client(link_a, tmp_path)
    screen, out = screen_on(a)
    lines = QueuedInput.make()
    result: list[int] = []
    finished = trio.Event()

    async def body(client: Client) -> int:
        return await run_chat(client, screen, lines, seat=link_a.seat)

    async def chat() -> None:
        result.append(await with_client(a, body))
        finished.set()

    async with trio.open_nursery() as nursery:
        b = Recorder(ws_relay.client(link_b, tmp_path))
        nursery.start_soon(b.run)
        await nursery.start(b.client.run)
        nursery.start_soon(chat)
        await out.wait_for("secure session")
        b.client.send_text("from b")
        await out.wait_for("peer: from b")
        await lines.send.send("bye b")
        if ending == "/quit":
            await lines.send.send("/quit")
            await lines.send.send("y")  # "bye b" may be owed still: leave anyway
        else:
            await lines.send.aclose()
        with trio.fail_after(20):
            await finished.wait()
        await b.wait_for(lambda r: [t.text for t in r.of(ev.TextIn)] == ["bye b"])
        await b.wait_for(lambda r: r.of(ev.PeerOffline))
        nursery.cancel_scope.cancel()
    assert result == [EXIT_OK]
    assert out.lines[0] == (
        "m42 chat: you hold Link A, the other person Link B.  /help for commands."
    )
    assert "you: bye b  (sent #1)" in out.text
    # Our own leaving ends the connection, which the engine reports as the
    # peer going away: the screen knows it is leaving and does not say so.
    assert "peer offline" not in out.text


async def _two_screens(
    ws_relay: RelayUnderTest, tmp_path: Path, nursery: trio.Nursery
) -> tuple[ChatScreen, Lines, ChatScreen, Lines]:
    """Both seats in chat on real engines, once the secure session stands."""
    link_a, link_b = ws_relay.links()
    screens = []
    for link in (link_a, link_b):
        down = tmp_path / f"down-{link.seat.value}"
        down.mkdir()
        client = ws_relay.client(link, tmp_path, download_dir=down)
        screen, out = screen_on(client)

        async def feed(client: Client = client, screen: ChatScreen = screen) -> None:
            async for event in client.events:
                screen.show(event)

        nursery.start_soon(feed)
        await nursery.start(client.run)
        screens.append((screen, out))
    (sa, out_a), (sb, out_b) = screens
    await out_a.wait_for("secure session")
    await out_b.wait_for("secure session")
    out_a.take()
    out_b.take()
    return sa, out_a, sb, out_b


async def _settled(screen: ChatScreen, out: Lines, peer_out: Lines, text: str) -> None:
    """A text there and back: whatever either engine reported before it has been shown."""
    await screen.enter(text)
    await peer_out.wait_for(f"peer: {text}")
    await out.wait_for("delivered #")


async def test_a_declined_file_is_said_once_on_each_side(
    ws_relay: RelayUnderTest, tmp_path: Path
) -> None:
    (tmp_path / "doc.txt").write_bytes(b"x" * 1000)
    async with trio.open_nursery() as nursery:
        sa, out_a, sb, out_b = await _two_screens(ws_relay, tmp_path, nursery)
        await sa.enter(f"/send {tmp_path / 'doc.txt'}")
        await out_b.wait_for("accept? (y/n)")
        await sb.enter("n")
        await _settled(sa, out_a, out_b, "after")
        await _settled(sb, out_b, out_a, "back")
        nursery.cancel_scope.cancel()
    about_a = [line for line in out_a.lines if "doc.txt" in line]
    about_b = [line for line in out_b.lines if "doc.txt" in line]
    assert about_a == [
        f"[{T}] * offering doc.txt (1000 B)",
        f"[{T}] * the other person declined doc.txt",
    ]
    assert about_b == [
        f"[{T}] * peer offers doc.txt (1000 B); accept? (y/n)",
        f"[{T}] * declined doc.txt",
    ]


async def test_cancel_mid_read_is_said_once_on_each_side_and_reads_no_closed_file(
    ws_relay: RelayUnderTest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/cancel while a read-ahead is on the disk: the read finishes on the file it began on.

    The gate holds the sender's first read in its worker thread, as a slow disk
    would, while /cancel runs.
    """
    reading, release = threading.Event(), threading.Event()
    real_pread = outgoing._pread

    def gated_pread(fd: int, size: int, offset: int) -> bytes:
        reading.set()
        release.wait(timeout=20)
        return real_pread(fd, size, offset)

    monkeypatch.setattr(outgoing, "_pread", gated_pread)
    (tmp_path / "big.bin").write_bytes(os.urandom(4 * 1024 * 1024))
    async with trio.open_nursery() as nursery:
        sa, out_a, sb, out_b = await _two_screens(ws_relay, tmp_path, nursery)
        await sa.enter(f"/send {tmp_path / 'big.bin'}")
        await out_b.wait_for("accept? (y/n)")
        await sb.enter("y")
        assert await trio.to_thread.run_sync(reading.wait, 20)
        await sa.enter("/cancel")
        release.set()
        await out_b.wait_for("big.bin")
        await _settled(sa, out_a, out_b, "after")
        await _settled(sb, out_b, out_a, "back")
        nursery.cancel_scope.cancel()
    about_a = [line for line in out_a.lines if "big.bin" in line]
    about_b = [
        line for line in out_b.lines if "big.bin" in line and "receiving big.bin:" not in line
    ]
    assert about_a == [f"[{T}] * offering big.bin (4.0 MiB)", f"[{T}] * cancelled big.bin"]
    assert about_b == [
        f"[{T}] * peer offers big.bin (4.0 MiB); accept? (y/n)",
        f"[{T}] * receiving big.bin",
        f"[{T}] * the other person cancelled big.bin",
    ]
