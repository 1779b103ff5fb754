"""File names and texts from the peer: cleaned for the disk, escaped for the terminal."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from m42d.client.names import (
    MAX_NAME_BYTES,
    escape_text,
    safe_file_name,
    unique_path,
)

BIDI = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=600))
def test_any_string_becomes_a_safe_component(name: str) -> None:
    safe = safe_file_name(name)
    assert safe
    assert safe not in (".", "..")
    assert not safe.startswith(".")
    assert "/" not in safe
    assert "\\" not in safe
    assert "\x00" not in safe
    assert len(safe.encode("utf-8")) <= MAX_NAME_BYTES
    for char in safe:
        assert char not in BIDI
        assert unicodedata.category(char) not in ("Cc", "Cf", "Zl", "Zp", "Cs")
    assert safe_file_name(safe) == safe  # idempotent


@pytest.mark.parametrize(
    ("given_name", "expected"),
    [
        ("report.pdf", "report.pdf"),
        ("../../etc/passwd", "passwd"),
        ("..\\..\\boot.ini", "boot.ini"),
        ("/abs/path/x.txt", "x.txt"),
        ("dir/", "dir"),
        ("..", "file"),
        (".", "file"),
        ("", "file"),
        ("...", "file"),
        (".bashrc", "bashrc"),
        ("invoice\u202egpj.exe", "invoicegpj.exe"),
        ("a\x00b\x1b[31mc", "ab[31mc"),
        ("  spaced  ", "spaced"),
        ("trailing. . ", "trailing"),
        ("e\u0301", "\u00e9"),
    ],
)
def test_examples(given_name: str, expected: str) -> None:
    assert safe_file_name(given_name) == expected


def test_long_name_keeps_extension() -> None:
    safe = safe_file_name("x" * 500 + ".tar")
    assert safe.endswith(".tar")
    assert len(safe.encode()) == MAX_NAME_BYTES
    multibyte = safe_file_name("\u00e9" * 300 + ".txt")
    assert multibyte.endswith(".txt")
    assert len(multibyte.encode()) <= MAX_NAME_BYTES
    no_ext = safe_file_name("y" * 300)
    assert no_ext == "y" * MAX_NAME_BYTES
    long_ext = safe_file_name("z." + "e" * 300)
    assert len(long_ext.encode()) <= MAX_NAME_BYTES


def test_unique_path_never_names_an_existing_file(tmp_path: Path) -> None:
    assert unique_path(tmp_path, "a.txt") == tmp_path / "a.txt"
    (tmp_path / "a.txt").write_text("1")
    assert unique_path(tmp_path, "a.txt") == tmp_path / "a (1).txt"
    (tmp_path / "a (1).txt").write_text("2")
    assert unique_path(tmp_path, "a.txt") == tmp_path / "a (2).txt"
    (tmp_path / "noext").write_text("3")
    assert unique_path(tmp_path, "noext") == tmp_path / "noext (1)"
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    assert unique_path(tmp_path, "dangling") == tmp_path / "dangling (1)"
    with pytest.raises(FileExistsError):
        unique_path(tmp_path, "a.txt", limit=1)


def test_escape_text() -> None:
    assert escape_text("plain text, ünïcode, 漢字 😀") == "plain text, ünïcode, 漢字 😀"
    assert escape_text("\x1b[2J") == "\\x1b[2J"
    assert escape_text("a\nb\tc") == "a\\x0ab\\x09c"
    assert escape_text("a\nb\tc", keep_newlines=True) == "a\nb\tc"
    assert escape_text("\x9b31m") == "\\x9b31m"  # C1 CSI
    assert escape_text("\x7f") == "\\x7f"
    assert escape_text("x\u202ey") == "x\\u202ey"
    assert escape_text("\u2028") == "\\u2028"
    assert escape_text("\U000e0001") == "\\U000e0001"  # a tag character (Cf)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_escaped_text_has_no_terminal_controls(text: str) -> None:
    shown = escape_text(text)
    for char in shown:
        assert unicodedata.category(char) not in ("Cc", "Cf", "Zl", "Zp", "Cs")
    kept = escape_text(text, keep_newlines=True)
    assert all(c in "\n\t" or unicodedata.category(c) != "Cc" for c in kept)


def test_the_shared_cases_hold_for_the_python_twin() -> None:
    """tests/js/names-cases.json is what the browser's lib/names.js must make of each name too."""
    import json

    cases = json.loads((Path(__file__).parent / "js" / "names-cases.json").read_text())["cases"]
    assert len(cases) > 20
    for case in cases:
        assert safe_file_name(case["name"]) == case["safe"], case["name"]
