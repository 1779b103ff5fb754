"""``m42 chat``: the interactive screen, its command table, and the terminal it runs on.

:class:`ChatScreen` is the chat itself, without a terminal or a thread: its
caller feeds it the lines the user typed (:meth:`ChatScreen.enter`) and the
engine's events (:meth:`ChatScreen.show`), and it writes whole lines to a
:class:`ChatOutput`.  Commands are rows of :data:`COMMANDS` (``/help`` is
made from them).  :func:`cmd_chat` wires it to stdin and stdout
(:mod:`m42d.cli.terminal`) and runs it beside the engine until ``/quit``,
the end of input, a fatal relay error or a signal.

Everything that came from the peer or the relay is escaped before it is
shown; a text of several lines has its further lines marked.

Why this module is a little over 500 lines: the screen's commands are its
methods, rows of the table that tests drive directly, and they share the
screen's state (offers, transfers, the pending question); split apart, each
half would reach into the other's fields.  The terminal it runs on is
already elsewhere (:mod:`m42d.cli.terminal`).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import signal
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Final, Protocol, TextIO, final

import attrs
import trio

from m42d.cli.exits import EXIT_ERROR, EXIT_OK, EXIT_REFUSED, UsageError
from m42d.cli.links import isatty, key_store, read_link
from m42d.cli.output import (
    eprint,
    file_failed_line,
    human_size,
    key_changed_message,
    progress_line,
    retry_in,
    sas_line,
    text_block,
)
from m42d.cli.paths import file_problem, user_path
from m42d.cli.running import FLUSH_TIMEOUT, Leaving, finish, with_client
from m42d.cli.terminal import LineEditor, TerminalInput, TerminalOutput, editing_terminal
from m42d.client import events as ev
from m42d.client.engine import Client
from m42d.client.names import escape_text
from m42d.errors import M42Error
from m42d.session import FileCode
from m42d.ticket import Seat

__all__ = [
    "CHAT_CONTINUATION",
    "CHAT_HELP",
    "COMMANDS",
    "ChatCommand",
    "ChatEngine",
    "ChatInput",
    "ChatOutput",
    "ChatScreen",
    "cmd_chat",
    "run_chat",
]

CHAT_CONTINUATION: Final = "           | "  # under "[HH:MM:SS] "
PROGRESS_LINE_EVERY: Final = 1.0
"""Seconds between two progress lines of one file (the last one always shows)."""
OFFER_ANSWERS: Final = frozenset({"y", "yes", "n", "no", "/accept", "/reject"})
"""Lines that answer the oldest pending offer (in any case) instead of being sent."""
YES: Final = frozenset({"y", "yes"})
NO: Final = frozenset({"n", "no"})
STRAY_ANSWERS: Final = frozenset({"y", "n"})
"""A lone letter meant for a question no longer asked: not sent, since the peer would see it
out of context ("yes" and "no" are ordinary words and go out as texts)."""


@final
@attrs.frozen
class Question:
    """A yes/no question the screen asked before doing something that cannot be undone."""

    confirmed: Callable[[], bool]
    """Runs on "y"; True to leave the chat."""
    declined: str
    """Said on any other answer (the line is then handled as usual, unless it was "n")."""


class ChatOutput(Protocol):
    """Where the screen writes; every line is already escaped."""

    def show(self, line: str) -> None:
        """One line (or a block of lines) for the user."""
        ...

    def show_in_place(self, lines: Sequence[str]) -> bool:
        """The transfers in flight, replacing the ones shown before (none: clear them).

        False where the output cannot redraw (a pipe, a log): the screen then
        prints a progress line now and then instead.
        """
        ...


class ChatInput(Protocol):
    """Where the user's lines come from."""

    async def read_line(self) -> str | None:
        """The next line typed, without its newline; None at the end of input."""
        ...


class ChatEngine(Protocol):
    """What the screen asks of the engine (a :class:`~m42d.client.engine.Client`)."""

    @property
    def safety_words(self) -> tuple[str, ...]: ...

    @property
    def compared_at(self) -> float | None: ...

    def mark_compared(self, when: float) -> None: ...

    def send_text(self, text: str) -> int: ...

    async def send_file(self, path: Path, name: str | None = None) -> int: ...

    def outgoing_size(self, file_id: int) -> int: ...

    def accept_file(self, file_id: int) -> Path: ...

    def reject_file(self, file_id: int, reason: str = ..., code: FileCode = ...) -> None: ...

    def cancel_file(self, file_id: int) -> None: ...

    def trust(self) -> None: ...

    def burn(self) -> None: ...


