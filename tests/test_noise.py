"""Unit tests of the Noise engine: round trips, failures, state rules, secrecy of reprs."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from m42d.crypto import noise
from m42d.crypto.noise import (
    BASE_PATTERNS,
    MAX_MESSAGE,
    MAX_NONCE,
    PROTOCOL_NAME,
    X25519DH,
    CipherState,
    HandshakeAuthError,
    HandshakeState,
    KeyPair,
    LowOrderPointError,
    NoiseProtocol,
    NonceExhaustedError,
    SHA256Hash,
    SymmetricState,
    Token,
    TransportPair,
    UnsupportedProtocolError,
    handshake_pattern,
)
from m42d.errors import (
    CryptoError,
    DecryptError,
    HandshakeError,
    LocalProtocolError,
    RemoteProtocolError,
)

ZERO_POINT = bytes(32)
ORDER_8_POINT = bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800")
SUITE = "_25519_AESGCM_SHA256"


def xx_pair(
    psk_init: bytes | None = None, psk_resp: bytes | None = None, *, prologue: bytes = b"room"
) -> tuple[HandshakeState, HandshakeState, KeyPair, KeyPair]:
    psk = os.urandom(32)
    a_static, b_static = KeyPair.generate(), KeyPair.generate()
    init = HandshakeState(
        PROTOCOL_NAME, initiator=True, prologue=prologue, s=a_static, psks=[psk_init or psk]
    )
    resp = HandshakeState(
        PROTOCOL_NAME, initiator=False, prologue=prologue, s=b_static, psks=[psk_resp or psk]
    )
    return init, resp, a_static, b_static


def run_handshake(
    init: HandshakeState, resp: HandshakeState, payloads: list[bytes] | None = None
) -> list[bytes]:
    """Drive both sides to completion, returning the payloads each reader saw."""
    seen: list[bytes] = []
    step = 0
    while not init.complete:
        writer, reader = (init, resp) if init.is_my_turn() else (resp, init)
        payload = payloads[step] if payloads else b""
        seen.append(reader.read_message(writer.write_message(payload)))
        step += 1
    assert resp.complete
    return seen


# --------------------------------------------------------------------------- round trips


def test_xxpsk3_round_trip() -> None:
    init, resp, a_static, b_static = xx_pair()
    assert init.is_my_turn()
    assert not resp.is_my_turn()
    assert init.remote_static is None
    seen = run_handshake(init, resp, [b"one", b"two", b"three"])
    assert seen == [b"one", b"two", b"three"]
    assert init.remote_static == b_static.public
    assert resp.remote_static == a_static.public
    assert init.handshake_hash == resp.handshake_hash
    assert len(init.handshake_hash) == 32
    assert not init.is_my_turn()
    assert not resp.is_my_turn()
    a, b = init.split(), resp.split()
    assert init.split() is a  # same objects: a second split cannot reuse nonces
    assert b.recv.decrypt_with_ad(b"ad", a.send.encrypt_with_ad(b"ad", b"hi bob")) == b"hi bob"
    assert a.recv.decrypt_with_ad(b"", b.send.encrypt_with_ad(b"", b"hi alice")) == b"hi alice"
    assert (a.send.nonce, a.recv.nonce, b.send.nonce, b.recv.nonce) == (1, 1, 1, 1)


def test_handshake_is_random_per_run() -> None:
    init1, resp1, _, _ = xx_pair()
    init2, resp2, _, _ = xx_pair()
    run_handshake(init1, resp1)
    run_handshake(init2, resp2)
    assert init1.handshake_hash != init2.handshake_hash


@settings(max_examples=30, deadline=None)
@given(
    payloads=st.lists(st.binary(max_size=200), min_size=3, max_size=3),
    transport=st.lists(st.tuples(st.booleans(), st.binary(max_size=300)), max_size=8),
)
def test_round_trip_any_payloads(
    payloads: list[bytes], transport: list[tuple[bool, bytes]]
) -> None:
    init, resp, _, _ = xx_pair()
    assert run_handshake(init, resp, payloads) == payloads
    a, b = init.split(), resp.split()
    for forwards, message in transport:
        sender, receiver = (a, b) if forwards else (b, a)
        ciphertext = sender.send.encrypt_with_ad(b"", message)
        assert len(ciphertext) == len(message) + 16
        assert receiver.recv.decrypt_with_ad(b"", ciphertext) == message


def _keys_for(name: str) -> tuple[dict[str, object], dict[str, object]]:
    pattern = handshake_pattern(name)
    a_static, b_static = KeyPair.generate(), KeyPair.generate()
    psks = [os.urandom(32) for _ in range(pattern.psk_count)]
    init: dict[str, object] = {"s": a_static, "psks": psks}
    resp: dict[str, object] = {"s": b_static, "psks": psks}
    for pre in pattern.pre_messages:
        if Token.S in pre.tokens:
            if pre.from_initiator:
                resp["rs"] = a_static.public
            else:
                init["rs"] = b_static.public
    return init, resp


@pytest.mark.parametrize(
    "name",
    [*BASE_PATTERNS, "NNpsk0", "Npsk0", "XXpsk0+psk1+psk2+psk3", "IKpsk1+psk2", "X1K1psk0+psk4"],
)
def test_every_pattern_round_trips(name: str) -> None:
    init_keys, resp_keys = _keys_for(name)
    init = HandshakeState(f"Noise_{name}{SUITE}", initiator=True, **init_keys)  # type: ignore[arg-type]
    resp = HandshakeState(f"Noise_{name}{SUITE}", initiator=False, **resp_keys)  # type: ignore[arg-type]
    count = len(handshake_pattern(name).messages)
    payloads = [f"message {i}".encode() for i in range(count)]
    assert run_handshake(init, resp, payloads) == payloads
    assert init.handshake_hash == resp.handshake_hash
    a, b = init.split(), resp.split()
    assert b.recv.decrypt_with_ad(b"", a.send.encrypt_with_ad(b"", b"x")) == b"x"
    if not handshake_pattern(name).one_way:
        assert a.recv.decrypt_with_ad(b"", b.send.encrypt_with_ad(b"", b"y")) == b"y"


def test_prologue_mismatch_fails() -> None:
    psk = os.urandom(32)
    init = HandshakeState(
        PROTOCOL_NAME, initiator=True, prologue=b"v1", s=KeyPair.generate(), psks=[psk]
    )
    resp = HandshakeState(
        PROTOCOL_NAME, initiator=False, prologue=b"v2", s=KeyPair.generate(), psks=[psk]
    )
    with pytest.raises(HandshakeAuthError):
        resp.read_message(init.write_message(b""))


# --------------------------------------------------------------------------- failures


def test_wrong_psk_fails_on_reader() -> None:
    init, resp, _, _ = xx_pair(psk_init=os.urandom(32), psk_resp=os.urandom(32))
    resp.read_message(init.write_message())
    init.read_message(resp.write_message())
    message3 = init.write_message(b"hello")
    assert init.complete  # the writer cannot know yet
    with pytest.raises(HandshakeAuthError, match="wrong room secret or tampered") as info:
        resp.read_message(message3)
    assert isinstance(info.value, HandshakeError)
    assert isinstance(info.value, CryptoError)  # a HandshakeError, not a DecryptError: one base
    assert isinstance(info.value, RemoteProtocolError)
    assert resp.failed
    assert not resp.complete
    with pytest.raises(LocalProtocolError, match="failed earlier"):
        resp.read_message(message3)
    with pytest.raises(LocalProtocolError, match="failed earlier"):
        resp.write_message()
    with pytest.raises(LocalProtocolError):
        resp.split()
    with pytest.raises(LocalProtocolError):
        _ = resp.handshake_hash


@settings(max_examples=60, deadline=None)
@given(message_index=st.integers(0, 2), data=st.data())
def test_any_flipped_bit_is_detected(message_index: int, data: st.DataObject) -> None:
    init, resp, _, _ = xx_pair()
    writers = [init, resp, init]
    readers = [resp, init, resp]
    for i in range(message_index):
        readers[i].read_message(writers[i].write_message(b"payload"))
    message = bytearray(writers[message_index].write_message(b"payload"))
    bit = data.draw(st.integers(0, len(message) * 8 - 1), label="bit")
    message[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(HandshakeError):
        readers[message_index].read_message(bytes(message))
    assert readers[message_index].failed


@pytest.mark.parametrize("point", [ZERO_POINT, ORDER_8_POINT], ids=["zero", "order8"])
def test_low_order_ephemeral_rejected(point: bytes) -> None:
    resp = HandshakeState(PROTOCOL_NAME, initiator=False, s=KeyPair.generate(), psks=[bytes(32)])
    with pytest.raises(LowOrderPointError):
        resp.read_message(point + bytes(16))
    assert resp.failed


def test_low_order_static_rejected() -> None:
    """An attacker who knows the psk still cannot send a low-order static key."""
    psk = os.urandom(32)
    real = KeyPair.generate()
    evil = KeyPair(private=real.private, public=ORDER_8_POINT)
    init = HandshakeState(PROTOCOL_NAME, initiator=True, s=evil, psks=[psk])
    resp = HandshakeState(PROTOCOL_NAME, initiator=False, s=KeyPair.generate(), psks=[psk])
    resp.read_message(init.write_message())
    init.read_message(resp.write_message())
    with pytest.raises(LowOrderPointError):
        resp.read_message(init.write_message())


def test_low_order_pre_known_static_rejected() -> None:
    with pytest.raises(LowOrderPointError):
        HandshakeState(f"Noise_NK{SUITE}", initiator=True, rs=ZERO_POINT)


def test_dh_with_low_order_point_raises() -> None:
    with pytest.raises(LowOrderPointError):
        X25519DH().dh(KeyPair.generate(), ORDER_8_POINT)


@pytest.mark.parametrize("size", [0, 47, MAX_MESSAGE + 1])
def test_bad_message_length(size: int) -> None:
    resp = HandshakeState(PROTOCOL_NAME, initiator=False, s=KeyPair.generate(), psks=[bytes(32)])
    with pytest.raises(HandshakeError, match=r"too short|longer than"):
        resp.read_message(bytes(size))
    assert resp.failed


# --------------------------------------------------------------------------- state rules


def test_out_of_turn_calls() -> None:
    init, resp, _, _ = xx_pair()
    with pytest.raises(LocalProtocolError, match="turn to read"):
        resp.write_message()
    with pytest.raises(LocalProtocolError, match="turn to write"):
        init.read_message(bytes(48))
    assert not init.failed
    assert not resp.failed
    message1 = init.write_message()
    with pytest.raises(LocalProtocolError):
        init.write_message()
    resp.read_message(message1)
    with pytest.raises(LocalProtocolError):
        resp.read_message(message1)
    with pytest.raises(LocalProtocolError, match="only defined once"):
        _ = init.handshake_hash
    with pytest.raises(LocalProtocolError, match="before the handshake completed"):
        init.split()
    init.read_message(resp.write_message())
    resp.read_message(init.write_message())
    for side in (init, resp):
        with pytest.raises(LocalProtocolError, match="complete"):
            side.write_message()
        with pytest.raises(LocalProtocolError, match="complete"):
            side.read_message(bytes(64))


def test_oversized_payload_is_refused_without_damage() -> None:
    init, resp, _, _ = xx_pair()
    overhead = 32 + 16  # e, then the payload tag (psk mode keys the first message)
    with pytest.raises(LocalProtocolError, match="exceeds"):
        init.write_message(bytes(MAX_MESSAGE - overhead + 1))
    assert not init.failed
    message = init.write_message(bytes(MAX_MESSAGE - overhead))
    assert len(message) == MAX_MESSAGE
    assert resp.read_message(message) == bytes(MAX_MESSAGE - overhead)


def test_missing_or_extra_keys() -> None:
    s = KeyPair.generate()
    with pytest.raises(LocalProtocolError, match=r"static key \(s\)"):
        HandshakeState(PROTOCOL_NAME, initiator=True, psks=[bytes(32)])
    with pytest.raises(LocalProtocolError, match="needs 1 psk"):
        HandshakeState(PROTOCOL_NAME, initiator=True, s=s)
    with pytest.raises(LocalProtocolError, match="needs 1 psk"):
        HandshakeState(PROTOCOL_NAME, initiator=True, s=s, psks=[bytes(32)] * 2)
    with pytest.raises(LocalProtocolError, match="32 bytes"):
        HandshakeState(PROTOCOL_NAME, initiator=True, s=s, psks=[bytes(31)])
    with pytest.raises(LocalProtocolError, match=r"does not pre-share.*\(rs\)"):
        HandshakeState(PROTOCOL_NAME, initiator=True, s=s, psks=[bytes(32)], rs=s.public)
    with pytest.raises(LocalProtocolError, match=r"\(re\)"):
        HandshakeState(PROTOCOL_NAME, initiator=True, s=s, psks=[bytes(32)], re=s.public)
    with pytest.raises(LocalProtocolError, match=r"pre-known key \(rs\)"):
        HandshakeState(f"Noise_NK{SUITE}", initiator=True)
    with pytest.raises(LocalProtocolError, match="rs must be 32 bytes"):
        HandshakeState(f"Noise_NK{SUITE}", initiator=True, rs=bytes(31))
    # The responder of NK needs s; the initiator of NN needs nothing.
    with pytest.raises(LocalProtocolError, match=r"\(s\)"):
        HandshakeState(f"Noise_NK{SUITE}", initiator=False)
    assert HandshakeState(f"Noise_NN{SUITE}", initiator=True).is_my_turn()


def test_pre_message_ephemeral_with_psk(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pre-shared ephemerals (as in fallback patterns) are hashed and, with psks, mixed."""
    monkeypatch.setitem(
        BASE_PATTERNS, "FB", noise._parse_notation("FB", "-> e\n...\n<- e, ee, s, es\n-> s, se")
    )
    name = f"Noise_FBpsk0{SUITE}"
    psk = os.urandom(32)
    a_eph, a_static, b_static = KeyPair.generate(), KeyPair.generate(), KeyPair.generate()
    with pytest.raises(LocalProtocolError, match="pre-shared e"):
        HandshakeState(name, initiator=True, s=a_static, psks=[psk])
    init = HandshakeState(name, initiator=True, s=a_static, e=a_eph, psks=[psk])
    resp = HandshakeState(name, initiator=False, s=b_static, re=a_eph.public, psks=[psk])
    assert resp.is_my_turn()
    assert run_handshake(init, resp, [b"a", b"b"]) == [b"a", b"b"]
    assert init.handshake_hash == resp.handshake_hash


