"""The ``m42d`` command: serve the relay, check a config, show the pin, rotate keys.

``serve`` is a straight line: configuration (embedded defaults, then the
file, then systemd credentials, then the command line) -> state directory ->
transports -> listeners -> relay.  Everything before the relay is done
before the first ``listening on`` line, so a misconfigured relay fails fast
with one sentence on stderr and exit status 2, and never half-starts.

Exit statuses: 0 success; 1 the relay or a command failed at run time; 2 bad
usage or configuration (as argparse does for usage errors).

Logs go to stderr, one line per event, prefixed ``m42d:`` (journald adds
the time).  No line carries a payload, token, key or secret; client
addresses only with ``--log-addresses``.

Under systemd (m42d/systemd.py; every call is a no-op elsewhere):
inherited sockets are taken once at start and served by the transport of
their ``FileDescriptorName=`` instead of the configured URLs of that
scheme (the name ``metrics`` goes to the metrics listener); ``READY=1`` is
sent only once every listener accepts; ``STATUS=`` whenever the room or
connection count changes (checked every :data:`STATUS_INTERVAL` s);
``RELOADING=1``/``READY=1`` around a SIGHUP reload; ``STOPPING=1`` at the
first SIGTERM/SIGINT; ``WATCHDOG=1`` from a trio task when the unit sets
``WatchdogSec=``.

Why this module is a little over 500 lines: ``serve`` is one straight
line from configuration to a running relay (the order matters and is
the point of the module), and the operator commands beside it share its
configuration loading; argument parsing is a third of the file.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import signal
import socket
import sys
import textwrap
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Final, TypeAlias

import attrs
import trio

from m42d import PROTOCOL_VERSION, __version__, gcpolicy, systemd
from m42d.config import (
    RelayConfig,
    check_host_port,
    load_config,
    merge_cli,
    with_credentials,
)
from m42d.errors import ConfigError, M42Error
from m42d.metrics import MetricsServer, build_registry, open_metrics_server
from m42d.relay.cluster import Cluster, new_node_name
from m42d.relay.server import Relay, serve_relay
from m42d.relay.state import (
    RelayState,
    certificate_pin,
    default_state_dir,
    pin_to_text,
    rotate_key_file,
    tls_paths,
)
from m42d.relay.store import open_store
from m42d.session import SESSION_VERSION
from m42d.transport import FrameListener, Transport, format_url, load_transports

__all__ = [
    "build_parser",
    "build_relay",
    "main",
    "open_listeners",
    "resolve_config",
    "serve",
]

log = logging.getLogger("m42d")

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_CONFIG: Final = 2

TLS_SCHEMES: Final = frozenset({"tls", "wss", "https"})
"""Schemes whose listeners get the relay's server TLS context."""

METRICS_FD_NAME: Final = "metrics"
"""``FileDescriptorName=`` of an inherited socket for the metrics listener."""

STATUS_INTERVAL: Final = 1.0
"""Seconds between checks of the room and connection counts for ``STATUS=``.

A datagram goes out only when the text changed, so this costs nothing
on an idle relay and keeps ``systemctl status`` at most a second behind.
"""

Inherited = Mapping[str, Sequence[socket.socket]]
"""Sockets from socket activation, by ``FileDescriptorName=``."""


# --- logging -------------------------------------------------------------------


