// Texts: our outbox and the peer's inbox (docs/protocol.md, "Texts").
// Python twin: m42d/session/texts.py.
//
// Rules and invariants (the twin's):
// * Our texts are numbered seq = 1, 2, ... within our `instance` (a random
//   u64 drawn when the session is made). Each stays in the Outbox until the
//   peer's ACK (then it is *delivered*) or its TEXT_REFUSED (then it is
//   *rejected*); nothing else removes it. After a fresh handshake everything
//   still in it goes again, in seq order.
// * The sender refuses a text over `maxText` or not UTF-8 before anything is
//   queued: a file has no such cap.
// * The Inbox keeps `last`, the highest seq shown from the peer's current
//   instance. Only seq == last + 1 is shown; seq <= last is a duplicate;
//   seq > last + 1 means texts were lost, which ends the session
//   (SessionError) without an ACK. So "delivered" is never reported for a
//   lost text, and a re-sent text is shown once.
// * Every shown or duplicate text is acknowledged, a refused one answered
//   with TEXT_REFUSED instead (also its re-sent copies, for the 64 most
//   recent refusals), so a text the receiver cannot show fails alone.
// * The parts of one text never interleave with another's, and the inbox
//   holds no more than `maxText` bytes of a text while its parts arrive.
// * Sending is async (records are sealed as they are made); each method
//   resolves after every record it made is sealed or queued, in order.

import { concat, u64 } from "../bytes.js";
import { LocalProtocolError } from "../errors.js";
import { TextDelivered, TextReceived, TextRefused, TextRejected } from "./events.js";
import {
  RecordType,
  SessionError,
  decodeText,
  decodeTextRefused,
  decodeU64Body,
  decodeUtf8,
  encodeUtf8,
  textBodies,
  textRefusedBody,
} from "./records.js";

/** @typedef {import("./records.js").RecordSender} RecordSender */
/** @typedef {import("./records.js").Hello} Hello */
/** @typedef {import("./events.js").EventSink} EventSink */

/** Refused texts remembered (to refuse their re-sent copies). */
export const MAX_REFUSED_REMEMBERED = 64;

/** Our texts, from send() until the peer acknowledges or refuses them. */
export class Outbox {
  #nextSeq = 1n;
  /** @type {Map<bigint, string>} */ #unacked = new Map();

  /**
   * @param {RecordSender} sendRecord
   * @param {EventSink} emit
   * @param {number} maxText
   * @param {bigint} instance
   */
  constructor(sendRecord, emit, maxText, instance) {
    this.sendRecord = sendRecord;
    this.emit = emit;
    this.maxText = maxText;
    this.instance = instance;
  }

  /** Texts sent and not yet acknowledged or refused. */
  get count() {
    return this.#unacked.size;
  }

