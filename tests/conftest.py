"""Shared fixtures: where the third-party Noise vectors live."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHARED = PROJECT_ROOT.parent / "shared"
VECTORS_DIR = Path(os.environ.get("M42_VECTORS_DIR", SHARED / "vectors"))


@pytest.fixture(scope="session")
def vectors_dir() -> Path:
    """The folder of third-party Noise vectors; fails under CI when absent, else skips."""
    if not (VECTORS_DIR / "cacophony.txt").is_file() or not (VECTORS_DIR / "snow.txt").is_file():
        msg = f"Noise test vectors not found in {VECTORS_DIR} (set M42_VECTORS_DIR)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return VECTORS_DIR
