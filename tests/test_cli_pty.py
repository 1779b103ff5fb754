"""``m42 chat`` on a pseudo-terminal: line editing, history, and messages that never clobber typing.

A real ``m42d serve`` and ``m42`` subprocesses: the chat runs on a pty as a
person's terminal would give it; the other seat is ``m42 recv --jsonl`` (to
see exactly what was sent) or ``m42 send`` (to make a message arrive while a
line is half typed).  ``PROMPT_TOOLKIT_NO_CPR`` spares the pty a cursor
position query nobody would answer.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e_harness import M42_COMMAND, RelayDaemon, _clean_env, start_daemon

LEFT = "\x1b[D"
UP = "\x1b[A"
LIMIT = 60.0


class Pty:
    """``m42 ARGV`` with a pseudo-terminal as stdin, stdout and stderr; all output kept."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path) -> None:
        master, slave = os.openpty()
        self.master = master
        self.proc = subprocess.Popen(
            argv, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=cwd, close_fds=True
        )
        os.close(slave)
        self.output = b""
        self._answered = 0
        """Cursor position queries answered (see :meth:`wait_for`)."""

    def text(self) -> str:
        return self.output.decode("utf-8", "replace")

    def wait_for(self, needle: str, limit: float = LIMIT, start: int = 0) -> int:
        """Read the terminal until ``needle`` shows after ``start``; where it ends.

        select() waits for output, so there are no polling sleeps.
        """
        deadline = time.monotonic() + limit
        while needle not in self.text()[start:]:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.master], [], [], max(0.0, left))
            if not ready:
                raise AssertionError(f"{needle!r} never showed; screen:\n{self.text()[-3000:]}")
            try:
                data = os.read(self.master, 65536)
            except OSError:  # the program ended: no more output
                data = b""
            if not data:
                raise AssertionError(f"{needle!r} never showed; screen:\n{self.text()[-3000:]}")
            self.output += data
            self._answer_cursor_queries()
        text = self.text()
        return text.index(needle, start) + len(needle)

    def _answer_cursor_queries(self) -> None:
        """As a terminal does: "where is the cursor?" (ESC [6n) gets "row 1, column 1".

        Only programs started without ``PROMPT_TOOLKIT_NO_CPR`` ask; prompt_toolkit
        draws its bottom bar only once it knows the rows below the cursor.
        """
        for _ in range(self.output.count(b"\x1b[6n") - self._answered):
            os.write(self.master, b"\x1b[1;1R")
            self._answered += 1

    def type(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)
        os.close(self.master)


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[RelayDaemon]:
    daemon = start_daemon(tmp_path / "relay", ["ws"])
    try:
        yield daemon
    finally:
        daemon.kill()


def _new_room(relay: RelayDaemon, home: Path) -> tuple[str, str]:
    home.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [*M42_COMMAND, "new", "--relay", relay.url("ws"), "--json"],
        capture_output=True,
        env=_clean_env(XDG_DATA_HOME=str(home / "data")),
        cwd=home,
        timeout=LIMIT,
        check=True,
    )
    doc = json.loads(done.stdout)
    return doc["link_a"], doc["link_b"]


def _env(link: str, home: Path) -> dict[str, str]:
    home.mkdir(parents=True, exist_ok=True)
    return _clean_env(
        M42_LINK=link,
        XDG_DATA_HOME=str(home / "data"),
        TERM="xterm",
        PROMPT_TOOLKIT_NO_CPR="1",
        COLUMNS="100",
        LINES="30",
    )


def _recv(link: str, home: Path, count: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*M42_COMMAND, "recv", "--jsonl", "--count", str(count), "--timeout", str(LIMIT)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=_env(link, home),
        cwd=home,
    )


def _texts(proc: subprocess.Popen[str]) -> list[Any]:
    out, err = proc.communicate(timeout=LIMIT + 10)
    assert proc.returncode == 0, err
    return [e["text"] for e in map(json.loads, out.splitlines()) if e["event"] == "text"]


def test_arrow_keys_edit_the_line_and_history_recalls_it(
    relay: RelayDaemon, tmp_path: Path
) -> None:
    link_a, link_b = _new_room(relay, tmp_path / "creator")
    bob = _recv(link_b, tmp_path / "bob", 2)
    chat = Pty([*M42_COMMAND, "chat"], _env(link_a, tmp_path / "alice"), tmp_path / "alice")
    try:
        chat.wait_for("safety words")
        chat.type("helo" + LEFT + "l\r")  # a typo mended with the left arrow
        chat.wait_for("hello")
        chat.type(UP + "\r")  # the last line again, from history
        assert _texts(bob) == ["hello", "hello"]
    finally:
        chat.close()


def test_a_message_arriving_while_typing_leaves_the_line_whole(
    relay: RelayDaemon, tmp_path: Path
) -> None:
    link_a, link_b = _new_room(relay, tmp_path / "creator")
    bob_home = tmp_path / "bob"
    chat = Pty([*M42_COMMAND, "chat"], _env(link_a, tmp_path / "alice"), tmp_path / "alice")
    try:
        chat.wait_for("/help for commands")
        chat.type("half a thou")
        sent = subprocess.run(
            [*M42_COMMAND, "send", "--text", "incoming while you type"],
            env=_env(link_b, bob_home),
            cwd=bob_home,
            capture_output=True,
            timeout=LIMIT,
            check=False,
        )
        assert sent.returncode == 0, sent.stderr
        shown = chat.wait_for("incoming while you type")
        # The half-typed line is drawn again after the message, not lost under it.
        chat.wait_for("half a thou", start=shown)
        bob = _recv(link_b, bob_home, 1)
        chat.type("ght\r")
        assert _texts(bob) == ["half a thought"]
    finally:
        chat.close()


def test_file_progress_is_redrawn_in_place_under_the_line_being_typed(
    relay: RelayDaemon, tmp_path: Path
) -> None:
    link_a, link_b = _new_room(relay, tmp_path / "creator")
    alice, bob_home = tmp_path / "alice", tmp_path / "bob"
    alice.mkdir()
    (alice / "big.bin").write_bytes(os.urandom(32 * 1024 * 1024))
    bob = subprocess.Popen(
        [*M42_COMMAND, "recv", "--jsonl", "--count", "1", "--timeout", str(LIMIT)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=_env(link_b, bob_home),
        cwd=bob_home,
    )
    env = _env(link_a, alice)
    del env["PROMPT_TOOLKIT_NO_CPR"]  # the bar needs a terminal that answers; Pty does
    chat = Pty([*M42_COMMAND, "chat"], env, alice)
    try:
        chat.wait_for("safety words")
        chat.type("/send big.bin\r")
        chat.wait_for("big.bin delivered")
        _, err = bob.communicate(timeout=LIMIT)
        assert bob.returncode == 0, err
        screen = chat.text()
        # The bar under the prompt: progress without a time stamp, drawn while the file moved.
        assert "sending big.bin: " in screen.replace("] sending big.bin: ", ""), repr(
            screen[-2500:]
        )
        # The scrollback holds one progress line, the last, not one a second.
        assert screen.count("] sending big.bin: ") == 1
        assert "] sending big.bin: 32.0 MiB of 32.0 MiB (100%)" in screen
    finally:
        chat.close()
        if bob.poll() is None:
            bob.kill()
            bob.wait()
