"""The end-to-end session machine: two seats back to back, honest and hostile middles."""

from __future__ import annotations

import os
import struct
import tracemalloc

import pytest

from m42d.crypto.noise import KeyPair
from m42d.crypto.stream import CHUNK_SIZE, FileKey, StreamEncryptor
from m42d.errors import LocalProtocolError
from m42d.session import (
    BULK_HEADER,
    MAX_RECORD,
    MAX_TEXT,
    PAD_BUCKET,
    Envelope,
    FileChunk,
    FileCode,
    FileCompleted,
    FileDelivered,
    FileFailed,
    FileOffered,
    FileProgress,
    HandshakeComplete,
    MemoryKeyStore,
    PeerKeyChanged,
    RecordType,
    ResetReason,
    Session,
    SessionError,
    SessionFailed,
    TextDelivered,
    TextReceived,
    TextRefused,
    TextRejected,
    decode_record,
    derive_psk,
    encode_record,
)
from m42d.session.phases import TRANSITIONS, Phase, Phases, Trigger
from m42d.session.records import (
    TEXT_PART,
    U64,
    Offer,
    decode_fixed,
    decode_offer,
    decode_reason,
    decode_text_refused,
    text_bodies,
)
from m42d.ticket import Seat
from m42d.wire import Lane

from .session_harness import Packet, Pair, Side
from .session_peer import ScriptedPeer


def texts(side_events: list[object]) -> list[str]:
    return [e.text for e in side_events if isinstance(e, TextReceived)]


def test_handshake_gives_same_safety_words_and_pins_keys() -> None:
    pair = Pair.make()
    pair.connect()
    ha = pair.a.of(HandshakeComplete)
    hb = pair.b.of(HandshakeComplete)
    assert len(ha) == len(hb) == 1
    assert ha[0].words == hb[0].words
    assert len(ha[0].words) == 8
    assert pair.a.session.safety_words == pair.b.session.safety_words == ha[0].words
    assert ha[0].first_contact
    assert hb[0].first_contact
    assert ha[0].peer_key == pair.b.session.static_public
    assert hb[0].peer_key == pair.a.session.static_public
    assert pair.a.session.established
    assert pair.b.session.established


def test_texts_both_ways_delivered_and_acked() -> None:
    pair = Pair.make()
    pair.connect()
    s1 = pair.a.session.send_text("hello Bob")
    s2 = pair.b.session.send_text("hi Alice ✓")
    pair.pump()
    assert texts(pair.b.events) == ["hello Bob"]
    assert texts(pair.a.events) == ["hi Alice ✓"]
    assert [e.seq for e in pair.a.of(TextDelivered)] == [s1]
    assert [e.seq for e in pair.b.of(TextDelivered)] == [s2]
    assert pair.a.session.unacked_texts == 0


def test_text_sent_before_the_peer_comes_is_delivered_once() -> None:
    pair = Pair.make()
    pair.a.session.send_text("early")
    pair.connect()
    assert texts(pair.b.events) == ["early"]


def test_long_text_is_split_and_reassembled() -> None:
    pair = Pair.make()
    pair.connect()
    big = "x" * (1024 * 1024)
    pair.a.session.send_text(big)
    pair.pump()
    assert texts(pair.b.events) == [big]
    control = [p for s, p in pair.wire_log if s is Seat.A and p[0] is Lane.CONTROL]
    assert max(len(p[1]) for p in control) <= 1 + MAX_RECORD + 16
    with pytest.raises(LocalProtocolError):
        pair.a.session.send_text("y" * (1024 * 1024 + 1))


def test_control_records_are_padded_to_buckets() -> None:
    pair = Pair.make()
    pair.connect()
    pair.wire_log.clear()
    pair.a.session.send_text("a")
    pair.a.session.send_text("b" * 200)
    pair.pump()
    sizes = [len(p[1]) - 1 - 16 for s, p in pair.wire_log if s is Seat.A]
    assert sizes == [PAD_BUCKET, PAD_BUCKET]


def test_record_codec_rejects_bad_padding() -> None:
    rec = encode_record(RecordType.ACK, b"\x00" * 8)
    assert decode_record(rec) == (RecordType.ACK, b"\x00" * 8)
    with pytest.raises(SessionError):
        decode_record(rec[:-1] + b"\x01")
    with pytest.raises(SessionError):
        decode_record(rec[:100])
    with pytest.raises(LocalProtocolError):
        encode_record(RecordType.TEXT, bytes(MAX_RECORD))


def test_file_transfer_with_progress_both_sides() -> None:
    pair = Pair.make()
    pair.connect()
    data = os.urandom(3 * CHUNK_SIZE * 7 + 123)  # 22 chunks
    fid = pair.send_file(Seat.A, data, "photo.jpg")
    pair.pump()
    offers = pair.b.of(FileOffered)
    assert [(o.name, o.size) for o in offers] == [("photo.jpg", len(data))]
    pair.b.session.accept_file(fid)
    pair.pump()
    assert bytes(pair.b.received[fid]) == data
    done = pair.b.of(FileCompleted)
    assert done == [FileCompleted(fid)]
    assert pair.a.of(FileDelivered) == [FileDelivered(fid)]
    out_progress = [e for e in pair.a.of(FileProgress) if e.outgoing]
    in_progress = [e for e in pair.b.of(FileProgress) if not e.outgoing]
    assert out_progress[-1].done == len(data)
    assert in_progress[-1].done == len(data)
    assert len(out_progress) >= 2
    assert len(in_progress) >= 2


@pytest.mark.parametrize("size", [0, 1, CHUNK_SIZE, CHUNK_SIZE + 1])
def test_file_edge_sizes(size: int) -> None:
    pair = Pair.make()
    pair.connect()
    data = os.urandom(size)
    fid = pair.send_file(Seat.B, data)
    pair.pump()
    pair.a.session.accept_file(fid)
    pair.pump()
    assert bytes(pair.a.received.get(fid, b"")) == data
    assert pair.b.of(FileDelivered) == [FileDelivered(fid)]


