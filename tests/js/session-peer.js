// A seat A the test scripts record by record: the twin of
// tests/session_peer.py's ScriptedPeer, for the peers a real Session will
// not be (a malformed record, a text sequence gap, another session version).
//
// It runs an honest handshake from public parts only -- the Noise engine,
// the psk and prologue of session/keys.js, the encoders of
// session/records.js -- so it holds its own session keys, and then seals
// whatever record the test hands it. Like an honest A, it starts a fresh
// handshake when B's RESET names its handshake, so a test sees B recover.

import { readU32, readU64 } from "../../m42d/web/lib/bytes.js";
import { HandshakeState, PROTOCOL_NAME, generateKeyPair } from "../../m42d/web/lib/noise.js";
import { MemoryKeyStore, Session, derivePsk, prologue } from "../../m42d/web/lib/session/index.js";
import {
  Envelope,
  Hello,
  RecordType,
  decodeRecord,
  encodeRecord,
  handshakeMessage,
  hsPayload,
  textBodies,
} from "../../m42d/web/lib/session/records.js";
import { WORDLIST } from "./session-harness.js";

/** @typedef {import("../../m42d/web/lib/noise.js").CipherState} CipherState */
/** @typedef {import("../../m42d/web/lib/noise.js").KeyPair} KeyPair */
/** @typedef {import("../../m42d/web/lib/noise.js").TransportPair} TransportPair */
/** @typedef {import("../../m42d/web/lib/session/index.js").Event} Event */
/** @typedef {import("../../m42d/web/lib/session/index.js").SessionOptions} SessionOptions */

const EMPTY = new Uint8Array(0);

/**
 * Seat A's side of a new Noise handshake for the room (any static key).
 * @param {Uint8Array} roomId
 * @param {Uint8Array} secret
 * @param {Readonly<KeyPair>} [staticKey]
 */
export async function initiatorHandshake(roomId, secret, staticKey) {
  return HandshakeState.create(PROTOCOL_NAME, {
    initiator: true,
    prologue: prologue(roomId),
    s: staticKey ?? (await generateKeyPair()),
    e: await generateKeyPair(),
    psks: [await derivePsk(secret, roomId)],
  });
}

export class ScriptedPeer {
  /** @type {HandshakeState | null} */ #hs = null;
  #hsId = 0;
  /** @type {Readonly<TransportPair> | null} */ #pending = null;
  /** @type {CipherState | null} */ #send = null;
  /** @type {CipherState | null} */ #recv = null;

  /**
   * @param {Session} session a real seat B
   * @param {Uint8Array} secret
   * @param {Readonly<KeyPair>} staticKey
   */
  constructor(session, secret, staticKey) {
    this.session = session;
    this.secret = secret;
    this.static = staticKey;
    this.instance = readU64(crypto.getRandomValues(new Uint8Array(8)));
    /** What our HELLO promises: every text of ours before it was acknowledged. */
    this.firstUnacked = 1n;
    /** @type {Event[]} the session's events, oldest first */
    this.events = [];
    /** @type {{type: number, body: Uint8Array}[]} records the session sent us after its HELLO */
    this.received = [];
    /** @type {Uint8Array[]} */
    this.resets = [];
    /** Handshakes completed (B's HELLO decrypted with the new keys). */
    this.handshakes = 0;
  }

  /**
   * A fresh room and a real seat B in it (`options` go to its Session).
   * @param {Partial<SessionOptions>} [options]
   */
  static async against(options = {}) {
    const secret = crypto.getRandomValues(new Uint8Array(32));
    const session = await Session.create({
      seat: "B",
      roomId: crypto.getRandomValues(new Uint8Array(16)),
      secret,
      keys: new MemoryKeyStore(),
      wordlist: WORDLIST,
      ...options,
    });
    return new ScriptedPeer(session, secret, await generateKeyPair());
  }

  /**
   * @template T
   * @param {new (...args: any[]) => T} cls
   * @returns {T[]}
   */
  of(cls) {
    return /** @type {T[]} */ (this.events.filter((e) => e instanceof cls));
  }

  /**
   * Bodies of the records of one type the session sent us, oldest first.
   * @param {number} type
   */
  records(type) {
    return this.received.filter((r) => r.type === type).map((r) => r.body);
  }

  /** Both seats online, and a fresh handshake run through. */
  async connect() {
    await this.session.peerOnline(0);
    await this.handshake();
  }