def stamp() -> str:
    """The time stamp in front of a chat line."""
    return time.strftime("%H:%M:%S")


@final
class ChatScreen:
    """The chat: typed lines become texts or commands, engine events become lines.

    Args:
        engine: the engine the commands act on.
        output: where the lines go.
        clock: the time stamp in front of a line.

    :attr:`exit_code` is what ``m42 chat`` exits with once the chat ends.
    """

    def __init__(
        self, engine: ChatEngine, output: ChatOutput, *, clock: Callable[[], str] = stamp
    ) -> None:
        self._engine = engine
        self._output = output
        self._clock = clock
        self.exit_code = EXIT_OK
        self._leaving = False
        self._relay_lost = False
        self._joined_once = False
        """A failed attempt before the first join is "can't reach", not "lost"."""
        self._their_link = "their link"
        self._sent: dict[int, str] = {}
        """Our texts not yet delivered, by seq (a preview goes into the "delivered" line)."""
        self._transfers: dict[tuple[int, bool], str] = {}
        """Files in flight, (file id, outgoing) -> name, for /cancel."""
        self._offers: deque[ev.FileOffer] = deque()
        self._last_progress: dict[tuple[int, bool], float] = {}
        self._live: dict[tuple[int, bool], str] = {}
        """The progress line of each transfer in flight, for an output that redraws in place."""
        self._question: Question | None = None
        self._ended: set[tuple[int, bool]] = set()
        """Transfers the user declined or cancelled: said when asked, so the engine's
        TransferFailed and any late progress of them are not shown again."""

    @property
    def leaving(self) -> bool:
        """The chat is ending (a ``PEER_DOWN`` now is our own leaving, not shown)."""
        return self._leaving

    def leave(self) -> None:
        self._leaving = True

    def greet(self, seat: Seat) -> None:
        other = Seat.B if seat is Seat.A else Seat.A
        self._their_link = f"Link {other.value}"
        self._say(
            f"m42 chat: you hold Link {seat.value}, the other person Link {other.value}.  "
            "/help for commands."
        )

    # -- typed lines -----------------------------------------------------------------------

    async def enter(self, text: str) -> bool:
        """Handle one typed line; True when the user asked to leave."""
        leave = await self._handle(text)
        if leave:
            self.leave()
        return leave

    async def _handle(self, text: str) -> bool:
        if not text.strip():
            return False
        answer = text.strip().lower()
        if self._question is not None:
            question, self._question = self._question, None
            if answer in YES:
                return question.confirmed()
            self._say(f"* {question.declined}")
            if answer in NO:
                return False
        word, _, rest = text.strip().partition(" ")
        if self._offers and answer in OFFER_ANSWERS:
            self._answer_offer(answer in ("y", "yes", "/accept"))
            return False
        if answer in STRAY_ANSWERS:
            self._say(f"! {answer!r} was not sent: no file offer or question waits for an answer")
            return False
        command = COMMANDS_BY_NAME.get(word)
        if command is not None:
            return await command.run(self, rest.strip())
        if word.startswith("/") and not word.startswith("//"):
            self._say(f"! unknown command {escape_text(word)}; /help lists them")
            return False
        self._send_text(text[1:] if text.startswith("//") else text)
        return False

    def _send_text(self, message: str) -> None:
        try:
            seq = self._engine.send_text(message)
        except M42Error as exc:
            self._say(f"! {escape_text(str(exc))}")
            return
        self._sent[seq] = message
        self._stamped(f"you: {escape_text(message)}  (sent #{seq})")

    def _answer_offer(self, accept: bool) -> None:
        offer = self._offers.popleft()
        if not accept:
            self._ended.add((offer.file_id, False))
            with contextlib.suppress(M42Error):
                self._engine.reject_file(offer.file_id)
            self._stamped(f"* declined {escape_text(offer.name)}")
            return
        try:
            self._engine.accept_file(offer.file_id)
        except (OSError, M42Error) as exc:
            self._stamped(f"! cannot accept: {escape_text(str(exc))}")
            return
        self._transfers[(offer.file_id, False)] = offer.name
        self._stamped(f"* receiving {escape_text(offer.name)}")

    # -- the commands (rows of COMMANDS) ---------------------------------------------------

    async def send_file(self, rest: str) -> bool:
        if not rest:
            self._say("! usage: /send PATH (the file to offer)")
            return False
        path = user_path(rest)
        problem = await trio.to_thread.run_sync(file_problem, path)
        if problem is None:
            try:
                file_id = await self._engine.send_file(path)
            except OSError as exc:
                problem = exc.strerror or type(exc).__name__
            except M42Error as exc:
                problem = str(exc)
        if problem is not None:
            self._say(f"! cannot send {escape_text(str(path))}: {escape_text(problem)}")
            return False
        self._transfers[(file_id, True)] = path.name
        size = self._engine.outgoing_size(file_id)
        self._stamped(f"* offering {escape_text(path.name)} ({human_size(size)})")
        return False

    async def verify(self, rest: str) -> bool:
        words = self._engine.safety_words
        if not words:
            self._say("no secure session yet")
        else:
            self._say(f"safety words: {sas_line(words)} ({self._compared_note()})")
        return False

    async def compared(self, rest: str) -> bool:
        if not self._engine.safety_words:
            self._say("! no safety words yet: wait for the other person")
            return False
        try:
            self._engine.mark_compared(time.time())
        except M42Error as exc:
            self._say(f"! {escape_text(str(exc))}")
            return False
        self._say("* noted: you compared the safety words just now")
        return False

    def _compared_note(self) -> str:
        """When the words were last compared, in words (the words never change on their own)."""
        when = self._engine.compared_at
        if when is None:
            return "not compared yet: read them to each other by voice, then type /compared"
        return f"you compared them {_ago(time.time() - when)}"

    async def accept_offer(self, rest: str) -> bool:
        """Reached only when no offer waits (an answer to one is handled before the table)."""
        self._say("! no file offer to accept")
        return False

    async def reject_offer(self, rest: str) -> bool:
        """Reached only when no offer waits (an answer to one is handled before the table)."""
        self._say("! no file offer to refuse")
        return False

    async def cancel_transfers(self, rest: str) -> bool:
        if not self._transfers:
            self._say("! no transfer to cancel")
        for (file_id, outgoing), name in list(self._transfers.items()):
            self._transfers.pop((file_id, outgoing), None)
            self._end_live((file_id, outgoing))
            self._ended.add((file_id, outgoing))
            with contextlib.suppress(M42Error):
                if outgoing:
                    self._engine.cancel_file(file_id)
                else:
                    self._engine.reject_file(
                        file_id, "cancelled by the receiver", FileCode.CANCELLED
                    )
            self._stamped(f"* cancelled {escape_text(name)}")
        return False

    async def trust_key(self, rest: str) -> bool:
        try:
            self._engine.trust()
        except M42Error as exc:
            self._say(f"! {escape_text(str(exc))}")
            return False
        self._say("* trusting the new key; reconnecting the session")
        return False

    async def burn_room(self, rest: str) -> bool:
        def burn() -> bool:
            self._engine.burn()
            self._say("* burning the room")
            return False

        self._ask(
            "burn the room? It ends for both of you and both links stop working, for good. (y/n)",
            burn,
            "the room was not burned",
        )
        return False

    async def quit(self, rest: str) -> bool:
        texts = len(self._sent)
        files = sum(1 for _, outgoing in self._transfers if outgoing)
        if not texts and not files:
            return True
        owed = " and ".join(
            f"{count} {noun}{'' if count == 1 else 's'}"
            for count, noun in ((texts, "message"), (files, "file"))
            if count
        )
        self._ask(
            f"{owed} not delivered yet (the other person has not got them): leave anyway? (y/n)",
            lambda: True,
            "staying",
        )
        return False

    async def help(self, rest: str) -> bool:
        self._say(CHAT_HELP)
        return False

    # -- engine events ------------------------------------------------------------------------

    def _connected(self, event: ev.Connected) -> None:
        """Say the relay is back, and that nobody is there yet: a silent screen
        while the other person has not opened their link looks like a hang."""
        again = self._joined_once
        if self._relay_lost:
            self._stamped("* connected to the relay again" if again else "* connected to the relay")
        self._relay_lost = False
        self._joined_once = True
        if not event.peer_online and not again:
            self._stamped(f"* waiting for the other person to open {self._their_link}")

    def show(self, event: ev.ClientEvent) -> bool:
        """Show one engine event; True when it ends the chat (the relay refused us for good)."""
        if isinstance(event, ev.PeerOnline):
            self._stamped("* peer online")
        elif isinstance(event, ev.PeerOffline):
            if not self._leaving:
                self._stamped("* peer offline")
        elif isinstance(event, ev.Connected):
            self._connected(event)
        elif isinstance(event, ev.Reconnecting):
            # One short line per attempt: what went wrong, and when the next one is.
            what = "still no relay" if self._relay_lost else "lost the relay"
            if not self._joined_once and not self._relay_lost:
                what = "can't reach the relay"
            self._stamped(f"* {what}: {escape_text(event.reason)} ({retry_in(event.delay)})")
            self._relay_lost = True
        elif isinstance(event, ev.SafetyWords):
            note = (
                "first contact: read them to each other by voice, then type /compared"
                if event.first_contact
                else self._compared_note()
            )
            self._stamped(f"* secure session; safety words: {sas_line(event.words)} ({note})")
        elif isinstance(event, ev.KeyChanged):
            self._say(key_changed_message(event))
        elif isinstance(event, ev.TextIn):
            self._stamped(f"peer: {text_block(event.text, CHAT_CONTINUATION)}")
        elif isinstance(event, ev.Delivered):
            preview = self._sent.pop(event.seq, "")
            self._stamped(f"\u2713 delivered #{event.seq}: {escape_text(preview[:40])}")
        elif isinstance(event, ev.FileOffer) and event.accepted:
            self._transfers[(event.file_id, False)] = event.name
            self._stamped(f"* receiving {escape_text(event.name)} ({human_size(event.size)})")
        elif isinstance(event, ev.FileOffer):
            self._offers.append(event)
            self._stamped(
                f"* peer offers {escape_text(event.name)} ({human_size(event.size)}); accept? (y/n)"
            )
        else:
            return self._show_file_or_problem(event)
        return False

    def _show_file_or_problem(self, event: ev.ClientEvent) -> bool:
        if isinstance(event, ev.Progress):
            key = (event.file_id, event.outgoing)
            if key in self._ended:
                return False
            self._transfers.setdefault(key, event.name)
            self._show_progress(key, event)
        elif isinstance(event, ev.TransferDone):
            self._transfers.pop((event.file_id, event.outgoing), None)
            self._end_live((event.file_id, event.outgoing))
            if event.outgoing:
                self._stamped(f"\u2713 {escape_text(event.name)} delivered")
            else:
                self._stamped(f"* saved {escape_text(str(event.path))}")
        elif isinstance(event, ev.TransferFailed):
            key = (event.file_id, event.outgoing)
            self._transfers.pop(key, None)
            self._end_live(key)
            if key in self._ended:
                self._ended.discard(key)
            else:
                self._stamped(file_failed_line(event))
        elif isinstance(event, ev.Problem):
            self._stamped(f"! {escape_text(event.message)}")
            if event.fatal:
                self.exit_code = EXIT_REFUSED if event.code is not None else EXIT_ERROR
                self.leave()
                return True
        return False

    # -- output ---------------------------------------------------------------------------------

    def _show_progress(self, key: tuple[int, bool], event: ev.Progress) -> None:
        """In place where the output can (the last line goes to the scrollback), else a line a
        second: either way a long transfer shows it moves without scrolling the chat away."""
        line = progress_line(event)
        finished = event.done >= event.size
        if finished:
            self._live.pop(key, None)
        else:
            self._live[key] = line
        if self._output.show_in_place(tuple(self._live.values())):
            if finished:
                self._stamped(line)
            return
        now = trio.current_time()
        last = self._last_progress.get(key, -math.inf)
        if finished or now - last >= PROGRESS_LINE_EVERY:
            self._last_progress[key] = now
            self._stamped(line)

    def _end_live(self, key: tuple[int, bool]) -> None:
        if self._live.pop(key, None) is not None:
            self._output.show_in_place(tuple(self._live.values()))

    def _ask(self, prompt: str, confirmed: Callable[[], bool], declined: str) -> None:
        self._question = Question(confirmed, declined)
        self._say(f"? {prompt}")

    def _say(self, line: str) -> None:
        self._output.show(line)

    def _stamped(self, line: str) -> None:
        self._output.show(f"[{self._clock()}] {line}")


