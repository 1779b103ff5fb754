"""systemd integration without a dependency: sd_notify, the watchdog, socket activation.

The notify protocol is one datagram of ``KEY=value`` lines to the AF_UNIX
socket named by ``$NOTIFY_SOCKET``; socket activation is a run of inherited
file descriptors from 3 on, described by ``$LISTEN_PID``, ``$LISTEN_FDS`` and
``$LISTEN_FDNAMES``.  Both are small, stable and documented (sd_notify(3),
sd_listen_fds(3)), so linking libsystemd or depending on a wrapper buys
nothing.  Outside systemd every call here is a cheap no-op, so the daemon
calls them unconditionally.

How ``m42d serve`` (m42d/daemon.py) uses this module:

* at start, before binding anything: ``listen_fds_by_name()`` maps the
  ``FileDescriptorName=`` of each socket unit (``ws``, ``tls``) to inherited
  sockets; a transport given inherited sockets does not bind its configured
  address itself;
* ``ready()`` once EVERY listener is bound (inherited or not), so that
  ``systemctl start`` returns, and units ordered after m42d start, only when
  clients can connect;
* ``status(text)`` periodically with rooms and connections (shown by
  ``systemctl status``);
* on SIGHUP: ``with reload_cycle(): <reload>`` sends ``RELOADING=1`` (with
  ``MONOTONIC_USEC=``) before and ``READY=1`` after, also when the reload
  failed and the old state is kept;
* on SIGTERM/SIGINT: ``stopping()`` first, then the graceful stop;
* when ``watchdog_interval()`` is not None: ``nursery.start(run_watchdog,
  interval)``.  The pings come from a trio task, so they stop when the event
  loop is wedged, which is exactly what the watchdog should notice.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import time
from collections.abc import Iterator, Mapping
from typing import Final

import trio

from m42d.errors import ConfigError

__all__ = [
    "SD_LISTEN_FDS_START",
    "SocketActivationError",
    "listen_fds",
    "listen_fds_by_name",
    "notify",
    "ready",
    "reload_cycle",
    "reloading",
    "run_watchdog",
    "status",
    "stopping",
    "watchdog_interval",
    "watchdog_ping",
]

log = logging.getLogger("m42d.systemd")

SD_LISTEN_FDS_START: Final = 3
"""The first inherited descriptor; fixed by the protocol (stdin, stdout, stderr come before)."""

UNKNOWN_FD_NAME: Final = "unknown"
"""The name systemd gives a descriptor whose socket unit sets no ``FileDescriptorName=``."""

_LISTEN_VARIABLES: Final = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")


class SocketActivationError(ConfigError):
    """``$LISTEN_FDS``/``$LISTEN_FDNAMES`` are malformed or name a descriptor that is no socket.

    A ConfigError because it is a deployment mistake (a broken unit or
    harness), reported once at start like a bad option.
    """


# --- sd_notify -------------------------------------------------------------------


def notify(state: str) -> bool:
    """Send one sd_notify datagram; True if it was handed to the socket.

    Does nothing and returns False when ``$NOTIFY_SOCKET`` is unset (not run
    by systemd, or a unit type other than notify).  A leading ``@`` names a
    Linux abstract socket.  The socket is non-blocking: if systemd's queue is
    full the notification is dropped rather than freezing the event loop that
    calls this, and a failure is logged, never raised, because losing a
    status line must not take the relay down.
    """
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address[0] == "@":
        address = "\0" + address[1:]
    elif address[0] != "/":
        # systemd >= 253 may also pass "vsock:CID:PORT" (to VMs); not for us.
        log.debug("NOTIFY_SOCKET %r is not an AF_UNIX address; ignored", address)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.setblocking(False)
            sock.connect(address)
            sock.send(state.encode("utf-8"))
    except OSError as exc:
        log.warning("could not notify systemd (%s): %s", state.partition("=")[0], exc)
        return False
    return True


def ready() -> bool:
    """``READY=1``: every listener is bound; systemd now reports the unit as started."""
    return notify("READY=1")


def stopping() -> bool:
    """``STOPPING=1``: the graceful stop began; sent before GOAWAY goes out to peers."""
    return notify("STOPPING=1")


def _monotonic_usec() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def reloading() -> bool:
    """``RELOADING=1`` with ``MONOTONIC_USEC=``; call :func:`ready` when the reload is done.

    systemd >= 253 (``Type=notify-reload``) requires the timestamp to tell
    this reload from an older one; earlier versions ignore the extra field.
    """
    return notify(f"RELOADING=1\nMONOTONIC_USEC={_monotonic_usec()}")


@contextlib.contextmanager
def reload_cycle() -> Iterator[None]:
    """``RELOADING=1`` on entry, ``READY=1`` on exit, also when the reload raised.

    A failed reload keeps the old state, and the relay is still serving: the
    unit must not be left in "reloading" forever.
    """
    reloading()
    try:
        yield
    finally:
        ready()


def status(text: str) -> bool:
    """``STATUS=<text>``: one line shown by ``systemctl status``.

    Newlines become spaces: a newline would start a new assignment, so a
    status built from outside data could otherwise inject ``READY=1`` or
    ``MAINPID=``.
    """
    return notify("STATUS=" + " ".join(text.splitlines()))


def watchdog_ping() -> bool:
    """``WATCHDOG=1``: the event loop is alive."""
    return notify("WATCHDOG=1")


# --- watchdog ----------------------------------------------------------------------


def watchdog_interval() -> float | None:
    """The watchdog timeout in seconds from ``$WATCHDOG_USEC``, or None when off.

    None also when ``$WATCHDOG_PID`` names another process: the variables
    were meant for a parent and leaked to us, and pinging for it would hide
    its hang.  A malformed or non-positive value counts as off (as
    sd_watchdog_enabled(3) treats it).
    """
    raw = os.environ.get("WATCHDOG_USEC")
    if not raw:
        return None
    pid = os.environ.get("WATCHDOG_PID")
    if pid:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            return None
    try:
        usec = int(raw)
    except ValueError:
        return None
    if usec <= 0:
        return None
    return usec / 1_000_000


async def run_watchdog(
    interval: float, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Ping ``WATCHDOG=1`` at once and then every ``interval / 2`` seconds, forever.

    Half the interval is what sd_watchdog_enabled(3) recommends: one late
    wake-up must not look like a hang.  Runs until cancelled; start it in
    the daemon's root nursery with ``nursery.start`` so the first ping has
    gone out when ``start`` returns.

    Raises:
        ValueError: ``interval`` is not a positive finite number of seconds.
    """
    if not (math.isfinite(interval) and interval > 0):
        raise ValueError(f"watchdog interval must be positive seconds, got {interval!r}")
    period = interval / 2
    watchdog_ping()
    task_status.started()
    while True:
        await trio.sleep(period)
        watchdog_ping()


