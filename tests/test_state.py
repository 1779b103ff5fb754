"""The relay's state directory: location, key ring, certificate, deny-list, atomic writes."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import ssl
import stat
from pathlib import Path

import pytest
import trio
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from m42d.errors import ConfigError, LocalProtocolError
from m42d.relay import state as state_mod
from m42d.relay.state import (
    CERT_FILE,
    DENY_LIST_FILE,
    DENY_LIST_MAGIC,
    KEY_FILE,
    KEY_RING_FILE,
    DenyList,
    DenyListFull,
    RelayState,
    atomic_write,
    certificate_pin,
    default_state_dir,
    pin_to_text,
    rotate_key_file,
    tls_paths,
)
from m42d.ticket import Seat, TicketKeyRing

NOW = 1_700_000_000
ROOM = bytes(range(16))


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- default_state_dir -----------------------------------------------------------


def test_state_directory_from_systemd() -> None:
    env = {"STATE_DIRECTORY": "/var/lib/m42d:/var/lib/other", "XDG_STATE_HOME": "/x"}
    assert default_state_dir(env) == Path("/var/lib/m42d")
    assert default_state_dir({"STATE_DIRECTORY": "/var/lib/m42d"}) == Path("/var/lib/m42d")


def test_state_directory_from_xdg() -> None:
    env = {"XDG_STATE_HOME": "/home/a/.st", "HOME": "/home/a"}
    assert default_state_dir(env) == Path("/home/a/.st/m42d")
    # A relative XDG_STATE_HOME is invalid per the spec and ignored.
    env = {"XDG_STATE_HOME": "rel", "HOME": "/home/a"}
    assert default_state_dir(env) == Path("/home/a/.local/state/m42d")


def test_state_directory_home_fallback(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert default_state_dir({"HOME": "/home/b"}) == Path("/home/b/.local/state/m42d")
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_state_dir() == tmp_path / ".local" / "state" / "m42d"
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "sd"))
    assert default_state_dir() == tmp_path / "sd"


# --- atomic_write ----------------------------------------------------------------


def test_atomic_write_replaces_and_sets_mode(tmp_path: Path) -> None:
    target = tmp_path / "f"
    atomic_write(target, b"one")
    assert target.read_bytes() == b"one"
    assert mode(target) == 0o600
    atomic_write(target, b"two", mode=0o644)
    assert target.read_bytes() == b"two"
    assert mode(target) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


def test_atomic_write_failure_keeps_old_file_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "f"
    atomic_write(target, b"old")

    def broken_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(ConfigError, match=r"cannot write .*Input/output error"):
        atomic_write(target, b"new")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


def test_atomic_write_into_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot write"):
        atomic_write(tmp_path / "nope" / "f", b"x")


# --- RelayState: creation and reuse ------------------------------------------------


def test_open_creates_everything_with_safe_modes(tmp_path: Path) -> None:
    state_dir = tmp_path / "a" / "state"
    state = RelayState.open(state_dir, environ={})
    assert mode(state_dir) == 0o700
    assert sorted(p.name for p in state_dir.iterdir()) == sorted(
        [KEY_RING_FILE, CERT_FILE, KEY_FILE, DENY_LIST_FILE]
    )
    assert mode(state_dir / KEY_RING_FILE) == 0o600
    assert mode(state_dir / KEY_FILE) == 0o600
    assert mode(state_dir / DENY_LIST_FILE) == 0o600
    assert state.self_signed
    assert state.cert_path == state_dir / CERT_FILE
    assert len(state.ticket_keys) == 1


def test_second_open_reuses_keys_and_certificate(tmp_path: Path) -> None:
    first = RelayState.open(tmp_path, environ={})
    issued = first.ticket_keys.mint(now=NOW, ttl=60)
    second = RelayState.open(tmp_path, environ={})
    assert second.pin == first.pin
    assert second.pin_b64 == first.pin_b64
    # A ticket minted before the restart verifies after it: same key.
    ticket = issued.ticket.to_bytes()
    second.ticket_keys.verify(ticket, Seat.A, issued.token(Seat.A), now=NOW)


def test_existing_loose_directory_is_tightened(tmp_path: Path) -> None:
    state_dir = tmp_path / "s"
    state_dir.mkdir(mode=0o755)
    state_dir.chmod(0o755)
    RelayState.open(state_dir, environ={})
    assert mode(state_dir) == 0o700


def test_state_dir_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match="is not a directory"):
        RelayState.open(tmp_path / "f", environ={})


def test_self_signed_certificate_contents(tmp_path: Path) -> None:
    state = RelayState.open(tmp_path, environ={})
    cert = x509.load_pem_x509_certificate((tmp_path / CERT_FILE).read_bytes())
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert cert.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert {str(ip) for ip in san.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "::1"}
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert lifetime.days >= 3650
    der = cert.public_bytes(serialization.Encoding.DER)
    assert state.pin == hashlib.sha256(der).digest()
    assert state.pin_b64 == base64.urlsafe_b64encode(state.pin).decode().rstrip("=")
    assert len(state.pin_b64) == 43
    assert "=" not in state.pin_b64
    assert certificate_pin(tmp_path / CERT_FILE) == state.pin
    assert pin_to_text(state.pin) == state.pin_b64


def test_half_a_self_signed_pair_is_an_error_not_a_new_pin(tmp_path: Path) -> None:
    RelayState.open(tmp_path, environ={})
    (tmp_path / KEY_FILE).unlink()
    with pytest.raises(ConfigError, match=r"tls-key\.pem is missing but its pair exists"):
        RelayState.open(tmp_path, environ={})
    assert (tmp_path / CERT_FILE).exists()


def test_repr_hides_secrets(tmp_path: Path) -> None:
    state = RelayState.open(tmp_path, environ={})
    text = repr(state)
    key_file = json.loads((tmp_path / KEY_RING_FILE).read_text())
    for hex_key in key_file["keys"].values():
        assert hex_key not in text
    assert "PRIVATE" not in text
    assert state.pin.hex() in text  # the pin is public


# --- TLS: operator certificates, credentials, contexts ------------------------------


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


def write_pair(ca: trustme.CA, directory: Path, *names: str) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    leaf = ca.issue_cert(*(names or ("relay.example",)))
    cert, key = directory / "cert.pem", directory / "key.pem"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    return cert, key


def test_operator_certificate_is_used_and_pinned(tmp_path: Path, ca: trustme.CA) -> None:
    cert, key = write_pair(ca, tmp_path / "op")
    state = RelayState.open(tmp_path / "s", tls_cert=cert, tls_key=key, environ={})
    assert not state.self_signed
    assert state.cert_path == cert
    assert not (tmp_path / "s" / CERT_FILE).exists()
    assert state.pin == certificate_pin(cert)


def test_credentials_directory_certificate(tmp_path: Path, ca: trustme.CA) -> None:
    creds = tmp_path / "creds"
    cert, key = write_pair(ca, creds)
    cert.rename(creds / "tls.crt")
    key.rename(creds / "tls.key")
    env = {"CREDENTIALS_DIRECTORY": str(creds)}
    state = RelayState.open(tmp_path / "s", environ=env)
    assert state.cert_path == creds / "tls.crt"
    assert not state.self_signed
    # Explicit paths beat credentials.
    cert2, key2 = write_pair(ca, tmp_path / "op")
    assert tls_paths(tmp_path, tls_cert=cert2, tls_key=key2, environ=env)[0] == cert2
    (creds / "tls.key").unlink()
    with pytest.raises(ConfigError, match=r"tls\.crt and tls\.key must be given together"):
        RelayState.open(tmp_path / "s", environ=env)


def test_empty_credentials_directory_falls_back_to_self_signed(tmp_path: Path) -> None:
    (tmp_path / "creds").mkdir()
    state = RelayState.open(tmp_path / "s", environ={"CREDENTIALS_DIRECTORY": str(tmp_path)})
    assert state.self_signed


def test_half_an_operator_pair(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="together"):
        RelayState.open(tmp_path, tls_cert=tmp_path / "c", environ={})


def test_mismatched_certificate_and_key(tmp_path: Path, ca: trustme.CA) -> None:
    cert, _ = write_pair(ca, tmp_path / "one")
    _, other_key = write_pair(ca, tmp_path / "two")
    with pytest.raises(ConfigError, match="cannot use TLS certificate") as info:
        RelayState.open(tmp_path / "s", tls_cert=cert, tls_key=other_key, environ={})
    assert "PRIVATE KEY" not in str(info.value)


def test_unreadable_or_garbage_certificate(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read TLS certificate"):
        RelayState.open(tmp_path, tls_cert=tmp_path / "c", tls_key=tmp_path / "k", environ={})
    (tmp_path / "c").write_text("not a certificate")
    with pytest.raises(ConfigError, match="is not a PEM certificate"):
        RelayState.open(tmp_path, tls_cert=tmp_path / "c", tls_key=tmp_path / "k", environ={})


def test_server_context_settings(tmp_path: Path) -> None:
    ctx = RelayState.open(tmp_path, environ={}).server_ssl_context()
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.maximum_version == ssl.TLSVersion.MAXIMUM_SUPPORTED


async def _handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> bytes:
    """Run a real TLS handshake in memory; return the DER certificate the client saw."""
    client_raw, server_raw = trio.testing.memory_stream_pair()
    server = trio.SSLStream(server_raw, server_ctx, server_side=True)
    client = trio.SSLStream(client_raw, client_ctx, server_hostname="localhost")
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.do_handshake)
            nursery.start_soon(client.do_handshake)
    assert client.version() == "TLSv1.3"
    der = client.getpeercert(binary_form=True)
    assert isinstance(der, bytes)
    return der


def _pinning_client() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the test checks the pin instead, as clients do
    return ctx


async def test_pin_matches_the_certificate_served(tmp_path: Path) -> None:
    state = RelayState.open(tmp_path, environ={})
    der = await _handshake(state.server_ssl_context(), _pinning_client())
    assert hashlib.sha256(der).digest() == state.pin


async def test_reload_swaps_certificate_in_the_same_context(tmp_path: Path, ca: trustme.CA) -> None:
    op = tmp_path / "op"
    cert, key = write_pair(ca, op, "one.example")
    state = RelayState.open(tmp_path / "s", tls_cert=cert, tls_key=key, environ={})
    ctx = state.server_ssl_context()
    old_pin = state.pin
    write_pair(ca, op, "two.example")  # overwrite in place, as certbot would
    state.reload()
    assert state.pin != old_pin
    assert state.server_ssl_context() is ctx
    der = await _handshake(ctx, _pinning_client())
    assert hashlib.sha256(der).digest() == state.pin


def test_failed_reload_keeps_everything(tmp_path: Path, ca: trustme.CA) -> None:
    cert, key = write_pair(ca, tmp_path / "op")
    state = RelayState.open(tmp_path / "s", tls_cert=cert, tls_key=key, environ={})
    old_pin, old_ring = state.pin, state.ticket_keys
    cert.write_text("garbage")
    with pytest.raises(ConfigError):
        state.reload()
    assert state.pin == old_pin
    assert state.ticket_keys is old_ring


# --- ticket keys -----------------------------------------------------------------


def test_rotation_keeps_previous_key_for_verification(tmp_path: Path) -> None:
    state = RelayState.open(tmp_path, environ={})
    old = state.ticket_keys.mint(now=NOW, ttl=60)
    new_id = state.rotate_keys()
    assert new_id == 1
    assert state.ticket_keys.current == 1
    assert state.ticket_keys.key_ids == (0, 1)
    state.ticket_keys.verify(old.ticket.to_bytes(), Seat.B, old.token(Seat.B), now=NOW)
    assert state.ticket_keys.mint(now=NOW, ttl=60).ticket.key_id == 1
    assert mode(tmp_path / KEY_RING_FILE) == 0o600
    # The file holds the rotation: a fresh open sees it.
    assert RelayState.open(tmp_path, environ={}).ticket_keys.key_ids == (0, 1)
    # keep=2 by default: the third rotation drops the oldest.
    state.rotate_keys()
    assert state.ticket_keys.key_ids == (1, 2)


def test_rotation_keep_one_and_bounds(tmp_path: Path) -> None:
    ring = rotate_key_file(tmp_path, keep=1)
    assert ring.key_ids == (1,)
    assert ring.current == 1
    for bad in (0, 256):
        with pytest.raises(ConfigError, match="keep must be between 1 and 255"):
            rotate_key_file(tmp_path, keep=bad)


def test_rotation_oldest_dropped_across_id_wraparound(tmp_path: Path) -> None:
    ring = TicketKeyRing({254: b"k" * 32, 255: b"l" * 32}, current=255)
    atomic_write(tmp_path / KEY_RING_FILE, ring.to_json().encode())
    ring = rotate_key_file(tmp_path, keep=2)
    # 0 follows 255; 254 is the oldest even though 0 is the smallest id.
    assert ring.key_ids == (0, 255)
    assert ring.current == 0
    ring = rotate_key_file(tmp_path, keep=3)
    assert ring.key_ids == (0, 1, 255)


def test_reload_picks_up_rotation_by_another_process(tmp_path: Path) -> None:
    state = RelayState.open(tmp_path, environ={})
    rotate_key_file(tmp_path)  # what `m42d rotate-keys` does beside a live daemon
    assert state.ticket_keys.current == 0
    state.reload()
    assert state.ticket_keys.current == 1


@pytest.mark.parametrize(
    "content", [b"", b"{", b"[]", b'{"format": "m42d-ticket-keys", "version": 1}']
)
def test_corrupt_key_file(tmp_path: Path, content: bytes) -> None:
    RelayState.open(tmp_path, environ={})
    (tmp_path / KEY_RING_FILE).write_bytes(content)
    with pytest.raises(ConfigError, match=r"ticket key file .* is invalid"):
        RelayState.open(tmp_path, environ={})


def test_corrupt_key_file_error_does_not_leak_keys(tmp_path: Path) -> None:
    RelayState.open(tmp_path, environ={})
    doc = json.loads((tmp_path / KEY_RING_FILE).read_text())
    secret_hex = doc["keys"]["0"]
    doc["current"] = 9
    (tmp_path / KEY_RING_FILE).write_text(json.dumps(doc))
    with pytest.raises(ConfigError) as info:
        RelayState.open(tmp_path, environ={})
    assert secret_hex not in str(info.value)


def test_unreadable_key_file(tmp_path: Path) -> None:
    RelayState.open(tmp_path, environ={})
    (tmp_path / KEY_RING_FILE).unlink()
    (tmp_path / KEY_RING_FILE).mkdir()
    with pytest.raises(ConfigError, match="cannot read ticket key file"):
        RelayState.open(tmp_path, environ={})


# --- deny-list -------------------------------------------------------------------


def test_burn_persists_across_reopen(tmp_path: Path) -> None:
    state = RelayState.open(tmp_path, environ={}, now=NOW)
    assert not state.deny_list.is_burned(ROOM, NOW)
    state.deny_list.burn(ROOM, NOW + 100, now=NOW)
    assert state.deny_list.is_burned(ROOM, NOW)
    assert state.deny_list.is_burned(ROOM, NOW + 100)  # inclusive, like ticket expiry
    assert not state.deny_list.is_burned(ROOM, NOW + 101)
    reopened = RelayState.open(tmp_path, environ={}, now=NOW + 50)
    assert reopened.deny_list.is_burned(ROOM, NOW + 50)
    assert len(reopened.deny_list) == 1


def test_expired_entries_pruned_on_open_and_file_compacted(tmp_path: Path) -> None:
    path = tmp_path / DENY_LIST_FILE
    deny = DenyList.open(path, now=NOW)
    deny.burn(b"a" * 16, NOW + 10, now=NOW)
    deny.burn(b"b" * 16, NOW + 1000, now=NOW)
    assert len(path.read_bytes()) == len(DENY_LIST_MAGIC) + 2 * 24
    later = DenyList.open(path, now=NOW + 500)
    assert len(later) == 1
    assert not later.is_burned(b"a" * 16, NOW + 5)  # forgotten, expired anyway
    assert later.is_burned(b"b" * 16, NOW + 500)
    assert len(path.read_bytes()) == len(DENY_LIST_MAGIC) + 24


def test_burn_extends_never_shortens_and_ignores_past(tmp_path: Path) -> None:
    path = tmp_path / DENY_LIST_FILE
    deny = DenyList.open(path, now=NOW)
    deny.burn(ROOM, NOW + 100, now=NOW)
    size = path.stat().st_size
    deny.burn(ROOM, NOW + 50, now=NOW)  # shorter: no-op
    deny.burn(b"x" * 16, NOW - 1, now=NOW)  # already expired: no-op
    assert path.stat().st_size == size
    deny.burn(ROOM, NOW + 200, now=NOW)
    assert DenyList.open(path, now=NOW).is_burned(ROOM, NOW + 150)


def test_torn_last_record_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / DENY_LIST_FILE
    deny = DenyList.open(path, now=NOW)
    deny.burn(ROOM, NOW + 100, now=NOW)
    with path.open("ab") as f:
        f.write(b"\x01" * 10)  # a crash in the middle of the next append
    again = DenyList.open(path, now=NOW)
    assert again.is_burned(ROOM, NOW)
    assert len(again) == 1
    assert path.stat().st_size == len(DENY_LIST_MAGIC) + 24


def test_not_a_deny_list(tmp_path: Path) -> None:
    (tmp_path / DENY_LIST_FILE).write_bytes(b"something else")
    with pytest.raises(ConfigError, match="is not an m42d deny-list"):
        DenyList.open(tmp_path / DENY_LIST_FILE)
    (tmp_path / "dir").mkdir()
    with pytest.raises(ConfigError, match="cannot read deny-list"):
        DenyList.open(tmp_path / "dir")


def test_deny_list_is_bounded(tmp_path: Path) -> None:
    path = tmp_path / DENY_LIST_FILE
    deny = DenyList.open(path, now=NOW, max_entries=3)
    for i in range(3):
        deny.burn(bytes([i]) * 16, NOW + 10 + i, now=NOW)
    with pytest.raises(DenyListFull, match="full"):
        deny.burn(b"z" * 16, NOW + 100, now=NOW)
    assert not deny.is_burned(b"z" * 16, NOW)
    deny.burn(bytes([2]) * 16, NOW + 50, now=NOW)  # extending one already there is fine
    # Once one expires, its place is free again.
    deny.burn(b"z" * 16, NOW + 100, now=NOW + 11)  # room 0x00.. ended at NOW+10
    assert deny.is_burned(b"z" * 16, NOW + 11)
    assert len(deny) == 3


def test_room_id_size_enforced(tmp_path: Path) -> None:
    deny = DenyList.open(tmp_path / DENY_LIST_FILE, now=NOW)
    with pytest.raises(LocalProtocolError, match="16 bytes"):
        deny.burn(b"short", NOW + 10, now=NOW)


def test_append_log_compacts_when_mostly_dead(tmp_path: Path) -> None:
    path = tmp_path / DENY_LIST_FILE
    deny = DenyList.open(path, now=NOW)
    # The same room burned again and again leaves dead records behind.
    for i in range(1030):
        deny.burn(ROOM, NOW + 10 + i, now=NOW)
    assert path.stat().st_size < len(DENY_LIST_MAGIC) + 1030 * 24
    reopened = DenyList.open(path, now=NOW)
    assert reopened.is_burned(ROOM, NOW + 1039)
    assert not reopened.is_burned(ROOM, NOW + 1040)


def test_burn_write_failure_is_reported_and_not_remembered(tmp_path: Path) -> None:
    path = tmp_path / DENY_LIST_FILE
    deny = DenyList.open(path, now=NOW)
    path.unlink()
    path.mkdir()  # appending now fails
    with pytest.raises(ConfigError, match="cannot write deny-list"):
        deny.burn(ROOM, NOW + 10, now=NOW)
    assert not deny.is_burned(ROOM, NOW)


@settings(max_examples=50, deadline=None)
@given(
    burns=st.lists(
        st.tuples(st.binary(min_size=16, max_size=16), st.integers(1, 1000)), max_size=20
    ),
    later=st.integers(0, 1000),
)
def test_reopen_agrees_with_memory(
    tmp_path_factory: pytest.TempPathFactory, burns: list[tuple[bytes, int]], later: int
) -> None:
    path = tmp_path_factory.mktemp("deny") / DENY_LIST_FILE
    deny = DenyList.open(path, now=NOW)
    for room, offset in burns:
        deny.burn(room, NOW + offset, now=NOW)
    reopened = DenyList.open(path, now=NOW + later)
    for room, _ in burns:
        assert reopened.is_burned(room, NOW + later) == deny.is_burned(room, NOW + later)


def test_module_has_no_network_or_trio_import() -> None:
    # State is plain file handling; the relay decides how to run it.
    assert "trio" not in vars(state_mod)


async def test_relay_tls_issues_no_session_tickets(tmp_path: Path) -> None:
    """m42 clients never resume a TLS session, so the relay does not pay to issue tickets."""
    state = RelayState.open(tmp_path / "s", environ={})
    server_context = state.server_ssl_context()
    client_context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_context.check_hostname = False
    client_context.verify_mode = ssl.CERT_NONE  # this test is about tickets, not trust
    client_context.minimum_version = ssl.TLSVersion.TLSv1_3

    async def echo(stream: trio.SocketStream) -> None:
        tls = trio.SSLStream(stream, server_context, server_side=True)
        await tls.send_all(await tls.receive_some(10))
        await tls.aclose()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(trio.serve_tcp, echo, 0)
        port = listeners[0].socket.getsockname()[1]
        with trio.fail_after(10):
            tcp = await trio.open_tcp_stream("127.0.0.1", port)
            tls = trio.SSLStream(tcp, client_context, server_hostname="127.0.0.1")
            await tls.send_all(b"ping")
            # A TLS 1.3 server sends its tickets right after the handshake,
            # so they would be read before (or with) the echo.
            assert await tls.receive_some(10) == b"ping"
            assert await tls.receive_some(10) == b""
            session = tls._ssl_object.session  # type: ignore[union-attr]
            assert session is not None
            assert not session.has_ticket
            await trio.aclose_forcefully(tls)
        nursery.cancel_scope.cancel()
