"""Random schedules of texts, drops, duplicates, replays, reconnects and time.

The property a hostile or lossy relay must never break: once the network is
clean again, every text either side sent is shown exactly once, in order, no
text is left unacknowledged, and no text was reported delivered that the
receiver never showed.  Plus one regression test per failure mode found by
review (renewal gaps, forged HS1, lost RESET, lost last record, stuck files,
lost cancel, hostile codes).
"""

from __future__ import annotations

import os
import random
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from m42d.crypto.stream import CHUNK_SIZE, FileKey, StreamEncryptor
from m42d.errors import LocalProtocolError
from m42d.session import (
    BULK_HEADER,
    Envelope,
    FileCode,
    FileCompleted,
    FileDelivered,
    FileFailed,
    FileOffered,
    HandshakeComplete,
    RecordType,
    SessionError,
    SessionFailed,
    TextDelivered,
    TextReceived,
)
from m42d.session.records import Offer, decode_hello, decode_reason
from m42d.ticket import Seat
from m42d.wire import Lane

from .session_harness import Packet, Pair
from .session_peer import ScriptedPeer, initiator_handshake


def settle(pair: Pair, rounds: int = 10, step: float = 31.0) -> None:
    """Let every timer fire on a clean network."""
    for _ in range(rounds):
        pair.now += step
        pair.a.session.tick(pair.now)
        pair.b.session.tick(pair.now)
        pair.pump()


def run_schedule(seed: int, *, renew: bool, kinds: tuple[str, ...], reconnect: bool) -> list[str]:
    rng = random.Random(seed)
    if renew:
        kw = {
            "rehandshake_records": rng.choice([3, 5, 10_000]),
            "rehandshake_seconds": rng.choice([50.0, 3600.0]),
        }
    else:
        kw = {"rehandshake_records": 10**9, "rehandshake_seconds": 1e12}
    pair = Pair.make(**kw)
    sent: dict[Seat, list[str]] = {Seat.A: [], Seat.B: []}
    history: list[Packet] = []
    noise = {"p": 0.0}

    def middle(_seat: Seat, packet: Packet) -> list[Packet]:
        history.append(packet)
        if rng.random() >= noise["p"]:
            return [packet]
        kind = rng.choice(kinds)
        if kind == "drop":
            return []
        if kind == "dup":
            return [packet, packet]
        old = rng.choice(history)  # replay
        return [packet, old] if old[0] is packet[0] else [packet]

    pair.middle = middle
    connected = False
    for _ in range(60):
        action = rng.choice(["textA", "textB"] * 2 + ["pump", "disc", "conn", "tick", "tick"])
        noise["p"] = 0.3 if rng.random() < 0.3 else 0.0
        if action.startswith("text"):
            seat = Seat.A if action == "textA" else Seat.B
            text = f"{seat.name}{len(sent[seat])}"
            pair.side(seat).session.send_text(text)
            sent[seat].append(text)
            pair.pump()
        elif action == "pump":
            pair.pump()
        elif action == "disc":
            pair.disconnect()
            connected = False
        elif action == "conn":
            pair.connect()
            connected = True
        else:
            pair.now += rng.choice([1.0, 5.0, 31.0, 61.0])
            pair.a.session.tick(pair.now)
            pair.b.session.tick(pair.now)
            pair.pump()
    noise["p"] = 0.0
    if reconnect or not connected:
        pair.disconnect()
        pair.connect()
    settle(pair)
    errors = []
    for src in (Seat.A, Seat.B):
        receiver = pair.side(src.other)
        shown = [e.text for e in receiver.of(TextReceived)]
        if shown != sent[src]:
            errors.append(f"{src.name}: sent {sent[src]} shown {shown}")
        if pair.side(src).session.unacked_texts:
            errors.append(f"{src.name}: {pair.side(src).session.unacked_texts} unacked")
        delivered = {e.seq for e in pair.side(src).of(TextDelivered)}
        if delivered - {e.seq for e in receiver.of(TextReceived)}:
            errors.append(f"{src.name}: delivered but never shown")
    return errors


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32),
    renew=st.booleans(),
    kinds=st.sampled_from([("drop",), ("drop", "dup", "replay")]),
    reconnect=st.booleans(),
)
def test_random_schedules_lose_and_duplicate_nothing(
    seed: int, renew: bool, kinds: tuple[str, ...], reconnect: bool
) -> None:
    assert run_schedule(seed, renew=renew, kinds=kinds, reconnect=reconnect) == []


