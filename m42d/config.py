"""The relay daemon's configuration: embedded defaults, a TOML file, command-line overrides.

Every option has a default, so ``m42d serve`` runs without a file.  A file
may set any subset; the command line overrides both.  Validation is strict
on purpose: an unknown key is far more often a typo (``join_timout``) than a
forward-compatible setting, and a relay silently running on a default the
operator meant to change is worse than one that refuses to start.  Errors
are :class:`~m42d.errors.ConfigError` and name the key
(``limits.join_timeout must be a positive number``), never the value of a
secret.

Only :func:`load_config` and :func:`with_credentials` touch the file system
(to read the file and secret files); everything else is pure.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, final
from urllib.parse import urlsplit

import attrs

from m42d.checks import boolean, checked, checks_of, positive_int
from m42d.errors import ConfigError, LinkError
from m42d.link import parse_relay_url
from m42d.relay.limits import RelayLimits
from m42d.wire import MAX_SECRET

__all__ = [
    "CREDENTIAL_CREATION_SECRET",
    "LOG_LEVELS",
    "RelayConfig",
    "load_config",
    "merge_cli",
    "parse_config",
    "with_credentials",
]

LOG_LEVELS: Final = ("debug", "info", "warning", "error")
"""Accepted values of ``log_level``, from most to least verbose."""

CREDENTIAL_CREATION_SECRET: Final = "creation-secret"
"""File name looked up in ``$CREDENTIALS_DIRECTORY`` (systemd ``LoadCredential=``)."""

MAX_ROOM_TTL: Final = 366 * 24 * 3600
"""Upper bound for ``room_ttl``: tickets are bearer credentials; a year is already generous."""

_PORT_ZERO: Final = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://(?:\[[^\]/]*\]|[^/:\[]*)):0(/|$)")
_HOST_SCHEMES: Final = frozenset({"ws", "wss", "http", "https", "tls", "tcp"})


def _log_level(key: str, value: Any) -> str:
    if not isinstance(value, str) or value.lower() not in LOG_LEVELS:
        raise ConfigError(f"{key} must be one of {', '.join(LOG_LEVELS)}")
    return value.lower()


def _room_ttl(key: str, value: Any) -> int:
    positive_int(key, value)
    if value > MAX_ROOM_TTL:
        raise ConfigError(f"{key} must be at most {MAX_ROOM_TTL} seconds (366 days)")
    return int(value)


def _optional_path(key: str, value: Any) -> Path | None:
    if value is None:
        return None
    if isinstance(value, str) and value:
        return Path(value)
    if isinstance(value, Path):
        return value
    raise ConfigError(f"{key} must be a non-empty path string")


def _optional_secret(key: str, value: Any) -> str | None:
    # The message must not echo the value: it is a secret.
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{key} must be a non-empty string")
    _creation_secret_fits(key, value)
    return value


def _creation_secret_fits(key: str, secret: str) -> None:
    """CREATE_ROOM carries the secret in at most MAX_SECRET bytes of UTF-8.

    A longer one would pass every other check and then make room creation
    impossible: no client could send it.
    """
    try:
        size = len(secret.encode("utf-8"))
    except UnicodeError as exc:  # a lone surrogate cannot come from TOML, but from code
        raise ConfigError(f"{key} must be valid text (UTF-8)") from exc
    if size > MAX_SECRET:
        raise ConfigError(
            f"{key} is {size} bytes in UTF-8; CREATE_ROOM carries at most {MAX_SECRET}"
        )


def check_listen_url(key: str, value: Any) -> str:
    """Check one listen URL well enough to fail at config time, not at bind time.

    The syntax is the one links use (:func:`m42d.link.parse_relay_url`),
    plus port 0 ("any free port", for tests).  Whether a transport for the
    scheme is installed is checked when the transports load, because that
    depends on the installation, not on the file.
    """
    if not isinstance(value, str) or not value or value != value.strip():
        raise ConfigError(f"{key} must be a URL string such as ws://127.0.0.1:8042")
    # A link must name a real port, so parse_relay_url refuses 0; a listener
    # may ask the OS for one.  Check the URL with port 1 in its place.
    probe = _PORT_ZERO.sub(r"\1:1\2", value, count=1)
    try:
        address = parse_relay_url(probe)
    except LinkError as exc:
        raise ConfigError(f"{key}: {exc}") from exc
    if address.scheme in _HOST_SCHEMES and address.port is None:
        raise ConfigError(f"{key} must give a port (0 picks a free one)")
    return value


def _listen(key: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, list | tuple) or not value:
        raise ConfigError(f"{key} must be a non-empty list of URLs")
    urls = tuple(check_listen_url(f"{key}[{i}]", url) for i, url in enumerate(value))
    if len(set(urls)) != len(urls):
        raise ConfigError(f"{key} lists the same URL twice")
    return urls


def check_host_port(key: str, value: Any) -> str | None:
    """Check ``host:port`` (``[::1]:9442`` for IPv6), the form of ``metrics_listen``."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{key} must be a string host:port, such as 127.0.0.1:9442")
    try:
        parts = urlsplit(f"//{value}")
    except ValueError as exc:  # an unbalanced "[" or "]"
        raise ConfigError(f"{key} must be a string host:port, such as 127.0.0.1:9442") from exc
    try:
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"{key} has an invalid port (0 to 65535)") from exc
    if not parts.hostname or port is None or parts.path or parts.username is not None:
        raise ConfigError(f"{key} must be a string host:port, such as 127.0.0.1:9442")
    return value


