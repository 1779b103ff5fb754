"""What the relay's refusals and a lost connection mean, in the words of the person at the screen.

The wire speaks in numbers (``ERROR 409``, a WebSocket close code 1006) and
in the relay's own terms (seat, ticket); a person needs to know what
happened to *their link* and what to do.  Every client event that carries
such a condition (:class:`~m42d.client.events.Problem`,
:class:`~m42d.client.events.Reconnecting`) gets its text here; the number
stays in the event's ``code`` for scripts.

A relay's own message is the relay's claim, not ours: it is kept only
where no sentence of ours fits (an unknown code), and the interfaces escape
it like everything else that came over the network.
"""

from __future__ import annotations

import os
import re
import socket
from typing import Final

import trio

from m42d.errors import ConnectionClosed, TransportError
from m42d.ticket import Seat
from m42d.wire import ErrorCode

__all__ = ["MAX_REASON", "creation_words", "lost_words", "refusal_words", "retry_words"]

_CONNECT: Final = re.compile(r"^cannot connect to \S+: ")
_ALL_ATTEMPTS: Final = re.compile(r"all attempts to connect to \S+ failed")
"""trio's words when every address of a host refused (the plugins keep no cause)."""
_HANDSHAKE: Final = re.compile(r"^websocket handshake with \S+ refused ")
"""A server that is not an m42 relay (a web server's 404) says so."""

OTHER_VERSION: Final = (
    "the relay speaks another protocol version: update m42, or ask for a newer relay"
)

MAX_REASON: Final = 52
"""Characters of a reconnect reason: one short line with its "retrying in" tail."""


def refusal_words(code: int, relay_message: str, seat: Seat) -> str:
    """Why the relay will not take this link (an ERROR that ends the engine), and what to do."""
    other = Seat.B if seat is Seat.A else Seat.A
    if code == ErrorCode.SEAT_TAKEN:
        # The person pushed out needs the next step, not only the news: the
        # other device may be theirs, or a leak (then the seat can be taken
        # back, and the room left, since whoever has the link can rejoin).
        return (
            f"your link (seat {seat.value}) was opened somewhere else: another device or "
            "window joined with it, so the relay closed this one (a link works in one place "
            f"at a time; the other person's link is seat {other.value}). If that was not you, "
            "open the link here again to take it back, compare the safety words, and move to "
            "a new room ('m42 new'): whoever has the link can come back"
        )
    if code == ErrorCode.BAD_TOKEN:
        return "the relay does not accept this link: it was changed, or is not the whole link"
    if code == ErrorCode.UNKNOWN_ROOM:
        return (
            "this relay did not make this link's room: was the relay address in the link changed?"
        )
    if code == ErrorCode.EXPIRED:
        return "this room has expired: make a new one with 'm42 new'"
    if code == ErrorCode.BURNED:
        return "this room was burned (destroyed for good): make a new one with 'm42 new'"
    if code == ErrorCode.UNSUPPORTED_VERSION:
        return OTHER_VERSION
    if code in (ErrorCode.BAD_FRAME, ErrorCode.TOO_LARGE, ErrorCode.CREDIT_EXCEEDED):
        return "the relay did not understand this client and closed the connection"
    return (
        f"the relay refused this link: {relay_message}"
        if relay_message
        else ("the relay refused this link")
    )


def creation_words(code: int, relay_message: str) -> str:
    """Why the relay will not make a room (``m42 new``), and what to do."""
    if code == ErrorCode.FORBIDDEN:
        return (
            "this relay makes rooms only for those who know its creation secret: "
            "give it with --creation-secret-file FILE (ask whoever runs the relay)"
        )
    if code == ErrorCode.RATE_LIMITED:
        return "the relay is making too many rooms for this address just now: try again in a minute"
    if code == ErrorCode.UNAVAILABLE:
        return "the relay cannot make a room just now (it is busy or full): try again later"
    if code == ErrorCode.UNSUPPORTED_VERSION:
        return OTHER_VERSION
    return (
        f"the relay would not make a room: {relay_message}"
        if relay_message
        else "the relay would not make a room"
    )


def lost_words(exc: BaseException, *, short: bool = True) -> str:
    """Why a connection attempt or a connection ended, short enough for one line
    (``short``: one reconnect line; else the whole reason, for a one-off error)."""
    if isinstance(exc, ConnectionClosed):
        return "the connection to the relay broke"
    if isinstance(exc, trio.TooSlowError):
        return "the relay did not answer in time"
    if isinstance(exc, TransportError):
        refusal = _os_refusal(exc)
        if refusal is not None:
            return refusal
        # The relay's address is said by the interface; what is left is why.
        text = _CONNECT.sub("cannot connect: ", str(exc))
        text = _HANDSHAKE.sub("something answered, but not as an m42 relay does ", text)
        text = _ALL_ATTEMPTS.sub("nothing answered", text)
        return _short(text) if short else text
    text = str(exc) or type(exc).__name__
    return _short(text) if short else text


def _os_refusal(exc: BaseException) -> str | None:
    """What the OS said when connecting failed: "Connection refused", not trio's
    "all attempts to connect to ... failed" (the errors are in its cause)."""
    seen: list[BaseException] = []
    pending: list[BaseException] = [exc]
    while pending and len(seen) < 16:
        current = pending.pop(0)
        seen.append(current)
        if isinstance(current, socket.gaierror):
            return f"cannot find the relay's host ({current.strerror or current})"
        if isinstance(current, OSError) and current.errno and current.errno > 0:
            return f"cannot connect: {os.strerror(current.errno)}"
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        if current.__cause__ is not None:
            pending.append(current.__cause__)
    return None


def retry_words(code: int) -> str:
    """A relay ERROR that a later attempt may not meet (busy, restarting, a slow join)."""
    if code == ErrorCode.RATE_LIMITED:
        return "the relay is busy (too many connections from here)"
    if code == ErrorCode.JOIN_TIMEOUT:
        return "the relay gave up waiting for this client"
    if code == ErrorCode.UNAVAILABLE:
        return "the relay is full or restarting"
    return "the relay had a problem"


def _short(text: str) -> str:
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 1].rstrip() + "\u2026"
