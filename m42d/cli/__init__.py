"""The ``m42`` command: create a room, chat, send and receive files, trust a new key.

Every subcommand is a small user interface over one
:class:`m42d.client.engine.Client`, in a module of its own (:mod:`.new`,
:mod:`.chat`, :mod:`.send`, :mod:`.recv`, :mod:`.trust`).  Exit codes
(:mod:`.exits`; documented in docs/client.md and in ``m42 --help``):

====  ===========================================================
0     success (``send``: everything acknowledged end to end)
1     error (a file could not be read, a transfer failed, ...)
2     usage error (bad option, missing or malformed link)
3     timeout: the other person did not come within ``--wait``, or
      ``--count`` was not reached within ``--timeout``
4     the peer's key changed: compare the safety words, then ``m42 trust``
5     refused by the relay (wrong link, expired, burned, opened elsewhere)
6     the relay could not be reached within ``--wait`` / ``--timeout``
7     the two links' room secrets differ (``send`` / ``recv`` / ``trust``)
129   SIGHUP (the terminal closed)
130   interrupted (Ctrl-C) in ``send`` / ``recv`` / ``trust``
143   SIGTERM
====  ===========================================================

A signal leaves the way the command's own end does (see
:class:`m42d.cli.running.Leaving`).

Secrets are never printed, except the two links by ``m42 new``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TextIO

import trio

from m42d.cli.chat import cmd_chat
from m42d.cli.exits import (
    EXIT_CODES,
    EXIT_ERROR,
    EXIT_HANGUP,
    EXIT_INTERRUPTED,
    EXIT_KEY_CHANGED,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_TERMINATED,
    EXIT_TIMEOUT,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    EXIT_WRONG_SECRET,
    RelayUnreachable,
    UsageError,
)
from m42d.cli.new import cmd_new
from m42d.cli.output import PROGRESS, eprint
from m42d.cli.parser import build_parser
from m42d.cli.recv import cmd_recv
from m42d.cli.send import cmd_send
from m42d.cli.trust import cmd_trust
from m42d.client.connection import RelayRefused
from m42d.client.names import escape_text
from m42d.client.nodump import keep_secrets_out_of_core_dumps
from m42d.errors import M42Error

__all__ = [
    "EXIT_CODES",
    "EXIT_ERROR",
    "EXIT_HANGUP",
    "EXIT_INTERRUPTED",
    "EXIT_KEY_CHANGED",
    "EXIT_OK",
    "EXIT_REFUSED",
    "EXIT_TERMINATED",
    "EXIT_TIMEOUT",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "EXIT_WRONG_SECRET",
    "build_parser",
    "main",
]


async def _dispatch(args: argparse.Namespace, stdin: TextIO) -> int:
    if args.command == "new":
        return await cmd_new(args)
    if args.command == "send":
        return await cmd_send(args, stdin)
    if args.command == "recv":
        return await cmd_recv(args, stdin)
    if args.command == "trust":
        return await cmd_trust(args, stdin)
    return await cmd_chat(args, stdin)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``m42``; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    debug = bool(getattr(args, "debug", False))
    keep_secrets_out_of_core_dumps()  # before any link or key is read
    try:
        try:
            return trio.run(_dispatch, args, sys.stdin)
        finally:
            PROGRESS.end_line()  # never leave the prompt after a half-drawn line
    except BaseException as raised:
        inner = _sole_exception(raised)
        if isinstance(inner, KeyboardInterrupt):
            if args.command == "chat":
                eprint("\nbye")
                return EXIT_OK
            return EXIT_INTERRUPTED
        if debug or not isinstance(inner, M42Error | OSError | trio.TooSlowError):
            raise
        if isinstance(inner, UsageError):
            if inner.show_usage:
                parser.print_usage(sys.stderr)
            eprint(f"m42: error: {escape_text(str(inner))}")
            return EXIT_USAGE
        if isinstance(inner, trio.TooSlowError):
            eprint("m42: timed out")
            return EXIT_TIMEOUT
        # An error may carry the relay's words (RelayRefused) or a peer's
        # file name: escaped like everything else that reaches the terminal.
        eprint(f"m42: {escape_text(str(inner) or type(inner).__name__)}")
        if isinstance(inner, RelayUnreachable):
            return EXIT_UNREACHABLE
        return EXIT_REFUSED if isinstance(inner, RelayRefused) else EXIT_ERROR


def _sole_exception(exc: BaseException) -> BaseException:
    """The one exception inside nested single-member groups (trio nurseries wrap errors)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc
