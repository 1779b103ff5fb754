"""Files the user names to send: where they are, and why one cannot be sent, in words.

Checked before anything is offered, so that the answer names the file and
says what is wrong with it ("no such file", "it is a directory") instead of
an errno and a traceback-like repr.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["file_problem", "user_path"]


def user_path(text: str) -> Path:
    """A path as typed in the chat, ``~`` expanded the way a shell would."""
    return Path(os.path.expanduser(text))


def file_problem(path: Path) -> str | None:
    """Why ``path`` cannot be sent (None: it is a regular file this user may read)."""
    try:
        if path.is_dir():
            return "it is a directory (send the files in it one by one)"
        if not path.exists():
            return "no such file"
        if not path.is_file():
            return "not a regular file"
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    if not os.access(path, os.R_OK):
        return "permission denied (you may not read it)"
    return None
