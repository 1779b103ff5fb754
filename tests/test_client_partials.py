"""Partial files: recognised only by their own seat, locked while written, swept when stale."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

import pytest

from m42d.client import partials
from m42d.client.partials import (
    create_partial,
    is_partial_of,
    partial_key,
    sweep_stale_partials,
)
from m42d.ticket import Seat

ROOM = bytes(range(16))
SECRET = bytes(range(32, 64))
KEY = partial_key(SECRET, ROOM, Seat.B)


def locked_elsewhere(path: Path) -> bool:
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def test_keys_differ_per_seat_and_room() -> None:
    assert partial_key(SECRET, ROOM, Seat.A) != KEY
    assert partial_key(SECRET, bytes(16), Seat.B) != KEY
    assert partial_key(bytes(32), ROOM, Seat.B) != KEY


def test_a_new_partial_is_hidden_private_locked_and_recognisable(tmp_path: Path) -> None:
    fd, path = create_partial(tmp_path, "report.pdf", KEY)
    try:
        assert path.parent == tmp_path
        assert path.name.startswith(".report.pdf.")
        assert path.name.endswith(".m42part")
        assert path.stat().st_mode & 0o777 == 0o600
        assert is_partial_of(path.name, KEY)
        assert not is_partial_of(path.name, partial_key(SECRET, ROOM, Seat.A))
        assert locked_elsewhere(path)
    finally:
        os.close(fd)
    assert not locked_elsewhere(path)


@pytest.mark.parametrize(
    "name",
    [
        ".report.pdf.m42part",  # the old format, or anyone's file
        ".report.pdf.0123456789abcdef0123456789abcdef.m42part",  # a tag that does not verify
        ".report.pdf.zz23456789abcdef0123456789abcdef.m42part",
        "report.pdf",
        ".m42part",
    ],
)
def test_only_names_made_with_the_key_are_ours(name: str) -> None:
    assert not is_partial_of(name, KEY)


def test_sweep_removes_stale_partials_of_this_seat_only(tmp_path: Path) -> None:
    fd, stale = create_partial(tmp_path, "stale.bin", KEY)
    os.write(fd, b"left by a run that was killed")
    os.close(fd)  # as when the process died: the lock is gone
    live_fd, live = create_partial(tmp_path, "live.bin", KEY)
    other_fd, other_seat = create_partial(tmp_path, "a.bin", partial_key(SECRET, ROOM, Seat.A))
    os.close(other_fd)
    foreign = tmp_path / ".user.txt.m42part"
    foreign.write_text("not an m42 partial at all")
    forged = tmp_path / ".x.0123456789abcdef0123456789abcdef.m42part"
    forged.write_text("a name that looks right")
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    _, own_name = create_partial(tmp_path, "link", KEY)
    own_name.unlink()
    own_name.symlink_to(target)  # a symlink under one of our names: never followed
    _, dir_name = create_partial(tmp_path, "dir", KEY)
    dir_name.unlink()
    dir_name.mkdir()
    try:
        assert sweep_stale_partials(tmp_path, KEY) == [stale]
        assert not stale.exists()
        for kept in (live, other_seat, foreign, forged, own_name, dir_name, target):
            assert os.path.lexists(kept), kept
        assert target.read_text() == "keep me"
        assert locked_elsewhere(live)
    finally:
        os.close(live_fd)


def test_sweep_never_takes_a_partial_another_running_process_writes(tmp_path: Path) -> None:
    with subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; from m42d.client.partials import create_partial;"
            "fd, p = create_partial(Path(sys.argv[1]), 'theirs.bin', bytes.fromhex(sys.argv[2]));"
            "print(p, flush=True); sys.stdin.read()",
            str(tmp_path),
            KEY.hex(),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as holder:
        assert holder.stdin is not None
        assert holder.stdout is not None
        try:
            path = Path(holder.stdout.readline().strip())
            assert path.exists()
            assert sweep_stale_partials(tmp_path, KEY) == []
            assert path.exists()
        finally:
            holder.stdin.close()
            holder.wait(timeout=20)
    # Its writer is gone (it never removed it): now it is stale.
    assert sweep_stale_partials(tmp_path, KEY) == [path]


def test_create_takes_another_name_when_a_sweep_won_the_race(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    real = fcntl.flock

    def contended(fd: int, op: int) -> None:
        calls.append(fd)
        if len(calls) == 1:
            raise BlockingIOError  # a sweeper holds the fresh file this instant
        real(fd, op)

    monkeypatch.setattr(partials.fcntl, "flock", contended)
    fd, path = create_partial(tmp_path, "f.bin", KEY)
    try:
        assert len(calls) == 2
        names = sorted(p.name for p in tmp_path.iterdir())
        assert len(names) == 2  # the one the sweeper is removing, and ours
        assert path.name in names
    finally:
        os.close(fd)


def test_sweep_of_a_missing_directory_is_empty(tmp_path: Path) -> None:
    assert sweep_stale_partials(tmp_path / "nope", KEY) == []