# --------------------------------------------------------------------------- names


def test_protocol_name_parsing() -> None:
    protocol = NoiseProtocol.parse(PROTOCOL_NAME)
    assert protocol.pattern.messages[2].tokens == (Token.S, Token.SE, Token.PSK)
    multi = handshake_pattern("XXpsk0+psk1+psk2+psk3")
    assert [m.tokens for m in multi.messages] == [
        (Token.PSK, Token.E, Token.PSK),
        (Token.E, Token.EE, Token.S, Token.ES, Token.PSK),
        (Token.S, Token.SE, Token.PSK),
    ]
    assert multi.psk_count == 4
    assert handshake_pattern("N").one_way
    assert not handshake_pattern("NN").one_way


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("Noise_XX_448_AESGCM_SHA256", "DH function '448'"),
        ("Noise_XX_25519_ChaChaPoly_SHA256", "cipher function 'ChaChaPoly'"),
        ("Noise_XX_25519_AESGCM_BLAKE2b", "hash function 'BLAKE2b'"),
        ("Noise_XX_25519_AESGCM", "malformed"),
        ("Noisy_XX_25519_AESGCM_SHA256", "malformed"),
        ("Noise_ZZ_25519_AESGCM_SHA256", "unknown handshake pattern"),
        ("Noise_xx_25519_AESGCM_SHA256", "unknown handshake pattern"),
        ("Noise_XXfallback_25519_AESGCM_SHA256", "unsupported pattern modifier"),
        ("Noise_XXpsk4_25519_AESGCM_SHA256", "only 3 messages"),
        ("Noise_XXpsk1+psk1_25519_AESGCM_SHA256", "repeated"),
        ("Noise_XXpsk01_25519_AESGCM_SHA256", "unsupported pattern modifier"),
    ],
)
def test_unsupported_names(name: str, match: str) -> None:
    with pytest.raises(UnsupportedProtocolError, match=match):
        HandshakeState(name, initiator=True)