  /**
   * Run a fresh handshake (HS1 with `payload`, else an honest one).
   * @param {Uint8Array} [payload]
   */
  async handshake(payload) {
    await this.deliver(await this.#hs1(payload ?? hsPayload(false)));
  }

  /** @param {Uint8Array} payload */
  async #hs1(payload) {
    this.#hs = await initiatorHandshake(this.session.roomId, this.secret, this.static);
    this.#hsId = readU32(crypto.getRandomValues(new Uint8Array(4))) || 1;
    this.#pending = this.#send = this.#recv = null;
    return handshakeMessage(Envelope.HS1, this.#hsId, await this.#hs.writeMessage(payload));
  }

  /**
   * The DATA payload of one record on our keys, whatever its type and body.
   * @param {number} type
   * @param {Uint8Array} body
   */
  async seal(type, body) {
    const send = this.#send;
    if (send === null) throw new Error("no session keys yet");
    const sealed = await send.encryptWithAd(EMPTY, encodeRecord(type, body));
    await send.rekey();
    const out = new Uint8Array(1 + sealed.length);
    out[0] = Envelope.DATA;
    out.set(sealed, 1);
    return out;
  }

  /** @param {number} type @param {Uint8Array} body */
  async send(type, body) {
    await this.deliver(await this.seal(type, body));
  }

  /**
   * A text as a sender splits it, but of any bytes and any size.
   * @param {bigint} seq
   * @param {Uint8Array} data
   */
  async sendText(seq, data) {
    for (const body of textBodies(seq, data)) await this.send(RecordType.TEXT, body);
  }

  /** @param {Uint8Array} payload */
  async sendBulk(payload) {
    await this.session.receiveBulk(payload);
    await this.take();
  }

  /**
   * CONTROL payloads to the session, then everything it answers, until it is quiet.
   * @param {...Uint8Array} payloads
   */
  async deliver(...payloads) {
    for (const payload of payloads) await this.session.receiveControl(payload);
    await this.take();
  }

  /** Read the session's events and payloads, answering handshake messages and RESETs. */
  async take(rounds = 100) {
    for (let i = 0; i < rounds; i++) {
      this.events.push(...this.session.events());
      /** @type {Uint8Array[]} */
      const replies = [];
      for (const payload of this.session.dataToSend()) replies.push(...(await this.#onControl(payload)));
      if (replies.length === 0) {
        this.events.push(...this.session.events());
        return;
      }
      for (const reply of replies) await this.session.receiveControl(reply);
    }
    throw new Error("the session did not go quiet");
  }

  /** @param {Uint8Array} payload @returns {Promise<Uint8Array[]>} */
  async #onControl(payload) {
    const kind = payload[0];
    const body = payload.subarray(1);
    if (kind === Envelope.HS2) return this.#onHs2(body);
    if (kind === Envelope.RESET) {
      this.resets.push(body.slice());
      return readU32(body) === this.#hsId ? [await this.#hs1(hsPayload(false))] : [];
    }
    if (kind !== Envelope.DATA) throw new Error(`unexpected envelope ${kind} from seat B`);
    await this.#onData(body);
    return [];
  }

  /** @param {Uint8Array} body */
  async #onHs2(body) {
    const hs = this.#hs;
    if (hs === null || readU32(body) !== this.#hsId) return [];
    await hs.readMessage(body.subarray(4));
    const message = await hs.writeMessage(new Hello(this.instance, 0n, this.firstUnacked).encode());
    this.#pending = hs.split();
    return [handshakeMessage(Envelope.HS3, this.#hsId, message)];
  }

  /** @param {Uint8Array} body */
  async #onData(body) {
    const pending = this.#pending;
    if (pending !== null) {
      const { type } = decodeRecord(await pending.recv.decryptWithAd(EMPTY, body));
      await pending.recv.rekey();
      if (type !== RecordType.HELLO) throw new Error("B's first record on new keys must be its HELLO");
      this.#send = pending.send;
      this.#recv = pending.recv;
      this.#pending = null;
      this.handshakes += 1;
      return;
    }
    const recv = this.#recv;
    if (recv === null) throw new Error("DATA before any keys");
    const record = decodeRecord(await recv.decryptWithAd(EMPTY, body));
    await recv.rekey();
    this.received.push(record);
  }
}
