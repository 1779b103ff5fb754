"""Section e, A/B of two trees' relays: 64-byte CONTROL frames through each, alternating.

``--baseline TREE`` is another source tree (e.g. ``git archive`` of an older
main); its m42d runs beside this tree's, and the benchmark's clients speak
each relay's wire version (the baseline may be protocol 1).  The order of
the two alternates round by round.  Prints relay CPU µs per message and the
ratio of the medians, this tree / baseline.

Run: ``python -m bench.ab_messages --baseline TREE [--messages N] [--rounds N]``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import statistics
import tempfile
from pathlib import Path

import trio

from bench import clients, e2e, measure, procs
from m42d.wire import Join

KINDS = ("m42d-tls", "m42d-ws")
WS_SHARE = 10
"""The ws relays get a tenth of the messages: they forward ~20x fewer per second."""


def _speak(version: int) -> None:
    # The clients' module globals: CreateRoom and Join read them per call.
    vars(clients)["WIRE_VERSION"] = version
    vars(clients)["Join"] = functools.partial(Join, version=version)


def _tree_wire_version(tree: Path) -> int:
    text = (tree / "m42d" / "wire" / "limits.py").read_text()
    return int(text.split("WIRE_VERSION: Final = ", 1)[1].split()[0])


async def _rounds(
    relays: dict[str, tuple[procs.Relay, int]], messages: int, rounds: int
) -> dict[tuple[str, str], list[float]]:
    seen: dict[tuple[str, str], list[float]] = {}
    for kind in KINDS:  # warm-up, not recorded
        for relay, version in relays.values():
            _speak(version)
            await measure.messages(kind, {"m42d": relay}, 2000)
    for r in range(rounds):
        names = list(relays) if r % 2 == 0 else list(reversed(relays))
        for kind in KINDS:
            for name in names:
                relay, version = relays[name]
                _speak(version)
                count = messages if kind == "m42d-tls" else messages // WS_SHARE
                res = await measure.messages(kind, {"m42d": relay}, count)
                seen.setdefault((kind, name), []).append(res["relay_cpu_us_per_msg"])
    return seen


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--baseline", type=Path, required=True)
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    this_version = _tree_wire_version(Path(__file__).resolve().parent.parent)
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        (work / "base").mkdir()
        (work / "this").mkdir()
        env = e2e.tree_env(args.baseline)
        base = stack.enter_context(procs.m42d_relay(work / "base", env=env))
        this = stack.enter_context(procs.m42d_relay(work / "this", env=e2e.tree_env(None)))
        relays = {
            "base": (base, _tree_wire_version(args.baseline)),
            "this": (this, this_version),
        }
        seen = trio.run(_rounds, relays, args.messages, args.rounds)
    for (kind, name), values in sorted(seen.items()):
        print(
            f"{kind} {name}: relay µs/msg {' '.join(f'{v:.2f}' for v in values)}, "
            f"median {statistics.median(values):.2f}"
        )
    for kind in KINDS:
        ratio = statistics.median(seen[(kind, "this")]) / statistics.median(seen[(kind, "base")])
        print(f"{kind}: this tree / baseline, relay µs per message: {ratio:.3f}")


if __name__ == "__main__":
    main()