def test_bad_notation_is_rejected() -> None:
    with pytest.raises(ValueError, match="bad line"):
        noise._parse_notation("Q", "=> e")


# --------------------------------------------------------------------------- CipherState


def _transport_pair() -> tuple[TransportPair, TransportPair]:
    init, resp, _, _ = xx_pair()
    run_handshake(init, resp)
    return init.split(), resp.split()


def test_rekey_changes_ciphertext_and_stays_in_sync() -> None:
    a, b = _transport_pair()
    b.recv.decrypt_with_ad(b"", a.send.encrypt_with_ad(b"", b"before"))
    twin = CipherState(key=a.send._key)
    twin.set_nonce(a.send.nonce)
    a.send.rekey()
    assert a.send.nonce == 1  # Rekey keeps the nonce
    rekeyed = a.send.encrypt_with_ad(b"", b"same text")
    assert rekeyed != twin.encrypt_with_ad(b"", b"same text")
    with pytest.raises(DecryptError):
        b.recv.decrypt_with_ad(b"", rekeyed)
    assert b.recv.nonce == 1  # failure does not advance the nonce
    b.recv.rekey()
    assert b.recv.decrypt_with_ad(b"", rekeyed) == b"same text"
    for i in range(3):
        a.send.rekey()
        b.recv.rekey()
        assert b.recv.decrypt_with_ad(b"", a.send.encrypt_with_ad(b"", bytes([i]))) == bytes([i])


