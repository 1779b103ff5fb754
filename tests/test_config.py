"""The relay configuration: defaults, TOML loading, every kind of invalid value, overrides."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import attrs
import pytest

from m42d.config import (
    RelayConfig,
    check_host_port,
    check_listen_url,
    load_config,
    merge_cli,
    parse_config,
    with_credentials,
)
from m42d.errors import ConfigError, M42Error
from m42d.relay.limits import RelayLimits
from m42d.wire import MAX_PAYLOAD, MAX_SECRET, CreateRoom, decode, encode

DOCS = Path(__file__).resolve().parent.parent / "docs" / "operations.md"

FULL = """\
listen = ["ws://127.0.0.1:9000", "tls://[::1]:9001", "unix:///run/m42d/m42d.sock"]
state_dir = "/var/lib/m42d"
room_ttl = 86400
creation_secret = "hunter2-but-longer"
log_addresses = true
log_level = "DEBUG"
tls_cert = "certs/relay.pem"
tls_key = "/etc/m42d/relay.key"
metrics_listen = "[::1]:9442"
store_url = "redis://:hunter3@10.0.0.5:6379/0"
node_name = "node-1.eu"

[limits]
max_connections = 500
max_connections_per_address = 8
join_timeout = 5
idle_timeout = 60.5
ping_interval = 20.0
max_payload = 60000
bulk_window = 2097152
control_queue = 64
create_rate = 10
join_rate = 60
shutdown_grace = 2.5
ipv6_prefix = 56
control_window = 131072
max_queued_per_address = 4194304
"""


def write(tmp_path: Path, text: str, name: str = "m42d.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_match_the_documented_values() -> None:
    config = RelayConfig()
    assert config.listen == ("ws://127.0.0.1:8042", "tls://127.0.0.1:8043")
    assert config.state_dir is None
    assert config.room_ttl == 7 * 24 * 3600
    assert config.creation_secret is None
    assert config.log_addresses is False
    assert config.log_level == "info"
    assert config.tls_cert is None
    assert config.tls_key is None
    assert config.metrics_listen is None
    limits = config.limits
    assert limits == RelayLimits()
    assert (limits.max_connections, limits.max_connections_per_address) == (10_000, 64)
    assert (limits.join_timeout, limits.idle_timeout, limits.ping_interval) == (10.0, 120.0, 30.0)
    assert limits.max_payload == MAX_PAYLOAD == 262_208
    assert limits.bulk_window == 1024 * 1024
    assert limits.control_queue == 256
    assert (limits.create_rate, limits.join_rate, limits.shutdown_grace) == (30, 120, 5.0)
    assert limits.ipv6_prefix == 64
    assert limits.control_window == 512 * 1024
    assert limits.max_queued_per_address == 8 * 1024 * 1024
    assert (limits.write_timeout, limits.close_timeout) == (30.0, 2.0)


def test_full_file_loads_every_key(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, FULL))
    assert config.listen == (
        "ws://127.0.0.1:9000",
        "tls://[::1]:9001",
        "unix:///run/m42d/m42d.sock",
    )
    assert config.state_dir == Path("/var/lib/m42d")
    assert config.room_ttl == 86400
    assert config.creation_secret == "hunter2-but-longer"
    assert config.log_addresses is True
    assert config.log_level == "debug"
    # Relative paths are relative to the config file, not the working directory.
    assert config.tls_cert == tmp_path.resolve() / "certs" / "relay.pem"
    assert config.tls_key == Path("/etc/m42d/relay.key")
    assert config.metrics_listen == "[::1]:9442"
    assert config.limits == RelayLimits(
        max_connections=500,
        max_connections_per_address=8,
        join_timeout=5.0,
        idle_timeout=60.5,
        ping_interval=20.0,
        max_payload=60000,
        bulk_window=2 * 1024 * 1024,
        control_queue=64,
        create_rate=10,
        join_rate=60,
        shutdown_grace=2.5,
        ipv6_prefix=56,
        control_window=131072,
        max_queued_per_address=4194304,
    )
    assert isinstance(config.limits.join_timeout, float)


def test_empty_file_is_the_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "")) == RelayConfig()


def test_secret_never_in_repr(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, FULL))
    assert "hunter2" not in repr(config)
    assert "hunter2" not in str(config)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("lisen = []", "unknown option 'lisen'"),
        ("[limits]\njoin_timout = 3", "unknown option 'limits.join_timout'"),
        ("limits = 3", "limits must be a table"),
        ("listen = 'ws://127.0.0.1:1'", "listen must be a non-empty list of URLs"),
        ("listen = []", "listen must be a non-empty list of URLs"),
        ("listen = [1]", "listen[0] must be a URL string"),
        ("listen = ['ws://127.0.0.1:1', 'nope']", "listen[1]: relay URL has no valid scheme"),
        ("listen = ['ws://127.0.0.1']", "listen[0] must give a port"),
        ("listen = ['ws://127.0.0.1:70000']", "listen[0]: relay port must be"),
        ("listen = ['ws://a:1', 'ws://a:1']", "listen lists the same URL twice"),
        ("listen = [' ws://a:1']", "listen[0] must be a URL string"),
        ("state_dir = ''", "state_dir must be a non-empty path string"),
        ("state_dir = 3", "state_dir must be a non-empty path string"),
        ("room_ttl = 0", "room_ttl must be a positive integer"),
        ("room_ttl = 1.5", "room_ttl must be a positive integer"),
        ("room_ttl = true", "room_ttl must be a positive integer"),
        ("room_ttl = 99999999", "room_ttl must be at most"),
        ("creation_secret = '  '", "creation_secret must be a non-empty string"),
        ("creation_secret = 42", "creation_secret must be a non-empty string"),
        # CREATE_ROOM carries at most 255 bytes: a longer secret made creation impossible.
        ("creation_secret = '" + "x" * 256 + "'", "creation_secret is 256 bytes in UTF-8"),
        ("creation_secret = '" + "\u00e9" * 128 + "'", "creation_secret is 256 bytes in UTF-8"),
        ("[limits]\nshutdown_grace = 5000000", "limits.shutdown_grace must be at most"),
        ("[limits]\nipv6_prefix = 0", "limits.ipv6_prefix must be a positive integer"),
        ("[limits]\ncontrol_window = 0", "limits.control_window must be a positive integer"),
        ("[limits]\ncontrol_window = 65000", "limits.control_window must be at least max_payload"),
        (
            "[limits]\nmax_queued_per_address = 1048576",
            "limits.max_queued_per_address must be at least control_window + bulk_window",
        ),
        ("[limits]\nipv6_prefix = 64.0", "limits.ipv6_prefix must be a positive integer"),
        ("[limits]\nipv6_prefix = 129", "limits.ipv6_prefix must be between 1 and 128"),
        ("log_addresses = 'yes'", "log_addresses must be true or false"),
        ("log_level = 'loud'", "log_level must be one of debug, info, warning, error"),
        ("log_level = 1", "log_level must be one of"),
        ("tls_cert = '/a.pem'", "tls_cert and tls_key must be given together"),
        ("tls_key = '/a.key'", "tls_cert and tls_key must be given together"),
        ("metrics_listen = 9442", "metrics_listen must be a string host:port"),
        ("metrics_listen = 'localhost'", "metrics_listen must be a string host:port"),
        ("metrics_listen = '127.0.0.1:x'", "metrics_listen has an invalid port"),
        ("metrics_listen = 'a:1/metrics'", "metrics_listen must be a string host:port"),
        ("metrics_listen = '[::1:9442'", "metrics_listen must be a string host:port"),
        ("[limits]\njoin_timeout = -1", "limits.join_timeout must be a positive number"),
        ("[limits]\njoin_timeout = 0", "limits.join_timeout must be a positive number"),
        ("[limits]\njoin_timeout = 'soon'", "limits.join_timeout must be a positive number"),
        ('store_url = "http://x/"', "store_url must start with one of redis://"),
        ('store_url = "redis:///0"', "store_url has no host"),
        ('store_url = "unix://relative.sock"', "store_url: a unix:// store URL needs an absolute"),
        ('store_url = ""', "store_url must be a URL"),
        ('node_name = "-x"', "node_name must be 1 to 63"),
        ('node_name = "a b"', "node_name must be 1 to 63"),
        ("[limits]\njoin_timeout = true", "limits.join_timeout must be a positive number"),
        ("[limits]\nshutdown_grace = nan", "limits.shutdown_grace must be a positive number"),
        ("[limits]\nidle_timeout = inf", "limits.idle_timeout must be a positive number"),
        ("[limits]\nmax_connections = 0", "limits.max_connections must be a positive integer"),
        ("[limits]\ncontrol_queue = 2.0", "limits.control_queue must be a positive integer"),
        ("[limits]\ncreate_rate = -3", "limits.create_rate must be a positive integer"),
        ("[limits]\nping_interval = 200", "limits.ping_interval must be less than idle_timeout"),
        ("[limits]\nmax_payload = 1000", "limits.max_payload must be between"),
        ("[limits]\nmax_payload = 262209", "limits.max_payload must be between"),
        ("[limits]\nbulk_window = 5000000000", "limits.bulk_window must be at most"),
        ("[limits]\nbulk_window = 50000\nmax_payload = 60000", "limits.bulk_window must be"),
        (
            "[limits]\nmax_connections = 10\nmax_connections_per_address = 11",
            "limits.max_connections_per_address must not exceed max_connections",
        ),
    ],
)
def test_invalid_values_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert message in str(info.value)
    assert str(info.value).startswith(f"{path}: ")


def test_error_is_an_m42_error_only(tmp_path: Path) -> None:
    with pytest.raises(M42Error, match="unknown option"):
        load_config(write(tmp_path, "x = 1"))
    assert not issubclass(ConfigError, ValueError)


def test_bad_secret_value_is_not_echoed(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "creation_secret = ''"))
    assert "creation_secret" in str(info.value)
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "[limits]\njoin_timeout = 'sekrit-ish'"))
    assert "sekrit-ish" not in str(info.value)


def test_not_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not valid TOML") as info:
        load_config(write(tmp_path, "listen = ["))
    assert isinstance(info.value.__cause__, tomllib.TOMLDecodeError)
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "absent.toml")


def test_creation_secret_file_relative_and_stripped(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("  s3cret-value\n")
    config = load_config(write(tmp_path, "creation_secret_file = 'secret'"))
    assert config.creation_secret == "s3cret-value"


@pytest.mark.parametrize(
    ("setup", "text", "message"),
    [
        (None, "creation_secret_file = 'absent'", "creation_secret_file: cannot read"),
        ("\n\n", "creation_secret_file = 'secret'", "creation_secret_file: .* is empty"),
        (None, "creation_secret_file = 3", "creation_secret_file must be a non-empty path"),
        ("y" * 300 + "\n", "creation_secret_file = 'secret'", "creation_secret_file is 300 bytes"),
        (
            "x",
            "creation_secret = 'a'\ncreation_secret_file = 'secret'",
            "mutually exclusive",
        ),
    ],
)
def test_creation_secret_file_errors(
    tmp_path: Path, setup: str | None, text: str, message: str
) -> None:
    if setup is not None:
        (tmp_path / "secret").write_text(setup)
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text))


def test_the_longest_creation_secret_the_wire_carries_is_accepted_and_sent(tmp_path: Path) -> None:
    secret = "\u00e9" * 127 + "a"  # 255 bytes of UTF-8: MAX_SECRET exactly
    config = load_config(write(tmp_path, f"creation_secret = '{secret}'"))
    assert config.creation_secret is not None
    sent = CreateRoom(creation_secret=config.creation_secret.encode())
    assert len(sent.creation_secret) == MAX_SECRET
    assert decode(encode(sent)) == sent


def test_creation_secret_from_systemd_credentials(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    env = {"CREDENTIALS_DIRECTORY": str(creds)}
    # No file in the credentials directory: unchanged.
    assert with_credentials(RelayConfig(), env) == RelayConfig()
    assert with_credentials(RelayConfig(), {}) == RelayConfig()
    (creds / "creation-secret").write_text("from-systemd\n")
    assert with_credentials(RelayConfig(), env).creation_secret == "from-systemd"
    # A secret in the config wins over the credential.
    explicit = RelayConfig(creation_secret="explicit")
    assert with_credentials(explicit, env).creation_secret == "explicit"


def test_empty_credential_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "creation-secret").write_text("")
    with pytest.raises(ConfigError, match="credential creation-secret"):
        with_credentials(RelayConfig(), {"CREDENTIALS_DIRECTORY": str(tmp_path)})


def test_command_line_overrides_file(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, FULL))
    merged = merge_cli(
        config,
        listen=["ws://127.0.0.1:0"],
        state_dir=tmp_path / "state",
        log_level="warning",
        log_addresses=False,
    )
    assert merged.listen == ("ws://127.0.0.1:0",)
    assert merged.state_dir == tmp_path / "state"
    assert merged.log_level == "warning"
    assert merged.log_addresses is False
    # Everything not given on the command line is the file's.
    assert merged.limits == config.limits
    assert merged.creation_secret == config.creation_secret
    assert merge_cli(config) == config
    assert merge_cli(config, listen=[]) == config


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"listen": ["bogus"]}, "--listen"),
        ({"log_level": "chatty"}, "--log-level"),
        ({"state_dir": ""}, "--state-dir"),
    ],
)
def test_bad_overrides_name_the_option(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        merge_cli(RelayConfig(), **kwargs)


def test_values_built_in_code_are_checked_too() -> None:
    with pytest.raises(ConfigError, match=r"^join_timeout must be a positive number$"):
        RelayLimits(join_timeout=-1)
    with pytest.raises(ConfigError, match="room_ttl"):
        RelayConfig(room_ttl=0)
    with pytest.raises(ConfigError, match="tls_cert and tls_key"):
        RelayConfig(tls_cert=Path("/a"))
    config = RelayConfig(tls_cert=Path("/a"), tls_key=Path("/b"))
    assert attrs.evolve(config, room_ttl=5).room_ttl == 5


@pytest.mark.parametrize(
    "url",
    [
        "ws://127.0.0.1:0",
        "ws://127.0.0.1:8042",
        "ws://relay.example:80/m42",
        "tls://[::1]:0",
        "tls://[::1]:0/x",
        "unix:///run/m42d.sock",
        "plugin+x://somewhere",
    ],
)
def test_listen_urls_accepted(url: str) -> None:
    assert check_listen_url("listen", url) == url


@pytest.mark.parametrize(
    "url",
    ["", "127.0.0.1:8042", "ws:/x", "ws://:80", "ws://h:1#f", "unix://host/x", "ws://a b:1"],
)
def test_listen_urls_refused(url: str) -> None:
    with pytest.raises(ConfigError, match=r"^listen"):
        check_listen_url("listen", url)


@pytest.mark.parametrize("value", ["127.0.0.1:9442", "[::1]:0", "localhost:80", None])
def test_metrics_listen_accepted(value: str | None) -> None:
    assert check_host_port("metrics_listen", value) == value


def test_documented_example_config_parses(tmp_path: Path) -> None:
    """The example in docs/operations.md is a real, complete, valid config."""
    text = DOCS.read_text()
    match = re.search(r"<!-- example-config -->\s*```toml\n(.*?)```", text, re.S)
    assert match is not None, "docs/operations.md lost its example config block"
    data = tomllib.loads(match.group(1))
    (tmp_path / "creation-secret").write_text("documented")
    config = parse_config(
        {**data, "creation_secret_file": str(tmp_path / "creation-secret")}, base_dir=tmp_path
    )
    # Every option is shown in the example, so the docs cannot silently fall behind.
    documented = set(data) | {f"limits.{k}" for k in data.get("limits", {})}
    every = {a.name for a in attrs.fields(RelayConfig) if a.name not in ("limits",)}
    every -= {"creation_secret"}  # shown as creation_secret_file, the recommended form
    # Several nodes only: commented out in the example (TOML cannot write "none").
    every -= {"store_url", "node_name"}
    assert "# store_url = " in match.group(1)
    assert "# node_name = " in match.group(1)
    every |= {"creation_secret_file"} | {f"limits.{a.name}" for a in attrs.fields(RelayLimits)}
    assert every <= documented | {"limits"}
    assert config.creation_secret == "documented"


def test_store_url_is_a_secret_never_shown() -> None:
    config = parse_config({"store_url": "redis://:hunter3@10.0.0.5:6379/0"})
    assert "hunter3" not in repr(config)
    with pytest.raises(ConfigError) as info:
        parse_config({"store_url": "redis://:hunter3@[::1/0"})
    assert "hunter3" not in str(info.value)


def test_store_and_node_from_the_command_line() -> None:
    config = merge_cli(RelayConfig(), store_url="unix:///run/valkey.sock", node_name="n2")
    assert (config.store_url, config.node_name) == ("unix:///run/valkey.sock", "n2")
    with pytest.raises(ConfigError, match="--store must start"):
        merge_cli(RelayConfig(), store_url="valkey://x")