def test_reject_file_tells_sender() -> None:
    pair = Pair.make()
    pair.connect()
    fid = pair.send_file(Seat.A, b"secret plans")
    pair.pump()
    pair.b.session.reject_file(fid, FileCode.TOO_LARGE, "over --max-size")
    pair.pump()
    failed = pair.a.of(FileFailed)
    assert failed == [FileFailed(fid, True, FileCode.TOO_LARGE, "over --max-size")]


def test_sender_cancel_tells_receiver() -> None:
    pair = Pair.make()
    pair.connect()
    fid = pair.send_file(Seat.A, b"x" * 10)
    pair.pump()
    pair.a.session.cancel_file(fid)
    pair.pump()
    assert [e.code for e in pair.b.of(FileFailed)] == [FileCode.CANCELLED]
    with pytest.raises(LocalProtocolError):
        pair.b.session.accept_file(fid)


# -- reconnects ---------------------------------------------------------------


def test_unacked_texts_resent_after_reconnect_and_shown_once() -> None:
    pair = Pair.make()
    pair.connect()
    delivered: list[Packet] = []

    def drop_all(_seat: Seat, packet: Packet) -> list[Packet]:
        delivered.append(packet)
        return []

    pair.middle = drop_all  # the connection dies: nothing arrives
    pair.a.session.send_text("one")
    pair.a.session.send_text("two")
    pair.pump()
    pair.disconnect()
    pair.middle = lambda _s, p: [p]
    pair.connect()
    assert texts(pair.b.events) == ["one", "two"]
    assert len(pair.a.of(TextDelivered)) == 2
    assert len(pair.a.of(HandshakeComplete)) == 2


def test_ack_lost_text_not_shown_twice() -> None:
    pair = Pair.make()
    pair.connect()

    def drop_from_b(seat: Seat, packet: Packet) -> list[Packet]:
        return [] if seat is Seat.B else [packet]

    pair.middle = drop_from_b  # B gets the text, A never sees the ack
    pair.a.session.send_text("only once")
    pair.pump()
    assert pair.a.session.unacked_texts == 1
    pair.disconnect()
    pair.middle = lambda _s, p: [p]
    pair.connect()
    assert texts(pair.b.events) == ["only once"]
    assert pair.a.session.unacked_texts == 0


def test_file_resumes_from_first_missing_chunk() -> None:
    pair = Pair.make()
    pair.connect()
    data = os.urandom(40 * CHUNK_SIZE + 5)
    fid = pair.send_file(Seat.A, data)
    pair.pump()
    pair.b.session.accept_file(fid)
    bulk_seen = 0

    def cut_after_25_chunks(_seat: Seat, packet: Packet) -> list[Packet]:
        nonlocal bulk_seen
        if packet[0] is Lane.BULK:
            bulk_seen += 1
            if bulk_seen > 25:
                return []
        return [packet]

    pair.middle = cut_after_25_chunks
    pair.pump()
    assert len(pair.b.received[fid]) == 25 * CHUNK_SIZE
    pair.disconnect()
    sent_before = pair.a.sent_chunks
    pair.middle = lambda _s, p: [p]
    pair.connect()
    assert bytes(pair.b.received[fid]) == data
    assert pair.a.sent_chunks - sent_before == 41 - 25  # resumed, not restarted
    assert pair.a.of(FileDelivered) == [FileDelivered(fid)]


def test_offer_pending_during_reconnect_is_not_asked_twice() -> None:
    pair = Pair.make()
    pair.connect()
    pair.send_file(Seat.A, b"abc")
    pair.pump()
    pair.disconnect()
    pair.connect()
    assert len(pair.b.of(FileOffered)) == 1


def test_periodic_rehandshake_keeps_everything() -> None:
    pair = Pair.make(rehandshake_records=5)
    pair.connect()
    for i in range(20):
        pair.a.session.send_text(f"a{i}")
        pair.b.session.send_text(f"b{i}")
        pair.pump()
        pair.a.session.tick(pair.now)
        pair.b.session.tick(pair.now)
        pair.pump()
    assert texts(pair.b.events) == [f"a{i}" for i in range(20)]
    assert texts(pair.a.events) == [f"b{i}" for i in range(20)]
    assert len(pair.a.of(HandshakeComplete)) > 3
    assert pair.a.of(SessionFailed) == []
    assert pair.b.of(SessionFailed) == []


def test_rehandshake_after_time() -> None:
    pair = Pair.make(rehandshake_seconds=60.0)
    pair.connect()
    pair.now = 61.0
    pair.b.session.tick(pair.now)  # B asks A to renew
    pair.pump()
    assert len(pair.a.of(HandshakeComplete)) == 2
    pair.a.session.send_text("after renew")
    pair.pump()
    assert texts(pair.b.events) == ["after renew"]


# -- keys ----------------------------------------------------------------------


def test_changed_peer_key_blocks_until_trusted() -> None:
    keys_a, keys_b = MemoryKeyStore(), MemoryKeyStore()
    room = os.urandom(16)
    secret = os.urandom(32)
    first = Pair.make(room_id=room, secret_a=secret, secret_b=secret, keys_a=keys_a, keys_b=keys_b)
    first.connect()
    assert first.a.session.established
    # Bob loses his keys (new device): same room, same secret, new static key.
    second = Pair.make(room_id=room, secret_a=secret, secret_b=secret, keys_a=keys_a)
    second.connect()
    changed = second.a.of(PeerKeyChanged)
    assert len(changed) == 1
    assert changed[0].pinned == first.b.session.static_public
    assert changed[0].offered == second.b.session.static_public
    assert second.a.session.blocked
    # The words with the new key differ, and they are what the user compares.
    assert changed[0].words != first.a.of(HandshakeComplete)[0].words
    assert changed[0].words == second.b.of(HandshakeComplete)[0].words
    second.b.session.send_text("should not arrive yet")
    second.pump()
    assert texts(second.a.events) == []
    second.a.session.trust_peer_key()
    second.pump()
    assert second.a.session.established
    assert texts(second.a.events) == ["should not arrive yet"]
    assert keys_a.load_peer(room, Seat.A) == second.b.session.static_public


