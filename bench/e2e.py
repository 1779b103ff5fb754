"""Section b: end-to-end file transfer with the real command-line tools, hash checked.

``m42 send`` -> m42d -> ``m42 recv`` (over the tls and the ws transport)
against ``wormhole send`` -> mailbox + transit relay -> ``wormhole
receive``.  The wormhole side runs entirely in a fresh network namespace
that has only loopback (``unshare -n``, then ``ip link set lo up``), with
``--relay-url`` and ``--transit-helper`` on 127.0.0.1 and ``--no-listen``
on both ends, so the bytes go through the local transit relay and no
public server can be reached even by mistake.  The timed span is from
starting both processes to both exiting: it includes start-up, key
exchange and the hash check each tool does.

Every transfer reports the CPU seconds of each of the three processes
that carry the bytes (sender, relay, receiver): the clients' from
``wait4``, the relay's from ``/proc``.  On a shared 2-core machine these
are steadier than wall time and show where a change pays.

With a baseline tree (:func:`section`, ``python -m bench --baseline
PATH``), the baseline's relay and clients (PYTHONPATH at that tree) and
the current tree's run alternately, round by round, so machine noise
falls on both alike; every figure is the median over the rounds.
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Final

from bench.procs import BIN, Relay, m42d_relay, mailbox_server, transit_relay

__all__ = ["make_file", "run_m42", "run_wormhole", "section", "sha256_file", "tree_env"]

TIMEOUT: Final = 900.0
CODE: Final = "7-bench-loopback"
GIB: Final = 1 << 30
SCHEMES: Final = ("tls", "ws")
BASE: Final = "base-"
"""Key prefix of the baseline tree's entries in the section's result."""


def make_file(path: Path, nbytes: int) -> None:
    with path.open("wb") as f:
        left = nbytes
        while left:
            step = min(left, 8 << 20)
            f.write(os.urandom(step))
            left -= step


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def tree_env(tree: Path | None) -> dict[str, str]:
    """The environment that runs ``tree``'s m42d (None: this process's own).

    Byte-code writing is allowed even where the caller's environment forbids
    it (PYTHONDONTWRITEBYTECODE), and :func:`compile_tree` fills the caches
    first: an installed m42d has its .pyc files, as wormhole's have here, and
    compiling m42d's sources cost each client ~0.05 s of CPU per start.
    """
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if tree is not None:
        env["PYTHONPATH"] = os.pathsep.join(str(p) for p in _import_roots(tree))
    return env


def _import_roots(tree: Path) -> list[Path]:
    root = tree.resolve()
    return [root, root / "plugins", root / "plugins" / "m42d-unix" / "src"]


def compile_tree(tree: Path | None) -> None:
    """Write the .pyc files of ``tree``'s sources (None: the tree this module is in)."""
    root = Path(__file__).resolve().parent.parent if tree is None else tree
    sources = [str(root / sub) for sub in ("m42d", "plugins") if (root / sub).is_dir()]
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", *sources],
        check=True,
        capture_output=True,
        env=tree_env(tree),
        timeout=300,
    )


def _cpu(usage: Any) -> float:
    return float(usage.ru_utime + usage.ru_stime)


def _reap(proc: subprocess.Popen[bytes]) -> float:
    """Wait for ``proc`` with ``wait4`` and return its CPU seconds (user + system)."""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return _cpu(usage)


