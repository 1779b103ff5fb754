"""The browser client's protocol cores (m42d/web/lib/), through Node's test runner.

``node --test tests/js/`` runs the JS twins of the link, Noise, STREAM and SAS
cores against the vectors the Python code publishes (docs/vectors/) and the
third-party Noise vectors; this test makes the README's ``pytest`` run them
too.  Without ``node`` it skips, except under CI, where it must run.  The
modules' types are checked by ``npx tsc`` in .ci/run, not here (that needs
``npm ci``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WEB = ROOT / "m42d" / "web"


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        message = "node is not installed: the browser client's JS tests cannot run"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return node


def test_js_cores_pass_their_node_tests() -> None:
    result = subprocess.run(
        [_node(), "--test", "tests/js/"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    summary = [line for line in result.stdout.splitlines() if line.startswith("# ")]
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    # The runner's closing counts: tests ran, none failed (skips only without vectors).
    counts = dict(line[2:].split(" ", 1) for line in summary if " " in line[2:])
    assert int(counts.get("pass", "0")) >= 30, summary
    assert counts.get("fail") == "0", summary


@pytest.mark.slow
def test_wheel_ships_the_web_client(tmp_path: Path) -> None:
    """The client is package data: a built wheel carries every file of m42d/web/."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q", "-w", str(tmp_path)],
        check=True,
        timeout=600,
    )
    (wheel,) = tmp_path.glob("m42d-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {
        str(path.relative_to(ROOT))
        for path in WEB.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert len(shipped) >= 30
    assert "m42d/web/vendor/uqr/LICENSE" in shipped
    assert shipped <= names, sorted(shipped - names)
