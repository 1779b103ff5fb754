"""What ``m42 send`` and ``m42 recv`` are doing, one line on stderr each time it changes.

A command that waits says what for: connecting to the relay, not reaching
it (and retrying), waiting for the other person, waiting for them to accept
a file.  Without these a person cannot tell a dead relay from a peer who has
not come yet; with them, and :meth:`Status.give_up`, ``--wait`` names the
right one and exits with its own code.

The relay's address comes from the link (no secret is in it); reasons are
the engine's words (:mod:`m42d.client.relay_words`); both are escaped.
"""

from __future__ import annotations

from typing import final

from m42d.cli.exits import EXIT_TIMEOUT, EXIT_UNREACHABLE
from m42d.cli.output import eprint, human_size, retry_in
from m42d.client import events as ev
from m42d.client.names import escape_text

__all__ = ["Status"]


@final
class Status:
    """The states of one command's connection and session, said as they change.

    Args:
        relay: the relay's address, as the link gives it.
        quiet: say nothing (``recv --jsonl`` prints events instead); the
            states are still kept for :meth:`give_up`.
    """

    def __init__(self, relay: str, *, quiet: bool = False) -> None:
        self._relay = escape_text(relay)
        self._quiet = quiet
        self.reached = False
        """The relay took our link at least once."""
        self.secured = False
        """A secure session stood at least once."""
        self._connected = False
        self._last_reason = ""
        self._waiting_for_offer: set[int] = set()

    def starting(self) -> None:
        self._say(f"connecting to the relay {self._relay}")

    def show(self, event: ev.ClientEvent) -> None:
        """Say what ``event`` changes, if anything."""
        if isinstance(event, ev.Connected):
            self.reached = self._connected = True
            if not event.peer_online:
                self._say("connected; waiting for the other person to open their link")
        elif isinstance(event, ev.Reconnecting):
            self._last_reason = event.reason
            reason = escape_text(event.reason)
            if self._connected:
                self._say(f"lost the relay: {reason} ({retry_in(event.delay)})")
            else:
                self._say(
                    f"can't reach the relay {self._relay}: {reason} ({retry_in(event.delay)})"
                )
            self._connected = False
        elif isinstance(event, ev.PeerOffline):
            self._say("the other person left; waiting for them to come back")
        elif isinstance(event, ev.SafetyWords):
            self.secured = True
        elif isinstance(event, ev.Progress):
            self._waiting_for_offer.discard(event.file_id)

    def offered(self, file_id: int, name: str, size: int) -> None:
        """One of our files is offered: say that it waits for the other person's yes."""
        if file_id in self._waiting_for_offer:
            return
        self._waiting_for_offer.add(file_id)
        self._say(
            f"offered {escape_text(name)} ({human_size(size)}); "
            "waiting for the other person to accept it"
        )

    def give_up(self, seconds: float) -> int:
        """The wait is over: say who did not come (the relay or the person); the exit code."""
        if not self.reached:
            why = f": {escape_text(self._last_reason)}" if self._last_reason else ""
            eprint(f"m42: could not reach the relay {self._relay} within {seconds:g} s{why}")
            return EXIT_UNREACHABLE
        eprint(f"m42: the other person did not come within {seconds:g} s")
        return EXIT_TIMEOUT

    def _say(self, line: str) -> None:
        if not self._quiet:
            eprint(f"m42: {line}")
