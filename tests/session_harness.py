"""Two session machines wired back to back, with an optional middle that meddles.

The harness plays the relay: it moves CONTROL and BULK payloads between the
two seats in order, lets a ``Middle`` drop, duplicate, reorder, tamper or
replace them, and plays each client's file glue (streams the chunks asked for
by :class:`SendChunks`, collects :class:`FileChunk` data).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import attrs

from m42d.crypto.stream import CHUNK_SIZE
from m42d.session import (
    Event,
    FileChunk,
    FileCompleted,
    MemoryKeyStore,
    SendChunks,
    Session,
)
from m42d.ticket import Seat
from m42d.wire import Lane

Packet = tuple[Lane, bytes]
# A middle sees (from_seat, packet) and returns the packets to deliver instead.
Middle = Callable[[Seat, Packet], list[Packet]]


def passthrough(_seat: Seat, packet: Packet) -> list[Packet]:
    return [packet]


@attrs.define
class Side:
    session: Session
    events: list[Event] = attrs.field(factory=list)
    files: dict[int, bytes] = attrs.field(factory=dict)  # outgoing file data by id
    received: dict[int, bytearray] = attrs.field(factory=dict)
    sent_chunks: int = 0

    def of(self, kind: type) -> list:  # type: ignore[type-arg]
        return [e for e in self.events if isinstance(e, kind)]


@attrs.define
class Pair:
    a: Side
    b: Side
    middle: Middle = passthrough
    wire_log: list[tuple[Seat, Packet]] = attrs.field(factory=list)
    now: float = 0.0
    auto_save: bool = True  # the glue "stores" every completed file at once

    @classmethod
    def make(
        cls,
        *,
        secret_a: bytes | None = None,
        secret_b: bytes | None = None,
        room_id: bytes | None = None,
        keys_a: MemoryKeyStore | None = None,
        keys_b: MemoryKeyStore | None = None,
        auto_save: bool = True,
        **kwargs: object,
    ) -> Pair:
        room = room_id or os.urandom(16)
        secret = os.urandom(32)
        a = Session(Seat.A, room, secret_a or secret, keys_a or MemoryKeyStore(), **kwargs)  # type: ignore[arg-type]
        b = Session(Seat.B, room, secret_b or secret, keys_b or MemoryKeyStore(), **kwargs)  # type: ignore[arg-type]
        return cls(Side(a), Side(b), auto_save=auto_save)

    def side(self, seat: Seat) -> Side:
        return self.a if seat is Seat.A else self.b

    def connect(self) -> None:
        """Both seats learn the other is online, as after JOINED/PEER_UP."""
        self.b.session.peer_online(self.now)
        self.a.session.peer_online(self.now)
        self.pump()

    def disconnect(self) -> None:
        self.a.session.peer_offline()
        self.b.session.peer_offline()
        self._collect()

    def send_file(self, seat: Seat, data: bytes, name: str = "file.bin") -> int:
        side = self.side(seat)
        file_id = side.session.offer_file(name, len(data))
        side.files[file_id] = data
        return file_id

    def _collect(self) -> list[tuple[Seat, Packet]]:
        out: list[tuple[Seat, Packet]] = []
        for seat in (Seat.A, Seat.B):
            side = self.side(seat)
            new = side.session.events()
            side.events.extend(new)
            for ev in new:
                if isinstance(ev, SendChunks):
                    out.extend((seat, p) for p in self._chunks(side, ev))
                elif isinstance(ev, FileChunk):
                    buf = side.received.setdefault(ev.file_id, bytearray())
                    assert ev.offset == len(buf), "chunks must arrive in order"
                    buf += ev.data
                elif isinstance(ev, FileCompleted) and self.auto_save:
                    side.session.confirm_saved(ev.file_id)
        return out

    def _chunks(self, side: Side, ev: SendChunks) -> list[Packet]:
        data = side.files[ev.file_id]
        count = side.session.file_chunks(ev.file_id)
        packets = []
        for i in range(ev.start, count):
            chunk = data[i * CHUNK_SIZE : (i + 1) * CHUNK_SIZE]
            packets.append((Lane.BULK, side.session.encrypt_chunk(ev.file_id, i, chunk)))
            side.sent_chunks += 1
        return packets

    def pump(self, rounds: int = 10_000) -> None:
        """Deliver everything until both sides are quiet."""
        for _ in range(rounds):
            batch = self._collect()
            for seat in (Seat.A, Seat.B):
                made = self.side(seat).session.data_to_send()
                batch = [(seat, (Lane.CONTROL, p)) for p in made] + batch
            if not batch:
                return
            for seat, packet in batch:
                self.wire_log.append((seat, packet))
                for lane, payload in self.middle(seat, packet):
                    target = self.side(seat.other).session
                    if lane is Lane.CONTROL:
                        target.receive_control(payload)
                    else:
                        target.receive_bulk(payload)
        raise AssertionError("sessions did not go quiet")