@pytest.mark.slow
def test_random_schedules_many_seeds() -> None:
    bad = {}
    for seed in range(300):
        for renew in (False, True):
            errors = run_schedule(
                seed, renew=renew, kinds=("drop", "dup", "replay"), reconnect=False
            )
            if errors:
                bad[(seed, renew)] = errors
    assert bad == {}


def texts(pair: Pair, seat: Seat) -> list[str]:
    return [e.text for e in pair.side(seat).of(TextReceived)]


def drop_next_data(src: Seat) -> tuple[dict[str, bool], object]:
    armed = {"on": False}

    def middle(seat: Seat, packet: Packet) -> list[Packet]:
        lane, payload = packet
        if armed["on"] and seat is src and lane is Lane.CONTROL and payload[0] == Envelope.DATA:
            armed["on"] = False
            return []
        return [packet]

    return armed, middle


@pytest.mark.parametrize("direction", ["A->B", "B->A"])
def test_record_dropped_at_renewal_is_detected_not_acked(direction: str) -> None:
    pair = Pair.make(rehandshake_seconds=100.0)
    pair.connect()
    src = Seat.A if direction == "A->B" else Seat.B
    armed, middle = drop_next_data(src)
    pair.middle = middle  # type: ignore[assignment]
    sender = pair.side(src)
    if src is Seat.A:
        armed["on"] = True
        sender.session.send_text("t1")
        pair.pump()
        pair.now = 200.0
        pair.a.session.tick(pair.now)  # A renews
    else:
        pair.now = 200.0
        pair.a.session.tick(pair.now)
        for payload in pair.a.session.data_to_send():  # only HS1 reaches B
            pair.b.session.receive_control(payload)
        armed["on"] = True
        sender.session.send_text("t1")  # on the old keys, dropped
    pair.pump()
    sender.session.send_text("t2")
    pair.pump()
    settle(pair)
    assert texts(pair, src.other) == ["t1", "t2"]
    assert sender.session.unacked_texts == 0
    assert pair.a.of(SessionFailed) + pair.b.of(SessionFailed), "the loss must be noticed"


def test_forged_hs1_does_not_stall_an_established_responder() -> None:
    pair = Pair.make()
    pair.connect()
    forger = Pair.make(room_id=pair.a.session.room_id).a.session
    forger.peer_online(0.0)
    hs1 = forger.data_to_send()[0]
    pair.b.session.receive_control(hs1)  # the relay injects it
    pair.b.session.data_to_send()  # B's HS2 goes to the forger, not to A
    pair.a.session.send_text("still flowing")
    pair.pump()
    assert texts(pair, Seat.B) == ["still flowing"]
    assert pair.a.session.unacked_texts == 0
    settle(pair, rounds=2)
    assert pair.b.session.established


def test_lost_reset_is_repeated() -> None:
    pair = Pair.make()
    pair.connect()
    state = {"mode": "tamper"}

    def middle(seat: Seat, packet: Packet) -> list[Packet]:
        lane, payload = packet
        if state["mode"] == "tamper" and seat is Seat.A and payload[0] == Envelope.DATA:
            state["mode"] = "drop-reset"
            return [(lane, payload[:-1] + bytes([payload[-1] ^ 1]))]
        if state["mode"] == "drop-reset" and seat is Seat.B and payload[0] == Envelope.RESET:
            state["mode"] = "clean"
            return []
        return [packet]

    pair.middle = middle
    pair.a.session.send_text("m1")
    pair.pump()
    assert pair.b.of(SessionFailed)
    settle(pair)
    assert texts(pair, Seat.B) == ["m1"]
    assert pair.a.session.unacked_texts == 0


