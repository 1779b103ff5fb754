"""File STREAM throughput against bare AES-GCM on the same chunks (CHUNK_SIZE, 256 KiB).

The STREAM layer adds per-chunk Python work (framing checks, nonce building,
the decryptor's counter) on top of one AES-GCM call.  At 64 KiB (protocol 1) a
chunk cost the cipher only ~10 us, so that overhead is what can matter; the target is
STREAM >= 0.8x the raw cipher.  Both sides run in one process on the same
data, best of several rounds, so the ratio is meaningful on a busy machine.
Timed loops drop their output, as a sender does once a chunk is written:
keeping every ciphertext would time the kernel's page faults instead (that
alone cuts encryption from ~4.5 to ~1.5 GB/s here); the chunks to decrypt are
sealed beforehand, outside the timings.

Run: ``python -m bench.stream [--mib N] [--quick]``.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from m42d.crypto.stream import CHUNK_SIZE, FileKey, StreamDecryptor, StreamEncryptor

TARGET_RATIO = 0.8


def _raw_round(chunks: Sequence[bytes]) -> tuple[float, float]:
    """Baseline: one AESGCM object, 12-byte counter nonces, no framing."""
    aead = AESGCM(os.urandom(32))
    sealed = [aead.encrypt(i.to_bytes(12, "big"), c, None) for i, c in enumerate(chunks)]
    t0 = time.perf_counter()
    for i, c in enumerate(chunks):
        aead.encrypt(i.to_bytes(12, "big"), c, None)
    t1 = time.perf_counter()
    for i, c in enumerate(sealed):
        aead.decrypt(i.to_bytes(12, "big"), c, None)
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1


def _stream_round(chunks: Sequence[bytes]) -> tuple[float, float]:
    """STREAM: the encryptor and decryptor the session layer uses, key setup included."""
    file_key = FileKey.generate()
    last = len(chunks) - 1
    sealer = StreamEncryptor(file_key)
    sealed = [sealer.encrypt_chunk(i, c, last=i == last) for i, c in enumerate(chunks)]
    t0 = time.perf_counter()
    enc = StreamEncryptor(file_key)
    for i, c in enumerate(chunks):
        enc.encrypt_chunk(i, c, last=i == last)
    t1 = time.perf_counter()
    dec = StreamDecryptor(file_key)
    for c in sealed:
        dec.decrypt_next(c)
    dec.finish()
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1


def _mbps(nbytes: int, seconds: float) -> float:
    return nbytes / seconds / 1e6


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.stream", description="File STREAM throughput against bare AES-GCM."
    )
    parser.add_argument("--mib", type=int, default=256, help="data per round in MiB (default 256)")
    parser.add_argument(
        "--quick", action="store_true", help="64 MiB, 3 rounds: a smoke run of about a second"
    )
    parser.add_argument(
        "--rounds", type=int, default=5, help="rounds; the best one counts (default 5)"
    )
    args = parser.parse_args(argv)
    mib, rounds = (min(args.mib, 64), 3) if args.quick else (args.mib, args.rounds)
    if mib < 1 or rounds < 1:
        parser.error("--mib and --rounds must be at least 1")

    # Distinct chunks cut once, outside the timings; the last one is full-size,
    # which is the decryptor's worst case (it tries "not final" first).
    data = os.urandom(mib * 1024 * 1024)
    chunks = [data[i : i + CHUNK_SIZE] for i in range(0, len(data), CHUNK_SIZE)]
    nbytes = len(data)

    # Interleave the two so that a noisy neighbour hurts both alike.
    raw_enc, raw_dec = float("inf"), float("inf")
    st_enc, st_dec = float("inf"), float("inf")
    for _ in range(rounds):
        e, d = _raw_round(chunks)
        raw_enc, raw_dec = min(raw_enc, e), min(raw_dec, d)
        e, d = _stream_round(chunks)
        st_enc, st_dec = min(st_enc, e), min(st_dec, d)

    raw_total = _mbps(2 * nbytes, raw_enc + raw_dec)
    st_total = _mbps(2 * nbytes, st_enc + st_dec)
    ratio = st_total / raw_total
    print(f"{mib} MiB in {len(chunks)} chunks of {CHUNK_SIZE} bytes, best of {rounds} rounds")
    print(f"{'':8} {'encrypt MB/s':>13} {'decrypt MB/s':>13} {'enc+dec MB/s':>13}")
    for name, enc_s, dec_s, total in (
        ("raw", raw_enc, raw_dec, raw_total),
        ("STREAM", st_enc, st_dec, st_total),
    ):
        print(f"{name:8} {_mbps(nbytes, enc_s):13.0f} {_mbps(nbytes, dec_s):13.0f} {total:13.0f}")
    verdict = "ok" if ratio >= TARGET_RATIO else "BELOW TARGET"
    print(f"ratio STREAM/raw (enc+dec): {ratio:.2f}x (target >= {TARGET_RATIO}x: {verdict})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
