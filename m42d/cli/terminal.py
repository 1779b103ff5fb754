"""The chat on a plain terminal: lines from stdin, lines to stdout.

These are the two small interfaces :class:`m42d.cli.chat.ChatScreen` runs
on (:class:`~m42d.cli.chat.ChatInput`, :class:`~m42d.cli.chat.ChatOutput`);
line editing or a status line would be another pair of the same shape.
"""

from __future__ import annotations

import contextlib
import math
import shutil
from typing import TextIO, final

import trio

__all__ = ["TerminalInput", "TerminalOutput"]


@final
class TerminalOutput:
    """Lines on stdout; a closed terminal (SIGHUP) fails every write, and leaving must go on."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def show(self, line: str) -> None:
        with contextlib.suppress(OSError):
            print(line, file=self._stream, flush=True)


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
