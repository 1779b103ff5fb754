"""Files: our outgoing transfers and the peer's incoming ones (docs/protocol.md, "Files").

Rules and invariants
--------------------
* An offer carries a fresh random file id, STREAM key and salt, the size
  and the name; the sender reads nothing of the file before the receiver
  accepts.  Chunks travel on the bulk lane under that key (see
  :mod:`m42d.crypto.stream`), so the relay may deliver them late relative
  to the control lane, and bulk trouble never ends the session.
* The sender keeps a transfer until FILE_DONE, FILE_REJECT or its own
  cancel; after a fresh handshake it offers every one again.  A FILE_ACCEPT
  or FILE_ACK for a transfer it no longer has is answered FILE_CANCEL.
* The receiver holds at most 64 offers pending or being received, and
  remembers the 1,024 most recently finished transfers, so that a re-offer
  is answered (FILE_ACCEPT from the first missing chunk, FILE_DONE,
  FILE_REJECT with the original code, or nothing while the user decides or
  the glue stores the file).
* Chunks are taken in order.  A duplicate is ignored; a gap, a chunk that
  fails authentication or 30 s without progress is answered FILE_ACCEPT
  from the first missing chunk; the fourth bad chunk ends the transfer.
* The offer's size bounds the transfer: the first chunk that would carry
  the file past it ends it before any of its data is passed on, and so
  does a final chunk that leaves it short (FILE_REJECT code 4).
* A file is complete when its final chunk authenticates after an unbroken
  run of authenticated chunks (STREAM's counter nonces and last-chunk flag
  bind every chunk to its place).  FILE_DONE, the sender's "delivered",
  goes only once the glue has stored it (:meth:`IncomingFiles.confirm_saved`).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Final, final

import attrs

from m42d.crypto.stream import CHUNK_SIZE, FileKey, StreamDecryptor, StreamEncryptor, chunk_count
from m42d.errors import LocalProtocolError, StreamError
from m42d.session.events import (
    EventSink,
    FileChunk,
    FileCompleted,
    FileDelivered,
    FileFailed,
    FileOffered,
    FileProgress,
    SendChunks,
)
from m42d.session.records import (
    BULK_HEADER,
    ID_INDEX,
    MAX_FILE_NAME,
    U64,
    FileCode,
    Offer,
    RecordSender,
    RecordType,
    SessionError,
    code_text,
    decode_fixed,
    decode_offer,
    decode_reason,
    reason_body,
)

FILE_ACK_EVERY: Final = 4  # chunks (1 MiB) between progress acks
MAX_BAD_CHUNKS: Final = 3  # chunks failing authentication before a transfer is given up
MAX_OPEN_INCOMING: Final = 64  # offers pending or being received at once
MAX_FINISHED_INCOMING = 1024  # finished transfers remembered (to answer re-offers)


class _OutState(enum.Enum):
    OFFERED = "offered"
    SENDING = "sending"


@attrs.define
class _Outgoing:
    offer: Offer
    encryptor: StreamEncryptor
    chunks: int
    state: _OutState = _OutState.OFFERED
    acked: int = 0  # chunks the receiver confirmed


@final
@attrs.define
class OutgoingFiles:
    """Our transfers, from :meth:`offer` until the peer has them (or one side gives up)."""

    send_record: RecordSender = attrs.field(repr=False)
    emit: EventSink = attrs.field(repr=False)
    random: Callable[[int], bytes] = attrs.field(repr=False)
    _files: dict[int, _Outgoing] = attrs.field(factory=dict, repr=False)

    @property
    def active(self) -> bool:
        """Some transfer still waits for the peer's FILE_DONE."""
        return bool(self._files)

    def offer(self, name: str, size: int) -> int:
        """Offer a file; returns its id."""
        if size < 0:
            raise LocalProtocolError("file size must not be negative")
        if not 0 < len(name.encode("utf-8")) <= MAX_FILE_NAME:
            raise LocalProtocolError("file name must be 1 to 1024 bytes of UTF-8")
        file_id = int.from_bytes(self.random(8), "big")
        key = FileKey(key=self.random(32), salt=self.random(32))
        offer = Offer(file_id, size, key.key, key.salt, name)
        self._files[file_id] = _Outgoing(offer, StreamEncryptor(key), chunk_count(size))
        self.send_record(RecordType.FILE_OFFER, offer.encode())
        return file_id

    def reoffer_all(self) -> None:
        """After a fresh handshake: every unfinished transfer is offered again."""
        for out in self._files.values():
            self.send_record(RecordType.FILE_OFFER, out.offer.encode())

    def encrypt_chunk(self, file_id: int, index: int, data: bytes) -> bytes:
        """The BULK payload for chunk ``index`` of a file being sent (random access)."""
        out = self._files.get(file_id)
        if out is None or out.state is not _OutState.SENDING:
            raise LocalProtocolError("file is not being sent")
        if not 0 <= index < out.chunks:
            raise LocalProtocolError("chunk index out of range")
        last = index == out.chunks - 1
        expected = out.offer.size - index * CHUNK_SIZE if last else CHUNK_SIZE
        if len(data) != expected:
            raise LocalProtocolError(f"chunk {index} must be {expected} bytes, got {len(data)}")
        sealed = out.encryptor.encrypt_chunk(index, data, last=last)
        return BULK_HEADER.pack(file_id, index) + sealed

    def chunks(self, file_id: int) -> int:
        out = self._files.get(file_id)
        if out is None:
            raise LocalProtocolError("no outgoing file with that id")
        return out.chunks

    def cancel(self, file_id: int, reason: str) -> None:
        if self._files.pop(file_id, None) is None:
            raise LocalProtocolError("no outgoing file with that id")
        self.send_record(RecordType.FILE_CANCEL, reason_body(file_id, FileCode.CANCELLED, reason))

    def on_accept(self, body: bytes) -> None:
        file_id, start = decode_fixed(ID_INDEX, body, "FILE_ACCEPT")
        self._accept(file_id, start)

    def on_ack(self, body: bytes) -> None:
        file_id, upto = decode_fixed(ID_INDEX, body, "FILE_ACK")
        out = self._files.get(file_id)
        if out is None:
            self._accept(file_id, 0)  # answers with FILE_CANCEL
            return
        if upto > out.acked:
            out.acked = min(upto, out.chunks)
            done = min(out.acked * CHUNK_SIZE, out.offer.size)
            self.emit(FileProgress(file_id, True, done, out.offer.size))

    def on_done(self, body: bytes) -> None:
        (file_id,) = decode_fixed(U64, body, "FILE_DONE")
        out = self._files.pop(file_id, None)
        if out is not None:
            self.emit(FileProgress(file_id, True, out.offer.size, out.offer.size))
            self.emit(FileDelivered(file_id))

    def on_reject(self, body: bytes) -> None:
        file_id, code, reason = decode_reason(body)
        if self._files.pop(file_id, None) is not None:
            self.emit(FileFailed(file_id, True, code, reason or code_text(code)))

    def _accept(self, file_id: int, start: int) -> None:
        out = self._files.get(file_id)
        if out is None:
            # Finished or cancelled here; the cancel may have been lost.
            reason = "no such transfer"
            self.send_record(
                RecordType.FILE_CANCEL, reason_body(file_id, FileCode.CANCELLED, reason)
            )
            return
        if start > out.chunks:
            raise SessionError("FILE_ACCEPT starts past the end of the file")
        out.state = _OutState.SENDING
        out.acked = max(out.acked, start)
        self.emit(SendChunks(file_id, start))


