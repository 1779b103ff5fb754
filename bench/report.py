"""Ratios against issue 6's targets, the printed table and the PNG plots.

A ratio is always ours over a baseline measured in the same run.  PASS or
MISS is printed next to it and recorded in the JSON; nothing here fails a
run, because figures on a shared 2-core machine are evidence, not a gate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import attrs

__all__ = ["Target", "plot_all", "print_table", "ratio_rows"]


@attrs.frozen
class Target:
    """One ratio: ``value`` compared with ``goal`` (``at_least`` or at most)."""

    section: str
    name: str
    value: float
    goal: float | None
    at_least: bool = True
    note: str = ""

    @property
    def verdict(self) -> str:
        if self.goal is None or math.isnan(self.value):
            return "info"
        ok = self.value >= self.goal if self.at_least else self.value <= self.goal
        return "PASS" if ok else "MISS"


def _div(a: float, b: float) -> float:
    return a / b if b else float("nan")


def ratio_rows(r: dict[str, Any]) -> list[Target]:
    rows: list[Target] = []
    a = r.get("a_bulk")
    if a:
        mb = {k: v["mb_per_s"] for k, v in a.items()}
        rows += [
            Target(
                "a",
                "m42d tls / naive trio TLS relay (MB/s)",
                _div(mb["m42d-tls"], mb["naive-tls"]),
                1.0,
            ),
            Target(
                "a",
                "m42d tls / transit raw TCP (MB/s), reach",
                _div(mb["m42d-tls"], mb["transit-tcp"]),
                0.5,
            ),
            Target("a", "m42d ws / transit ws (MB/s)", _div(mb["m42d-ws"], mb["transit-ws"]), 1.0),
            Target(
                "a",
                "naive TCP / transit raw TCP (MB/s)",
                _div(mb["naive-tcp"], mb["transit-tcp"]),
                None,
                note="reference: 1.38",
            ),
            Target(
                "a",
                "naive TLS / transit raw TCP (MB/s)",
                _div(mb["naive-tls"], mb["transit-tcp"]),
                None,
                note="reference: ~0.3",
            ),
        ]
    b = r.get("b_e2e")
    if b:
        rows += _b_rows(b)
    c = r.get("c_latency")
    if c:
        for kind in ("m42d-ws", "m42d-tls"):
            if kind not in c:
                continue
            ours = c[kind]
            rows.append(
                Target(
                    "c",
                    f"{kind} p99 busy / p99 idle",
                    _div(ours["busy"]["p99_ms"], ours["idle"]["p99_ms"]),
                    3.0,
                    at_least=False,
                )
            )
            rows.append(
                Target(
                    "c",
                    f"{kind} p99 busy / transit ws p99 busy",
                    _div(ours["busy"]["p99_ms"], c["transit-ws"]["busy"]["p99_ms"]),
                    0.25,
                    at_least=False,
                )
            )
        tw = c["transit-ws"]
        rows.append(
            Target(
                "c",
                "transit ws p99 busy / p99 idle",
                _div(tw["busy"]["p99_ms"], tw["idle"]["p99_ms"]),
                None,
                note="reference: 24x",
            )
        )
    d = r.get("d_scale")
    if d:
        for kind in ("m42d-ws", "m42d-tls"):
            if kind not in d:
                continue
            s = d[kind]
            proj = "" if s["rooms"] >= 10_000 else f" (projected from {s['rooms']})"
            rows.append(
                Target(
                    "d",
                    f"{kind} RSS at 10,000 rooms / 400 MiB{proj}",
                    s["rss_projected_10k_mib"] / 400,
                    1.0,
                    at_least=False,
                )
            )
            rows.append(Target("d", f"{kind} joins/s / 1,000", s["joins_per_s"] / 1000, 1.0))
            if s.get("relay_cpu_ms_per_join"):
                rows.append(
                    Target(
                        "d",
                        f"{kind} joins/s one relay core could do / 1,000",
                        1.0 / s["relay_cpu_ms_per_join"],
                        None,
                    )
                )
        if "transit-ws" in d and "m42d-ws" in d:
            rows.append(
                Target(
                    "d",
                    "m42d ws RSS per room / transit ws per pair",
                    _div(d["m42d-ws"]["rss_per_room_kib"], d["transit-ws"]["rss_per_room_kib"]),
                    None,
                )
            )
    e = r.get("e_messages")
    if e:
        rows.append(
            Target(
                "e",
                "m42d tls / naive TLS (msgs/s)",
                _div(e["m42d-tls"]["msgs_per_s"], e["naive-tls"]["msgs_per_s"]),
                None,
            )
        )
        rows.append(
            Target(
                "e",
                "m42d ws / transit ws (msgs/s)",
                _div(e["m42d-ws"]["msgs_per_s"], e["transit-ws"]["msgs_per_s"]),
                None,
            )
        )
    return rows


PROCESSES: Final = ("sender", "relay", "receiver")


def _b_rows(b: dict[str, Any]) -> list[Target]:
    rows: list[Target] = []
    worm = b["wormhole"]
    for scheme in ("tls", "ws"):
        ours = b.get(f"m42-{scheme}")
        if ours is None:
            continue
        rows.append(
            Target(
                "b",
                f"m42 {scheme} / wormhole send/receive (MB/s)",
                _div(ours["mb_per_s"], worm["mb_per_s"]),
                2.0,
                note="hash ok: " + str(ours["hash_ok"] and worm["hash_ok"]),
            )
        )
        rows.append(
            Target(
                "b",
                f"m42d {scheme} relay CPU/GiB / transit raw TCP",
                _div(ours["relay_cpu_s_per_gib"], worm["relay_cpu_s_per_gib"]),
                1.0,
                at_least=False,
            )
        )
        base = b.get(f"base-m42-{scheme}")
        if base is None:
            continue
        rows.append(
            Target(
                "b",
                f"A/B m42 {scheme}: this tree / baseline (MB/s)",
                _div(ours["mb_per_s"], base["mb_per_s"]),
                None,
            )
        )
        for proc in PROCESSES:
            key = f"{proc}_cpu_s_per_gib"
            rows.append(
                Target(
                    "b",
                    f"A/B m42 {scheme}: this tree / baseline ({proc} CPU/GiB)",
                    _div(ours[key], base[key]),
                    None,
                )
            )
    return rows


def print_table(r: dict[str, Any], rows: Sequence[Target]) -> None:
    m = r["machine"]
    print(f"\n{r['mode']} run on {m['nproc']} x {m['cpu']}, Python {m['python']}")
    if "a_bulk" in r:
        print("\na. bulk relay throughput")
        print(f"  {'relay':12} {'MB/s':>8} {'relay CPU s/GiB':>16}")
        for k, v in r["a_bulk"].items():
            print(f"  {k:12} {v['mb_per_s']:8.0f} {v['relay_cpu_s_per_gib']:16.2f}")
    if "b_e2e" in r:
        print("\nb. end-to-end file transfer (median of rounds; CPU s per GiB of each process)")
        print(
            f"  {'tool':16} {'size':>8} {'wall':>8} {'MB/s':>7} {'sender':>7} {'relay':>7}"
            f" {'receiver':>8}  hash"
        )
        for v in r["b_e2e"].values():
            print(
                f"  {v['tool']:16} {v['bytes'] / 2**20:4.0f} MiB {v['seconds']:6.2f} s "
                f"{v['mb_per_s']:7.1f} {v['sender_cpu_s_per_gib']:7.2f} "
                f"{v['relay_cpu_s_per_gib']:7.2f} {v['receiver_cpu_s_per_gib']:8.2f}  "
                f"{'ok' if v['hash_ok'] else 'BAD'} ({v.get('rounds', 1)} rounds)"
            )
    if "c_latency" in r:
        print("\nc. round trip of 64-byte messages (ms)")
        print(
            f"  {'relay':12} {'idle p50':>9} {'idle p99':>9} {'busy p50':>9} {'busy p99':>9}"
            f" {'bulk MB/s':>10}"
        )
        for k, v in r["c_latency"].items():
            print(
                f"  {k:12} {v['idle']['p50_ms']:9.2f} {v['idle']['p99_ms']:9.2f} "
                f"{v['busy']['p50_ms']:9.2f} {v['busy']['p99_ms']:9.2f} "
                f"{v['bulk_mb_per_s_during']:10.0f}"
            )
    if "d_scale" in r:
        print("\nd. scale (rooms = 2 joined connections + handshake-sized exchange)")
        print(
            f"  {'relay':12} {'rooms':>6} {'KiB/room':>9} {'RSS MiB':>8} {'10k proj.':>9}"
            f" {'joins/s':>8} {'relay ms/join':>13}"
        )
        for k, v in r["d_scale"].items():
            print(
                f"  {k:12} {v['rooms']:6d} {v['rss_per_room_kib']:9.1f} "
                f"{v['rss_after_mib']:8.0f} {v['rss_projected_10k_mib']:9.0f} "
                f"{v['joins_per_s']:8.0f} {v.get('relay_cpu_ms_per_join', float('nan')):13.3f}"
            )
    if "e_messages" in r:
        print("\ne. small messages (64 B) through the relay")
        print(f"  {'relay':12} {'msgs/s':>9} {'relay CPU us/msg':>17}")
        for k, v in r["e_messages"].items():
            print(f"  {k:12} {v['msgs_per_s']:9.0f} {v['relay_cpu_us_per_msg']:17.2f}")
    print("\nratios (ours / baseline, same run)")
    for row in rows:
        goal = "" if row.goal is None else f"{'>=' if row.at_least else '<='} {row.goal:g}"
        note = f"  ({row.note})" if row.note else ""
        print(f"  {row.section}  {row.name:58} {row.value:7.2f}  {goal:8} {row.verdict}{note}")


def plot_all(r: dict[str, Any], out: Path) -> None:
    """At most five small PNGs, overwritten by each run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def save(fig: Any, name: str) -> None:
        fig.tight_layout()
        fig.savefig(out / name, dpi=72)
        plt.close(fig)

    def bars(ax: Any, labels: list[str], values: list[float], title: str, unit: str) -> None:
        colours = ["tab:blue" if lab.startswith("m42") else "tab:gray" for lab in labels]
        ax.bar(labels, values, color=colours)
        ax.set_title(title)
        ax.set_ylabel(unit)
        ax.tick_params(axis="x", rotation=30)

    tag = f" ({r['mode']})"
    if "a_bulk" in r:
        a = r["a_bulk"]
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
        bars(ax1, list(a), [v["mb_per_s"] for v in a.values()], "a. bulk throughput" + tag, "MB/s")
        bars(
            ax2,
            list(a),
            [v["relay_cpu_s_per_gib"] for v in a.values()],
            "relay CPU per GiB",
            "CPU s/GiB",
        )
        save(fig, "a_bulk.png")
    if "b_e2e" in r:
        b = r["b_e2e"]
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
        tools = [v["tool"] for v in b.values()]
        bars(
            ax1,
            tools,
            [v["mb_per_s"] for v in b.values()],
            f"b. file transfer, {next(iter(b.values()))['bytes'] >> 20} MiB" + tag,
            "MB/s",
        )
        bottom = [0.0] * len(tools)
        for proc in PROCESSES:
            values = [v[f"{proc}_cpu_s_per_gib"] for v in b.values()]
            ax2.bar(tools, values, bottom=bottom, label=proc)
            bottom = [x + y for x, y in zip(bottom, values, strict=True)]
        ax2.set_title("CPU per GiB of each process")
        ax2.set_ylabel("CPU s/GiB")
        ax2.tick_params(axis="x", rotation=30)
        ax2.legend()
        save(fig, "b_e2e.png")
    if "c_latency" in r:
        c = r["c_latency"]
        fig, ax = plt.subplots(figsize=(8, 4))
        kinds = list(c)
        width = 0.2
        for i, (phase, q) in enumerate(
            [("idle", "p50_ms"), ("idle", "p99_ms"), ("busy", "p50_ms"), ("busy", "p99_ms")]
        ):
            ax.bar(
                [j + (i - 1.5) * width for j in range(len(kinds))],
                [c[k][phase][q] for k in kinds],
                width,
                label=f"{phase} {q[:3]}",
            )
        ax.set_xticks(range(len(kinds)), kinds)
        ax.set_yscale("log")
        ax.set_ylabel("round trip, ms (log)")
        ax.set_title("c. 64-byte round trips, idle and during bulk" + tag)
        ax.legend()
        save(fig, "c_latency.png")
    if "d_scale" in r:
        d = r["d_scale"]
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 4))
        bars(
            ax1,
            list(d),
            [v["rss_per_room_kib"] for v in d.values()],
            f"d. RSS per room ({next(iter(d.values()))['rooms']} rooms)" + tag,
            "KiB",
        )
        bars(ax2, list(d), [v["joins_per_s"] for v in d.values()], "joins per second", "joins/s")
        save(fig, "d_scale.png")
    if "e_messages" in r:
        e = r["e_messages"]
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 4))
        bars(
            ax1,
            list(e),
            [v["msgs_per_s"] for v in e.values()],
            "e. 64-byte messages" + tag,
            "msgs/s",
        )
        bars(
            ax2,
            list(e),
            [v["relay_cpu_us_per_msg"] for v in e.values()],
            "relay CPU per message",
            "us",
        )
        save(fig, "e_messages.png")
