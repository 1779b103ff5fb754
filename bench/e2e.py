"""Section b: end-to-end file transfer with the real command-line tools, hash checked.

``m42 send`` -> m42d -> ``m42 recv`` against ``wormhole send`` -> mailbox +
transit relay -> ``wormhole receive``.  The wormhole side runs entirely in
a fresh network namespace that has only loopback (``unshare -n``, then
``ip link set lo up``), with ``--relay-url`` and ``--transit-helper`` on
127.0.0.1 and ``--no-listen`` on both ends, so the bytes go through the
local transit relay and no public server can be reached even by mistake.
The timed span is from starting both processes to both exiting: it
includes start-up, key exchange and the hash check each tool does.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Final

from bench.procs import BIN, Relay, mailbox_server, transit_relay

__all__ = ["make_file", "run_m42", "run_wormhole", "sha256_file"]

TIMEOUT: Final = 900.0
CODE: Final = "7-bench-loopback"


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


def _both(send: list[str], recv: list[str], cwd: Path, env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    receiver = subprocess.Popen(
        recv,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    sender = subprocess.Popen(
        send,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, s_err = sender.communicate(timeout=TIMEOUT)
    _, r_err = receiver.communicate(timeout=TIMEOUT)
    elapsed = time.perf_counter() - t0
    if sender.returncode or receiver.returncode:
        raise RuntimeError(
            f"transfer failed ({sender.returncode}/{receiver.returncode}):\n"
            f"{s_err.decode(errors='replace')[-1500:]}\n{r_err.decode(errors='replace')[-1500:]}"
        )
    return elapsed


def run_m42(relay: Relay, source: Path, work: Path, scheme: str = "tls") -> dict[str, Any]:
    """One transfer of ``source`` with ``m42 send`` / ``m42 recv`` through ``relay``."""
    env = dict(os.environ)
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
    seconds = _both(
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
    return {
        "tool": f"m42 ({scheme})",
        "bytes": size,
        "seconds": seconds,
        "mb_per_s": size / seconds / 1e6,
        "hash_ok": ok,
        "relay_cpu_s": cpu,
    }


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
        cpu0 = transit.cpu_seconds()
        env = dict(os.environ)
        seconds = _both(
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
            env,
        )
        cpu = transit.cpu_seconds() - cpu0
    ok = out.exists() and sha256_file(out) == sha256_file(source)
    size = source.stat().st_size
    out.unlink(missing_ok=True)
    return {
        "tool": "wormhole",
        "bytes": size,
        "seconds": seconds,
        "mb_per_s": size / seconds / 1e6,
        "hash_ok": ok,
        "relay_cpu_s": cpu,
    }


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--inside":
        print(json.dumps(_inside(Path(sys.argv[2]), Path(sys.argv[3]))))
    else:
        raise SystemExit("internal: python -m bench.e2e --inside FILE WORKDIR")