class _LineFormatter(logging.Formatter):
    """``m42d: message``, with the level named only when it is worth attention."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.levelno >= logging.WARNING:
            message = f"{record.levelname.lower()}: {message}"
        line = f"m42d: {message}"
        if record.exc_info:
            # Tracebacks are for developers (--debug / log_level debug); an
            # operator gets the exception on the same line.
            if log.isEnabledFor(logging.DEBUG):
                line += "\n" + self.formatException(record.exc_info)
            else:
                exc = record.exc_info[1]
                line += f" ({type(exc).__name__}: {exc})"
        return line


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is now (tests and embedders swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def _setup_logging(level: str) -> None:
    # Rebuilt on every main() call: tests call main() many times and swap
    # sys.stderr between calls.
    for handler in list(log.handlers):
        log.removeHandler(handler)
    handler = _StderrHandler(sys.stderr)
    handler.setFormatter(_LineFormatter())
    log.addHandler(handler)
    log.setLevel(level.upper())
    log.propagate = False


# --- configuration ---------------------------------------------------------------


def resolve_config(args: argparse.Namespace) -> RelayConfig:
    """Defaults, then ``--config``, then systemd credentials, then command-line options."""
    config_path: Path | None = getattr(args, "config", None)
    config = load_config(config_path) if config_path is not None else RelayConfig()
    config = with_credentials(config)
    config = merge_cli(
        config,
        listen=getattr(args, "listen", None),
        state_dir=getattr(args, "state_dir", None),
        log_level=getattr(args, "log_level", None),
        log_addresses=True if getattr(args, "log_addresses", False) else None,
        store_url=getattr(args, "store", None),
        node_name=getattr(args, "node", None),
    )
    metrics: str | None = getattr(args, "metrics", None)
    if metrics is not None:
        config = attrs.evolve(config, metrics_listen=check_host_port("--metrics", metrics))
    return config


def _state_dir(config: RelayConfig) -> Path:
    return config.state_dir if config.state_dir is not None else default_state_dir()


# --- serve ---------------------------------------------------------------------


async def _handle_signals(
    relay: Relay,
    reload: Callable[[], None],
    cancel_scope: trio.CancelScope,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """SIGHUP reloads; SIGTERM/SIGINT stop gracefully, a second one stops at once.

    A failed reload keeps the old certificate, keys and limits and says why:
    a bad edit must never take a running relay down.  systemd hears
    RELOADING=1 then READY=1 around every reload, failed or not, and
    STOPPING=1 before the first GOAWAY goes out.
    """
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        task_status.started()
        async for signum in signals:
            if signum == signal.SIGHUP:
                with systemd.reload_cycle():
                    try:
                        reload()
                    except M42Error as exc:
                        log.error("reload failed, keeping the previous settings: %s", exc)
                continue
            name = signal.Signals(signum).name
            if relay.stopping:
                log.info("%s again: stopping now", name)
                cancel_scope.cancel()
                return
            log.info("%s: stopping (grace %.3g s)", name, relay.limits.shutdown_grace)
            systemd.stopping()
            systemd.status("stopping")
            relay.stop()


def _secret_bytes(config: RelayConfig) -> bytes | None:
    return None if config.creation_secret is None else config.creation_secret.encode("utf-8")


def build_relay(config: RelayConfig, state: RelayState) -> Relay:
    return Relay(
        keyring=state.ticket_keys,
        limits=config.limits,
        burned=state.deny_list,
        creation_secret=_secret_bytes(config),
        room_ttl=config.room_ttl,
        log_addresses=config.log_addresses,
    )


def _reloader(
    relay: Relay,
    state: RelayState,
    config: RelayConfig,
    reload_config: Callable[[], RelayConfig] | None,
) -> Callable[[], None]:
    def reload() -> None:
        # Everything that can fail runs before anything changes: all or nothing.
        new = reload_config() if reload_config is not None else config
        limits = new.limits
        state.reload()
        relay.keyring = state.ticket_keys
        relay.limits = limits
        relay.creation_secret = _secret_bytes(new)
        relay.room_ttl = new.room_ttl
        relay.log_addresses = new.log_addresses
        for name in ("listen", "state_dir", "tls_cert", "tls_key", "metrics_listen"):
            if getattr(new, name) != getattr(config, name):
                log.warning("%s changed: it takes effect at the next restart", name)
        for warning in limits.warnings():
            log.warning("%s", warning)
        log.info("reloaded; TLS certificate pin %s", state.pin_b64)

    return reload


def _status_text(relay: Relay) -> str:
    stats = relay.statistics()
    rooms = "room" if stats.rooms == 1 else "rooms"
    connections = "connection" if stats.connections == 1 else "connections"
    text = f"{stats.rooms} {rooms}, {stats.connections} {connections}"
    return f"stopping: {text}" if relay.stopping else text


async def _report_status(relay: Relay, interval: float) -> None:
    """``STATUS=`` now and whenever the counts change; never raises."""
    last = None
    while True:
        text = _status_text(relay)
        if text != last:
            systemd.status(text)
            last = text
        await trio.sleep(interval)


async def serve(
    config: RelayConfig,
    state: RelayState,
    *,
    reload_config: Callable[[], RelayConfig] | None = None,
    inherited: Inherited | None = None,
    status_interval: float = STATUS_INTERVAL,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the relay until SIGTERM/SIGINT (graceful) or cancellation (immediate).

    Logs one ``listening on URL`` line per bound socket and the pin, then
    sends systemd READY=1 and reports ``task_status.started()``: both mean
    every listener (and the metrics listener) accepts.  ``reload_config``
    re-reads the configuration on SIGHUP; without it, a reload only
    re-reads the state directory.  ``inherited`` are socket-activated
    sockets by name (see :func:`open_listeners`).
    """
    inherited = dict(inherited or {})
    metrics_socks = list(inherited.pop(METRICS_FD_NAME, ()))
    relay = build_relay(config, state)
    async with contextlib.AsyncExitStack() as stack:
        if config.store_url is not None:
            store = await stack.enter_async_context(open_store(config.store_url))
            node = config.node_name or new_node_name()
            relay.cluster = Cluster(store, node)
            log.info("node %s, sharing burns and rooms through the store", node)
        await _serve(
            config,
            state,
            relay,
            reload_config,
            inherited,
            metrics_socks,
            status_interval,
            task_status,
        )