@pytest.mark.parametrize("intruded", list(Seat))
def test_a_room_recovers_by_itself_when_a_device_on_someones_link_leaves(intruded: Seat) -> None:
    """Someone opens the link of seat ``intruded`` on another device (its own key): the
    other side blocks.  Once that device leaves and the real one comes back, the
    pinned key passes a fresh handshake, with no /trust, and the pin never moved."""
    keys = {Seat.A: MemoryKeyStore(), Seat.B: MemoryKeyStore()}
    room, secret = os.urandom(16), os.urandom(32)
    first = Pair.make(
        room_id=room, secret_a=secret, secret_b=secret, keys_a=keys[Seat.A], keys_b=keys[Seat.B]
    )
    first.connect()
    words = first.a.of(HandshakeComplete)[0].words
    stays = first.side(intruded.other)
    stays_key = keys[intruded.other]
    pinned = stays_key.load_peer(room, intruded.other)

    def visitor(store: MemoryKeyStore) -> Side:
        return Side(Session(intruded, room, secret, store))

    def pair_with(other: Side) -> Pair:
        return Pair(other, stays) if intruded is Seat.A else Pair(stays, other)

    stays.session.peer_offline()  # the relay: the real device was pushed out
    intruder = pair_with(visitor(MemoryKeyStore()))
    intruder.connect()
    assert stays.session.blocked
    assert len(stays.of(PeerKeyChanged)) == 1
    stays.session.send_text("for the real one")
    intruder.pump()
    assert texts(intruder.side(intruded).events) == []

    stays.session.peer_offline()  # the other device left
    assert not stays.session.blocked
    with pytest.raises(LocalProtocolError, match="no changed key waits to be trusted"):
        stays.session.trust_peer_key()
    back = pair_with(visitor(keys[intruded]))
    back.connect()
    assert stays.session.established
    assert stays.of(HandshakeComplete)[-1].words == words  # the words compared before
    assert texts(back.side(intruded).events) == ["for the real one"]
    assert stays_key.load_peer(room, intruded.other) == pinned


def test_a_changed_key_that_stays_blocks_again_after_a_new_presence() -> None:
    keys_a = MemoryKeyStore()
    room, secret = os.urandom(16), os.urandom(32)
    Pair.make(room_id=room, secret_a=secret, secret_b=secret, keys_a=keys_a).connect()
    second = Pair.make(room_id=room, secret_a=secret, secret_b=secret, keys_a=keys_a)
    second.connect()
    assert second.a.session.blocked
    second.disconnect()
    second.connect()  # the same new key, back: the user is asked again
    assert second.a.session.blocked
    assert len(second.a.of(PeerKeyChanged)) == 2
    second.a.session.trust_peer_key()
    second.pump()
    assert second.a.session.established


def test_static_key_reused_from_store() -> None:
    store = MemoryKeyStore()
    pair1 = Pair.make(keys_a=store)
    pub = pair1.a.session.static_public
    room = pair1.a.session.room_id
    again = Pair.make(keys_a=store, room_id=room)
    assert again.a.session.static_public == pub


def test_trust_without_change_is_local_error() -> None:
    pair = Pair.make()
    with pytest.raises(LocalProtocolError):
        pair.a.session.trust_peer_key()


# -- hostile middles -----------------------------------------------------------


def test_wrong_room_secret_fails_on_both_sides() -> None:
    pair = Pair.make(secret_a=os.urandom(32), secret_b=os.urandom(32))
    pair.connect()
    assert not pair.a.session.established
    assert not pair.b.session.established
    assert pair.b.of(SessionFailed), "B must notice at message 3"
    assert pair.a.of(SessionFailed), "A is told at once and gives up this attempt"
    # Protocol 2: B's RESET carries why, so A can name the cause too.
    assert "room secrets differ" in pair.a.of(SessionFailed)[0].reason
    assert pair.a.of(HandshakeComplete) == []
    assert pair.b.of(HandshakeComplete) == []
    # A retries with back-off rather than spinning: nothing more until time passes.
    assert pair.a.session.data_to_send() == []
    pair.now = 31.0
    pair.a.session.tick(pair.now)
    assert [p[0] for p in pair.a.session.data_to_send()] == [Envelope.HS1]


def test_a_wrong_room_secret_is_named_as_such_on_both_sides() -> None:
    """The cause travels in the event, so that a client can say it once, in its own words."""
    pair = Pair.make(secret_a=os.urandom(32), secret_b=os.urandom(32))
    pair.connect()
    for side in (pair.a, pair.b):
        assert side.of(SessionFailed)
        assert {e.why for e in side.of(SessionFailed)} == {ResetReason.AUTHENTICATION}


def test_key_swapping_middle_fails_on_both_sides() -> None:
    """A relay that runs its own handshake with each side, without knowing R."""
    pair = Pair.make()
    real_a, real_b = pair.a.session, pair.b.session
    # The attacker plays B towards A and A towards B, with a guessed secret.
    fake_b = Pair.make(room_id=real_a.room_id).b.session
    fake_a = Pair.make(room_id=real_a.room_id).a.session

    def swap(seat: Seat, packet: Packet) -> list[Packet]:
        _lane, payload = packet
        if seat is Seat.A:  # A -> attacker (as B) ; attacker (as A) -> B
            fake_b.receive_control(payload)
            return [(Lane.CONTROL, p) for p in fake_a.data_to_send()]
        fake_a.receive_control(payload)
        return [(Lane.CONTROL, p) for p in fake_b.data_to_send()]

    fake_a.peer_online(0.0)
    fake_b.peer_online(0.0)
    pair.middle = swap
    pair.connect()
    assert not real_a.established
    assert not real_b.established
    assert pair.b.of(HandshakeComplete) == []
    assert pair.a.of(HandshakeComplete) == []
    pair.now = 31.0
    real_a.tick(pair.now)
    real_b.tick(pair.now)
    pair.pump()
    assert pair.b.of(SessionFailed), "B cannot read message 3 without the room secret"
    assert pair.a.of(SessionFailed), "A never gets a HELLO it can read"
    assert not real_a.established
    assert not real_b.established


