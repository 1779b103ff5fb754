"""Known-answer tests: the Noise engine against vectors written by other implementations.

The vector files (cacophony, snow) live outside the repository and are read
through the ``vectors_dir`` fixture; every ``*_25519_AESGCM_SHA256`` vector is run,
through the handshake and on into transport messages, and the number run is
checked so that a missing or filtered file cannot pass silently.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from m42d.crypto.noise import (
    BASE_PATTERNS,
    HandshakeState,
    KeyPair,
    TransportPair,
    handshake_pattern,
)

SUITE_SUFFIX = "_25519_AESGCM_SHA256"
# Counts of our suite's vectors in each file (see ../shared/vectors/README.md).
EXPECTED_MINIMUM = {"cacophony.txt": 59, "snow.txt": 51}

Vector = dict[str, Any]


def _hex(vector: Vector, key: str) -> bytes | None:
    value = vector.get(key)
    return None if value is None else bytes.fromhex(value)


def _keypair(vector: Vector, key: str) -> KeyPair | None:
    private = _hex(vector, key)
    return None if private is None else KeyPair.from_private(private)


def _side(vector: Vector, prefix: str, *, initiator: bool) -> HandshakeState:
    return HandshakeState(
        vector["protocol_name"],
        initiator=initiator,
        prologue=_hex(vector, f"{prefix}_prologue") or b"",
        s=_keypair(vector, f"{prefix}_static"),
        e=_keypair(vector, f"{prefix}_ephemeral"),
        rs=_hex(vector, f"{prefix}_remote_static"),
        psks=[bytes.fromhex(p) for p in vector.get(f"{prefix}_psks", [])],
    )


def run_vector(vector: Vector) -> None:
    """Replay one vector; raise AssertionError on the first difference."""
    init = _side(vector, "init", initiator=True)
    resp = _side(vector, "resp", initiator=False)
    messages = vector["messages"]
    index = 0
    # Handshake: messages alternate initiator, responder, ...
    while not (init.complete and resp.complete):
        sender, receiver = (init, resp) if index % 2 == 0 else (resp, init)
        assert sender.is_my_turn(), f"message {index}: sender is not due to write"
        assert not receiver.is_my_turn()
        payload = bytes.fromhex(messages[index]["payload"])
        ciphertext = sender.write_message(payload)
        assert ciphertext.hex() == messages[index]["ciphertext"], f"handshake message {index}"
        assert receiver.read_message(ciphertext) == payload, f"handshake message {index}"
        index += 1

    assert init.handshake_hash == resp.handshake_hash
    if "handshake_hash" in vector:
        assert init.handshake_hash.hex() == vector["handshake_hash"]
    if vector.get("resp_static") and init.remote_static is not None:
        assert (
            init.remote_static == KeyPair.from_private(bytes.fromhex(vector["resp_static"])).public
        )
    if vector.get("init_static") and resp.remote_static is not None:
        assert (
            resp.remote_static == KeyPair.from_private(bytes.fromhex(vector["init_static"])).public
        )

    # Transport: the same alternation continues; one-way patterns only send forwards.
    one_way = len(vector["protocol_name"].split("_")[1].rstrip("+0123456789psk")) == 1
    pairs: tuple[TransportPair, TransportPair] = (init.split(), resp.split())
    for position in range(index, len(messages)):
        from_initiator = one_way or position % 2 == 0
        sender_pair, receiver_pair = pairs if from_initiator else pairs[::-1]
        payload = bytes.fromhex(messages[position]["payload"])
        ciphertext = sender_pair.send.encrypt_with_ad(b"", payload)
        assert ciphertext.hex() == messages[position]["ciphertext"], f"transport {position}"
        assert receiver_pair.recv.decrypt_with_ad(b"", ciphertext) == payload


def _suite_vectors(path: Path) -> list[Vector]:
    vectors: list[Vector] = json.loads(path.read_text())["vectors"]
    return [v for v in vectors if v["protocol_name"].endswith(SUITE_SUFFIX)]


def test_all_suite_vectors(vectors_dir: Path) -> None:
    ran: dict[str, int] = {}
    failures: list[str] = []
    for filename in EXPECTED_MINIMUM:
        ran[filename] = 0
        for vector in _suite_vectors(vectors_dir / filename):
            try:
                run_vector(vector)
            except Exception as exc:
                failures.append(f"{filename}: {vector['protocol_name']}: {exc!r}")
            ran[filename] += 1
    assert not failures, "\n".join(failures)
    for filename, minimum in EXPECTED_MINIMUM.items():
        assert ran[filename] >= minimum, f"{filename}: ran only {ran[filename]} vectors"
    assert sum(ran.values()) >= 110


def test_pattern_table_covers_every_vector_pattern(vectors_dir: Path) -> None:
    """Every base pattern in the vector files is one the engine names (none skipped)."""
    names = {
        v["protocol_name"].split("_")[1]
        for filename in EXPECTED_MINIMUM
        for v in _suite_vectors(vectors_dir / filename)
    }
    bases = {handshake_pattern(name).name.split("psk")[0] for name in names}
    assert bases == set(BASE_PATTERNS)


@pytest.mark.parametrize("filename", sorted(EXPECTED_MINIMUM))
def test_tampered_vector_is_detected(vectors_dir: Path, filename: str) -> None:
    """The replay itself can fail: a changed expected ciphertext is caught."""
    vector = _suite_vectors(vectors_dir / filename)[0]
    tampered = dict(vector)
    tampered["messages"] = [dict(m) for m in vector["messages"]]
    last = tampered["messages"][-1]
    last["ciphertext"] = ("00" if last["ciphertext"][:2] != "00" else "01") + last["ciphertext"][2:]
    with pytest.raises(AssertionError, match="transport"):
        run_vector(tampered)
