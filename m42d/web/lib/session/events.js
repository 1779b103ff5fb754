// What the session machine tells the user interface: plain frozen values.
// Python twin: m42d/session/events.py.
//
// The glue reads them with Session.events(), oldest first, and tells them
// apart with instanceof. Nothing in an event is trusted for more than it
// says: names, reasons and texts come from the peer and are escaped by
// whoever shows them. u64 values (seq, file ids, sizes, indexes) are BigInt.

/** @typedef {import("../bytes.js").Bytes} Bytes */

/** A session is established; the safety words stay the same while neither key changes. */
export class HandshakeComplete {
  /**
   * @param {ReadonlyArray<string>} words
   * @param {Bytes} peerKey
   * @param {boolean} firstContact
   */
  constructor(words, peerKey, firstContact) {
    this.words = Object.freeze([...words]);
    this.peerKey = peerKey;
    this.firstContact = firstContact;
    Object.freeze(this);
  }
}

/** The peer's static key differs from the pinned one; nothing flows until trusted. */
export class PeerKeyChanged {
  /**
   * @param {Uint8Array} pinned
   * @param {Uint8Array} offered
   * @param {ReadonlyArray<string>} words the safety words with the offered key:
   *   compare them before trusting it
   */
  constructor(pinned, offered, words) {
    this.pinned = pinned;
    this.offered = offered;
    this.words = Object.freeze([...words]);
    Object.freeze(this);
  }
}

export class TextReceived {
  /** @param {bigint} seq @param {string} text */
  constructor(seq, text) {
    this.seq = seq;
    this.text = text;
    Object.freeze(this);
  }
}

/**
 * The peer sent a text this side must not show (over the cap, not UTF-8).
 * Answered with TEXT_REFUSED instead of ACK, so that the peer stops
 * re-sending it and does not count it as delivered.
 */
export class TextRefused {
  /** @param {bigint} seq @param {number} size @param {string} reason */
  constructor(seq, size, reason) {
    this.seq = seq;
    this.size = size;
    this.reason = reason;
    Object.freeze(this);
  }
}

/** The peer refused our text `seq` (TEXT_REFUSED): it will not be shown or sent again. */
export class TextRejected {
  /** @param {bigint} seq @param {string} reason */
  constructor(seq, reason) {
    this.seq = seq;
    this.reason = reason;
    Object.freeze(this);
  }
}

/** The peer acknowledged our text end to end. */
export class TextDelivered {
  /** @param {bigint} seq */
  constructor(seq) {
    this.seq = seq;
    Object.freeze(this);
  }
}

/** The peer offers a file: answer with acceptFile() or rejectFile(). */
export class FileOffered {
  /** @param {bigint} fileId @param {string} name @param {bigint} size */
  constructor(fileId, name, size) {
    this.fileId = fileId;
    this.name = name;
    this.size = size;
    Object.freeze(this);
  }
}

/** Start (or restart) sending the file's chunks from `start` on the bulk lane. */
export class SendChunks {
  /** @param {bigint} fileId @param {bigint} start */
  constructor(fileId, start) {
    this.fileId = fileId;
    this.start = start;
    Object.freeze(this);
  }
}

/** Decrypted, authenticated data to write at `offset` of the incoming file. */
export class FileChunk {
  /** @param {bigint} fileId @param {bigint} index @param {bigint} offset @param {Bytes} data */
  constructor(fileId, index, offset, data) {
    this.fileId = fileId;
    this.index = index;
    this.offset = offset;
    this.data = data;
    Object.freeze(this);
  }

  toString() {
    return `FileChunk(fileId=${this.fileId}, index=${this.index}, data=<${this.data.length} bytes>)`;
  }
}

/** Bytes confirmed so far: received (incoming) or acked by the peer (outgoing). */
export class FileProgress {
  /** @param {bigint} fileId @param {boolean} outgoing @param {bigint} done @param {bigint} size */
  constructor(fileId, outgoing, done, size) {
    this.fileId = fileId;
    this.outgoing = outgoing;
    this.done = done;
    this.size = size;
    Object.freeze(this);
  }
}

/** Incoming file fully received and authenticated (its final chunk): move it into place. */
export class FileCompleted {
  /** @param {bigint} fileId */
  constructor(fileId) {
    this.fileId = fileId;
    Object.freeze(this);
  }
}

/** The peer received, authenticated and saved our file. */
export class FileDelivered {
  /** @param {bigint} fileId */
  constructor(fileId) {
    this.fileId = fileId;
    Object.freeze(this);
  }
}

/** A transfer ended without success (rejected, cancelled, size mismatch). */
export class FileFailed {
  /** @param {bigint} fileId @param {boolean} outgoing @param {number} code @param {string} reason */
  constructor(fileId, outgoing, code, reason) {
    this.fileId = fileId;
    this.outgoing = outgoing;
    this.code = code;
    this.reason = reason;
    Object.freeze(this);
  }
}

/** The secure session broke; the machine starts over by itself where it can. */
export class SessionFailed {
  /**
   * `why` is the cause as RESET carries it (ResetReason): AUTHENTICATION (the
   * room secrets differ, or someone is in the middle) on B when message 3
   * fails and on A when B's RESET says so, so both sides can name it. On A it
   * is B's unauthenticated word: a hint for the user, acted on by nothing.
   * @param {string} reason
   * @param {number} [why]
   */
  constructor(reason, why = 0) {
    this.reason = reason;
    this.why = why;
    Object.freeze(this);
  }
}

/**
 * @typedef {HandshakeComplete | PeerKeyChanged | TextReceived | TextRefused | TextRejected
 *   | TextDelivered | FileOffered | SendChunks | FileChunk | FileProgress | FileCompleted
 *   | FileDelivered | FileFailed | SessionFailed} Event
 */

/** @typedef {(event: Event) => void} EventSink where a part of the machine puts an event */