def test_rekey_matches_spec_formula() -> None:
    key = os.urandom(32)
    max_nonce = bytes(4) + (2**64 - 1).to_bytes(8, "big")
    expected = AESGCM(key).encrypt(max_nonce, bytes(32), b"")[:32]
    state = CipherState(key=key)
    state.rekey()
    assert state.encrypt_with_ad(b"a", b"m") == CipherState(key=expected).encrypt_with_ad(
        b"a", b"m"
    )


def test_nonce_encoding_matches_spec() -> None:
    key = os.urandom(32)
    state = CipherState(key=key)
    state.set_nonce(0x0102030405060708)
    nonce = bytes(4) + bytes.fromhex("0102030405060708")
    assert state.encrypt_with_ad(b"ad", b"pt") == AESGCM(key).encrypt(nonce, b"pt", b"ad")


def test_nonce_exhaustion() -> None:
    state = CipherState(key=os.urandom(32))
    state.set_nonce(MAX_NONCE - 1)
    ciphertext = state.encrypt_with_ad(b"", b"last")
    assert state.nonce == MAX_NONCE
    with pytest.raises(NonceExhaustedError, match="exhausted"):
        state.encrypt_with_ad(b"", b"one too many")
    with pytest.raises(NonceExhaustedError):
        state.decrypt_with_ad(b"", ciphertext)
    with pytest.raises(LocalProtocolError):
        state.set_nonce(MAX_NONCE + 1)
    with pytest.raises(LocalProtocolError):
        state.set_nonce(-1)