_STORE_SCHEMES: Final = ("redis", "rediss", "unix")
_NODE_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


def check_store_url(key: str, value: Any) -> str | None:
    """``redis://host:port/db``, ``rediss://`` (TLS) or ``unix:///path.sock`` of Valkey/Redis.

    The URL may carry a password, so no message ever repeats it.
    """
    if value is None:
        return None
    if not isinstance(value, str) or not value or value != value.strip():
        raise ConfigError(f"{key} must be a URL such as redis://127.0.0.1:6379/0")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - parsing it is the check
    except ValueError as exc:
        raise ConfigError(f"{key} is not a valid URL (redis://host:port/db)") from exc
    if parts.scheme not in _STORE_SCHEMES:
        raise ConfigError(
            f"{key} must start with one of {', '.join(s + '://' for s in _STORE_SCHEMES)}"
        )
    if parts.scheme == "unix" and not parts.path.startswith("/"):
        raise ConfigError(f"{key}: a unix:// store URL needs an absolute socket path")
    if parts.scheme != "unix" and not parts.hostname:
        raise ConfigError(f"{key} has no host")
    return value


def check_node_name(key: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _NODE_NAME.fullmatch(value):
        raise ConfigError(
            f"{key} must be 1 to 63 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return value


@final
@attrs.frozen
class RelayConfig:
    """Everything ``m42d serve`` needs to know, after file, credentials and command line."""

    listen: tuple[str, ...] = checked(("ws://127.0.0.1:8042", "tls://127.0.0.1:8043"), _listen)
    state_dir: Path | None = checked(None, _optional_path)  # noqa: RUF009 (attrs.field)
    room_ttl: int = checked(7 * 24 * 3600, _room_ttl)
    creation_secret: str | None = checked(None, _optional_secret, repr=False)
    log_addresses: bool = checked(False, boolean)
    log_level: str = checked("info", _log_level)
    tls_cert: Path | None = checked(None, _optional_path)  # noqa: RUF009 (attrs.field)
    tls_key: Path | None = checked(None, _optional_path)  # noqa: RUF009 (attrs.field)
    metrics_listen: str | None = checked(None, check_host_port)
    store_url: str | None = checked(None, check_store_url, repr=False)
    """Valkey/Redis shared by several nodes (docs/scale-out.md); None: a single node."""
    node_name: str | None = checked(None, check_node_name)
    """This node's name among those sharing the store; None: a random one per start."""
    limits: RelayLimits = attrs.field(factory=RelayLimits)

    def __attrs_post_init__(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("tls_cert and tls_key must be given together")


# --- TOML ---------------------------------------------------------------------

_TOP_ONLY_KEYS: Final = frozenset({"creation_secret_file"})
_PATH_KEYS: Final = frozenset({"state_dir", "tls_cert", "tls_key", "creation_secret_file"})


def _resolve(base_dir: Path, value: Any) -> Any:
    # Relative paths in a file mean "next to this file", as in nginx and
    # systemd, not "relative to wherever the daemon was started".
    if isinstance(value, str) and value and not Path(value).is_absolute():
        return str(base_dir / value)
    return value


def _read_secret_file(key: str, path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{key}: cannot read {path}: {type(exc).__name__}") from exc
    secret = text.strip()
    if not secret:
        raise ConfigError(f"{key}: {path} is empty")
    _creation_secret_fits(key, secret)
    return secret


def parse_config(data: Mapping[str, Any], *, base_dir: Path | None = None) -> RelayConfig:
    """Build a config from parsed TOML (a mapping), checking every key.

    Args:
        data: the table, as ``tomllib`` returns it.
        base_dir: where relative paths point; the config file's directory.

    Raises:
        ConfigError: naming the first key that is unknown, mistyped or out of range.
    """
    base = base_dir if base_dir is not None else Path.cwd()
    top_checks = checks_of(RelayConfig)
    limit_checks = checks_of(RelayLimits)
    top: dict[str, Any] = {}
    for key, value in data.items():
        if key == "limits":
            continue
        if key not in top_checks and key not in _TOP_ONLY_KEYS:
            raise ConfigError(f"unknown option {key!r}")
        if key in _PATH_KEYS:
            value = _resolve(base, value)
        if key == "creation_secret_file":
            path = _optional_path(key, value)
            assert path is not None  # None cannot come from TOML
            top["creation_secret"] = _read_secret_file(key, path)
            continue
        top[key] = top_checks[key](key, value)
    if "creation_secret" in data and "creation_secret_file" in data:
        raise ConfigError("creation_secret and creation_secret_file are mutually exclusive")

    limits: dict[str, Any] = {}
    raw_limits = data.get("limits", {})
    if not isinstance(raw_limits, Mapping):
        raise ConfigError("limits must be a table ([limits])")
    for key, value in raw_limits.items():
        if key not in limit_checks:
            raise ConfigError(f"unknown option 'limits.{key}'")
        limits[key] = limit_checks[key](f"limits.{key}", value)
    try:
        top["limits"] = RelayLimits(**limits)
    except ConfigError as exc:
        raise ConfigError(f"limits.{exc}") from exc
    return RelayConfig(**top)


def load_config(path: Path | str) -> RelayConfig:
    """Read and check a TOML config file.

    Raises:
        ConfigError: the file is unreadable, not TOML, or has an invalid option.
    """
    path = Path(path)
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
    try:
        return parse_config(data, base_dir=path.resolve().parent)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def merge_cli(
    config: RelayConfig,
    *,
    listen: list[str] | tuple[str, ...] | None = None,
    state_dir: Path | str | None = None,
    log_level: str | None = None,
    log_addresses: bool | None = None,
    store_url: str | None = None,
    node_name: str | None = None,
) -> RelayConfig:
    """Return ``config`` with the command-line options that were given (not None) applied.

    ``--listen`` replaces the file's list rather than adding to it, so
    ``m42d serve --listen ws://127.0.0.1:0`` serves exactly one listener.
    """
    changes: dict[str, Any] = {}
    if listen:
        changes["listen"] = _listen("--listen", list(listen))
    if state_dir is not None:
        changes["state_dir"] = _optional_path("--state-dir", str(state_dir))
    if log_level is not None:
        changes["log_level"] = _log_level("--log-level", log_level)
    if log_addresses is not None:
        changes["log_addresses"] = boolean("--log-addresses", log_addresses)
    if store_url is not None:
        changes["store_url"] = check_store_url("--store", store_url)
    if node_name is not None:
        changes["node_name"] = check_node_name("--node", node_name)
    return attrs.evolve(config, **changes)


def with_credentials(config: RelayConfig, environ: Mapping[str, str] | None = None) -> RelayConfig:
    """Fill the creation secret from ``$CREDENTIALS_DIRECTORY/creation-secret`` if unset.

    systemd's ``LoadCredential=creation-secret:/etc/m42d/creation-secret``
    puts the file there, readable only by the service, which beats a secret
    in a world-readable config file.  A secret set in the config wins.
    """
    env = os.environ if environ is None else environ
    cred_dir = env.get("CREDENTIALS_DIRECTORY")
    if config.creation_secret is not None or not cred_dir:
        return config
    path = Path(cred_dir) / CREDENTIAL_CREATION_SECRET
    if not path.exists():
        return config
    secret = _read_secret_file("credential creation-secret", path)
    return attrs.evolve(config, creation_secret=secret)
