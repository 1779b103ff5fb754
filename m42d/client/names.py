"""Making names and text from the peer safe to store and to show.

Everything the peer sends is hostile until proven otherwise: a file name may
try to climb out of the download folder (``../../.bashrc``), hide its real
extension behind a right-to-left override (``invoice\u202egpj.exe``), or
carry terminal escape sequences that repaint the screen.  These functions
are pure, so they are tested with Hypothesis over arbitrary strings.

Rules
-----
* :func:`safe_file_name` returns a single path component (the last one of a
  path): no ``/``, ``\\``,
  NUL or other control, format (bidi, zero-width) or line-separator
  characters, never empty, never starting with ``.`` (so never ``.``, ``..``
  or a hidden file), at most :data:`MAX_NAME_BYTES` bytes of UTF-8, keeping
  a short extension when it has to cut.
* :func:`unique_path` never names an existing file; callers still create
  with ``O_EXCL`` / ``os.link`` because the check alone is racy.
* :func:`escape_text` turns every character a terminal could interpret into
  a visible ``\\xNN`` / ``\\uNNNN`` escape.
"""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path
from typing import Final

__all__ = [
    "MAX_NAME_BYTES",
    "PARTIAL_SUFFIX",
    "escape_text",
    "safe_file_name",
    "unique_path",
]

MAX_NAME_BYTES: Final = 200
"""Below every common file system's 255-byte limit, with room for " (99)" and the partial prefix."""
MAX_EXTENSION_BYTES: Final = 16
PARTIAL_SUFFIX: Final = ".m42part"
FALLBACK_NAME: Final = "file"

_BIDI: Final = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_SEPARATORS: Final = frozenset("/\\")
# Cc: C0/C1 controls and DEL; Cf: format (bidi, zero-width, BOM); Cs: lone
# surrogates; Zl/Zp: line and paragraph separators; Co/Cn: private use and
# unassigned, which terminals and fonts render unpredictably.
_UNSAFE_CATEGORIES: Final = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp", "Co", "Cn"})


_UNSHOWABLE_CATEGORIES: Final = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def _is_unsafe(char: str) -> bool:
    return char in _BIDI or unicodedata.category(char) in _UNSAFE_CATEGORIES


def _is_unshowable(char: str) -> bool:
    return char in _BIDI or unicodedata.category(char) in _UNSHOWABLE_CATEGORIES


def _cut_utf8(text: str, limit: int) -> str:
    """The longest prefix of ``text`` whose UTF-8 fits in ``limit`` bytes."""
    return text.encode("utf-8")[:limit].decode("utf-8", errors="ignore")


def safe_file_name(name: str, *, max_bytes: int = MAX_NAME_BYTES) -> str:
    """A file name from the peer made into one harmless path component."""
    name = unicodedata.normalize("NFC", name)
    visible = "".join("/" if c in _SEPARATORS else c for c in name if not _is_unsafe(c))
    # Like a browser: a path keeps only its last real component, so
    # "../../etc/passwd" becomes "passwd" and "dir/" falls back to the default.
    cleaned = ""
    for part in reversed(visible.split("/")):
        # No leading dots (hidden files, "." and ".."); Windows and some
        # tools mishandle trailing dots and spaces.
        cleaned = part.strip().lstrip(".").strip().rstrip(". ")
        if cleaned:
            break
    if not cleaned:
        return FALLBACK_NAME
    if len(cleaned.encode("utf-8")) <= max_bytes:
        return cleaned
    stem, dot, ext = cleaned.rpartition(".")
    if dot and stem and 0 < len(ext.encode("utf-8")) <= MAX_EXTENSION_BYTES:
        suffix = "." + ext
        cut = _cut_utf8(stem, max_bytes - len(suffix.encode("utf-8"))).rstrip(". ")
        if cut:
            return cut + suffix
    cut = _cut_utf8(cleaned, max_bytes).rstrip(". ")
    return cut or FALLBACK_NAME


def _numbered(name: str, n: int) -> str:
    stem, dot, ext = name.rpartition(".")
    if dot and stem:
        return f"{stem} ({n}).{ext}"
    return f"{name} ({n})"


def unique_path(directory: Path, name: str, *, limit: int = 10_000) -> Path:
    """``directory / name``, or ``name (1)``, ``name (2)``... whichever does not exist yet."""
    candidate = directory / name
    n = 0
    while os.path.lexists(candidate):
        n += 1
        if n > limit:
            raise FileExistsError(f"no free name for {name!r} in {directory}")
        candidate = directory / _numbered(name, n)
    return candidate


def escape_text(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` with everything a terminal might interpret shown as an escape.

    With ``keep_newlines``, ``\\n`` and ``\\t`` pass through (the caller
    indents continuation lines so they cannot pose as our own output).
    """
    out: list[str] = []
    for char in text:
        if keep_newlines and char in "\n\t":
            out.append(char)
        elif _is_unshowable(char):
            code = ord(char)
            if code < 0x100:
                out.append(f"\\x{code:02x}")
            elif code < 0x10000:
                out.append(f"\\u{code:04x}")
            else:
                out.append(f"\\U{code:08x}")
        else:
            out.append(char)
    return "".join(out)