@pytest.mark.parametrize("victim", ["text", "ack"])
def test_last_record_dropped_is_recovered_by_probe(victim: str) -> None:
    pair = Pair.make()
    pair.connect()
    armed, middle = drop_next_data(Seat.A if victim == "text" else Seat.B)
    pair.middle = middle  # type: ignore[assignment]
    armed["on"] = True
    pair.a.session.send_text("hello")
    pair.pump()
    assert pair.a.session.unacked_texts == 1
    settle(pair)
    assert texts(pair, Seat.B) == ["hello"]
    assert pair.a.session.unacked_texts == 0


@pytest.mark.parametrize(("index", "times"), [(5, 1), (2, 2)])
def test_dropped_chunks_are_asked_for_again(index: int, times: int) -> None:
    pair = Pair.make()
    pair.connect()
    data = os.urandom(5 * CHUNK_SIZE + 10)  # 6 chunks, the last is index 5
    fid = pair.send_file(Seat.A, data)
    pair.pump()
    left = {"n": times}

    def middle(_seat: Seat, packet: Packet) -> list[Packet]:
        lane, payload = packet
        if lane is Lane.BULK and left["n"]:
            _fid, idx = struct.unpack_from(">QQ", payload)
            if idx == index:
                left["n"] -= 1
                return []
        return [packet]

    pair.middle = middle
    pair.b.session.accept_file(fid)
    pair.pump()
    settle(pair, rounds=4)
    assert bytes(pair.b.received[fid]) == data
    assert pair.b.of(FileCompleted)
    assert pair.a.of(FileDelivered)


def test_lost_cancel_is_answered_later() -> None:
    pair = Pair.make()
    pair.connect()
    fid = pair.send_file(Seat.A, b"abc")
    pair.pump()
    armed, middle = drop_next_data(Seat.A)
    pair.middle = middle  # type: ignore[assignment]
    armed["on"] = True
    pair.a.session.cancel_file(fid)
    pair.pump()
    assert pair.b.of(FileFailed) == []
    pair.b.session.accept_file(fid)
    pair.pump()
    settle(pair)
    assert [e.code for e in pair.b.of(FileFailed)] == [5]


def test_unknown_cancel_code_from_peer_is_echoed_not_fatal() -> None:
    peer = ScriptedPeer.against()
    peer.connect()
    offer = Offer(7, 3, os.urandom(32), os.urandom(32), "abc.txt")
    peer.send(RecordType.FILE_OFFER, offer.encode())
    peer.send(RecordType.FILE_CANCEL, struct.pack(">QH", offer.file_id, 999))
    assert [(e.file_id, e.code) for e in peer.of(FileFailed)] == [(offer.file_id, 999)]
    peer.send(RecordType.FILE_OFFER, offer.encode())  # a re-offer: the code is echoed
    assert [decode_reason(b)[:2] for b in peer.records(RecordType.FILE_REJECT)] == [
        (offer.file_id, 999)
    ]
    # And as the sender: a FILE_REJECT with a code it does not know is reported as is.
    fid = peer.session.offer_file("mine.txt", 3)
    peer.take()
    peer.send(RecordType.FILE_REJECT, struct.pack(">QH", fid, 999))
    assert [(e.file_id, e.outgoing, e.code) for e in peer.of(FileFailed)][1:] == [(fid, True, 999)]
    assert not peer.of(SessionFailed)
    assert not peer.resets