def _both(
    send: list[str], recv: list[str], cwd: Path, env: Mapping[str, str]
) -> tuple[float, float, float]:
    """Run receiver and sender to completion: (wall seconds, sender CPU s, receiver CPU s)."""
    logs = {name: (cwd / f"{name}.err").open("w+b") for name in ("send", "recv")}
    try:
        t0 = time.perf_counter()
        started = []
        for name, argv in (("recv", recv), ("send", send)):
            started.append(
                subprocess.Popen(
                    argv,
                    cwd=cwd,
                    env=dict(env),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=logs[name],
                )
            )
        receiver, sender = started

        # wait4 has no timeout: a timer kills a hung pair so the wait returns.
        def kill_all() -> None:
            for p in started:
                p.kill()

        timer = threading.Timer(TIMEOUT, kill_all)
        timer.start()
        try:
            send_cpu = _reap(sender)
            recv_cpu = _reap(receiver)
        finally:
            timer.cancel()
        elapsed = time.perf_counter() - t0
        if sender.returncode or receiver.returncode:
            tails = []
            for f in logs.values():
                f.seek(0)
                tails.append(f.read().decode(errors="replace")[-1500:])
            raise RuntimeError(
                f"transfer failed ({sender.returncode}/{receiver.returncode}):\n" + "\n".join(tails)
            )
        return elapsed, send_cpu, recv_cpu
    finally:
        for f in logs.values():
            f.close()


def _record(
    tool: str,
    size: int,
    timed: tuple[float, float, float],
    relay_cpu: float,
    ok: bool,
    **extra: float,
) -> dict[str, Any]:
    seconds, send_cpu, recv_cpu = timed
    gib = size / GIB
    return {
        "tool": tool,
        "bytes": size,
        "seconds": seconds,
        "mb_per_s": size / seconds / 1e6,
        "hash_ok": ok,
        "sender_cpu_s": send_cpu,
        "relay_cpu_s": relay_cpu,
        "receiver_cpu_s": recv_cpu,
        "sender_cpu_s_per_gib": send_cpu / gib,
        "relay_cpu_s_per_gib": relay_cpu / gib,
        "receiver_cpu_s_per_gib": recv_cpu / gib,
        **extra,
    }


def run_m42(
    relay: Relay,
    source: Path,
    work: Path,
    scheme: str = "tls",
    *,
    env: Mapping[str, str] | None = None,
    tool: str = "",
) -> dict[str, Any]:
    """One transfer of ``source`` with ``m42 send`` / ``m42 recv`` through ``relay``.

    ``env`` runs the clients of another tree (give its relay the same one).
    """
    env = dict(os.environ if env is None else env)
    new = subprocess.run(
        [str(BIN / "m42"), "new", "--relay", relay.urls[scheme], "--json"],
        check=True,
        capture_output=True,
        env=env,
        timeout=60,
    )
    links = json.loads(new.stdout)
    (work / "link-a").write_text(links["link_a"])
    (work / "link-b").write_text(links["link_b"])
    out = work / f"m42-out-{scheme}"
    out.mkdir(exist_ok=True)
    cpu0 = relay.cpu_seconds()
    timed = _both(
        [
            str(BIN / "m42"),
            "send",
            "--link-file",
            str(work / "link-a"),
            "--file",
            str(source),
            "--keys-dir",
            str(work / "keys-a"),
            "--wait",
            "60",
        ],
        [
            str(BIN / "m42"),
            "recv",
            "--link-file",
            str(work / "link-b"),
            "--out",
            str(out),
            "--count",
            "1",
            "--keys-dir",
            str(work / "keys-b"),
            "--timeout",
            str(TIMEOUT),
        ],
        work,
        env,
    )
    cpu = relay.cpu_seconds() - cpu0
    received = out / source.name
    ok = received.exists() and sha256_file(received) == sha256_file(source)
    size = source.stat().st_size
    received.unlink(missing_ok=True)
    return _record(tool or f"m42 ({scheme})", size, timed, cpu, ok)


