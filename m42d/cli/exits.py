"""How ``m42`` ends: its exit codes, and the error that means "the command line is wrong".

The codes are documented in docs/client.md and in ``m42 --help``; scripts
rely on them, so a code never changes its meaning.
"""

from __future__ import annotations

import signal
from typing import ClassVar, Final

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
    "RelayUnreachable",
    "UsageError",
]

EXIT_OK: Final = 0
EXIT_ERROR: Final = 1
EXIT_USAGE: Final = 2
EXIT_TIMEOUT: Final = 3
EXIT_KEY_CHANGED: Final = 4
EXIT_REFUSED: Final = 5
EXIT_UNREACHABLE: Final = 6
EXIT_WRONG_SECRET: Final = 7
EXIT_HANGUP: Final = 128 + signal.SIGHUP
EXIT_INTERRUPTED: Final = 128 + signal.SIGINT
EXIT_TERMINATED: Final = 128 + signal.SIGTERM

EXIT_CODES: Final = {
    EXIT_OK: "success",
    EXIT_ERROR: "error",
    EXIT_USAGE: "usage error (bad option, missing or malformed link)",
    EXIT_TIMEOUT: "timed out: the other person did not come within --wait, "
    "or --count was not reached within --timeout",
    EXIT_KEY_CHANGED: "the peer's key changed (compare the safety words, then run 'm42 trust')",
    EXIT_REFUSED: "refused by the relay: a wrong link, an expired or burned room, "
    "or the link opened elsewhere",
    EXIT_UNREACHABLE: "the relay could not be reached (--wait, --timeout)",
    EXIT_WRONG_SECRET: "this link's room secret does not match the other person's "
    "(was a link changed?)",
    EXIT_HANGUP: "the terminal closed (SIGHUP)",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C)",
    EXIT_TERMINATED: "terminated (SIGTERM)",
}


class UsageError(M42Error):
    """The command line is wrong; exit code 2."""

    show_usage: ClassVar[bool] = True
    """Whether the usage line helps (a bad option), or only the message does (a bad link)."""


class RelayUnreachable(M42Error):
    """No relay answered at the address; exit code 6, as ``send``/``recv`` give it.

    A script that makes rooms must tell "the relay is down" (retry later)
    from "the relay said no" (5) and from a bug (1).
    """