def _first_data(pair: Pair, seat: Seat) -> int:
    for i, (s, (lane, payload)) in enumerate(pair.wire_log):
        if s is seat and lane is Lane.CONTROL and payload[0] == Envelope.DATA:
            return i
    raise AssertionError


def test_tampered_text_never_shown() -> None:
    pair = Pair.make()
    pair.connect()

    def flip(_seat: Seat, packet: Packet) -> list[Packet]:
        lane, payload = packet
        if lane is Lane.CONTROL and payload[0] == Envelope.DATA:
            payload = payload[:-1] + bytes([payload[-1] ^ 1])
        return [(lane, payload)]

    pair.middle = flip
    pair.a.session.send_text("pay 10 EUR")
    # Run a bounded number of steps: A keeps re-handshaking, every record is tampered.
    for _ in range(5):
        for p in pair.a.session.data_to_send():
            for lane, payload in flip(Seat.A, (Lane.CONTROL, p)):
                if lane is Lane.CONTROL:
                    pair.b.session.receive_control(payload)
        for p in pair.b.session.data_to_send():
            for lane, payload in flip(Seat.B, (Lane.CONTROL, p)):
                if lane is Lane.CONTROL:
                    pair.a.session.receive_control(payload)
        pair.a.events.extend(pair.a.session.events())
        pair.b.events.extend(pair.b.session.events())
    assert texts(pair.b.events) == []
    assert pair.b.of(SessionFailed) or pair.a.of(SessionFailed)


@pytest.mark.parametrize("attack", ["drop", "duplicate", "reorder"])
def test_lane_meddling_detected_and_recovered(attack: str) -> None:
    pair = Pair.make()
    pair.connect()
    held: list[Packet] = []
    done = False

    def meddle(seat: Seat, packet: Packet) -> list[Packet]:
        nonlocal done
        lane, payload = packet
        if done or seat is not Seat.A or lane is not Lane.CONTROL or payload[0] != Envelope.DATA:
            return [packet]
        if attack == "drop":
            done = True
            return []
        if attack == "duplicate":
            done = True
            return [packet, packet]
        # reorder: hold the first record, deliver it after the second
        if not held:
            held.append(packet)
            return []
        done = True
        return [packet, held.pop()]

    pair.middle = meddle
    pair.a.session.send_text("m1")
    pair.a.session.send_text("m2")
    pair.pump()
    failures = pair.b.of(SessionFailed)
    assert failures, f"{attack} must be detected"
    assert "decrypt" in failures[0].reason
    # The session restarts and nothing is lost or doubled.
    assert texts(pair.b.events) == ["m1", "m2"]
    assert pair.a.session.unacked_texts == 0


def test_replay_of_old_session_rejected() -> None:
    pair = Pair.make()
    pair.connect()
    pair.a.session.send_text("transfer approved")
    pair.pump()
    old = [p for s, p in pair.wire_log if s is Seat.A]
    pair.disconnect()
    pair.connect()
    before = len(texts(pair.b.events))
    for lane, payload in old:
        if lane is Lane.CONTROL and payload[0] == Envelope.DATA:
            pair.b.session.receive_control(payload)
    pair.b.events.extend(pair.b.session.events())
    assert len(texts(pair.b.events)) == before
    assert pair.b.of(SessionFailed)


def test_stale_handshake_message_after_reconnect() -> None:
    pair = Pair.make()
    pair.connect()
    hs2 = next(p for s, (lane, p) in pair.wire_log if s is Seat.B and p[0] == Envelope.HS2)
    pair.disconnect()
    pair.connect()
    pair.a.session.receive_control(hs2)  # a stale HS2 served by the relay
    assert pair.a.session.events() == []  # ignored: it belongs to an old handshake
    assert pair.a.session.data_to_send() == []
    pair.a.session.send_text("still fine")
    pair.pump()
    assert texts(pair.b.events) == ["still fine"]


def test_bulk_chunk_from_other_file_or_tampered_fails_file() -> None:
    pair = Pair.make()
    pair.connect()
    data = os.urandom(3 * CHUNK_SIZE)

    def tamper(_seat: Seat, packet: Packet) -> list[Packet]:
        lane, payload = packet
        if lane is Lane.BULK:
            payload = payload[:40] + bytes([payload[40] ^ 0x80]) + payload[41:]
        return [(lane, payload)]

    fid = pair.send_file(Seat.A, data)
    pair.pump()
    pair.b.session.accept_file(fid)
    pair.middle = tamper
    pair.pump()
    assert pair.b.of(FileCompleted) == []
    assert pair.b.of(FileFailed)
    assert pair.a.of(FileFailed)
    assert len(pair.b.received.get(fid, b"")) == 0


def test_dropped_bulk_chunk_triggers_resume_request() -> None:
    pair = Pair.make()
    pair.connect()
    data = os.urandom(6 * CHUNK_SIZE)
    fid = pair.send_file(Seat.A, data)
    pair.pump()
    pair.b.session.accept_file(fid)
    dropped = False

    def drop_third(_seat: Seat, packet: Packet) -> list[Packet]:
        nonlocal dropped
        if packet[0] is Lane.BULK and not dropped:
            _fid, index = (
                int.from_bytes(packet[1][:8], "big"),
                int.from_bytes(packet[1][8:16], "big"),
            )
            if index == 2:
                dropped = True
                return []
        return [packet]

    pair.middle = drop_third
    pair.pump()
    assert bytes(pair.b.received[fid]) == data
    assert pair.a.of(FileDelivered) == [FileDelivered(fid)]


