"""The benchmark harness runs end to end (figures are recorded, never asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_quick_benchmark_completes_and_writes_json(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "quick.json").read_text())
    assert result["mode"] == "quick"
    for section in ("a_bulk", "b_e2e", "c_latency", "d_scale", "e_messages"):
        assert section in result
    b = result["b_e2e"]
    assert set(b) == {"m42-tls", "m42-ws", "wormhole"}
    for entry in b.values():
        assert entry["hash_ok"] is True
        for role in ("sender", "relay", "receiver"):
            assert entry[f"{role}_cpu_s_per_gib"] > 0
    assert all(row["verdict"] in ("PASS", "MISS", "info") for row in result["ratios"])
    assert "ratios (ours / baseline, same run)" in proc.stdout
    assert sorted(p.name for p in tmp_path.glob("*.png")) == [
        "a_bulk.png",
        "b_e2e.png",
        "c_latency.png",
        "d_scale.png",
        "e_messages.png",
    ]