async def _serve(
    config: RelayConfig,
    state: RelayState,
    relay: Relay,
    reload_config: Callable[[], RelayConfig] | None,
    inherited: Inherited,
    metrics_socks: list[socket.socket],
    status_interval: float,
    task_status: trio.TaskStatus[None],
) -> None:
    listeners = await open_listeners(config, state, load_transports(), inherited)
    metrics: MetricsServer | None = None
    try:
        metrics = await _open_metrics(config, relay, listeners, metrics_socks)
        with trio.CancelScope() as cancel_scope:
            async with trio.open_nursery() as nursery:
                watchdog = systemd.watchdog_interval()
                if watchdog is not None:
                    await nursery.start(systemd.run_watchdog, watchdog)
                reload = _reloader(relay, state, config, reload_config)
                await nursery.start(_handle_signals, relay, reload, cancel_scope)

                async def relay_then_finish(
                    *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                ) -> None:
                    await serve_relay(relay, listeners, task_status=task_status)
                    nursery.cancel_scope.cancel()

                await nursery.start(relay_then_finish)
                if metrics is not None:
                    await nursery.start(metrics.serve)
                for listener in listeners:
                    for url in listener.urls:
                        log.info("listening on %s", url)
                for warning in relay.limits.warnings():
                    log.warning("%s", warning)
                if metrics is not None:
                    for url in metrics.urls:
                        log.info("metrics on %s", url)
                log.info("TLS certificate pin %s", state.pin_b64)
                systemd.ready()
                nursery.start_soon(_report_status, relay, status_interval)
                task_status.started()
    finally:
        with trio.CancelScope(shield=True):
            for listener in listeners:
                await listener.aclose()
            if metrics is not None:
                await metrics.aclose()