def test_transport_size_caps() -> None:
    a, b = _transport_pair()
    with pytest.raises(LocalProtocolError, match="longer than"):
        a.send.encrypt_with_ad(b"", bytes(MAX_MESSAGE - 15))
    assert a.send.nonce == 0
    biggest = a.send.encrypt_with_ad(b"", bytes(MAX_MESSAGE - 16))
    assert len(biggest) == MAX_MESSAGE
    assert b.recv.decrypt_with_ad(b"", biggest) == bytes(MAX_MESSAGE - 16)
    with pytest.raises(DecryptError, match="longer than"):
        b.recv.decrypt_with_ad(b"", bytes(MAX_MESSAGE + 1))


def test_transport_tamper_and_wrong_ad() -> None:
    a, b = _transport_pair()
    ciphertext = a.send.encrypt_with_ad(b"ad", b"text")
    with pytest.raises(DecryptError, match="authentication failed"):
        b.recv.decrypt_with_ad(b"other", ciphertext)
    with pytest.raises(DecryptError):
        b.recv.decrypt_with_ad(b"ad", ciphertext[:-1] + bytes([ciphertext[-1] ^ 1]))
    assert b.recv.nonce == 0
    assert b.recv.decrypt_with_ad(b"ad", ciphertext) == b"text"


