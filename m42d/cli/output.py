"""What ``m42`` prints: escaped peer text, sizes, safety words, the progress line.

Everything that came from the peer or the relay goes through
:func:`~m42d.client.names.escape_text` before it reaches a terminal, and a
peer's text of several lines has its further lines marked
(:func:`text_block`), so that no line of it poses as our own output.
"""

from __future__ import annotations

import math
import shutil
import sys
import time
from collections.abc import Sequence
from typing import Final, final

from m42d.cli.exits import EXIT_ERROR, EXIT_REFUSED
from m42d.client import events as ev
from m42d.client.names import escape_text
from m42d.session import FileCode

__all__ = [
    "CONTINUATION",
    "PROGRESS",
    "ProgressView",
    "eprint",
    "fatal",
    "file_failed_line",
    "human_size",
    "key_changed_message",
    "progress_line",
    "retry_in",
    "sas_line",
    "text_block",
]

LOG_PROGRESS_EVERY: Final = 10.0
"""Seconds between progress lines per file when stderr is not a terminal (a log)."""


@final
class ProgressView:
    """File progress on stderr: a line redrawn in place on a terminal, one now and then in a log.

    On a terminal the engine's progress (5 events a second) would otherwise
    scroll hundreds of lines per minute; in a log or a pipe the user still
    wants to see that a long transfer moves.  Any other message printed with
    :func:`eprint` first clears the line being redrawn, so text never lands
    in the middle of it.
    """

    def __init__(self) -> None:
        self.line_open = False
        self._last: dict[tuple[int, bool], float] = {}

    def show(self, progress: ev.Progress) -> None:
        line = progress_line(progress)
        finished = progress.done >= progress.size
        stream = sys.stderr
        if stream.isatty():
            width = shutil.get_terminal_size().columns - 1
            stream.write("\r\x1b[K" + line[: max(width, 20)])
            self.line_open = not finished
            if finished:
                stream.write("\n")
            stream.flush()
            return
        key = (progress.file_id, progress.outgoing)
        now = time.monotonic()
        if finished or now - self._last.get(key, -math.inf) >= LOG_PROGRESS_EVERY:
            self._last[key] = now
            print(line, file=stream, flush=True)

    def end_line(self) -> None:
        if self.line_open:
            self.line_open = False
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


PROGRESS: Final = ProgressView()
"""The one progress line on stderr that every message of :func:`eprint` respects."""


def eprint(*parts: object) -> None:
    """A message on stderr, after clearing a progress line being redrawn."""
    PROGRESS.end_line()
    print(*parts, file=sys.stderr, flush=True)


def human_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError  # pragma: no cover


def progress_line(p: ev.Progress) -> str:
    arrow = "sending" if p.outgoing else "receiving"
    pct = 100.0 * p.done / p.size if p.size else 100.0
    eta = "" if p.eta is None or p.done >= p.size else f", {p.eta:.0f} s left"
    return (
        f"{arrow} {escape_text(p.name)}: {human_size(p.done)} of {human_size(p.size)} "
        f"({pct:.0f}%) at {human_size(p.rate)}/s{eta}"
    )


def retry_in(delay: float) -> str:
    """When the next connection attempt is, as a reconnect line ends."""
    return f"retrying in {delay:.1f} s" if delay < 10 else f"retrying in {delay:.0f} s"


def sas_line(words: Sequence[str]) -> str:
    """Safety words as docs/protocol.md shows them: single spaces."""
    return " ".join(words)


CONTINUATION: Final = "  | "
"""Starts each further line of a peer's text, so that no line of it poses as our own output."""


def text_block(text: str, continuation: str = CONTINUATION) -> str:
    """A peer's text for a terminal: escaped, its further lines marked as continuations."""
    first, *more = escape_text(text, keep_newlines=True).split("\n")
    return "\n".join([first, *(continuation + line for line in more)])


PEER_CANCELLED: Final = frozenset({"cancelled by sender", "cancelled by the receiver"})
"""The reasons m42 clients give when their user cancels (the words come from the peer)."""


def file_failed_line(event: ev.TransferFailed) -> str:
    """A transfer the user did not end themselves: who ended it, in words."""
    name = escape_text(event.name)
    reason = escape_text(event.reason)
    if event.code == FileCode.DECLINED and event.outgoing:
        said = "" if event.reason in ("", "declined") else f" ({reason})"
        return f"* the other person declined {name}{said}"
    if event.code == FileCode.CANCELLED and event.reason in PEER_CANCELLED:
        return f"* the other person cancelled {name}"
    side = "sending" if event.outgoing else "receiving"
    return f"! {side} {name} failed: {reason}"


def key_changed_message(event: ev.KeyChanged) -> str:
    return (
        "WARNING: the peer's key changed.  This happens when the other person reinstalled\n"
        "or lost their keys, or when someone else holds their link.  Compare these words\n"
        f"with them by voice:  {sas_line(event.words)}\n"
        "If they match, run 'm42 trust' (or /trust in chat).  If they do not, trust nothing:\n"
        "once that device leaves and theirs is back, the chat goes on by itself."
    )


def fatal(event: ev.Problem) -> int:
    """Print a problem that ended the engine; its exit code."""
    eprint(f"m42: {escape_text(event.message)}")
    return EXIT_REFUSED if event.code is not None else EXIT_ERROR
