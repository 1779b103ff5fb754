"""Texts: our outbox and the peer's inbox (docs/protocol.md, "Texts").

Rules and invariants
--------------------
* Our texts are numbered ``seq = 1, 2, ...`` within our ``instance`` (a
  random u64 drawn when the session is made).  Each stays in the
  :class:`Outbox` until the peer's ACK (then it is *delivered*) or its
  TEXT_REFUSED (then it is *rejected*); nothing else removes it.  After a
  fresh handshake everything still in it goes again, in ``seq`` order.
* The sender refuses a text over ``max_text`` or not UTF-8 before anything
  is queued: a file has no such cap.
* The :class:`Inbox` keeps ``last``, the highest ``seq`` shown from the
  peer's current instance.  Only ``seq == last + 1`` is shown; ``seq <=
  last`` is a duplicate; ``seq > last + 1`` means texts were lost, which
  ends the session (:class:`SessionError`) without an ACK.  So "delivered"
  is never reported for a lost text, and a re-sent text is shown once.
* Every shown or duplicate text is acknowledged, a refused one answered
  with TEXT_REFUSED instead (also its re-sent copies, for the 64 most
  recent refusals), so a text the receiver cannot show fails alone and does
  not come back after every handshake.
* The parts of one text never interleave with another's, and the inbox
  holds no more than ``max_text`` bytes of a text while its parts arrive.
"""

from __future__ import annotations

from typing import Final, final

import attrs

from m42d.errors import LocalProtocolError
from m42d.session.events import EventSink, TextDelivered, TextReceived, TextRefused, TextRejected
from m42d.session.records import (
    U64,
    Hello,
    RecordSender,
    RecordType,
    SessionError,
    decode_fixed,
    decode_text,
    decode_text_refused,
    text_bodies,
    text_refused_body,
)

MAX_REFUSED_REMEMBERED: Final = 64  # refused texts remembered (to refuse their re-sent copies)


@final
@attrs.define
class Outbox:
    """Our texts, from :meth:`send` until the peer acknowledges or refuses them."""

    send_record: RecordSender = attrs.field(repr=False)
    emit: EventSink = attrs.field(repr=False)
    max_text: int
    instance: int
    _next_seq: int = 1
    _unacked: dict[int, str] = attrs.field(factory=dict, repr=False)

    @property
    def count(self) -> int:
        """Texts sent and not yet acknowledged or refused."""
        return len(self._unacked)

    @property
    def first_unacked(self) -> int:
        """The lowest seq still waiting for its ACK (our next seq if none): HELLO's promise."""
        return min(self._unacked, default=self._next_seq)

    def send(self, text: str) -> int:
        """Number a text and hand its parts on; returns its seq."""
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError:
            raise LocalProtocolError("the text is not valid UTF-8") from None
        if len(data) > self.max_text:
            # Refused before anything is queued: a text over the cap would
            # be refused by the peer, and a file has no such cap.
            raise LocalProtocolError(
                f"text of {len(data)} bytes exceeds the {self.max_text}-byte cap; "
                "send it as a file instead"
            )
        seq = self._next_seq
        self._next_seq += 1
        self._unacked[seq] = text
        self._send_parts(seq, data)
        return seq

    def resend(self) -> None:
        """After a fresh handshake: every unacknowledged text again, in seq order."""
        for seq, text in sorted(self._unacked.items()):
            self._send_parts(seq, text.encode("utf-8"))

    def on_ack(self, body: bytes) -> None:
        (seq,) = decode_fixed(U64, body, "ACK")
        if self._unacked.pop(seq, None) is not None:
            self.emit(TextDelivered(seq))

    def on_refused(self, body: bytes) -> None:
        seq, reason = decode_text_refused(body)
        if self._unacked.pop(seq, None) is not None:
            self.emit(TextRejected(seq, reason or "refused by the other side"))

    def _send_parts(self, seq: int, data: bytes) -> None:
        for body in text_bodies(seq, data):
            self.send_record(RecordType.TEXT, body)


@final
@attrs.define
class Inbox:
    """The peer's texts: part assembly, the ``last`` shown seq, refusals."""

    send_record: RecordSender = attrs.field(repr=False)
    emit: EventSink = attrs.field(repr=False)
    max_text: int
    _peer_instance: int | None = None
    _last: int = 0
    _partial_seq: int | None = None
    _partial_text: bytearray = attrs.field(factory=bytearray, repr=False)
    _partial_size: int = 0  # bytes of the text so far, held or not
    _refused: dict[int, str] = attrs.field(factory=dict, repr=False)
    """Seqs of the peer's current instance refused, oldest first (bounded)."""

    def on_hello(self, hello: Hello) -> None:
        """Everything the peer sent before ``first_unacked`` was acked, so shown."""
        if hello.instance != self._peer_instance:
            self._peer_instance = hello.instance
            self._last = hello.first_unacked - 1
            self._refused.clear()
        else:
            self._last = max(self._last, hello.first_unacked - 1)
        self.drop_partial()

    def drop_partial(self) -> None:
        """Forget a text whose parts were still arriving: its sender will send it again."""
        self._partial_seq = None
        self._partial_text.clear()
        self._partial_size = 0

    def on_text(self, body: bytes) -> None:
        seq, final, part = decode_text(body)
        if self._partial_seq is not None and self._partial_seq != seq:
            raise SessionError("TEXT parts of two messages interleaved")
        self._partial_seq = seq
        self._partial_size += len(part)
        if self._partial_size <= self.max_text:
            self._partial_text += part
        else:
            self._partial_text.clear()  # counted from here on, never held
        if not final:
            return
        size = self._partial_size
        data = bytes(self._partial_text)
        self.drop_partial()
        if seq > self._last + 1:
            # Only seq == last + 1 is shown, and only shown texts are acked:
            # so "delivered" can never be reported for a text that was lost.
            raise SessionError("texts were lost in transit (sequence gap)")
        if seq == self._last + 1:
            self._last = seq
            self._show(seq, data, size)
        refused = self._refused.get(seq)
        if refused is None:
            self.send_record(RecordType.ACK, U64.pack(seq))
        else:  # also for a re-sent copy: it must never look delivered
            self.send_record(RecordType.TEXT_REFUSED, text_refused_body(seq, refused))

    def _show(self, seq: int, data: bytes, size: int) -> None:
        refusal = _refusal(data, size, self.max_text)
        if refusal is None:
            self.emit(TextReceived(seq, data.decode("utf-8")))
            return
        # A sender that broke the rules: the item fails, not the session
        # (which would only bring the same text back after every handshake,
        # forever).  TEXT_REFUSED stops the resends.
        self.emit(TextRefused(seq, size, refusal))
        self._refused[seq] = refusal
        while len(self._refused) > MAX_REFUSED_REMEMBERED:
            del self._refused[next(iter(self._refused))]


def _refusal(data: bytes, size: int, cap: int) -> str | None:
    """Why a complete text cannot be shown, or None when it can."""
    if size > cap:
        return f"a text of {size} bytes, over the {cap}-byte cap"
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return "a text that is not valid UTF-8"
    return None