def test_tampered_chunk_is_fetched_again() -> None:
    pair = Pair.make()
    pair.connect()
    data = os.urandom(3 * CHUNK_SIZE)
    fid = pair.send_file(Seat.A, data)
    pair.pump()
    left = {"n": 1}

    def middle(_seat: Seat, packet: Packet) -> list[Packet]:
        lane, payload = packet
        if lane is Lane.BULK and left["n"]:
            left["n"] -= 1
            return [(lane, payload[:40] + bytes([payload[40] ^ 1]) + payload[41:])]
        return [packet]

    pair.middle = middle
    pair.b.session.accept_file(fid)
    pair.pump()
    assert bytes(pair.b.received[fid]) == data
    assert pair.b.of(FileCompleted) == [FileCompleted(fid)]


def test_too_many_open_offers_are_declined() -> None:
    pair = Pair.make()
    pair.connect()
    for i in range(70):
        pair.send_file(Seat.A, b"x", f"f{i}")
    pair.pump()
    assert len(pair.b.of(FileOffered)) == 64
    assert len(pair.a.of(FileFailed)) == 6


# -- deterministic paths the random schedules only reach sometimes -------------


def test_old_key_records_during_renewal_are_kept() -> None:
    pair = Pair.make(rehandshake_seconds=100.0)
    pair.connect()
    pair.now = 200.0
    pair.a.session.tick(pair.now)  # A sends HS1(renew)
    for payload in pair.a.session.data_to_send():
        pair.b.session.receive_control(payload)
    pair.b.session.send_text("sent on the old keys")  # B is still established
    pair.pump()
    assert texts(pair, Seat.A) == ["sent on the old keys"]
    assert pair.a.of(SessionFailed) == []
    assert pair.b.session.unacked_texts == 0
    assert len(pair.a.of(HandshakeComplete)) == 2


def test_unanswered_ping_ends_the_session() -> None:
    pair = Pair.make()
    pair.connect()
    pair.middle = lambda seat, packet: [] if seat is Seat.B else [packet]
    pair.a.session.send_text("anyone?")
    pair.pump()
    for now in (16.0, 32.0):
        pair.now = now
        pair.a.session.tick(now)
        pair.pump()
    assert any("stopped answering" in e.reason for e in pair.a.of(SessionFailed))


def test_garbage_hs1_cannot_end_an_established_session() -> None:
    pair = Pair.make()
    pair.connect()
    b = pair.b.session
    b.receive_control(bytes([Envelope.HS1]) + b"\x00\x00\x00\x07" + b"junk")
    forged_secret = os.urandom(32)  # a forger without R: message 1 needs none
    hs = initiator_handshake(b.room_id, forged_secret)
    b.receive_control(bytes([Envelope.HS1]) + b"\x00\x00\x00\x08" + hs.write_message(b"\x07"))
    assert b.established
    assert b.events() == []
    fresh = Pair.make(room_id=b.room_id)
    fresh.b.session.peer_online(0.0)
    hs = initiator_handshake(b.room_id, forged_secret)
    fresh.b.session.receive_control(
        bytes([Envelope.HS1]) + b"\x00\x00\x00\x09" + hs.write_message(b"\x07")
    )
    assert any(
        "bad payload" in e.reason for e in fresh.b.session.events() if isinstance(e, SessionFailed)
    )


def test_text_sequence_gap_is_a_failure_and_recovers() -> None:
    peer = ScriptedPeer.against()
    peer.connect()
    peer.send(RecordType.TEXT, struct.pack(">QB", 7, 1) + b"skipped ahead")
    assert any("sequence gap" in e.reason for e in peer.of(SessionFailed))
    assert [e.text for e in peer.of(TextReceived)] == []
    assert peer.records(RecordType.ACK) == []
    assert peer.session.established
    assert peer.handshakes == 2


