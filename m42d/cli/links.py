"""Where a command gets its room link and its key store.

A link holds the room secret, so it is taken from where it leaks least:
the prompt (not echoed) is preferred, a file or stdin next; the command line
(``ps``, shell history) is allowed but warned about in ``--help``.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path
from typing import Final, TextIO

from m42d.cli.exits import UsageError
from m42d.cli.output import eprint
from m42d.client.keystore import FileKeyStore, default_key_dir
from m42d.client.names import escape_text
from m42d.errors import LinkError
from m42d.link import Link

__all__ = ["BadLink", "isatty", "key_store", "read_link", "tidy_pasted"]

_WRAPPERS: Final = (
    '""',
    "''",
    "``",
    "<>",
    "()",
    "[]",
    "\u201c\u201d",
    "\u2018\u2019",
    "\u00ab\u00bb",
)
"""Pairs a link gets wrapped in when pasted from a chat, a mail or a markdown page."""

_WHOLE_FIELDS: Final = ("m42", "1", "A", 56, 22, 43, 43)
"""What each part of a link's fragment is: ``m42``, the version, the seat (or B), then
the lengths of the ticket, the seat token, the room secret and the certificate pin
(the only optional part)."""

CUT_HINT: Final = (
    "the link is cut short: copy the whole link again, from its start to its last character"
)


class BadLink(UsageError):
    """The link is wrong; said in one line, without the usage text (the options were fine)."""

    show_usage = False


def tidy_pasted(text: str) -> str:
    """A pasted link without what copying adds to it: surrounding quotes or brackets,
    sentence punctuation after it, and the line breaks and spaces of a wrapped line.

    A link holds no whitespace, quote or bracket, so nothing removed here can
    change which room a link names: :meth:`Link.parse` stays strict.
    """
    text = text.strip()
    while True:
        before = text
        text = text.rstrip(".,;").strip()
        for opening, closing in _WRAPPERS:
            if len(text) >= 2 and text[0] == opening and text[-1] == closing:
                text = text[1:-1].strip()
        if text == before:
            break
    return "".join(text.split())


def looks_cut(text: str) -> bool:
    """Whether ``text`` is the start of a link whose end was lost (a short selection, a
    wrapped line pasted only in part): every part is whole but the last, which is short."""
    relay, hash_sign, fragment = text.partition("#")
    if "://" not in relay:
        return False
    if not hash_sign:
        return True
    fields = fragment.split(".")
    if len(fields) > len(_WHOLE_FIELDS):
        return False
    *before, last = fields
    if not all(_is_whole(at, field) for at, field in enumerate(before)):
        return False
    expected = _WHOLE_FIELDS[len(before)]
    if isinstance(expected, str):
        return expected.startswith(last) or (expected == "A" and last in ("", "B"))
    return len(last) < expected or (len(last) == expected and len(fields) < len(_WHOLE_FIELDS) - 1)


def _is_whole(at: int, field: str) -> bool:
    expected = _WHOLE_FIELDS[at]
    if expected == "A":
        return field in ("A", "B")
    return field == expected if isinstance(expected, str) else len(field) == expected


def read_link(args: argparse.Namespace, stdin: TextIO) -> Link:
    """The link from the argument, '-' (stdin), --link-file, $M42_LINK or a prompt, in that order.

    The prompt (a terminal, nothing else given) does not echo: the link
    lands neither on the screen nor in the shell's history.
    """
    text: str | None = None
    if args.link is not None and args.link_file is not None:
        # `m42 send --link-file F hello` would otherwise parse "hello" as the
        # link and blame the link file's perfectly good link.
        hint = " (to send a message, use --text)" if args.command == "send" else ""
        raise UsageError(f"the link is given twice, as LINK and as --link-file: give it once{hint}")
    if args.link == "-":
        text = stdin.readline()
        if not text:
            raise UsageError("no link on stdin")
    elif args.link is not None:
        text = args.link
    elif args.link_file is not None:
        text = _read_link_file(Path(args.link_file))
    elif "M42_LINK" in os.environ:
        text = os.environ["M42_LINK"]
    elif isatty(stdin) and isatty(sys.stderr):
        try:
            text = getpass.getpass("m42: paste the link (it is not shown): ", stream=sys.stderr)
        except EOFError:
            text = ""
    if not text or not text.strip():
        raise UsageError(
            "no link given: use --link-file FILE or '-' (stdin), or run on a terminal to be asked"
        )
    # Only '-' reads a single line: stdin may go on with other data.
    link = tidy_pasted(text)
    try:
        return Link.parse(link)
    except LinkError as exc:
        if looks_cut(link):
            raise BadLink(CUT_HINT) from exc
        raise BadLink(
            f"bad link: {plain_link_error(str(exc))} "
            "(copy the whole link again, as m42 new printed it)"
        ) from exc


PARTS: Final = (
    ("seat token", "the part that lets this link in (its seat token)"),
    ("ticket", "the part that names the room (its ticket)"),
    ("room secret", "the secret part after the '#'"),
    ("certificate pin", "the part that pins the relay's certificate"),
    ("seat must be A or B", "the link must say A or B (whose link it is)"),
)
"""The link's parts as the parser names them, and as a person reads them."""


def plain_link_error(message: str) -> str:
    """A parse error in words: the relay's terms come with what they are."""
    for term, words in PARTS:
        if message.startswith(term):
            return words + message[len(term) :]
    return message


def _read_link_file(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8")
        mode = path.stat().st_mode
    except OSError as exc:
        raise UsageError(f"cannot read --link-file: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise UsageError("--link-file is not UTF-8 text") from exc
    if mode & 0o077:
        eprint(
            f"m42: warning: {escape_text(str(path))} can be read by other users; "
            f"the link in it is a secret (chmod 600 {escape_text(str(path))})"
        )
    return text


def key_store(args: argparse.Namespace) -> FileKeyStore:
    return FileKeyStore(Path(args.keys_dir) if args.keys_dir else default_key_dir())


def isatty(stream: object) -> bool:
    """Whether ``stream`` is a terminal; False for anything that cannot say."""
    probe = getattr(stream, "isatty", None)
    try:
        return bool(probe()) if callable(probe) else False
    except (OSError, ValueError):
        return False