def test_garbage_control_payloads_never_raise() -> None:
    pair = Pair.make()
    pair.connect()
    for payload in [b"", b"\x09", b"\x01", b"\x02abc", b"\x03" + bytes(100), b"\x04" + bytes(50)]:
        pair.b.session.receive_control(payload)
        pair.a.session.receive_control(payload)
    pair.b.session.receive_bulk(b"short")
    assert pair.a.session.events() or pair.b.session.events()


def test_psk_binds_room() -> None:
    secret = os.urandom(32)
    assert derive_psk(secret, b"\x00" * 16) != derive_psk(secret, b"\x01" * 16)


def test_session_repr_has_no_secret() -> None:
    store = MemoryKeyStore()
    pair = Pair.make(keys_a=store)
    pair.connect()
    s = pair.a.session
    text = repr(s)
    assert s.secret.hex() not in text
    priv = store.load_static(s.room_id, Seat.A)
    assert priv is not None
    assert priv.hex() not in text
    assert KeyPair.from_private(priv).public == s.static_public


def test_local_misuse_errors() -> None:
    pair = Pair.make()
    with pytest.raises(LocalProtocolError):
        pair.a.session.offer_file("", 1)
    with pytest.raises(LocalProtocolError):
        pair.a.session.offer_file("f", -1)
    with pytest.raises(LocalProtocolError):
        pair.a.session.offer_file("f" * 1025, 1)
    with pytest.raises(LocalProtocolError):
        pair.a.session.encrypt_chunk(123, 0, b"")
    with pytest.raises(LocalProtocolError):
        pair.a.session.accept_file(5)
    with pytest.raises(LocalProtocolError):
        pair.a.session.reject_file(5, FileCode.DECLINED)
    with pytest.raises(LocalProtocolError):
        pair.a.session.cancel_file(5)


# -- malformed records from an authenticated peer ---------------------------


@pytest.mark.parametrize(
    ("rtype", "body", "reason"),
    [
        (RecordType.TEXT, b"\x00" * 3, "too short"),
        (RecordType.ACK, b"\x00" * 3, "bad length"),
        (RecordType.FILE_OFFER, b"\x00" * 10, "too short"),
        (RecordType.FILE_REJECT, b"\x00" * 3, "too short"),
        (RecordType.FILE_ACCEPT, b"\x00" * 15, "bad length"),
        (RecordType.HELLO, b"\x00" * 8, "unexpected HELLO"),
        (0x7F, b"", "unknown control record"),
    ],
)
def test_malformed_records_end_the_session(rtype: int, body: bytes, reason: str) -> None:
    peer = ScriptedPeer.against()
    peer.connect()
    peer.send(rtype, body)
    failures = [e.reason for e in peer.of(SessionFailed)]
    assert failures
    assert reason in failures[0]
    assert peer.resets, "B tells A at once"
    assert peer.session.established  # and it recovered by itself
    assert peer.handshakes == 2


def _offer_body(name: bytes, name_len: int | None = None) -> bytes:
    head = struct.pack(">QQ32s32sH", 7, 3, bytes(32), bytes(32), len(name))
    if name_len is not None:
        head = head[:-2] + struct.pack(">H", name_len)
    return head + name


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (_offer_body(b"x", name_len=5), "bad name length"),
        (_offer_body(b"\xff\xfe"), "not valid UTF-8"),
    ],
)
def test_malformed_offers(body: bytes, reason: str) -> None:
    peer = ScriptedPeer.against()
    peer.connect()
    peer.send(RecordType.FILE_OFFER, body)
    assert reason in peer.of(SessionFailed)[0].reason


def test_text_protocol_violations() -> None:
    peer = ScriptedPeer.against(max_text=100)
    peer.connect()
    peer.send(RecordType.TEXT, struct.pack(">QB", 1, 0) + b"part")
    peer.send(RecordType.TEXT, struct.pack(">QB", 2, 1) + b"other")
    assert "interleaved" in peer.of(SessionFailed)[0].reason
    peer.events.clear()
    assert peer.session.established  # a fresh session after B's RESET
    peer.send(RecordType.TEXT, struct.pack(">QB", 9, 1) + b"after a gap")
    assert "sequence gap" in peer.of(SessionFailed)[0].reason
    assert texts(peer.events) == []
    assert peer.records(RecordType.ACK) == []


def test_accept_past_end_and_unknown_file_ignored() -> None:
    peer = ScriptedPeer.against()
    peer.connect()
    fid = peer.session.offer_file("abc.txt", 3)
    peer.take()
    assert [decode_offer(b).file_id for b in peer.records(RecordType.FILE_OFFER)] == [fid]
    peer.send(RecordType.FILE_ACCEPT, struct.pack(">QQ", 999, 0))
    assert peer.of(SessionFailed) == []
    assert peer.resets == []
    # A transfer it does not have: the sender says so (FILE_CANCEL), nothing more.
    assert [decode_reason(b)[:2] for b in peer.records(RecordType.FILE_CANCEL)] == [
        (999, FileCode.CANCELLED)
    ]
    peer.send(RecordType.FILE_ACCEPT, struct.pack(">QQ", fid, 50))
    assert "past the end" in peer.of(SessionFailed)[0].reason


def test_handshake_envelope_misuse() -> None:
    pair = Pair.make()
    pair.connect()
    a, b = pair.a.session, pair.b.session
    a.receive_control(bytes([Envelope.HS1]) + bytes(40))  # HS1 to the initiator
    b.receive_control(bytes([Envelope.HS2]) + bytes(40))  # HS2 to the responder
    b.receive_control(bytes([Envelope.HS3]) + bytes(40))
    b.receive_control(bytes([Envelope.RESET]) + bytes(5))
    a.receive_control(bytes([Envelope.RESET]) + bytes(4))
    a.receive_control(bytes([Envelope.HS2]) + bytes(2))
    reasons = [e.reason for e in a.events() + b.events() if isinstance(e, SessionFailed)]
    assert any("initiator" in r for r in reasons)
    assert any("responder" in r for r in reasons)
    assert any("bad length" in r for r in reasons)
    assert any("too short" in r for r in reasons)


