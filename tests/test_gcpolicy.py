"""m42d.gcpolicy: the relay freezes its start-up heap and sweeps old objects less often."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from m42d import daemon, gcpolicy


@pytest.fixture(autouse=True)
def _restore_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def test_tune_freezes_the_heap_and_raises_the_young_threshold() -> None:
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)
    gcpolicy.tune_for_serving()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == (gcpolicy.GEN0_THRESHOLD, 10, 10)


def test_tune_keeps_a_higher_threshold_and_cycles_are_still_collected() -> None:
    gc.set_threshold(50_000, 5, 5)
    gcpolicy.tune_for_serving()
    assert gc.get_threshold() == (50_000, 5, 5)

    class Node:
        other: Any = None

    a, b = Node(), Node()
    a.other, b.other = b, a
    del a, b
    assert gc.collect() >= 2  # the cycle made after the freeze is still garbage to gc


def test_serve_tunes_before_the_relay_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)
    seen: list[tuple[int, int]] = []

    def fake_run(*_args: object, **_kwargs: object) -> None:
        seen.append((gc.get_freeze_count(), gc.get_threshold()[0]))

    monkeypatch.setattr(daemon.trio, "run", fake_run)
    state = tmp_path / "state"
    assert daemon.main(["serve", "--state-dir", str(state), "--listen", "tls://127.0.0.1:0"]) == 0
    assert len(seen) == 1
    frozen, young = seen[0]
    assert frozen > 0
    assert young == gcpolicy.GEN0_THRESHOLD