  /** The lowest seq still waiting for its ACK (our next seq if none): HELLO's promise. */
  get firstUnacked() {
    let lowest = this.#nextSeq;
    for (const seq of this.#unacked.keys()) if (seq < lowest) lowest = seq;
    return lowest;
  }

  /**
   * Refuse, before anything is queued, a text the peer would refuse: over
   * the cap (a file has none) or not UTF-8. Synchronous, so that the caller
   * hears at once.
   * @param {string} text
   * @throws {LocalProtocolError}
   */
  check(text) {
    const data = encodeUtf8(text, "the text");
    if (data.length > this.maxText) {
      throw new LocalProtocolError(
        `text of ${data.length} bytes exceeds the ${this.maxText}-byte cap; send it as a file instead`,
      );
    }
  }

  /**
   * Check and number a text; returns its seq.
   * @param {string} text
   * @returns {bigint}
   * @throws {LocalProtocolError} over the cap or not UTF-8
   */
  number(text) {
    this.check(text);
    const seq = this.#nextSeq;
    this.#nextSeq += 1n;
    this.#unacked.set(seq, text);
    return seq;
  }

  /**
   * Number a text and hand its parts on; resolves to its seq.
   * @param {string} text
   * @returns {Promise<bigint>}
   */
  async send(text) {
    const seq = this.number(text);
    await this.sendParts(seq);
    return seq;
  }

  /**
   * The TEXT records of a numbered text (still unacknowledged).
   * @param {bigint} seq
   */
  async sendParts(seq) {
    const text = this.#unacked.get(seq);
    if (text === undefined) return;
    for (const body of textBodies(seq, encodeUtf8(text, "the text"))) await this.sendRecord(RecordType.TEXT, body);
  }

  /** After a fresh handshake: every unacknowledged text again, in seq order. */
  async resend() {
    const seqs = [...this.#unacked.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    for (const seq of seqs) await this.sendParts(seq);
  }

  /** @param {Uint8Array} body */
  onAck(body) {
    const seq = decodeU64Body(body, "ACK");
    if (this.#unacked.delete(seq)) this.emit(new TextDelivered(seq));
  }

  /** @param {Uint8Array} body */
  onRefused(body) {
    const { seq, reason } = decodeTextRefused(body);
    if (this.#unacked.delete(seq)) this.emit(new TextRejected(seq, reason || "refused by the other side"));
  }
}

/** The peer's texts: part assembly, the `last` shown seq, refusals. */
export class Inbox {
  /** @type {bigint | null} */ #peerInstance = null;
  #last = 0n;
  /** @type {bigint | null} */ #partialSeq = null;
  /** @type {Uint8Array[]} */ #partialParts = [];
  #partialSize = 0; // bytes of the text so far, held or not
  /** @type {Map<bigint, string>} seqs of the peer's current instance refused, oldest first */
  #refused = new Map();

  /**
   * @param {RecordSender} sendRecord
   * @param {EventSink} emit
   * @param {number} maxText
   */
  constructor(sendRecord, emit, maxText) {
    this.sendRecord = sendRecord;
    this.emit = emit;
    this.maxText = maxText;
  }

  /**
   * Everything the peer sent before `firstUnacked` was acked, so shown.
   * @param {Hello} hello
   */
  onHello(hello) {
    if (hello.instance !== this.#peerInstance) {
      this.#peerInstance = hello.instance;
      this.#last = hello.firstUnacked - 1n;
      this.#refused.clear();
    } else if (hello.firstUnacked - 1n > this.#last) {
      this.#last = hello.firstUnacked - 1n;
    }
    this.dropPartial();
  }

  /** Forget a text whose parts were still arriving: its sender will send it again. */
  dropPartial() {
    this.#partialSeq = null;
    this.#partialParts = [];
    this.#partialSize = 0;
  }

  /** @param {Uint8Array} body */
  async onText(body) {
    const { seq, final, part } = decodeText(body);
    if (this.#partialSeq !== null && this.#partialSeq !== seq) {
      throw new SessionError("TEXT parts of two messages interleaved");
    }
    this.#partialSeq = seq;
    this.#partialSize += part.length;
    if (this.#partialSize <= this.maxText) this.#partialParts.push(part);
    else this.#partialParts = []; // counted from here on, never held
    if (!final) return;
    const size = this.#partialSize;
    const data = concat(...this.#partialParts);
    this.dropPartial();
    if (seq > this.#last + 1n) {
      // Only seq == last + 1 is shown, and only shown texts are acked: so
      // "delivered" can never be reported for a text that was lost.
      throw new SessionError("texts were lost in transit (sequence gap)");
    }
    if (seq === this.#last + 1n) {
      this.#last = seq;
      this.#show(seq, data, size);
    }
    const refused = this.#refused.get(seq);
    if (refused === undefined) await this.sendRecord(RecordType.ACK, u64(seq));
    // Also for a re-sent copy: it must never look delivered.
    else await this.sendRecord(RecordType.TEXT_REFUSED, textRefusedBody(seq, refused));
  }

  /**
   * @param {bigint} seq
   * @param {Uint8Array} data
   * @param {number} size
   */
  #show(seq, data, size) {
    const text = size > this.maxText ? null : decodeUtf8(data);
    if (text !== null) {
      this.emit(new TextReceived(seq, text));
      return;
    }
    // A sender that broke the rules: the item fails, not the session (which
    // would only bring the same text back after every handshake, forever).
    // TEXT_REFUSED stops the resends.
    const refusal =
      size > this.maxText ? `a text of ${size} bytes, over the ${this.maxText}-byte cap` : "a text that is not valid UTF-8";
    this.emit(new TextRefused(seq, size, refusal));
    this.#refused.set(seq, refusal);
    while (this.#refused.size > MAX_REFUSED_REMEMBERED) {
      this.#refused.delete(/** @type {bigint} */ (this.#refused.keys().next().value));
    }
  }
}
