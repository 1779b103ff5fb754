"""``python -m bench``: m42d against its peers, side by side, in one run, on loopback.

``--quick`` (the default; under 3 minutes on 2 cores, what CI runs) or
``--full`` (1 GiB transfers, 10,000 rooms, more rounds).  Prints one table
of ratios with PASS/MISS against issue 6's targets, writes
``<out>/<mode>.json`` and PNG plots (default ``bench/results/``).  Figures
are recorded, never asserted: the exit status is 0 whenever the run
completes.  See bench/README.md and docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

import attrs
import trio

from bench import e2e, measure, procs
from bench.report import plot_all, print_table, ratio_rows

MIB: Final = 1 << 20
DEFAULT_OUT: Final = Path(__file__).resolve().parent / "results"
SECTIONS: Final = "abcde"
WARMUP_BYTES: Final = 16 * MIB


@attrs.frozen
class Plan:
    bulk_bytes: int
    bulk_rounds: int
    e2e_bytes: int
    e2e_rounds: int
    pings: int
    rooms: int
    messages: int


PLANS: Final = {
    "quick": Plan(
        bulk_bytes=256 * MIB,
        bulk_rounds=3,  # best of 3, interleaved: one round swung the ratios by 2x on a busy machine
        e2e_bytes=128 * MIB,
        e2e_rounds=3,
        pings=200,
        rooms=1000,
        messages=20_000,
    ),
    "full": Plan(
        bulk_bytes=1024 * MIB,
        bulk_rounds=3,
        e2e_bytes=1024 * MIB,
        e2e_rounds=3,
        pings=1000,
        rooms=10_000,
        messages=200_000,
    ),
}

BULK_KINDS: Final = ("m42d-tls", "m42d-ws", "transit-tcp", "transit-ws", "naive-tcp", "naive-tls")
LATENCY_KINDS: Final = ("m42d-tls", "m42d-ws", "transit-ws", "transit-tcp")
SCALE_KINDS: Final = ("m42d-ws", "m42d-tls", "transit-ws")
MESSAGE_KINDS: Final = ("m42d-tls", "naive-tls", "m42d-ws", "transit-ws")


def _rooms_within_fd_limit(rooms: int) -> int:
    """As many rooms as the descriptor limit lets one relay process hold.

    Every room is two connections, so two sockets in the relay and two in the
    client process; a machine whose hard RLIMIT_NOFILE cannot be raised (no
    CAP_SYS_RESOURCE, as here: 20,000) cannot hold 10,000 rooms in one
    process.  The run then measures fewer and the per-room figures project.
    """
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    fit = (hard - 512) // 2
    if rooms > fit:
        _log(f"d: the descriptor limit ({hard}) allows {fit} rooms, not {rooms}; measuring {fit}")
        return fit
    return rooms


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def _log(text: str) -> None:
    print(f"bench: {text}", file=sys.stderr, flush=True)


def _all_relays(stack: contextlib.ExitStack, work: Path) -> dict[str, procs.Relay]:
    return {
        "m42d": stack.enter_context(procs.m42d_relay(work)),
        "transit": stack.enter_context(procs.transit_relay(work)),
        "naive-tcp": stack.enter_context(procs.naive_relay(work, tls=False)),
        "naive-tls": stack.enter_context(procs.naive_relay(work, tls=True)),
    }


def _best(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    best = max(rounds, key=lambda r: r["mb_per_s"])
    return {**best, "rounds_mb_per_s": [r["mb_per_s"] for r in rounds]}


def run(
    mode: str,
    sections: str,
    out: Path,
    *,
    baseline: Path | None = None,
    rounds: int | None = None,
    e2e_mib: int | None = None,
    schemes: Sequence[str] = e2e.SCHEMES,
) -> dict[str, Any]:
    plan = PLANS[mode]
    if rounds is not None:
        plan = attrs.evolve(plan, e2e_rounds=rounds)
    if e2e_mib is not None:
        plan = attrs.evolve(plan, e2e_bytes=e2e_mib * MIB)
    procs.raise_fd_limit()
    result: dict[str, Any] = {
        "mode": mode,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "plan": attrs.asdict(plan),
    }
    if baseline is not None:
        result["baseline"] = str(baseline)
    t_start = time.perf_counter()
    with procs.scratch_dir() as scratch:
        work = Path(scratch)
        if set(sections) & set("ace"):
            with contextlib.ExitStack() as stack:
                relays = _all_relays(stack, work)

                async def relay_sections() -> None:
                    if "a" in sections:
                        _log("a: bulk throughput")
                        for kind in BULK_KINDS:  # warm-up, not recorded: first-connection costs
                            await measure.bulk(kind, relays, WARMUP_BYTES)
                        rounds: dict[str, list[dict[str, Any]]] = {k: [] for k in BULK_KINDS}
                        for _ in range(plan.bulk_rounds):  # interleaved: noise hits all alike
                            for kind in BULK_KINDS:
                                rounds[kind].append(
                                    await measure.bulk(kind, relays, plan.bulk_bytes)
                                )
                        result["a_bulk"] = {k: _best(v) for k, v in rounds.items()}
                    if "c" in sections:
                        _log("c: latency")
                        result["c_latency"] = {
                            k: await measure.latency(k, relays, plan.pings) for k in LATENCY_KINDS
                        }
                    if "e" in sections:
                        _log("e: small messages")
                        result["e_messages"] = {
                            k: await measure.messages(k, relays, plan.messages)
                            for k in MESSAGE_KINDS
                        }

                trio.run(relay_sections)
        if "b" in sections:
            _log("b: end-to-end file transfer")
            source = work / "payload.bin"
            e2e.make_file(source, plan.e2e_bytes)
            result["b_e2e"] = e2e.section(
                work, source, plan.e2e_rounds, baseline=baseline, schemes=schemes, log=_log
            )
            source.unlink()
        if "d" in sections:
            _log("d: scale")
            scale: dict[str, Any] = {}
            for kind in SCALE_KINDS:
                # A fresh relay each time, so RSS growth is this run's alone.
                factory: Callable[[Path], contextlib.AbstractContextManager[procs.Relay]] = (
                    procs.m42d_relay if kind.startswith("m42d") else procs.transit_relay
                )
                with factory(work) as relay:
                    scale[kind] = trio.run(
                        measure.scale, kind, relay, _rooms_within_fd_limit(plan.rooms)
                    )
            result["d_scale"] = scale
    result["seconds"] = time.perf_counter() - t_start
    result["ratios"] = [{**attrs.asdict(row), "verdict": row.verdict} for row in ratio_rows(result)]
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{mode}.json").write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    plot_all(result, out)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--quick",
        action="store_const",
        dest="mode",
        const="quick",
        help="CI size, under 3 minutes (default)",
    )
    group.add_argument(
        "--full",
        action="store_const",
        dest="mode",
        const="full",
        help="1 GiB transfers, 10,000 rooms, 3 rounds",
    )
    parser.add_argument(
        "--only",
        default=SECTIONS,
        metavar="SECTIONS",
        help="subset of 'abcde' to run (default: all)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help=f"where JSON and PNGs go (default {DEFAULT_OUT})",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        metavar="TREE",
        help="b: also run the m42 of this source tree (e.g. a git worktree of main),"
        " interleaved round by round with this one",
    )
    parser.add_argument(
        "--rounds", type=int, metavar="N", help="b: interleaved rounds (median reported)"
    )
    parser.add_argument("--e2e-mib", type=int, metavar="MIB", help="b: file size in MiB")
    parser.add_argument(
        "--schemes",
        default=",".join(e2e.SCHEMES),
        help="b: the m42 transports to run, comma-separated (default: tls,ws)",
    )
    args = parser.parse_args(argv)
    mode = args.mode or "quick"
    sections = "".join(s for s in SECTIONS if s in args.only)
    if args.baseline is not None and not (args.baseline / "m42d" / "__init__.py").is_file():
        parser.error(f"--baseline {args.baseline}: not an m42d source tree")
    result = run(
        mode,
        sections,
        args.out,
        baseline=args.baseline,
        rounds=args.rounds,
        e2e_mib=args.e2e_mib,
        schemes=[s for s in e2e.SCHEMES if s in args.schemes.split(",")],
    )
    print_table(result, ratio_rows(result))
    print(f"\n{mode} run took {result['seconds']:.0f} s; results in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