class _InState(enum.Enum):
    PENDING = "pending"  # waiting for the user's decision
    RECEIVING = "receiving"
    SAVING = "saving"  # final chunk authenticated; the glue is storing it (FILE_DONE waits)
    DONE = "done"
    REJECTED = "rejected"


_OPEN: Final = (_InState.PENDING, _InState.RECEIVING)
_FINISHED: Final = (_InState.DONE, _InState.REJECTED)


@attrs.define
class _Incoming:
    file_id: int
    size: int
    key: FileKey
    chunks: int
    state: _InState = _InState.PENDING
    decryptor: StreamDecryptor | None = None
    reject_code: int = 0
    gap_requested_at: int = -1
    bad_chunks: int = 0
    last_progress: float = 0.0


@final
@attrs.define
class IncomingFiles:
    """The peer's transfers: offers, the chunks of accepted ones, and finished ones (bounded)."""

    send_record: RecordSender = attrs.field(repr=False)
    emit: EventSink = attrs.field(repr=False)
    _files: dict[int, _Incoming] = attrs.field(factory=dict, repr=False)

    @property
    def receiving(self) -> bool:
        """Some accepted transfer is still arriving."""
        return any(inc.state is _InState.RECEIVING for inc in self._files.values())

    def accept(self, file_id: int, now: float) -> None:
        inc = self._files.get(file_id)
        if inc is None or inc.state is not _InState.PENDING:
            raise LocalProtocolError("no pending offer with that id")
        inc.state = _InState.RECEIVING
        inc.decryptor = StreamDecryptor(inc.key)
        inc.last_progress = now
        self.send_record(RecordType.FILE_ACCEPT, ID_INDEX.pack(file_id, 0))

    def confirm_saved(self, file_id: int) -> None:
        inc = self._files.get(file_id)
        if inc is None or inc.state is not _InState.SAVING:
            raise LocalProtocolError("no completed file waiting to be saved with that id")
        inc.state = _InState.DONE
        self.send_record(RecordType.FILE_DONE, U64.pack(file_id))

    def reject(self, file_id: int, code: FileCode, reason: str) -> None:
        inc = self._files.get(file_id)
        if inc is None or inc.state in _FINISHED:
            raise LocalProtocolError("no offer or transfer with that id")
        self._close(inc, int(code))
        self.send_record(RecordType.FILE_REJECT, reason_body(file_id, code, reason))

    def tick(self, now: float, stall_after: float) -> None:
        """Ask again for a transfer that made no progress for ``stall_after`` seconds."""
        for inc in self._files.values():
            if inc.state is _InState.RECEIVING and now - inc.last_progress >= stall_after:
                self._request_from(inc, now)

    def on_offer(self, body: bytes, now: float) -> None:
        offer = decode_offer(body)
        inc = self._files.get(offer.file_id)
        if inc is None:
            self._new_offer(offer)
        elif inc.state is _InState.RECEIVING:
            self._request_from(inc, now)
        elif inc.state is _InState.DONE:
            self.send_record(RecordType.FILE_DONE, U64.pack(offer.file_id))
        elif inc.state is _InState.REJECTED:
            body = reason_body(offer.file_id, inc.reject_code, "")
            self.send_record(RecordType.FILE_REJECT, body)
        # PENDING: the user is still deciding; the first offer's event stands.
        # SAVING: FILE_DONE or FILE_REJECT follows when the glue has decided.

    def on_cancel(self, body: bytes) -> None:
        file_id, code, reason = decode_reason(body)
        inc = self._files.get(file_id)
        if inc is not None and inc.state in _OPEN:
            self._close(inc, code)
            self.emit(FileFailed(file_id, False, code, reason or code_text(code)))

    def receive_chunk(self, payload: bytes, now: float) -> None:
        """One BULK payload: a chunk to check, pass on, acknowledge or ask again for."""
        if len(payload) < BULK_HEADER.size:
            return  # not from an honest peer; nothing to resume from it
        file_id, index = BULK_HEADER.unpack_from(payload)
        inc = self._files.get(file_id)
        if inc is None or inc.state is not _InState.RECEIVING or inc.decryptor is None:
            return  # stale chunk of a finished, rejected or unknown transfer
        dec = inc.decryptor
        if index < dec.next_index:
            return  # duplicate after a resume
        if index > dec.next_index:
            # A chunk went missing (dropped by the relay or lost in a
            # reconnect): ask for a restart from the gap, once per gap.
            if inc.gap_requested_at != dec.next_index:
                self._request_from(inc, now)
            return
        try:
            data = dec.decrypt_next(payload[BULK_HEADER.size :])
        except StreamError as exc:
            inc.bad_chunks += 1
            if inc.bad_chunks > MAX_BAD_CHUNKS:
                self._abort(inc, FileCode.CANCELLED, f"file chunk rejected: {exc}")
                return
            inc.decryptor = StreamDecryptor(inc.key, start=dec.next_index)
            self._request_from(inc, now)
            return
        if self._past_the_offer(inc, dec, index, data):
            return
        inc.last_progress = now
        self.emit(FileChunk(file_id, index, index * CHUNK_SIZE, data))
        self._progress(inc, dec)

    def _past_the_offer(
        self, inc: _Incoming, dec: StreamDecryptor, index: int, data: bytes
    ) -> bool:
        """End the transfer if this authenticated chunk does not fit the offer."""
        end = index * CHUNK_SIZE + len(data)
        if end > inc.size or (not dec.done and dec.next_index >= inc.chunks):
            # The offer's size is the receiver's only bound (--max-size and
            # the free-space check were made against it): the first byte past
            # it, or a chunk that says more follow when none may, ends the
            # transfer before anything of it is stored.
            self._abort(
                inc,
                FileCode.MISMATCH,
                f"file size does not match the offer: more than the {inc.size} bytes offered",
            )
            return True
        if dec.done and end != inc.size:
            self._abort(inc, FileCode.MISMATCH, "file size does not match the offer")
            return True
        return False

    def _progress(self, inc: _Incoming, dec: StreamDecryptor) -> None:
        received = min(dec.next_index * CHUNK_SIZE, inc.size)
        if dec.done or dec.next_index % FILE_ACK_EVERY == 0:
            self.emit(FileProgress(inc.file_id, False, received, inc.size))
            if not dec.done:
                body = ID_INDEX.pack(inc.file_id, dec.next_index)
                self.send_record(RecordType.FILE_ACK, body)
        if dec.done:
            # FILE_DONE tells the sender "delivered": only once the glue has
            # the file safely stored (confirm_saved), never before.
            self._close(inc, 0, state=_InState.SAVING)
            self.emit(FileCompleted(inc.file_id))

    def _new_offer(self, offer: Offer) -> None:
        active = sum(1 for i in self._files.values() if i.state in _OPEN)
        if active >= MAX_OPEN_INCOMING:
            reason = "too many transfers open at once"
            body = reason_body(offer.file_id, FileCode.DECLINED, reason)
            self.send_record(RecordType.FILE_REJECT, body)
            return
        self._files[offer.file_id] = _Incoming(
            file_id=offer.file_id,
            size=offer.size,
            key=FileKey(key=offer.key, salt=offer.salt),
            chunks=chunk_count(offer.size),
        )
        self._forget_finished()
        self.emit(FileOffered(offer.file_id, offer.name, offer.size))

    def _forget_finished(self) -> None:
        """Keep the memory of finished transfers bounded (oldest go first)."""
        finished = [fid for fid, inc in self._files.items() if inc.state in _FINISHED]
        for fid in finished[: max(0, len(finished) - MAX_FINISHED_INCOMING)]:
            del self._files[fid]

    def _request_from(self, inc: _Incoming, now: float) -> None:
        assert inc.decryptor is not None
        inc.gap_requested_at = inc.decryptor.next_index
        inc.last_progress = now
        body = ID_INDEX.pack(inc.file_id, inc.decryptor.next_index)
        self.send_record(RecordType.FILE_ACCEPT, body)

    def _close(self, inc: _Incoming, code: int, state: _InState = _InState.REJECTED) -> None:
        inc.state = state
        inc.reject_code = code
        inc.decryptor = None

    def _abort(self, inc: _Incoming, code: FileCode, reason: str) -> None:
        self._close(inc, int(code))
        self.emit(FileFailed(inc.file_id, False, int(code), reason))
        self.send_record(RecordType.FILE_REJECT, reason_body(inc.file_id, code, reason))