def run_wormhole(source: Path, work: Path) -> dict[str, Any]:
    """Re-run this module inside ``unshare -n`` (loopback only) and read its JSON answer."""
    proc = subprocess.run(
        ["unshare", "-n", sys.executable, "-m", "bench.e2e", "--inside", str(source), str(work)],
        capture_output=True,
        timeout=TIMEOUT,
        cwd=Path(__file__).resolve().parent.parent,
    )
    if proc.returncode:
        raise RuntimeError(f"wormhole run failed:\n{proc.stderr.decode(errors='replace')[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    return result


def _inside(source: Path, work: Path) -> dict[str, Any]:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    out = work / "wormhole-out.bin"
    out.unlink(missing_ok=True)
    with mailbox_server(work) as mailbox, transit_relay(work) as transit:
        common = [
            str(BIN / "wormhole"),
            "--relay-url",
            mailbox.urls["ws"],
            "--transit-helper",
            "tcp:127.0.0.1:" + transit.urls["tcp"].rsplit(":", 1)[1],
        ]
        cpu0, mailbox0 = transit.cpu_seconds(), mailbox.cpu_seconds()
        timed = _both(
            [*common, "send", "--code", CODE, "--no-listen", "--hide-progress", str(source)],
            [
                *common,
                "receive",
                "--accept-file",
                "--no-listen",
                "--hide-progress",
                "-o",
                str(out),
                CODE,
            ],
            work,
            dict(os.environ),
        )
        cpu, mailbox_cpu = transit.cpu_seconds() - cpu0, mailbox.cpu_seconds() - mailbox0
    ok = out.exists() and sha256_file(out) == sha256_file(source)
    size = source.stat().st_size
    out.unlink(missing_ok=True)
    return _record("wormhole", size, timed, cpu, ok, mailbox_cpu_s=mailbox_cpu)


MEDIANS: Final = (
    "seconds",
    "mb_per_s",
    "sender_cpu_s_per_gib",
    "relay_cpu_s_per_gib",
    "receiver_cpu_s_per_gib",
)


def _median(rounds: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The first round's record with every figure replaced by the median over ``rounds``."""
    merged = {**rounds[0], **{k: statistics.median(r[k] for r in rounds) for k in MEDIANS}}
    merged["hash_ok"] = all(r["hash_ok"] for r in rounds)
    merged["rounds"] = len(rounds)
    merged["rounds_mb_per_s"] = [r["mb_per_s"] for r in rounds]
    for proc in ("sender", "relay", "receiver"):
        key = f"{proc}_cpu_s_per_gib"
        merged[f"rounds_{key}"] = [r[key] for r in rounds]
    return merged


def section(
    work: Path,
    source: Path,
    rounds: int,
    *,
    baseline: Path | None = None,
    schemes: Sequence[str] = SCHEMES,
    log: Callable[[str], None] = lambda _text: None,
) -> dict[str, dict[str, Any]]:
    """Section b: each round runs m42 over every scheme (both trees when given), then wormhole.

    Keys: ``m42-tls``, ``m42-ws``, ``wormhole`` and, with a baseline,
    ``base-m42-tls`` and ``base-m42-ws``; each the median of ``rounds``.
    """
    trees: list[tuple[str, dict[str, str]]] = []
    if baseline is not None:
        compile_tree(baseline)
        trees.append((BASE, tree_env(baseline)))
    compile_tree(None)
    trees.append(("", tree_env(None)))
    samples: dict[str, list[dict[str, Any]]] = {}
    dirs = {prefix: work / (prefix.rstrip("-") or "current") for prefix, _env in trees}
    for d in dirs.values():
        d.mkdir(exist_ok=True)
    with ExitStack() as stack:
        relays = {
            prefix: stack.enter_context(m42d_relay(dirs[prefix], env=env)) for prefix, env in trees
        }
        for n in range(rounds):
            log(f"b: round {n + 1} of {rounds}")
            # Alternate which tree goes first, so neither always runs on a warm page cache.
            order = trees if n % 2 == 0 else trees[::-1]
            for scheme in schemes:
                for prefix, env in order:
                    key = f"{prefix}m42-{scheme}"
                    tool = f"{'base ' if prefix else ''}m42 ({scheme})"
                    result = run_m42(
                        relays[prefix], source, dirs[prefix], scheme, env=env, tool=tool
                    )
                    samples.setdefault(key, []).append(result)
            samples.setdefault("wormhole", []).append(run_wormhole(source, work))
    return {key: _median(runs) for key, runs in samples.items()}


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--inside":
        print(json.dumps(_inside(Path(sys.argv[2]), Path(sys.argv[3]))))
    else:
        raise SystemExit("internal: python -m bench.e2e --inside FILE WORKDIR")
