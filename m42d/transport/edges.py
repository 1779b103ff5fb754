"""The one translation of trio's, the OS's and TLS's exceptions at a transport's edge.

Foreign exceptions stop here: above a transport, code catches only the
m42d tree (m42d/errors.py).  Two edges exist and each has one mapping:

* an *open* connection: :func:`closed_error` (and :func:`map_stream_errors`,
  :func:`raise_closed` around it) turns ``trio.ClosedResourceError`` into
  :class:`~m42d.errors.ClosedLocally` ("you closed it") and everything else
  into :class:`~m42d.errors.ConnectionBroken` ("it broke");
  :data:`STREAM_ERRORS` is the tuple to catch where a failure is expected and
  nothing is to be said (closing a connection that may already be gone);
* *dialing*: :func:`dialing` turns a timeout, a refused or unreachable
  address and a failed TLS handshake into a :class:`~m42d.errors.TransportError`
  whose message names the target.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Final, NoReturn

import trio

from m42d.errors import ClosedLocally, ConnectionBroken, ConnectionClosed, TransportError

__all__ = ["STREAM_ERRORS", "closed_error", "dialing", "map_stream_errors", "raise_closed"]

STREAM_ERRORS: Final = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)
"""What an open trio stream raises when it cannot carry bytes (``ssl.SSLError`` is an OSError)."""


def closed_error(exc: BaseException, what: str = "connection") -> ConnectionClosed:
    """The m42d exception for ``exc``, one of :data:`STREAM_ERRORS` (raise it ``from exc``)."""
    if isinstance(exc, trio.ClosedResourceError):
        return ClosedLocally(f"{what} was already closed by this side")
    if isinstance(exc, trio.BrokenResourceError):
        cause = exc.__cause__
        detail = f": {type(cause).__name__}" if cause is not None else ""
        return ConnectionBroken(f"{what} broke{detail}")
    return ConnectionBroken(f"{what} failed: {type(exc).__name__}")


def raise_closed(exc: BaseException, what: str = "connection") -> NoReturn:
    """Raise :func:`closed_error` of ``exc``; for hot paths that avoid a context manager."""
    raise closed_error(exc, what) from exc


@contextlib.contextmanager
def map_stream_errors(what: str = "connection") -> Iterator[None]:
    """Translate :data:`STREAM_ERRORS` of an open stream into ``ConnectionClosed``."""
    try:
        yield
    except STREAM_ERRORS as exc:
        raise_closed(exc, what)


def _os_reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


@contextlib.contextmanager
def dialing(target: str, *, reason: Callable[[OSError], str] = _os_reason) -> Iterator[None]:
    """Translate what connecting to ``target`` (TCP, then TLS) can raise into TransportError.

    ``reason`` words an OSError for people (the Unix transport names a
    missing socket file, for instance).  Use it around the whole dial,
    inside the ``trio.fail_after`` of the connect timeout.
    """
    try:
        yield
    except trio.TooSlowError as exc:
        raise TransportError(f"connecting to {target} timed out") from exc
    except OSError as exc:
        raise TransportError(f"cannot connect to {target}: {reason(exc)}") from exc
    except trio.BrokenResourceError as exc:
        cause = type(exc.__cause__).__name__ if exc.__cause__ else "connection lost"
        raise TransportError(f"TLS handshake with {target} failed ({cause})") from exc
