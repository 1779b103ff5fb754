"""Unix-domain-socket transport for m42d: length-prefixed relay frames, no TLS.

URL: ``unix:///absolute/path/to.sock`` (empty host, percent-encoded path), the
same syntax links use (:func:`m42d.link.parse_relay_url`).

Why a relay would listen here: a local front end, a test rig or a sidecar
reaches the relay without a TCP port, and the filesystem decides who may
connect (the socket file is ``0660`` by default, so the relay's group).  The
frames are the stream form of :mod:`m42d.wire` (``length:u32 | kind |
body``), exactly as over TCP+TLS, carried by
:class:`m42d.transport.StreamFrameConnection`; this module only opens and
closes sockets.

Rules this plugin keeps:

* Listening never steals a socket.  An existing path is replaced only when
  it is a socket nobody accepts on (left behind by a crash); a live socket,
  or a path that is not a socket, is a :class:`~m42d.errors.TransportError`.
  A missing directory is an error too: creating directories with the
  right owner and mode is the operator's (or systemd's
  ``RuntimeDirectory=``) job.
* The socket file gets its mode before ``listen()``, so no client can connect
  through a moment of default permissions; it is unlinked on close, unless
  another listener has replaced it meanwhile.
* An inherited socket (``sock=``, socket activation) is used as it is and
  never unlinked: its file belongs to whoever created it.
* There is no client address: ``address`` is ``""``, which the relay reads as
  "no address", so its per-address limits do not apply (its global ones
  do).  Who may connect at all is up to the socket file's permissions.
* There is no TLS: a listener given an ``ssl_context`` and a connection given
  a certificate ``pin`` are refused rather than silently unprotected.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import ssl
import stat
import urllib.parse
from collections.abc import AsyncIterator, Sequence
from functools import partial
from typing import Final, final

import trio

from m42d.errors import LinkError, TransportError
from m42d.link import parse_relay_url
from m42d.transport import (
    DEFAULT_CONNECT_TIMEOUT,
    FrameConnection,
    FrameHandler,
    StreamFrameConnection,
    dialing,
    serve_sockets,
)

__all__ = [
    "ADDRESS",
    "DEFAULT_MODE",
    "SCHEME",
    "UnixListener",
    "UnixTransport",
    "socket_path",
    "unix_url",
]

logger = logging.getLogger("m42d.transport.unix")

SCHEME: Final = "unix"
ADDRESS: Final = ""
"""The ``address`` of every connection: a Unix socket has no address to log or limit by."""

DEFAULT_MODE: Final = 0o660
"""Owner and group may connect; everyone else gets EACCES from the kernel."""

STALE_PROBE_TIMEOUT: Final = 1.0
"""How long to try an existing socket before deciding; a busy live relay still answers."""


def socket_path(url: str) -> str:
    """The filesystem path in ``unix:///path``.

    Raises:
        TransportError: not a ``unix`` URL, or not a valid one.
    """
    try:
        address = parse_relay_url(url)
    except LinkError as exc:
        raise TransportError(f"invalid unix transport URL: {exc}") from exc
    if address.scheme != SCHEME:
        raise TransportError(f"URL scheme {address.scheme!r} is not unix")
    return address.socket_path


def unix_url(path: str) -> str:
    """The inverse of :func:`socket_path`: what ``listening on`` shows and links carry."""
    return f"{SCHEME}://{urllib.parse.quote(path)}"


@final
class UnixListener:
    """One listening Unix socket that hands out frame connections.

    Args:
        listener: the listening socket, wrapped by trio.
        path: the socket file to unlink on close, or None for an inherited
            socket (its file is not ours).
    """

    def __init__(self, listener: trio.SocketListener, path: str | None) -> None:
        self._listener = listener
        self._url = _listener_url(listener.socket)
        self._path = path
        self._identity = _file_identity(path) if path is not None else None

    def __repr__(self) -> str:
        return f"<UnixListener {self._url}>"

    @property
    def urls(self) -> Sequence[str]:
        return [self._url]

    async def serve(
        self,
        handler: FrameHandler,
        *,
        handler_nursery: trio.Nursery | None = None,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        async def frames(stream: trio.SocketStream, address: str) -> StreamFrameConnection:
            # No handshake: framing is all a Unix socket needs (and no address).
            return StreamFrameConnection(stream, transport=SCHEME, address=ADDRESS)

        # Backs off on EMFILE and friends, runs handlers in handler_nursery
        # when given, and closes this listener however serving ends.
        await serve_sockets(
            [self._listener],
            handler,
            frames,
            close=self.aclose,
            handler_nursery=handler_nursery,
            task_status=task_status,
        )

    async def aclose(self) -> None:
        """Close the socket and remove its file if it is still the one we made.

        All of it happens before the first checkpoint: ``aclose`` is often
        called in a cancelled scope (``serve`` cancelled), where anything
        after an ``await`` would never run.
        """
        self._listener.socket.close()
        path, self._path = self._path, None
        if path is not None and _file_identity(path) == self._identity:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        await trio.lowlevel.checkpoint()


@final
class UnixTransport:
    """The ``unix`` entry point of the ``m42d.transports`` group.

    Args:
        mode: permission bits of socket files this transport creates.
    """

    def __init__(self, *, mode: int = DEFAULT_MODE) -> None:
        self.mode = mode

    async def open_listener(
        self,
        url: str,
        *,
        ssl_context: ssl.SSLContext | None = None,
        sock: socket.socket | None = None,
    ) -> UnixListener:
        path = socket_path(url)
        if ssl_context is not None:
            raise TransportError("a unix:// listener has no TLS; it cannot use a certificate")
        if sock is not None:
            return UnixListener(trio.SocketListener(_adopt(sock)), None)
        await _remove_stale_socket(path)
        listening = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            try:
                await listening.bind(path)
                os.chmod(path, self.mode)
                listening.listen(socket.SOMAXCONN)
            except OSError as exc:
                raise TransportError(
                    f"cannot listen on {unix_url(path)}: {_reason(exc, path)}"
                ) from exc
        except BaseException:
            listening.close()
            raise
        return UnixListener(trio.SocketListener(listening), path)

    @contextlib.asynccontextmanager
    async def connect(
        self,
        url: str,
        *,
        ssl_context: ssl.SSLContext | None = None,
        pin: bytes | None = None,
        room_id: bytes | None = None,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    ) -> AsyncIterator[FrameConnection]:
        # ssl_context says how to verify TLS *if* there is any: nothing to do.
        # A pin promises one certificate; with no TLS that promise cannot hold.
        # room_id is for routing, and a socket file has no load balancer.
        path = socket_path(url)
        if pin is not None:
            raise TransportError(
                "a unix:// relay has no TLS certificate, so the link's pin cannot be checked"
            )
        # dialing() is the one translation of a failed connect into TransportError.
        with dialing(unix_url(path), reason=partial(_reason, path=path)):
            with trio.fail_after(connect_timeout):
                stream = await trio.open_unix_socket(path)
        connection = StreamFrameConnection(stream, transport=SCHEME, address=ADDRESS)
        try:
            yield connection
        finally:
            await connection.aclose()


# -- helpers --------------------------------------------------------------------


def _adopt(sock: socket.socket) -> trio.socket.SocketType:
    """An inherited socket, checked: a TCP or datagram socket here is a unit-file mistake."""
    if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
        raise TransportError("the inherited socket for unix:// is not an AF_UNIX stream socket")
    return trio.socket.from_stdlib_socket(sock)


def _socket_file_exists(path: str) -> bool:
    """Whether ``path`` is an existing socket file; False when nothing is there.

    Raises:
        TransportError: the directory is missing, or the path is not a socket.
    """
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        raise TransportError(
            f"cannot listen on {unix_url(path)}: directory {directory} does not exist"
        )
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise TransportError(f"cannot listen on {unix_url(path)}: {_reason(exc, path)}") from exc
    if not stat.S_ISSOCK(mode):
        raise TransportError(
            f"cannot listen on {unix_url(path)}: the path exists and is not a socket"
        )
    return True


async def _remove_stale_socket(path: str) -> None:
    """Unlink ``path`` if it is a socket that nobody accepts on; refuse anything else.

    Raises:
        TransportError: the directory is missing, the path is not a socket,
            or a process is listening on it.
    """
    if not _socket_file_exists(path):
        return
    try:
        with trio.fail_after(STALE_PROBE_TIMEOUT):
            probe = await trio.open_unix_socket(path)
    except ConnectionRefusedError:
        logger.info("removing stale socket %s", unix_url(path))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    except FileNotFoundError:
        return  # removed meanwhile
    except (OSError, trio.TooSlowError) as exc:
        # EACCES or a backlog so full that connect blocks: someone owns it.
        raise TransportError(
            f"cannot listen on {unix_url(path)}: the socket exists and cannot be "
            "checked or is busy; remove it if no relay is running"
        ) from exc
    await probe.aclose()
    raise TransportError(f"cannot listen on {unix_url(path)}: another process is listening on it")


def _file_identity(path: str) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (info.st_dev, info.st_ino)


def _listener_url(sock: trio.socket.SocketType) -> str:
    name = sock.getsockname()
    if isinstance(name, bytes):  # Linux abstract namespace: b"\0name"
        name = name.decode("utf-8", "backslashreplace")
    if name.startswith("\0"):
        return f"{SCHEME}://@{urllib.parse.quote(name[1:])}"
    return unix_url(str(name))


def _reason(exc: OSError, path: str) -> str:
    """The OS reason in one phrase; socket paths have a length limit worth naming."""
    if exc.strerror:
        return str(exc.strerror)
    text = str(exc)
    if "too long" in text:
        return f"the socket path is too long ({len(os.fsencode(path))} bytes; the OS allows ~107)"
    return text
