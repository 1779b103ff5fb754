"""Section c, A/B of the BULK frame size alone: 64 KiB (protocol 1) against 256 KiB frames.

One relay of each kind (this tree's m42d over tls and ws), the benchmark's
clients switching ``bench.clients.BULK_PAYLOAD`` between rounds, the two
sizes interleaved round by round so that the machine's noise hits both.
Prints each round's idle and busy p99 and the median busy/idle ratio.

Run: ``python -m bench.ab_frames [--rounds N] [--pings N]``.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
from pathlib import Path

import trio

from bench import clients, measure, procs
from bench.__main__ import _all_relays

SIZES = (65536, 262144)
KINDS = ("m42d-tls", "m42d-ws")


async def _rounds(relays: dict[str, procs.Relay], rounds: int, pings: int) -> None:
    seen: dict[tuple[str, int], list[tuple[float, float, float]]] = {}
    for r in range(rounds):
        for size in SIZES:
            clients.BULK_PAYLOAD = size  # type: ignore[misc]
            for kind in KINDS:
                res = await measure.latency(kind, relays, pings)
                row = (res["idle"]["p99_ms"], res["busy"]["p99_ms"], res["bulk_mb_per_s_during"])
                seen.setdefault((kind, size), []).append(row)
                print(
                    f"round {r} {kind} {size >> 10} KiB: idle p99 {row[0]:.2f} ms, "
                    f"busy p99 {row[1]:.2f} ms, bulk {row[2]:.0f} MB/s",
                    flush=True,
                )
    for (kind, size), rows in sorted(seen.items()):
        ratios = [busy / idle for idle, busy, _ in rows]
        idle = statistics.median(r[0] for r in rows)
        print(
            f"{kind} {size >> 10} KiB: median idle p99 {idle:.2f} ms, "
            f"busy p99 {statistics.median(r[1] for r in rows):.2f} ms, busy/idle "
            f"{statistics.median(ratios):.2f} ({' '.join(f'{x:.1f}' for x in ratios)}), "
            f"bulk {statistics.median(r[2] for r in rows):.0f} MB/s"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--pings", type=int, default=1000)
    args = parser.parse_args(argv)
    procs.raise_fd_limit()
    with procs.scratch_dir() as scratch, contextlib.ExitStack() as stack:
        relays = _all_relays(stack, Path(scratch))
        trio.run(_rounds, relays, args.rounds, args.pings)


if __name__ == "__main__":
    main()
