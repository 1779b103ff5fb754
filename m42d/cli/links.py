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
from typing import TextIO

from m42d.cli.exits import UsageError
from m42d.cli.output import eprint
from m42d.client.keystore import FileKeyStore, default_key_dir
from m42d.client.names import escape_text
from m42d.errors import LinkError
from m42d.link import Link

__all__ = ["isatty", "key_store", "read_link"]


def read_link(args: argparse.Namespace, stdin: TextIO) -> Link:
    """The link from the argument, '-' (stdin), --link-file, $M42_LINK or a prompt, in that order.

    The prompt (a terminal, nothing else given) does not echo: the link
    lands neither on the screen nor in the shell's history.
    """
    text: str | None = None
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
    try:
        return Link.parse(text.strip().splitlines()[0])
    except LinkError as exc:
        raise UsageError(f"bad link: {exc}") from exc


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