async def _open_metrics(
    config: RelayConfig,
    relay: Relay,
    listeners: Sequence[FrameListener],
    socks: Sequence[socket.socket],
) -> MetricsServer | None:
    """The metrics listener on ``metrics_listen`` or an inherited ``metrics`` socket; or None."""
    if len(socks) > 1:
        raise ConfigError(f"{len(socks)} inherited sockets are named metrics; at most one may be")
    if not socks and config.metrics_listen is None:
        return None
    schemes = sorted({url.partition("://")[0] for listener in listeners for url in listener.urls})
    registry = build_registry(relay.statistics, transports=schemes, stopping=lambda: relay.stopping)
    return await open_metrics_server(
        config.metrics_listen or "",
        registry,
        lambda: not relay.stopping,
        sock=socks[0] if socks else None,
    )


def _inherited_url(scheme: str, sock: socket.socket) -> str:
    """The URL an inherited socket stands for (what the ``listening on`` line shows)."""
    name = sock.getsockname()
    if isinstance(name, tuple):
        return format_url(scheme, str(name[0]), int(name[1]))
    path = name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)
    return f"{scheme}://{path}"


async def open_listeners(
    config: RelayConfig,
    state: RelayState,
    transports: Mapping[str, Transport],
    inherited: Inherited | None = None,
) -> list[FrameListener]:
    """Bind every ``config.listen`` URL; all or none (a partial set is closed again).

    ``inherited`` (socket activation) maps a ``FileDescriptorName=`` to
    sockets systemd already bound; each name must be a transport scheme.
    Those sockets are served by that transport, and the configured URLs of
    the same scheme are then NOT bound: the socket units own the
    addresses, so the relay cannot race systemd for them.

    Raises:
        ConfigError: no transport is installed for a URL's scheme or a
            socket's name.
        TransportError: a bind failed (address in use, permission denied...).
    """
    inherited = inherited or {}
    have = ", ".join(sorted(transports)) or "none"
    planned: list[tuple[str, socket.socket | None]] = []
    for name, socks in inherited.items():
        scheme = name.lower()
        if scheme not in transports:
            raise ConfigError(
                f"an inherited socket is named {name!r}, which is no installed transport "
                f"(set FileDescriptorName= to one of: {have}, or {METRICS_FD_NAME})"
            )
        planned.extend((_inherited_url(scheme, sock), sock) for sock in socks)
    activated = {name.lower() for name in inherited}
    for url in config.listen:
        if url.partition("://")[0].lower() not in activated:
            planned.append((url, None))
    listeners: list[FrameListener] = []
    try:
        for url, sock in planned:
            scheme = url.partition("://")[0].lower()
            transport = transports.get(scheme)
            if transport is None:
                raise ConfigError(f"no transport for {scheme}:// is installed (installed: {have})")
            ssl_context = state.server_ssl_context() if scheme in TLS_SCHEMES else None
            if sock is None:
                listener = await transport.open_listener(url, ssl_context=ssl_context)
            else:
                listener = await transport.open_listener(url, ssl_context=ssl_context, sock=sock)
            listeners.append(listener)
    except BaseException:
        with trio.CancelScope(shield=True):
            for listener in listeners:
                await listener.aclose()
        raise
    return listeners


def _cmd_serve(args: argparse.Namespace) -> int:
    config = resolve_config(args)
    _setup_logging("debug" if args.debug else config.log_level)
    state_dir = _state_dir(config)
    state = RelayState.open(state_dir, tls_cert=config.tls_cert, tls_key=config.tls_key)
    log.info("state directory %s", state_dir)
    if config.creation_secret is None:
        log.info("no creation secret: anyone who reaches this relay may create rooms")
    reload_config = (lambda: resolve_config(args)) if args.config is not None else None
    # Taken once, before trio starts: the variables are then removed from
    # the environment so no child process could claim the sockets.
    inherited = systemd.listen_fds_by_name()
    for name, socks in inherited.items():
        log.info("socket activation: %d socket(s) named %s", len(socks), name)
    gcpolicy.tune_for_serving()
    try:
        trio.run(
            functools.partial(
                serve, config, state, reload_config=reload_config, inherited=inherited
            )
        )
    except BaseExceptionGroup as group:
        # Nurseries wrap errors in groups; a lone M42Error is what the
        # operator needs to see, as one line.
        only = _sole_error(group)
        if only is None:
            raise
        raise only from group
    log.info("stopped")
    return EXIT_OK