def test_reset_for_other_handshake_ignored() -> None:
    pair = Pair.make()
    pair.connect()
    pair.a.session.receive_control(bytes([Envelope.RESET]) + b"\xde\xad\xbe\xef\x01")
    assert pair.a.session.events() == []
    assert pair.a.session.established


def test_handshake_timeout_then_retry() -> None:
    pair = Pair.make()
    a = pair.a.session
    a.peer_online(0.0)
    hs1 = a.data_to_send()
    assert [p[0] for p in hs1] == [Envelope.HS1]
    a.tick(10.0)
    assert a.events() == []
    a.tick(31.0)
    evs = a.events()
    assert any(isinstance(e, SessionFailed) and "timed out" in e.reason for e in evs)
    assert [p[0] for p in a.data_to_send()] == [Envelope.HS1]  # first retry is immediate
    assert a.safety_words == ()


def test_bad_session_parameters() -> None:
    with pytest.raises(LocalProtocolError):
        Pair.make(secret_a=b"short")
    with pytest.raises(LocalProtocolError):
        Pair.make(room_id=b"short")


def test_chunk_misuse_by_sender() -> None:
    pair = Pair.make()
    pair.connect()
    fid = pair.send_file(Seat.A, b"x" * 10)
    pair.pump()
    pair.b.session.accept_file(fid)
    # The harness streamed the file; now misuse the API on a second file.
    fid2 = pair.send_file(Seat.A, b"y" * (CHUNK_SIZE + 1))
    pair.pump()
    a = pair.a.session
    with pytest.raises(LocalProtocolError):
        a.encrypt_chunk(fid2, 0, b"y" * CHUNK_SIZE)  # not accepted yet
    pair.b.session.accept_file(fid2)
    pair.pump()
    assert pair.a.of(FileDelivered)[-1] == FileDelivered(fid2)


def test_duplicate_offer_after_done_answers_done() -> None:
    pair = Pair.make()
    pair.connect()
    data = b"z" * 100
    fid = pair.send_file(Seat.A, data)
    pair.pump()
    pair.b.session.accept_file(fid)
    pair.pump()
    # A relay-side replay of the offer cannot be told from a re-offer: B says DONE again.
    rejected = pair.send_file(Seat.A, b"no")
    pair.pump()
    pair.b.session.reject_file(rejected, FileCode.DECLINED)
    pair.pump()
    pair.disconnect()
    pair.connect()
    assert len(pair.b.of(FileCompleted)) == 1
    assert [e.code for e in pair.a.of(FileFailed)] == [FileCode.DECLINED]


def test_trust_on_responder_lets_initiator_retry_at_once() -> None:
    keys_a, keys_b = MemoryKeyStore(), MemoryKeyStore()
    room, secret = os.urandom(16), os.urandom(32)
    first = Pair.make(room_id=room, secret_a=secret, secret_b=secret, keys_a=keys_a, keys_b=keys_b)
    first.connect()
    # Alice loses her keys: Bob (seat B) sees a changed key.
    second = Pair.make(room_id=room, secret_a=secret, secret_b=secret, keys_b=keys_b)
    second.connect()
    assert second.b.session.blocked
    second.b.session.trust_peer_key()
    second.pump()  # no clock advance: the RESET makes A retry immediately
    assert second.a.session.established
    assert second.b.session.established


def test_file_done_waits_until_the_receiver_saved_it() -> None:
    pair = Pair.make(auto_save=False)
    pair.connect()
    data = os.urandom(CHUNK_SIZE + 7)
    fid = pair.send_file(Seat.A, data)
    pair.pump()
    pair.b.session.accept_file(fid)
    pair.pump()
    assert pair.b.of(FileCompleted)
    assert pair.a.of(FileDelivered) == []  # not "delivered" while B is still storing it
    pair.disconnect()
    pair.connect()  # a re-offer while saving is answered by neither DONE nor REJECT
    assert pair.a.of(FileDelivered) == []
    assert pair.a.of(FileFailed) == []
    pair.b.session.confirm_saved(fid)
    pair.pump()
    assert pair.a.of(FileDelivered) == [FileDelivered(fid)]
    with pytest.raises(LocalProtocolError):
        pair.b.session.confirm_saved(fid)


def test_failed_save_is_reported_to_the_sender() -> None:
    pair = Pair.make(auto_save=False)
    pair.connect()
    fid = pair.send_file(Seat.A, b"some bytes")
    pair.pump()
    pair.b.session.accept_file(fid)
    pair.pump()
    pair.b.session.reject_file(fid, FileCode.NO_SPACE, "disk full")
    pair.pump()
    assert pair.a.of(FileDelivered) == []
    assert pair.a.of(FileFailed) == [FileFailed(fid, True, FileCode.NO_SPACE, "disk full")]


# -- a hostile peer (second review) -------------------------------------------------


def _lying_sender(offered: int, chunks: int, *, final_at: int | None) -> ScriptedPeer:
    """A peer that offers ``offered`` bytes, then streams ``chunks`` valid full chunks.

    The chunks are sealed with the file's real key (only the peer has it), so
    they authenticate; ``final_at`` marks one of them as the last (None: none is).
    """
    peer = ScriptedPeer.against()
    peer.connect()
    fid = 7
    key = FileKey(key=os.urandom(32), salt=os.urandom(32))
    peer.send(RecordType.FILE_OFFER, Offer(fid, offered, key.key, key.salt, "tiny.txt").encode())
    assert peer.of(FileOffered) == [FileOffered(fid, "tiny.txt", offered)]
    peer.session.accept_file(fid)
    peer.take()
    assert peer.records(RecordType.FILE_ACCEPT) == [struct.pack(">QQ", fid, 0)]
    sealer = StreamEncryptor(key)
    for i in range(chunks):
        chunk = sealer.encrypt_chunk(i, bytes(CHUNK_SIZE), last=i == final_at)
        peer.send_bulk(BULK_HEADER.pack(fid, i) + chunk)
    return peer


