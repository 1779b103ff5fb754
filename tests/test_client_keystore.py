"""The client's key files: modes, atomic writes, damage detection."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from m42d.client.keystore import FileKeyStore, KeyStoreError, default_key_dir
from m42d.session import Session
from m42d.ticket import Seat

ROOM = bytes(range(16))


def test_roundtrip_and_modes(tmp_path: Path) -> None:
    root = tmp_path / "keys"
    store = FileKeyStore(root)
    assert store.load_static(ROOM, Seat.A) is None
    assert store.load_peer(ROOM, Seat.A) is None
    store.save_static(ROOM, Seat.A, b"s" * 32)
    store.save_peer(ROOM, Seat.A, b"p" * 32)
    assert store.load_static(ROOM, Seat.A) == b"s" * 32
    assert store.load_peer(ROOM, Seat.A) == b"p" * 32
    assert store.load_static(ROOM, Seat.B) is None
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    path = store.path(ROOM, Seat.A)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in root.iterdir()] == [path.name]  # no temporary files left
    doc = json.loads(path.read_text())
    assert doc["room"] == ROOM.hex()
    assert doc["seat"] == "A"
    assert set(doc) == {"format", "version", "room", "seat", "static", "peer", "compared_at"}


def test_compared_at_is_kept_and_cleared_by_another_peer_key(tmp_path: Path) -> None:
    store = FileKeyStore(tmp_path / "keys")
    with pytest.raises(KeyStoreError, match="no peer key is pinned yet"):
        store.mark_compared(ROOM, Seat.A, 1000.0)
    store.save_static(ROOM, Seat.A, b"s" * 32)
    store.save_peer(ROOM, Seat.A, b"p" * 32)
    assert store.compared_at(ROOM, Seat.A) is None
    store.mark_compared(ROOM, Seat.A, 1234.5)
    assert store.compared_at(ROOM, Seat.A) == 1234.5
    store.save_peer(ROOM, Seat.A, b"p" * 32)  # the same key pinned again: still compared
    store.save_static(ROOM, Seat.A, b"s" * 32)
    assert store.compared_at(ROOM, Seat.A) == 1234.5
    store.save_peer(ROOM, Seat.A, b"q" * 32)  # /trust of a changed key: new words
    assert store.compared_at(ROOM, Seat.A) is None
    assert store.load_static(ROOM, Seat.A) == b"s" * 32


def test_a_key_file_without_compared_at_reads_as_never_compared(tmp_path: Path) -> None:
    store = FileKeyStore(tmp_path / "keys")
    store.save_peer(ROOM, Seat.A, b"p" * 32)
    path = store.path(ROOM, Seat.A)
    doc = json.loads(path.read_text())
    del doc["compared_at"]  # as written before the field existed
    path.write_text(json.dumps(doc))
    assert store.compared_at(ROOM, Seat.A) is None
    assert store.load_peer(ROOM, Seat.A) == b"p" * 32
    doc["compared_at"] = "yesterday"
    path.write_text(json.dumps(doc))
    with pytest.raises(KeyStoreError, match="compared_at must be a time"):
        store.compared_at(ROOM, Seat.A)


def test_modes_are_tightened_again(tmp_path: Path) -> None:
    root = tmp_path / "keys"
    root.mkdir(mode=0o755)
    os.chmod(root, 0o755)
    store = FileKeyStore(root)
    store.save_static(ROOM, Seat.B, b"k" * 32)
    assert stat.S_IMODE(root.stat().st_mode) == 0o700


@pytest.mark.parametrize(
    "content",
    [
        b"not json",
        b"[]",
        b'{"format": "other"}',
        b'{"format": "m42-keys", "version": 9}',
        b'{"format": "m42-keys", "version": 1, "room": "00", "seat": "A"}',
    ],
)
def test_damaged_file_is_an_error(tmp_path: Path, content: bytes) -> None:
    store = FileKeyStore(tmp_path)
    store.path(ROOM, Seat.A).write_bytes(content)
    with pytest.raises(KeyStoreError, match="damaged"):
        store.load_static(ROOM, Seat.A)


@pytest.mark.parametrize("value", ['"AAAA"', "5", '"!!!"'])
def test_bad_key_value_is_an_error(tmp_path: Path, value: str) -> None:
    store = FileKeyStore(tmp_path)
    head = f'"format": "m42-keys", "version": 1, "room": "{ROOM.hex()}", "seat": "A"'
    doc = f'{{{head}, "peer": {value}}}'
    store.path(ROOM, Seat.A).write_text(doc)
    with pytest.raises(KeyStoreError) as info:
        store.load_peer(ROOM, Seat.A)
    assert "AAAA" not in str(info.value)


def test_wrong_size_key_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        FileKeyStore(tmp_path).save_peer(ROOM, Seat.A, b"short")


def test_unwritable_directory(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(KeyStoreError, match="cannot read"):
        FileKeyStore(blocker / "keys").save_static(ROOM, Seat.A, b"k" * 32)
    with pytest.raises(KeyStoreError, match="cannot create"):
        FileKeyStore(blocker / "keys")._write(blocker / "keys" / "x", b"")


def test_forget(tmp_path: Path) -> None:
    store = FileKeyStore(tmp_path)
    store.save_static(ROOM, Seat.A, b"k" * 32)
    assert store.forget(ROOM, Seat.A)
    assert not store.forget(ROOM, Seat.A)
    assert store.load_static(ROOM, Seat.A) is None


def test_session_keeps_its_static_key(tmp_path: Path) -> None:
    store = FileKeyStore(tmp_path)
    first = Session(Seat.A, ROOM, os.urandom(32), store)
    again = Session(Seat.A, ROOM, os.urandom(32), store)
    assert first.static_public == again.static_public


def test_default_dir() -> None:
    assert default_key_dir({"XDG_DATA_HOME": "/data"}) == Path("/data/m42/keys")
    assert default_key_dir({"XDG_DATA_HOME": "relative"}) == (Path.home() / ".local/share/m42/keys")
    assert default_key_dir({}) == Path.home() / ".local/share/m42/keys"
