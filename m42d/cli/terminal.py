"""The chat's terminal: lines from the person, lines to the screen.

These are the small interfaces :class:`m42d.cli.chat.ChatScreen` runs on
(:class:`~m42d.cli.chat.ChatInput`, :class:`~m42d.cli.chat.ChatOutput`):

* :class:`LineEditor` when stdin and stdout are a terminal: prompt_toolkit
  (a well-kept library, chosen over hand-written terminal code) gives line
  editing, arrow keys and history, and prints what arrives *above* the
  line being typed, which it then redraws, so an incoming message never
  clobbers it.  History lives in memory only: messages may be secret, so
  none is written to disk.
* :class:`TerminalInput` for pipes and scripts: plain lines from stdin.
"""

from __future__ import annotations

import contextlib
import math
import shutil
from collections.abc import Iterator, Sequence
from typing import Final, TextIO, final

import trio
from prompt_toolkit import PromptSession
from prompt_toolkit.history import InMemoryHistory
from prompt_toolkit.patch_stdout import patch_stdout
from prompt_toolkit.renderer import CPR_Support

__all__ = ["PROMPT", "LineEditor", "TerminalInput", "TerminalOutput", "editing_terminal"]

PROMPT: Final = "> "


@final
class TerminalOutput:
    """Lines on stdout; a closed terminal (SIGHUP) fails every write, and leaving must go on.

    With ``editor`` (the person types at a :class:`LineEditor`) transfers in
    flight are redrawn in place, in the bar under the line being typed.
    """

    def __init__(self, stream: TextIO, editor: LineEditor | None = None) -> None:
        self._stream = stream
        self._editor = editor

    def show(self, line: str) -> None:
        with contextlib.suppress(OSError):
            print(line, file=self._stream, flush=True)

    def show_in_place(self, lines: Sequence[str]) -> bool:
        if self._editor is None:
            return False
        return self._editor.set_status(lines)


@final
class TerminalInput:
    """Lines from stdin, read in a worker thread.

    With ``erase_echo`` (stdin and stdout are a terminal) the line the user
    typed is erased once read: the screen's own "you: ... (sent #n)" line
    replaces it, so every message shows once, with its state.
    """

    def __init__(self, stream: TextIO, echo: TextIO, *, erase_echo: bool) -> None:
        self._stream = stream
        self._echo = echo
        self._erase_echo = erase_echo

    async def read_line(self) -> str | None:
        try:
            line = await trio.to_thread.run_sync(self._stream.readline, abandon_on_cancel=True)
        except OSError:
            line = ""  # the terminal went away
        if not line:
            return None
        text = line.rstrip("\n")
        if self._erase_echo:
            self._erase(text)
        return text

    def _erase(self, typed: str) -> None:
        columns = max(1, shutil.get_terminal_size().columns)
        rows = max(1, math.ceil(len(typed) / columns))
        self._echo.write("\x1b[1A\x1b[2K" * rows)
        self._echo.flush()


@final
class LineEditor:
    """A person at a terminal: prompt_toolkit's line editing and in-memory history.

    prompt_toolkit runs on asyncio, so each prompt runs in a worker thread
    (its own loop there); what the chat prints meanwhile goes through the
    patched stdout of :func:`editing_terminal`, above the prompt.  Ctrl-D on
    an empty line and Ctrl-C end the input, which the chat reads as /quit
    (in raw mode Ctrl-C is a key, not SIGINT).
    """

    def __init__(self) -> None:
        # erase_when_done: the screen's own "you: ... (sent)" line replaces
        # the typed one, so every message shows once, with its state.
        self._session: PromptSession[str] = PromptSession(
            history=InMemoryHistory(), erase_when_done=True
        )

    @property
    def status(self) -> str | None:
        """The bar under the prompt: the transfers in flight, or None (no bar)."""
        toolbar = self._session.bottom_toolbar
        return toolbar if isinstance(toolbar, str) else None

    def set_status(self, lines: Sequence[str]) -> bool:
        """Show ``lines`` in the bar under the prompt, redrawn at once (none: no bar).

        Called from the chat's thread while the prompt runs in its own:
        prompt_toolkit's ``invalidate()`` is its documented thread-safe way
        to ask for a redraw, and the bar's text is read at that redraw.
        False where the terminal never told prompt_toolkit where its cursor
        is (no answer to the cursor position query): prompt_toolkit then
        draws no bar, so the chat prints progress lines instead.
        """
        app = self._session.app
        self._session.bottom_toolbar = "\n".join(lines) if lines else None
        app.invalidate()
        return app.renderer.cpr_support is not CPR_Support.NOT_SUPPORTED

    async def read_line(self) -> str | None:
        try:
            return await trio.to_thread.run_sync(self._prompt, abandon_on_cancel=True)
        except (EOFError, KeyboardInterrupt, OSError):
            return None

    def _prompt(self) -> str:
        return self._session.prompt(PROMPT)


@contextlib.contextmanager
def editing_terminal() -> Iterator[None]:
    """While the chat runs: prints from any thread land above the line being typed."""
    with patch_stdout(raw=True):
        yield