@pytest.mark.parametrize(
    ("offered", "chunks", "final_at"),
    [
        (1, 40, None),  # offers 1 byte, streams without end
        (0, 3, None),  # an empty file that keeps going
        (CHUNK_SIZE, 3, None),  # the one chunk it offered says more follow
        (CHUNK_SIZE + 1, 3, 2),  # a third chunk where two were offered
    ],
)
def test_data_past_the_offered_size_is_refused_at_the_first_byte(
    offered: int, chunks: int, final_at: int | None
) -> None:
    """The receiver's limits (--max-size, free space) were checked against the
    offer: not one byte past it is passed on to be written."""
    peer = _lying_sender(offered, chunks, final_at=final_at)
    assert sum(len(c.data) for c in peer.of(FileChunk)) <= offered
    assert peer.of(FileCompleted) == []
    assert all(p.done <= offered for p in peer.of(FileProgress))
    [failed] = peer.of(FileFailed)
    assert failed.code == FileCode.MISMATCH
    assert f"more than the {offered} bytes offered" in failed.reason
    # The sender hears it (FILE_REJECT) and the session itself stands.
    assert [decode_reason(b)[1] for b in peer.records(RecordType.FILE_REJECT)] == [
        FileCode.MISMATCH
    ]
    assert not peer.of(SessionFailed)
    assert not peer.resets
    assert peer.session.established
    peer.send_text(1, b"still here")
    assert texts(peer.events) == ["still here"]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"x" * (MAX_TEXT + 1), f"a text of {MAX_TEXT + 1} bytes, over the {MAX_TEXT}-byte cap"),
        (b"x" * (3 * MAX_TEXT), f"a text of {3 * MAX_TEXT} bytes, over the {MAX_TEXT}-byte cap"),
        (b"bad \xff utf-8", "a text that is not valid UTF-8"),
    ],
)
def test_a_text_the_receiver_cannot_show_fails_alone_and_is_not_resent(
    data: bytes, reason: str
) -> None:
    """A sender that breaks the 1 MiB (or the UTF-8) rule, seen by the receiver."""
    peer = ScriptedPeer.against()
    peer.connect()
    peer.send_text(1, data)
    peer.send_text(2, b"the next one")
    # The receiver refuses that item; the session carries on.
    assert peer.of(TextRefused) == [TextRefused(1, len(data), reason)]
    assert texts(peer.events) == ["the next one"]
    assert not peer.of(SessionFailed)
    assert not peer.resets
    # Protocol 2: the sender hears TEXT_REFUSED, never "delivered", for it.
    assert [decode_fixed(U64, b, "ACK") for b in peer.records(RecordType.ACK)] == [(2,)]
    assert [decode_text_refused(b) for b in peer.records(RecordType.TEXT_REFUSED)] == [(1, reason)]
    # A sender that re-sends it after a fresh session is refused again, not shown.
    peer.session.peer_offline()
    peer.connect()
    peer.send_text(1, data)
    assert len(peer.of(TextRefused)) == 1
    assert texts(peer.events) == ["the next one"]
    assert [decode_fixed(U64, b, "ACK") for b in peer.records(RecordType.ACK)] == [(2,)]
    assert [decode_text_refused(b) for b in peer.records(RecordType.TEXT_REFUSED)] == [
        (1, reason),
        (1, reason),
    ]


def test_a_refused_text_is_reported_to_its_sender_and_not_sent_again() -> None:
    """The sender's side of a refusal: a receiver with a lower cap than its sender
    refuses a text exactly as one whose peer broke the 1 MiB rule."""
    room, secret = os.urandom(16), os.urandom(32)
    a = Session(Seat.A, room, secret, MemoryKeyStore())
    b = Session(Seat.B, room, secret, MemoryKeyStore(), max_text=100)
    pair = Pair(Side(a), Side(b))
    pair.connect()
    seq = a.send_text("x" * 101)
    after = a.send_text("the next one")
    pair.pump()
    reason = "a text of 101 bytes, over the 100-byte cap"
    assert pair.b.of(TextRefused) == [TextRefused(seq, 101, reason)]
    assert texts(pair.b.events) == ["the next one"]
    assert not pair.a.of(SessionFailed)
    assert not pair.b.of(SessionFailed)
    assert a.unacked_texts == 0
    # Protocol 2: the sender hears TEXT_REFUSED, never "delivered", for it.
    assert {e.seq for e in pair.a.of(TextDelivered)} == {after}
    assert pair.a.of(TextRejected) == [TextRejected(seq, reason)]
    # A fresh session (a reconnect) does not bring it back.
    sent_before = len(pair.wire_log)
    pair.disconnect()
    pair.connect()
    assert len(pair.b.of(TextRefused)) == 1
    assert texts(pair.b.events) == ["the next one"]
    assert len(pair.wire_log) - sent_before < 10  # a handshake and HELLO, no text parts


def test_the_receiver_never_holds_more_than_the_cap_of_a_long_text() -> None:
    """Memory the receiver keeps while the parts of a 4 MiB text arrive, measured
    by tracemalloc around each delivery: at most the 1 MiB cap (and the slack of
    a growing bytearray), never the text."""
    peer = ScriptedPeer.against()
    peer.connect()
    payloads = [peer.seal(RecordType.TEXT, b) for b in text_bodies(1, b"y" * (4 * MAX_TEXT))]
    assert len(payloads) > 4 * MAX_TEXT // TEXT_PART
    held = peak = 0
    tracemalloc.start()
    try:
        for payload in payloads:
            before, _ = tracemalloc.get_traced_memory()
            peer.session.receive_control(payload)
            held += tracemalloc.get_traced_memory()[0] - before
            peak = max(peak, held)
    finally:
        tracemalloc.stop()
    peer.take()
    assert MAX_TEXT // 2 < peak <= MAX_TEXT + MAX_TEXT // 4
    assert len(peer.of(TextRefused)) == 1