def test_keyless_cipher_state_passes_through() -> None:
    state = CipherState()
    assert not state.has_key()
    assert state.encrypt_with_ad(b"", b"plain") == b"plain"
    assert state.decrypt_with_ad(b"", b"plain") == b"plain"
    assert state.nonce == 0
    with pytest.raises(LocalProtocolError):
        state.encrypt_with_ad(b"", bytes(MAX_MESSAGE + 1))
    with pytest.raises(LocalProtocolError, match="without a key"):
        state.rekey()
    with pytest.raises(LocalProtocolError, match="32 bytes"):
        state.initialize_key(bytes(16))
    state.initialize_key(os.urandom(32))
    assert state.has_key()


def test_keypair() -> None:
    pair = KeyPair.generate()
    assert KeyPair.from_private(pair.private) == pair
    assert len(pair.public) == 32
    with pytest.raises(LocalProtocolError, match="32 bytes"):
        KeyPair.from_private(bytes(31))


def test_hkdf_long_protocol_name_is_hashed() -> None:
    """Names over HASHLEN bytes are hashed, shorter ones zero-padded (spec 5.2)."""
    sha = SHA256Hash()
    long_name = f"Noise_XXpsk0+psk1+psk2+psk3{SUITE}"
    long_state = SymmetricState.initialize(NoiseProtocol.parse(long_name))
    assert long_state.handshake_hash == sha.hash(long_name.encode())
    short_state = SymmetricState.initialize(NoiseProtocol.parse(f"Noise_NN{SUITE}"))
    assert short_state.handshake_hash == f"Noise_NN{SUITE}".encode().ljust(32, b"\0")


# --------------------------------------------------------------------------- secrecy


def test_reprs_and_errors_hold_no_secrets() -> None:
    psk = os.urandom(32)
    s = KeyPair.generate()
    e = KeyPair.generate()
    init = HandshakeState(PROTOCOL_NAME, initiator=True, s=s, e=e, psks=[psk])
    resp = HandshakeState(
        PROTOCOL_NAME, initiator=False, s=KeyPair.generate(), psks=[os.urandom(32)]
    )
    texts = [repr(init), str(init), repr(s), repr(e), repr(init._symmetric)]
    resp.read_message(init.write_message())
    init.read_message(resp.write_message())
    message3 = init.write_message()
    try:
        resp.read_message(message3)
    except HandshakeAuthError as exc:
        texts += [str(exc), repr(exc)]
    pair = init.split()
    texts += [repr(init), repr(pair), repr(pair.send), str(pair.recv)]
    secrets = [s.private, e.private, psk, pair.send._key, pair.recv._key]
    blob = "\n".join(texts)
    assert "HandshakeState(" in blob
    assert "CipherState(" in blob
    for secret in secrets:
        assert secret is not None
        assert secret.hex() not in blob
        assert repr(secret) not in blob


def test_accessors() -> None:
    init, resp, _, _ = xx_pair()
    assert init.is_initiator
    assert not resp.is_initiator
    assert init.protocol_name == resp.protocol_name == PROTOCOL_NAME


def test_write_failing_midway_kills_the_handshake(monkeypatch: pytest.MonkeyPatch) -> None:
    init, resp, _, _ = xx_pair()
    resp.read_message(init.write_message())

    def broken_dh(self: X25519DH, key_pair: KeyPair, public_key: bytes) -> bytes:
        raise LowOrderPointError("simulated")

    monkeypatch.setattr(X25519DH, "dh", broken_dh)
    with pytest.raises(LowOrderPointError):
        resp.write_message()
    assert resp.failed
    with pytest.raises(LocalProtocolError, match="failed earlier"):
        resp.write_message()