@final
@attrs.frozen
class ChatCommand:
    """One row of the command table: what to type, what it does, and the method that does it."""

    name: str
    usage: str
    """The argument, as /help shows it ("" for none)."""
    summary: str
    run: Callable[[ChatScreen, str], Awaitable[bool]]
    """Called with the rest of the line (stripped); True to leave the chat."""


COMMANDS: Final = (
    ChatCommand("/send", "PATH", "send a file", ChatScreen.send_file),
    ChatCommand("/verify", "", "show the safety words again", ChatScreen.verify),
    ChatCommand("/compared", "", "say you compared the words", ChatScreen.compared),
    ChatCommand("/accept", "", "take the offered file", ChatScreen.accept_offer),
    ChatCommand("/reject", "", "refuse it (also: y / n)", ChatScreen.reject_offer),
    ChatCommand("/cancel", "", "stop every transfer", ChatScreen.cancel_transfers),
    ChatCommand("/trust", "", "accept a changed key", ChatScreen.trust_key),
    ChatCommand("/burn", "", "destroy the room", ChatScreen.burn_room),
    ChatCommand("/quit", "", "leave (Ctrl-C too)", ChatScreen.quit),
    ChatCommand("/help", "", "this text", ChatScreen.help),
)
"""Every chat command, in the order /help lists them (two a line)."""

