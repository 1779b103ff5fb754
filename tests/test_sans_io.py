"""The sans-IO cores never import trio.

The same protocol cores run in the daemon, the CLI and the tests, and have a
JS twin in the browser: they take bytes and return bytes, and must not
reach for an event loop, even by an import.  Each check runs in a fresh
interpreter, since this one has imported trio long ago.
"""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from typing import Final

import m42d.crypto
import m42d.session

CORES: Final = (
    "m42d.errors",
    "m42d.link",
    "m42d.ticket",
    "m42d.wire",
    "m42d.web.pages",
    *(f"m42d.crypto.{m.name}" for m in pkgutil.iter_modules(m42d.crypto.__path__)),
    "m42d.session",
    *(f"m42d.session.{m.name}" for m in pkgutil.iter_modules(m42d.session.__path__)),
)

_FIRST_TO_IMPORT_TRIO: Final = """
import importlib, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
    if "trio" in sys.modules:
        print(name)
        break
"""


def first_to_import_trio(*modules: str) -> str:
    """The first of ``modules`` whose import (in that order) loads trio, or ""."""
    done = subprocess.run(
        [sys.executable, "-c", _FIRST_TO_IMPORT_TRIO, *modules],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip()


def test_the_sans_io_cores_never_import_trio() -> None:
    assert {"m42d.crypto.noise", "m42d.session.machine", "m42d.session.phases"} <= set(CORES)
    assert first_to_import_trio(*CORES) == ""


def test_the_check_sees_a_module_that_imports_trio() -> None:
    assert first_to_import_trio("m42d.wire", "m42d.transport", "m42d.link") == "m42d.transport"