def _sole_error(group: BaseExceptionGroup[BaseException]) -> M42Error | None:
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        else:
            leaves.append(exc)

    walk(group)
    if len(leaves) == 1 and isinstance(leaves[0], M42Error):
        return leaves[0]
    return None


# --- check-config, pin, rotate-keys ---------------------------------------------


def _describe(config: RelayConfig) -> list[str]:
    """A summary for check-config: every effective value, secrets as set/unset only."""
    state_dir = (
        str(config.state_dir)
        if config.state_dir is not None
        else f"{default_state_dir()} (default)"
    )
    tls = (
        f"{config.tls_cert} with key {config.tls_key}"
        if config.tls_cert is not None
        else "self-signed, made in the state directory (or systemd credentials)"
    )
    limits = config.limits
    return [
        f"listen: {', '.join(config.listen)}",
        f"state_dir: {state_dir}",
        f"room_ttl: {config.room_ttl} s",
        "creation_secret: " + ("set" if config.creation_secret else "not set (open relay)"),
        f"tls: {tls}",
        f"log_level: {config.log_level}; log_addresses: {str(config.log_addresses).lower()}",
        f"metrics_listen: {config.metrics_listen or 'off'}",
        "store_url: "
        + ("set (shared with other nodes)" if config.store_url else "not set (a single node)"),
        f"node_name: {config.node_name or 'random per start'}",
        "limits: " + ", ".join(f"{k}={v}" for k, v in attrs.asdict(limits).items()),
    ]


def _cmd_check_config(args: argparse.Namespace) -> int:
    config = load_config(args.file)
    print("ok")
    for line in _describe(config):
        print(f"  {line}")
    # The file is fine either way; a missing plugin is about this
    # installation, so it is a warning, not a failed check.
    transports = load_transports()
    for url in config.listen:
        scheme = url.partition("://")[0].lower()
        if scheme not in transports:
            log.warning("no transport for %s:// is installed here (for %s)", scheme, url)
    for warning in config.limits.warnings():
        log.warning("%s", warning)
    return EXIT_OK


def _cmd_pin(args: argparse.Namespace) -> int:
    config = resolve_config(args)
    cert, _key, self_signed = tls_paths(
        _state_dir(config), tls_cert=config.tls_cert, tls_key=config.tls_key
    )
    if self_signed and not cert.exists():
        raise ConfigError(
            f"no certificate yet in {cert.parent}: run 'm42d serve' once to create it"
        )
    print(pin_to_text(certificate_pin(cert)))
    return EXIT_OK


def _cmd_rotate_keys(args: argparse.Namespace) -> int:
    config = resolve_config(args)
    ring = rotate_key_file(_state_dir(config), keep=args.keep)
    kept = ", ".join(str(k) for k in ring.key_ids)
    log.info("ticket key %d is now current; keys kept: %s", ring.current, kept)
    log.info("a running relay uses it after SIGHUP (systemctl reload m42d)")
    return EXIT_OK


# --- argument parsing -------------------------------------------------------------


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="TOML configuration file (default: none, the embedded defaults)",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        metavar="DIR",
        help="state directory (default: $STATE_DIRECTORY, else $XDG_STATE_HOME/m42d, "
        "else ~/.local/state/m42d)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="m42d",
        description="Relay daemon for m42: end-to-end-encrypted chat and file transfer "
        "for exactly two people. The relay pairs the two seats of a room and forwards "
        "ciphertext; it never sees a room secret or a plaintext.",
        epilog="Every option is documented in docs/operations.md.",
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"m42d {__version__} "
        f"(relay protocol {PROTOCOL_VERSION}, session protocol {SESSION_VERSION})",
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        help="on failure, show the full error chain (traceback)",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_serve_command(commands)
    _add_tool_commands(commands)
    return parser


_Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def _add_serve_command(commands: _Commands) -> None:
    serve_parser = commands.add_parser(
        "serve",
        help="run the relay",
        description="Run the relay. With no options it listens on ws://127.0.0.1:8042 and "
        "tls://127.0.0.1:8043 with a self-signed certificate made in the state directory. "
        "SIGHUP reloads the certificate and ticket keys; SIGTERM stops gracefully.",
    )
    serve_parser.add_argument(
        "--listen",
        action="append",
        metavar="URL",
        help="listen on URL, e.g. ws://127.0.0.1:8042 or tls://[::1]:8043 (port 0: any "
        "free port); repeat for several; replaces the config file's list",
    )
    _add_config_options(serve_parser)
    serve_parser.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        help="log verbosity (default: info)",
    )
    serve_parser.add_argument(
        "--log-addresses",
        action="store_true",
        default=None,
        help="include client IP addresses in log lines (default: never logged)",
    )
    serve_parser.add_argument(
        "--metrics",
        metavar="HOST:PORT",
        help="serve Prometheus metrics and /healthz on HOST:PORT, e.g. 127.0.0.1:9442 "
        "(default: the config's metrics_listen, else off)",
    )
    serve_parser.add_argument(
        "--store",
        metavar="URL",
        help="Valkey/Redis shared with the other nodes behind one load balancer, e.g. "
        "redis://10.0.0.5:6379/0 or unix:///run/valkey/valkey.sock (docs/scale-out.md; "
        "default: the config's store_url, else none: a single node)",
    )
    serve_parser.add_argument(
        "--node",
        metavar="NAME",
        help="this node's name among those sharing the store (default: random per start)",
    )
    serve_parser.set_defaults(func=_cmd_serve)


def _add_tool_commands(commands: _Commands) -> None:
    """check-config, pin and rotate-keys: the commands an operator runs beside the relay."""
    check_parser = commands.add_parser(
        "check-config",
        help="check a configuration file and print the effective settings",
        description="Check FILE. Prints 'ok' and the effective settings (secrets shown "
        "only as set/not set) and exits 0, or prints the error and exits 2.",
    )
    check_parser.add_argument("file", type=Path, metavar="FILE", help="TOML configuration file")
    check_parser.set_defaults(func=_cmd_check_config)

    pin_parser = commands.add_parser(
        "pin",
        help="print the TLS certificate pin that links carry",
        description="Print the SHA-256 pin of the relay's TLS certificate (unpadded "
        "base64url), as it appears in room links. Creates nothing.",
    )
    _add_config_options(pin_parser)
    pin_parser.set_defaults(func=_cmd_pin)

    rotate_parser = commands.add_parser(
        "rotate-keys",
        help="add a new ticket key and drop the oldest",
        description=textwrap.dedent(
            """\
            Add a fresh ticket key and make it current; keep the KEEP newest keys in
            total so tickets made under the previous key still verify. A running relay
            uses the new key after SIGHUP (systemctl reload m42d). With the default
            --keep 2, rotate at most once per room_ttl, or older live rooms stop working.
            """
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_config_options(rotate_parser)
    rotate_parser.add_argument(
        "--keep",
        type=int,
        default=2,
        metavar="KEEP",
        help="how many keys to keep, the new one included (default: 2)",
    )
    rotate_parser.set_defaults(func=_cmd_rotate_keys)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``m42d`` script and ``python -m m42d``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging("debug" if args.debug else "info")
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_CONFIG
    try:
        status: int = args.func(args)
    except ConfigError as exc:
        log.error("%s", exc, exc_info=args.debug)
        return EXIT_CONFIG
    except M42Error as exc:
        log.error("%s", exc, exc_info=args.debug)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130
    return status