# --- socket activation ---------------------------------------------------------------


def _unset_listen_environment() -> None:
    for name in _LISTEN_VARIABLES:
        os.environ.pop(name, None)


def _non_negative_int(name: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise SocketActivationError(f"${name} is not a number") from None
    if value < 0:
        raise SocketActivationError(f"${name} is negative")
    return value


def _adopt(fd: int, name: str) -> socket.socket:
    try:
        os.set_inheritable(fd, False)
        # fileno= makes Python ask the kernel for family, type and protocol
        # (SO_DOMAIN, SO_TYPE, SO_PROTOCOL), so AF_UNIX, AF_INET and AF_INET6
        # units all come out right; the socket object now owns the fd.
        return socket.socket(fileno=fd)
    except OSError as exc:
        raise SocketActivationError(
            f"inherited descriptor {fd} ({name}) is not a usable socket: {exc.strerror}"
        ) from exc


def listen_fds(*, unset_environment: bool = True) -> list[tuple[str, socket.socket]]:
    """The sockets systemd passed us, as ``(FileDescriptorName, socket)`` in fd order.

    Empty unless ``$LISTEN_PID`` is our pid: a process that inherited the
    variables from an activated parent must not take the parent's
    descriptors.  Each adopted descriptor gets close-on-exec, and (as
    sd_listen_fds(unset_environment=1) does) the three variables are removed
    from the environment in every case, so no child sees them.  Call it once:
    the second call finds nothing, and the first call's sockets own the fds.

    Raises:
        SocketActivationError: a variable is malformed, the names do not
            match the count, or a descriptor is not a socket.
    """
    try:
        raw_pid = os.environ.get("LISTEN_PID")
        raw_count = os.environ.get("LISTEN_FDS")
        raw_names = os.environ.get("LISTEN_FDNAMES")
        if not raw_pid or raw_count is None:
            return []
        if _non_negative_int("LISTEN_PID", raw_pid) != os.getpid():
            return []
        count = _non_negative_int("LISTEN_FDS", raw_count)
        if count == 0:
            return []
        if raw_names is None:
            names = [UNKNOWN_FD_NAME] * count
        else:
            names = raw_names.split(":")
            if len(names) != count:
                raise SocketActivationError(
                    f"$LISTEN_FDNAMES has {len(names)} names for {count} descriptors"
                )
    finally:
        if unset_environment:
            _unset_listen_environment()
    adopted: list[tuple[str, socket.socket]] = []
    try:
        for offset, name in enumerate(names):
            adopted.append((name, _adopt(SD_LISTEN_FDS_START + offset, name)))
    except BaseException:
        for _, sock in adopted:
            sock.close()
        raise
    return adopted


def listen_fds_by_name(*, unset_environment: bool = True) -> Mapping[str, list[socket.socket]]:
    """:func:`listen_fds` grouped by name.

    A socket unit with several ``ListenStream=`` lines (say IPv4 and IPv6)
    passes several descriptors under one name; the transport of that name
    serves all of them.
    """
    grouped: dict[str, list[socket.socket]] = {}
    for name, sock in listen_fds(unset_environment=unset_environment):
        grouped.setdefault(name, []).append(sock)
    return grouped