COMMANDS_BY_NAME: Final = {command.name: command for command in COMMANDS}


def _help_text() -> str:
    """Two commands a line, in the table's order, in columns as wide as their longest cell."""

    def name(command: ChatCommand) -> str:
        return (command.name + " " + command.usage).strip()

    lefts, rights = COMMANDS[0::2], COMMANDS[1::2]
    names = [max(len(name(c)) for c in column) + 2 for column in (lefts, rights)]
    left_width = max(names[0] + len(c.summary) for c in lefts) + 2
    rows = []
    for at, left in enumerate(lefts):
        cell = f"{name(left):<{names[0]}}{left.summary}"
        right = rights[at] if at < len(rights) else None
        if right is None:
            rows.append(f"  {cell}")
        else:
            rows.append(f"  {cell:<{left_width}}{name(right):<{names[1]}}{right.summary}")
    return "\n".join(["commands:", *rows, "anything else is sent as a message"])


CHAT_HELP: Final = _help_text()


async def run_chat(client: Client, screen: ChatScreen, lines: ChatInput, *, seat: Seat) -> int:
    """Run ``screen`` on ``client`` until the chat ends; the exit code.

    Ctrl-C, kill or a closed terminal leaves like /quit: the
    acknowledgements owed still go out.  A second one leaves at once.
    """
    done = trio.Event()
    shown = trio.Event()

    def end() -> None:
        screen.leave()  # not our peer's leaving: no "peer offline" line
        done.set()

    async def show() -> None:
        async for event in client.events:
            if screen.show(event):
                end()
        end()
        shown.set()

    async def read_input() -> None:
        while (line := await lines.read_line()) is not None:
            if await screen.enter(line):
                break
        end()

    leave = Leaving()
    screen.greet(seat)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(show)
        nursery.start_soon(read_input)
        await nursery.start(leave.watch)
        with leave.work:
            await done.wait()
        if leave.signals:
            end()
            with contextlib.suppress(OSError):
                eprint("\nbye")
            if leave.signals[0] != signal.SIGINT:
                screen.exit_code = leave.exit_code
        with leave.leaving:
            # Texts that arrive while leaving are shown (their
            # acknowledgements went out), not swallowed.
            await finish(client)
            with trio.move_on_after(FLUSH_TIMEOUT):
                await shown.wait()
        nursery.cancel_scope.cancel()
    return screen.exit_code