def test_the_sender_refuses_a_text_over_the_cap_before_sending_anything() -> None:
    pair = Pair.make()
    pair.connect()
    with pytest.raises(LocalProtocolError, match="send it as a file instead"):
        pair.a.session.send_text("z" * (MAX_TEXT + 1))
    with pytest.raises(LocalProtocolError, match="not valid UTF-8"):
        pair.a.session.send_text("lone surrogate \udcff")
    assert pair.a.session.unacked_texts == 0
    assert pair.a.session.data_to_send() == []
    # Exactly the cap is a text like any other.
    pair.a.session.send_text("z" * MAX_TEXT)
    pair.pump()
    assert [len(t) for t in texts(pair.b.events)] == [MAX_TEXT]
    with pytest.raises(LocalProtocolError, match="max_text"):
        Pair.make(max_text=MAX_TEXT + 1)


# -- protocol 2: safety words, versions ------------------------------------------------


def test_safety_words_stay_the_same_across_sessions_and_renewals() -> None:
    keys_a, keys_b = MemoryKeyStore(), MemoryKeyStore()
    room, secret = os.urandom(16), os.urandom(32)
    pair = Pair.make(room_id=room, secret_a=secret, secret_b=secret, keys_a=keys_a, keys_b=keys_b)
    pair.connect()
    words = pair.a.of(HandshakeComplete)[0].words
    pair.disconnect()
    pair.connect()
    pair.now += 3601.0  # past the renewal age
    pair.a.session.tick(pair.now)
    pair.pump()
    # A restart: new Session objects on the same key stores.
    again = Pair.make(room_id=room, secret_a=secret, secret_b=secret, keys_a=keys_a, keys_b=keys_b)
    again.connect()
    seen = [e.words for e in pair.a.of(HandshakeComplete) + pair.b.of(HandshakeComplete)]
    seen += [e.words for e in again.a.of(HandshakeComplete) + again.b.of(HandshakeComplete)]
    assert len(seen) >= 6
    assert set(seen) == {words}
    assert not again.a.of(HandshakeComplete)[0].first_contact


@pytest.mark.parametrize(
    ("payload", "said"),
    [(bytes([0]), "session protocol 1, this one 3"), (bytes([0, 2]), "session protocol 2")],
)
def test_another_session_version_is_named_on_both_sides(payload: bytes, said: str) -> None:
    """An initiator of another version: B says which, and its RESET tells A."""
    from m42d.crypto.noise import PROTOCOL_NAME, HandshakeState, KeyPair
    from m42d.session import HS_ID, derive_psk, prologue

    pair = Pair.make()
    b = pair.b.session
    b.peer_online(0.0)
    old = HandshakeState(
        PROTOCOL_NAME,
        initiator=True,
        prologue=prologue(b.room_id),
        s=KeyPair.from_private(os.urandom(32)),
        e=KeyPair.from_private(os.urandom(32)),
        psks=[derive_psk(b.secret, b.room_id)],
    )
    b.receive_control(bytes([Envelope.HS1]) + HS_ID.pack(7) + old.write_message(payload))
    failed = [e.reason for e in b.events() if isinstance(e, SessionFailed)]
    assert len(failed) == 1
    assert said in failed[0]
    reset = [p for p in b.data_to_send() if p[0] == Envelope.RESET]
    assert reset == [bytes([Envelope.RESET]) + HS_ID.pack(7) + bytes([2])]
    a = pair.a.session
    a.peer_online(0.0)
    hs_id = HS_ID.unpack_from(a.data_to_send()[0], 1)[0]
    a.receive_control(bytes([Envelope.RESET]) + HS_ID.pack(hs_id) + bytes([2]))
    assert any("another version" in e.reason for e in a.events() if isinstance(e, SessionFailed))


# -- the phase table ---------------------------------------------------------------


def test_every_phase_change_is_a_row_of_the_table() -> None:
    phases = Phases()
    assert phases.phase is Phase.OFFLINE
    assert phases.fire(Trigger.PEER_ONLINE) is Phase.HANDSHAKE
    assert phases.fire(Trigger.ESTABLISH) is Phase.ESTABLISHED
    assert phases.fire(Trigger.KEY_CHANGED) is Phase.BLOCKED
    # A move the table does not have is the machine's bug, and the phase stays.
    with pytest.raises(LocalProtocolError, match="cannot install new keys while blocked"):
        phases.fire(Trigger.ESTABLISH)
    assert phases.phase is Phase.BLOCKED
    assert phases.fire(Trigger.TRUST) is Phase.OFFLINE
    with pytest.raises(LocalProtocolError, match="cannot start a fresh handshake while offline"):
        phases.fire(Trigger.START)


def test_what_the_outside_can_cause_is_legal_in_every_phase() -> None:
    """The glue and the peer can cause these at any time: none may raise."""
    for phase in Phase:
        for trigger in (Trigger.PEER_ONLINE, Trigger.PEER_OFFLINE, Trigger.FAIL_OFFLINE):
            assert (phase, trigger) in TRANSITIONS
    assert {p for p, t in TRANSITIONS if t is Trigger.FAIL} == set(Phase) - {Phase.OFFLINE}
    assert {p for p, t in TRANSITIONS if t is Trigger.HS1} == set(Phase) - {Phase.BLOCKED}
    # Only the user's trust and that peer's leaving end BLOCKED.
    assert {t for (p, t), to in TRANSITIONS.items() if p is Phase.BLOCKED and to is not p} == {
        Trigger.TRUST,
        Trigger.PEER_OFFLINE,
    }