def test_renew_answered_fresh_resends() -> None:
    pair = Pair.make(rehandshake_seconds=100.0)
    pair.connect()
    state = {"on": True}

    def middle(seat: Seat, packet: Packet) -> list[Packet]:
        lane, payload = packet
        if state["on"] and seat is Seat.A and payload[0] == Envelope.DATA:
            return [(lane, payload[:-1] + bytes([payload[-1] ^ 1]))]  # B fails
        if state["on"] and seat is Seat.B and payload[0] == Envelope.RESET:
            state["on"] = False  # ... and its RESET is lost
            return []
        return [packet]

    pair.middle = middle
    pair.a.session.send_text("t1")
    pair.pump()
    assert not pair.b.session.established
    pair.now = 150.0
    pair.a.session.tick(pair.now)  # A renews; B has no session: fresh
    pair.pump()
    assert texts(pair, Seat.B) == ["t1"]
    assert pair.a.session.unacked_texts == 0


def test_hello_parsing() -> None:
    with pytest.raises(SessionError, match="bad length"):
        decode_hello(b"short")
    with pytest.raises(SessionError, match="seq 0"):
        decode_hello(struct.pack(">QQQ", 1, 0, 0))


def test_finished_transfers_are_forgotten_beyond_the_cap() -> None:
    """The receiver answers re-offers of the 1,024 most recently finished
    transfers, and forgets older ones (a re-offer of one is a new offer)."""
    peer = ScriptedPeer.against()
    peer.connect()
    offers = [
        Offer(i, 1, os.urandom(32), os.urandom(32), f"f{i}")
        for i in range(1, 1024 + 3)  # docs/protocol.md, "Files": the 1,024 most recent
    ]
    for offer in offers[:2]:  # received and stored
        key = FileKey(key=offer.key, salt=offer.salt)
        peer.send(RecordType.FILE_OFFER, offer.encode())
        peer.session.accept_file(offer.file_id)
        peer.send_bulk(
            BULK_HEADER.pack(offer.file_id, 0)
            + StreamEncryptor(key).encrypt_chunk(0, b"x", last=True)
        )
        peer.session.confirm_saved(offer.file_id)
        peer.take()
    for offer in offers[2:]:  # declined
        peer.send(RecordType.FILE_OFFER, offer.encode())
        peer.session.reject_file(offer.file_id, FileCode.DECLINED)
        peer.take()
    assert len(peer.records(RecordType.FILE_DONE)) == 2
    assert len(peer.of(FileOffered)) == len(offers)
    peer.send(RecordType.FILE_OFFER, Offer(0, 1, bytes(32), bytes(32), "last").encode())
    answered = len(peer.received)
    # The oldest remembered one is answered from memory (its original code) ...
    peer.send(RecordType.FILE_OFFER, offers[2].encode())
    assert [decode_reason(b)[:2] for b in peer.records(RecordType.FILE_REJECT)][-1] == (
        offers[2].file_id,
        FileCode.DECLINED,
    )
    assert len(peer.received) == answered + 1
    # ... and the two before it, finished longest ago, are forgotten: offers again.
    for offer in offers[:2]:
        peer.send(RecordType.FILE_OFFER, offer.encode())
    assert len(peer.received) == answered + 1
    assert [e.file_id for e in peer.of(FileOffered)][-2:] == [1, 2]


def test_sender_api_misuse() -> None:
    pair = Pair.make()
    pair.connect()
    fid = pair.send_file(Seat.A, b"z" * (CHUNK_SIZE + 5))
    pair.pump()
    with pytest.raises(LocalProtocolError):
        pair.a.session.file_chunks(12345)
    # The chunks never arrive, so the file is still being sent.
    pair.middle = lambda _seat, packet: [] if packet[0] is Lane.BULK else [packet]
    pair.b.session.accept_file(fid)
    pair.pump()
    a = pair.a.session
    assert pair.a.sent_chunks == 2
    with pytest.raises(LocalProtocolError, match="out of range"):
        a.encrypt_chunk(fid, 2, b"")
    with pytest.raises(LocalProtocolError, match="must be"):
        a.encrypt_chunk(fid, 1, b"q")
    assert a.encrypt_chunk(fid, 1, b"z" * 5)
