"""The phases of a session, and the one table of the transitions between them.

In the style of h11's ``_state.py``: the machine never assigns a phase; it
fires a :class:`Trigger`, and :data:`TRANSITIONS` says where that leads from
the phase it is in.  A pair the table does not list is a bug in the machine,
not something the peer did, and raises :class:`LocalProtocolError`.

Rules and invariants
--------------------
* OFFLINE: the peer is not known to be online (or this side just trusted a
  changed key and has not seen it since).  Nothing is sealed; records wait.
* HANDSHAKE: a handshake is in flight or due (A retries, B waits for HS1
  and repeats its RESET).  A renewing A is here too: it still receives on
  the old keys but holds back what it sends.
* ESTABLISHED: keys are confirmed; records are sealed and sent at once.  A
  HS1 does not leave it (message 1 proves nothing); HS3 or B's HELLO moves
  it to the new keys without leaving it.
* BLOCKED: the peer presented a key other than the pinned one.  Nothing
  flows, B ignores HS1, A starts no handshake, until the user trusts the
  key or that peer goes (PEER_OFFLINE: the changed key is forgotten, and
  the next presence gets a fresh handshake, which the pinned key passes and
  a changed one blocks again: so a room recovers by itself once a device
  that opened someone's link leaves and theirs comes back).  A new presence
  without a leaving, failures and garbage leave it BLOCKED.
* Triggers from the outside are legal wherever they can arrive: the glue's
  PEER_ONLINE and PEER_OFFLINE and the FAIL_OFFLINE any input can cause in
  every phase, FAIL in every phase the peer can be online in (all but
  OFFLINE, which the peer's presence always leaves).  The others are
  fired only where the machine's own state implies the phase: START only
  while HANDSHAKE, RENEW only while ESTABLISHED, ESTABLISH and KEY_CHANGED
  only with a handshake in flight, HS1 never while BLOCKED, TRUST only
  while BLOCKED.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final, final

import attrs

from m42d.errors import LocalProtocolError


class Phase(enum.Enum):
    OFFLINE = "offline"
    HANDSHAKE = "handshake"
    ESTABLISHED = "established"
    BLOCKED = "blocked"


class Trigger(enum.Enum):
    PEER_ONLINE = "see the peer come online"  # JOINED with the peer, PEER_UP
    PEER_OFFLINE = "see the peer go offline"  # PEER_DOWN, or our connection dropped
    START = "start a fresh handshake"  # A sends HS1 (fresh)
    RENEW = "renew the keys"  # A sends HS1 (renew) on the live session
    HS1 = "answer a HS1"  # B sends HS2
    ESTABLISH = "install new keys"  # B read HS3, or A read B's HELLO on the new keys
    KEY_CHANGED = "meet a changed peer key"  # the peer's static key is not the pinned one
    TRUST = "trust the changed key"  # the user accepted it
    FAIL = "fail"  # the session or the handshake broke, with the peer online
    FAIL_OFFLINE = "fail offline"  # ... with the peer offline


_O, _H, _E, _B = Phase.OFFLINE, Phase.HANDSHAKE, Phase.ESTABLISHED, Phase.BLOCKED

TRANSITIONS: Final[Mapping[tuple[Phase, Trigger], Phase]] = MappingProxyType(
    {
        (_O, Trigger.PEER_ONLINE): _H,
        (_O, Trigger.PEER_OFFLINE): _O,
        (_O, Trigger.HS1): _H,  # an HS1 before the relay said the peer is there
        (_O, Trigger.FAIL_OFFLINE): _O,
        (_H, Trigger.PEER_ONLINE): _H,
        (_H, Trigger.PEER_OFFLINE): _O,
        (_H, Trigger.START): _H,
        (_H, Trigger.HS1): _H,
        (_H, Trigger.ESTABLISH): _E,
        (_H, Trigger.KEY_CHANGED): _B,
        (_H, Trigger.FAIL): _H,
        (_H, Trigger.FAIL_OFFLINE): _O,
        (_E, Trigger.PEER_ONLINE): _H,  # a new presence: whatever keys we had may be stale
        (_E, Trigger.PEER_OFFLINE): _O,
        (_E, Trigger.RENEW): _H,
        (_E, Trigger.HS1): _E,  # HS1 proves nothing: the session stands until HS3
        (_E, Trigger.ESTABLISH): _E,  # B: a renewal, or a fresh session over a live one
        (_E, Trigger.KEY_CHANGED): _B,
        (_E, Trigger.FAIL): _H,
        (_E, Trigger.FAIL_OFFLINE): _O,
        (_B, Trigger.PEER_ONLINE): _B,
        (_B, Trigger.PEER_OFFLINE): _O,  # the changed key went with that peer
        (_B, Trigger.TRUST): _O,
        (_B, Trigger.FAIL): _B,
        (_B, Trigger.FAIL_OFFLINE): _B,
    }
)


@final
@attrs.define
class Phases:
    """The phase a session is in; it changes only by :meth:`fire`."""

    _phase: Phase = Phase.OFFLINE

    @property
    def phase(self) -> Phase:
        return self._phase

    def fire(self, trigger: Trigger) -> Phase:
        """Move by the table; returns the new phase.

        Raises:
            LocalProtocolError: the table has no such move from this phase.
        """
        try:
            self._phase = TRANSITIONS[(self._phase, trigger)]
        except KeyError:
            raise LocalProtocolError(
                f"a session cannot {trigger.value} while {self._phase.value}"
            ) from None
        return self._phase
