"""The ``m42`` command line: subcommands, their options, and the help text around them."""

from __future__ import annotations

import argparse
import importlib.metadata
from typing import Final, TypeAlias

from m42d import __version__
from m42d.cli.chat import CHAT_HELP
from m42d.cli.exits import EXIT_CODES
from m42d.cli.new import DEFAULT_RELAY

__all__ = ["build_parser", "installed_version"]

LINK_HELP: Final = (
    "the room link, or '-' to read it from stdin.  A link on the command line is "
    "visible to other users of this machine (ps) and kept in the shell's history; "
    "leave it out to be asked for it (not echoed), or use --link-file"
)

EPILOG: Final = """\
links:
  A link holds the room secret.  Anyone who has it can read and write as you.
  Command-line arguments are visible to every user of the machine (ps, /proc)
  and the shell keeps them in its history, so leave the link out and paste it
  when asked (it is not echoed), or give it with --link-file FILE (mode 0600),
  as '-' (stdin), or in $M42_LINK set from a file, never typed out.

exit codes:
""" + "\n".join(f"  {code:<4} {text}" for code, text in EXIT_CODES.items())

_FORMAT: Final = argparse.RawDescriptionHelpFormatter

_Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be a positive number")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be a positive integer")
    return value


def installed_version() -> str:
    """The version pip installed (what a bug report should quote), else the source tree's."""
    try:
        return importlib.metadata.version("m42d")
    except importlib.metadata.PackageNotFoundError:
        return __version__


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks"
    )
    linked = argparse.ArgumentParser(add_help=False)
    linked.add_argument("link", nargs="?", metavar="LINK", help=LINK_HELP)
    linked.add_argument("--link-file", metavar="FILE", help="read the link from FILE")
    linked.add_argument(
        "--keys-dir",
        metavar="DIR",
        help="where room keys live (default: $XDG_DATA_HOME/m42/keys)",
    )

    parser = argparse.ArgumentParser(
        prog="m42",
        description="End-to-end-encrypted chat and file transfer for two people, "
        "through an m42d relay.",
        epilog=EPILOG,
        formatter_class=_FORMAT,
        parents=[common],
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"m42 {installed_version()}",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_new(sub, common)
    _add_chat(sub, [common, linked])
    _add_send(sub, [common, linked])
    _add_recv(sub, [common, linked])
    _add_trust(sub, [common, linked])
    return parser


def _add_new(sub: _Subparsers, common: argparse.ArgumentParser) -> None:
    new = sub.add_parser(
        "new",
        parents=[common],
        formatter_class=_FORMAT,
        help="create a room and print its two links",
        description="Ask the relay for a room, draw the room secret on this machine and print "
        "Link A (yours) and Link B (for the other person).  The relay never sees the secret.",
    )
    new.add_argument(
        "--relay",
        metavar="URL",
        help=f"relay address (default: $M42_RELAY, else {DEFAULT_RELAY})",
    )
    new.add_argument(
        "--pin",
        metavar="B64",
        help="the relay's TLS certificate pin ('m42d pin' prints it); for tls:// without it "
        "the certificate presented now is trusted and pinned",
    )
    new.add_argument(
        "--creation-secret-file",
        metavar="FILE",
        help="file holding the relay's room-creation secret (private relays)",
    )
    new.add_argument("--json", action="store_true", help='print {"link_a","link_b","expires"}')
    new.add_argument("--qr", action="store_true", help="also draw Link B as a QR code")
    new.add_argument(
        "--timeout", type=_positive_float, default=10.0, help="seconds to wait for the relay"
    )


def _add_chat(sub: _Subparsers, parents: list[argparse.ArgumentParser]) -> None:
    chat = sub.add_parser(
        "chat",
        parents=parents,
        formatter_class=_FORMAT,
        help="talk interactively and swap files",
        description="Interactive chat.  Type a line to send it; /help lists commands.",
        epilog=CHAT_HELP,
    )
    chat.add_argument(
        "--out", metavar="DIR", default=".", help="where received files go (default: .)"
    )
    chat.add_argument("--accept", action="store_true", help="accept every offered file")
    chat.add_argument(
        "--max-size", metavar="BYTES", type=_positive_int, help="refuse larger incoming files"
    )


def _add_send(sub: _Subparsers, parents: list[argparse.ArgumentParser]) -> None:
    send = sub.add_parser(
        "send",
        parents=parents,
        formatter_class=_FORMAT,
        help="send texts or files, exit when the peer confirmed them",
        description="Send texts and files; exits 0 only after the peer acknowledged all of "
        "them end to end.  Without --text or --file, stdin is sent as one text.",
    )
    send.add_argument("--text", action="append", metavar="TEXT", help="a message (repeatable)")
    send.add_argument("--file", action="append", metavar="PATH", help="a file (repeatable)")
    send.add_argument(
        "--wait",
        type=_positive_float,
        metavar="SECONDS",
        help="give up (exit 3) if no secure session stands within SECONDS (default: wait)",
    )


def _add_recv(sub: _Subparsers, parents: list[argparse.ArgumentParser]) -> None:
    recv = sub.add_parser(
        "recv",
        parents=parents,
        formatter_class=_FORMAT,
        help="receive texts (stdout) and files (--out)",
        description="Print received texts on stdout and save files into --out.  Texts are "
        "printed with control characters escaped.",
    )
    recv.add_argument("--out", metavar="DIR", default=".", help="where files go (default: .)")
    recv.add_argument(
        "--count", type=_positive_int, metavar="N", help="exit 0 after N texts or files"
    )
    recv.add_argument(
        "--timeout",
        type=_positive_float,
        metavar="SECONDS",
        help="stop after SECONDS: exit 3 if --count was not reached, else 0",
    )
    recv.add_argument(
        "--jsonl",
        action="store_true",
        help="one JSON object per event (peer_up, peer_down, safety_words, key_changed, text, "
        "delivered, text_failed, file_offer, file_progress, file_done, file_failed, error), "
        "each with a 'ts'; docs/client.md lists their fields",
    )
    recv.add_argument(
        "--max-size", metavar="BYTES", type=_positive_int, help="refuse larger incoming files"
    )


def _add_trust(sub: _Subparsers, parents: list[argparse.ArgumentParser]) -> None:
    trust = sub.add_parser(
        "trust",
        parents=parents,
        formatter_class=_FORMAT,
        help="accept the peer's changed key after comparing the safety words",
        description="Connect, show the safety words with the peer's new key and pin it once "
        "you confirm that the other person sees the same words.",
    )
    trust.add_argument(
        "--yes", action="store_true", help="do not ask (you compared the safety words)"
    )
    trust.add_argument(
        "--wait", type=_positive_float, metavar="SECONDS", help="give up after SECONDS (exit 3)"
    )