async def cmd_chat(args: argparse.Namespace, stdin: TextIO) -> int:
    if args.link == "-":
        raise UsageError(
            "chat reads messages from stdin; give the link with --link-file or M42_LINK"
        )
    link = read_link(args, stdin)
    download = Path(args.out)
    await trio.to_thread.run_sync(lambda: download.mkdir(parents=True, exist_ok=True))
    client = Client(
        link,
        key_store(args),
        download_dir=download,
        accept="all" if args.accept else "ask",
        max_size=args.max_size,
    )
    if isatty(stdin) and isatty(sys.stdout):
        # sys.stdout is read inside: editing_terminal() replaces it.
        with editing_terminal():
            editor = LineEditor()
            screen = ChatScreen(client, TerminalOutput(sys.stdout, editor))
            return await _chat_on(client, screen, editor, link.seat)
    out = sys.stdout
    screen = ChatScreen(client, TerminalOutput(out))
    return await _chat_on(client, screen, TerminalInput(stdin, out, erase_echo=False), link.seat)


async def _chat_on(client: Client, screen: ChatScreen, lines: ChatInput, seat: Seat) -> int:
    async def body(client: Client) -> int:
        return await run_chat(client, screen, lines, seat=seat)

    return await with_client(client, body)


def _ago(seconds: float) -> str:
    """A past moment as people say it: "just now", "5 minutes ago", "3 days ago"."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            n = int(seconds // size)
            return f"{n} {unit}{'s' if n != 1 else ''} ago"
    return "just now"
