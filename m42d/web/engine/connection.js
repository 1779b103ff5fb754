// The seat's relay connection in the browser: JOIN, one reader, one writer
// over the lanes, credit, liveness. Python twin: m42d/client/connection.py.
//
// One RelayConnection carries one WebSocket at a time and lives as long as
// its engine; the engine reconnects by calling open() again after `ended`.
//
// Rules and invariants (the twin's, in a browser's terms):
// * The browser gives a WebSocket no task and no blocking send: frames
//   arrive as events and send() only queues. So "one reader" is one Serial
//   queue through which every payload reaches the session in arrival order
//   (WebCrypto is asynchronous: a later record must not overtake an earlier
//   one), and "one writer" is pump(), the only code that calls send().
// * pump() sends everything on the control side first (our relay frames,
//   the PONG, the session's records), then at most one BULK chunk, then looks
//   at the control side again. The socket's own buffer is first in, first
//   out, so a chunk goes out only while less than BUFFER_HIGH bytes wait in
//   it: a text then waits behind at most ~two 64 KiB chunks on our side.
// * BULK goes out only within relay credit: 0 at JOINED, grows with each
//   CREDIT, shrinks by each payload sent (docs/protocol.md, "Flow control");
//   past it the relay answers ERROR 402.
// * Every wait is bounded: JOIN has a deadline; a relay silent for
//   `deadAfter` ms counts as gone, and so does one that reads nothing of
//   ours for that long (bytes stay in bufferedAmount); a PING goes out after
//   `pingAfter` ms without a write or a read, to find out.
// * Nothing the relay sends makes replies pile up: one PONG answers all its
//   PINGs, and one PING of ours in flight is enough.
// * Every connection ends exactly once, through `ended(end)`, with what the
//   engine needs to decide: retry (and how soon) or stop.
// * Nothing secret is logged or put in an error: the token travels only in
//   JOIN, and messages name frames by kind.

import { M42Error, WireError } from "../lib/errors.js";
import { Serial } from "../lib/serial.js";
import {
  Bulk,
  Control,
  Credit,
  ErrorCode,
  ErrorFrame,
  GoAway,
  Join,
  Joined,
  PeerDown,
  PeerUp,
  Ping,
  Pong,
  decodeFromRelay,
  encode,
  kindName,
} from "../lib/wire.js";

/** @typedef {import("../lib/link.js").Link} Link */
/** @typedef {import("../lib/wire.js").Frame} Frame */

/** WebSocket path of a room on the relay (m42d_ws.room_path's twin). */
export const ROOM_PATH = "/m42/v1/room/";

/** Bytes the socket may hold unsent before no further chunk is added. */
export const BUFFER_HIGH = 128 * 1024;

/** How often a writer that waits for the socket's buffer to drain looks again (ms). */
export const DRAIN_POLL_MS = 10;

/** ERROR codes a later connection may not meet again (a busy relay, a slow join). */
/** @type {ReadonlySet<number>} */
const RETRY_CODES = new Set([ErrorCode.JOIN_TIMEOUT, ErrorCode.RATE_LIMITED, ErrorCode.CREDIT_EXCEEDED]);

/**
 * Whether a relay ERROR is worth a reconnect (the twin's `retryable`).
 * @param {number} code
 */
export function retryable(code) {
  return RETRY_CODES.has(code) || (code >= 500 && code <= 599);
}

/** The relay ended the connection with an ERROR. */
export class RelayRefused extends M42Error {
  /**
   * @param {number} code
   * @param {string} relayMessage the relay's text: escape it before showing
   */
  constructor(code, relayMessage) {
    super(`relay refused (${code}): ${relayMessage}`);
    this.code = code;
    this.relayMessage = relayMessage;
  }
}

/** The relay is going away (GOAWAY): reconnect with backoff. */
export class RelayGoingAway extends M42Error {}

/** The connection broke, timed out, or the relay stopped answering or reading. */
export class ConnectionLost extends M42Error {}

/**
 * The WebSocket URL of the seat's room: the link's relay URL with http(s)
 * read as ws(s), its path with any trailing "/" removed, then the room path.
 * @param {Link} link
 * @param {Uint8Array} roomId 16 bytes (from the ticket)
 */
export function roomUrl(link, roomId) {
  const address = link.relayAddress;
  const scheme = { http: "ws", https: "wss", ws: "ws", wss: "wss" }[address.scheme];
  if (scheme === undefined) {
    throw new ConnectionLost(`a browser cannot reach a ${address.scheme}:// relay: it needs ws, wss, http or https`);
  }
  const host = address.host.includes(":") ? `[${address.host}]` : address.host;
  const port = address.port === null ? "" : `:${address.port}`;
  const hex = Array.from(roomId, (b) => b.toString(16).padStart(2, "0")).join("");
  return `${scheme}://${host}${port}${address.path.replace(/\/+$/, "")}${ROOM_PATH}${hex}`;
}

/**
 * What the engine gives a connection.
 * @typedef {object} ConnectionHooks
 * @property {(peerOnline: boolean, maxPayload: number) => void} joined JOINED arrived (with the relay's
 *   cap on a payload); the writer starts after it returns
 * @property {(online: boolean) => void} peerChanged PEER_UP (true) and PEER_DOWN (false)
 * @property {(frame: Control | Bulk) => Promise<void>} payload the peer's payload, in order (feed the session)
 * @property {() => Uint8Array[]} controlPayloads the session's records to send now (may be empty)
 * @property {(credit: number) => Uint8Array | null} takeChunk the next BULK payload if it fits in `credit` bytes
 * @property {(end: ConnectionEnd) => void} ended once per open(): why the connection ended
 */

/**
 * @typedef {object} ConnectionEnd
 * @property {M42Error} error RelayRefused, RelayGoingAway, ConnectionLost or WireError
 * @property {boolean} retry whether reconnecting can help
 * @property {boolean} wasJoined whether JOINED had arrived on this connection
 */

/**
 * The subset of the browser's WebSocket a connection uses (tests pass a fake).
 * @typedef {object} SocketLike
 * @property {string} binaryType
 * @property {number} bufferedAmount
 * @property {number} readyState
 * @property {((event: unknown) => void) | null} onopen
 * @property {((event: {data: unknown}) => void) | null} onmessage
 * @property {((event: {code: number, reason: string}) => void) | null} onclose
 * @property {((event: unknown) => void) | null} onerror
 * @property {(data: Uint8Array) => void} send
 * @property {(code?: number, reason?: string) => void} close
 */

/**
 * @typedef {object} ConnectionOptions
 * @property {(url: string) => SocketLike} [openSocket] default: `new WebSocket(url)`
 * @property {() => number} [now] milliseconds, monotonic (default performance.now)
 * @property {number} [joinTimeout] ms for JOINED to arrive (default 10 s)
 * @property {number} [pingAfter] ms without traffic before a PING (default 20 s)
 * @property {number} [deadAfter] ms of silence, or of unread bytes, before the relay counts as gone (default 45 s)
 * @property {number} [tickMs] how often the liveness rules run (default 1 s)
 */

export class RelayConnection {
  /** @type {SocketLike | null} */ #socket = null;
  #joined = false;
  #ended = true;
  #credit = 0;
  /** @type {Frame[]} frames of our own for the relay (BURN, PING), sent before the session's */
  #relayOut = [];
  /** @type {Uint8Array | null} the relay's latest unanswered PING data (one PONG answers all) */
  #pong = null;
  /** @type {{token: Uint8Array, resolve: () => void} | null} */
  #barrier = null;
  #lastRx = 0;
  #lastWrite = 0;
  #lastPing = 0;
  /** bufferedAmount at the last write or drain seen, and when: to tell a relay that stopped reading */
  #buffered = { amount: 0, since: 0 };
  #pumpScheduled = false;
  #draining = false;
  /** @type {ReturnType<typeof setTimeout> | null} */ #joinTimer = null;
  /** @type {ReturnType<typeof setInterval> | null} */ #tickTimer = null;
  /** @type {Serial} */ #reader = new Serial();

  /**
   * @param {Link} link
   * @param {ConnectionHooks} hooks
   * @param {ConnectionOptions} [options]
   */
  constructor(link, hooks, options = {}) {
    this.link = link;
    this.hooks = hooks;
    this.openSocket = options.openSocket ?? ((url) => /** @type {SocketLike} */ (/** @type {unknown} */ (new WebSocket(url))));
    this.now = options.now ?? (() => performance.now());
    this.joinTimeout = options.joinTimeout ?? 10_000;
    this.pingAfter = options.pingAfter ?? 20_000;
    this.deadAfter = options.deadAfter ?? 45_000;
    this.tickMs = options.tickMs ?? 1_000;
  }

  /** Joined to the relay right now. */
  get connected() {
    return this.#joined && !this.#ended;
  }

  /** BULK payload bytes the relay allows us to send now. */
  get credit() {
    return this.#credit;
  }

  /**
   * Open a connection and JOIN the seat; `hooks.ended` reports how it ends.
   * @param {string} url from roomUrl()
   */
  open(url) {
    if (!this.#ended) throw new M42Error("a connection is already open");
    this.#ended = false;
    this.#joined = false;
    this.#credit = 0;
    this.#pong = null;
    this.#draining = false;
    this.#reader = new Serial();
    const link = this.link;
    let socket;
    try {
      socket = this.openSocket(url);
    } catch (exc) {
      // The page's CSP or a malformed URL: the browser throws synchronously.
      this.#end(new ConnectionLost("cannot open a WebSocket to the relay", { cause: exc }), true);
      return;
    }
    this.#socket = socket;
    socket.binaryType = "arraybuffer";
    socket.onopen = () => {
      this.#send(new Join({ seat: link.seat, ticket: link.ticket, token: link.token }));
    };
    socket.onmessage = (event) => this.#onMessage(event.data);
    socket.onclose = (event) => {
      const detail = event.code === 1006 ? "the connection broke" : `closed (${event.code})`;
      this.#end(new ConnectionLost(`the relay connection ${detail}`), true);
    };
    // An error event is always followed by a close event, which says more.
    socket.onerror = () => {};
    this.#joinTimer = setTimeout(() => {
      if (!this.#joined) this.#end(new ConnectionLost("the relay did not answer JOIN in time"), true);
    }, this.joinTimeout);
    const start = this.now();
    this.#lastRx = this.#lastWrite = this.#lastPing = start;
    this.#tickTimer = setInterval(() => this.tick(this.now()), this.tickMs);
  }

  /** Something may be ready to write (a record, a chunk, credit): the writer looks again. */
  wake() {
    if (this.#pumpScheduled || !this.connected) return;
    this.#pumpScheduled = true;
    queueMicrotask(() => {
      this.#pumpScheduled = false;
      this.#pump();
    });
  }

  /**
   * Queue a frame of our own for the relay (BURN); kept for the next connection if none is up.
   * @param {Frame} frame
   */
  queue(frame) {
    this.#relayOut.push(frame);
    this.wake();
  }

  /** From now on the peer's payloads are not fed to the session (leaving): they come again next time. */
  stopTakingPayloads() {
    this.#draining = true;
  }

  /**
   * Resolves once the relay answered a PING sent after everything queued
   * (written is not enough: a relay may drop what a closing connection sent
   * last). Resolves at once when not connected, and when the connection ends.
   * @returns {Promise<void>}
   */
  readAll() {
    if (!this.connected) return Promise.resolve();
    const token = globalThis.crypto.getRandomValues(new Uint8Array(8));
    return new Promise((resolve) => {
      this.#barrier = { token, resolve };
      this.queue(new Ping(token));
    });
  }

  /**
   * Close on purpose (leaving); `ended` still reports it, as not worth a retry.
   * @param {string} [reason]
   */
  close(reason = "closed by this side") {
    this.#end(new ConnectionLost(reason), false, 1000);
  }

  /**
   * The liveness rules; runs every `tickMs` (exposed for tests with a fake clock).
   * @param {number} now
   */
  tick(now) {
    if (!this.connected) return;
    const socket = /** @type {SocketLike} */ (this.#socket);
    if (now - this.#lastRx > this.deadAfter) {
      this.#end(new ConnectionLost(`the relay went silent (nothing for over ${this.deadAfter / 1000} s)`), true);
      return;
    }
    const buffered = socket.bufferedAmount;
    if (buffered === 0 || buffered < this.#buffered.amount) {
      this.#buffered = { amount: buffered, since: now };
    } else if (now - this.#buffered.since > this.deadAfter) {
      this.#end(new ConnectionLost(`the relay stopped reading (unsent data waited over ${this.deadAfter / 1000} s)`), true);
      return;
    }
    const quiet = now - this.#lastRx > this.pingAfter || now - this.#lastWrite > this.pingAfter;
    if (now - this.#lastPing > this.pingAfter && quiet) {
      // Also when the relay talks but we have not written: only a write
      // shows whether it still reads. One PING waiting is enough.
      this.#lastPing = now;
      if (!this.#relayOut.some((frame) => frame instanceof Ping)) this.queue(new Ping());
    }
  }

  /** @param {unknown} data */
  #onMessage(data) {
    if (this.#ended) return;
    let frame;
    try {
      frame = decodeFromRelay(data);
    } catch (exc) {
      const error = exc instanceof M42Error ? exc : new WireError("the relay sent a malformed frame");
      this.#end(error, true);
      return;
    }
    this.#lastRx = this.now();
    if (!this.#joined) {
      if (frame instanceof Joined) {
        this.#joined = true;
        if (this.#joinTimer !== null) clearTimeout(this.#joinTimer);
        this.#credit = 0;
        this.hooks.joined(frame.peerOnline, frame.maxPayload);
        this.wake();
        return;
      }
      if (frame instanceof Control || frame instanceof Bulk) {
        this.#end(new WireError(`the relay sent ${kindName(frame.kind)} before JOINED`), true);
        return;
      }
      this.#relayFrame(frame);
      return;
    }
    if (frame instanceof Control || frame instanceof Bulk) {
      if (this.#draining) return;
      const ours = this.#socket;
      this.#reader
        .run(() => this.hooks.payload(frame))
        .then(
          () => {
            if (this.#socket === ours) this.wake();
          },
          (/** @type {unknown} */ exc) => {
            // The session reports what it refused through its own events;
            // anything else escaping it is a bug, which ends this connection.
            if (this.#socket === ours) {
              this.#end(new ConnectionLost("the session failed on a record", { cause: exc }), true);
            }
          },
        );
      return;
    }
    this.#relayFrame(frame);
  }

  /**
   * Frames the relay itself sends (not the peer's payloads).
   * @param {Frame} frame
   */
  #relayFrame(frame) {
    if (frame instanceof Credit) {
      this.#credit += frame.amount;
      this.wake();
    } else if (frame instanceof PeerUp) {
      if (!this.#draining) this.hooks.peerChanged(true);
    } else if (frame instanceof PeerDown) {
      if (!this.#draining) this.hooks.peerChanged(false);
    } else if (frame instanceof Ping) {
      this.#pong = frame.data;
      this.wake();
    } else if (frame instanceof Pong) {
      const barrier = this.#barrier;
      if (barrier !== null && sameBytes(barrier.token, frame.data)) {
        this.#barrier = null;
        barrier.resolve();
      }
    } else if (frame instanceof ErrorFrame) {
      this.#end(new RelayRefused(frame.code, frame.message), retryable(frame.code));
    } else if (frame instanceof GoAway) {
      this.#end(new RelayGoingAway(`the relay is going away: ${frame.reason}`), true);
    } else {
      this.#end(new WireError(`the relay sent an unexpected ${kindName(frame.kind)} frame`), true);
    }
  }

  /** The one writer: control side first, then at most one chunk, then the control side again. */
  #pump() {
    const socket = this.#socket;
    while (this.connected && socket !== null) {
      const frames = this.#relayOut;
      this.#relayOut = [];
      if (this.#pong !== null) {
        frames.push(new Pong(this.#pong));
        this.#pong = null;
      }
      for (const payload of this.hooks.controlPayloads()) frames.push(new Control(payload));
      if (frames.length > 0) {
        for (const frame of frames) this.#send(frame);
        continue;
      }
      if (socket.bufferedAmount >= BUFFER_HIGH) {
        // No drain event exists for a WebSocket: look again shortly.
        setTimeout(() => this.wake(), DRAIN_POLL_MS);
        return;
      }
      const chunk = this.hooks.takeChunk(this.#credit);
      if (chunk === null) return;
      if (chunk.length > this.#credit) {
        this.#end(new ConnectionLost("a chunk larger than the relay's credit was offered"), false);
        return;
      }
      this.#credit -= chunk.length;
      this.#send(new Bulk(chunk));
    }
  }

  /** @param {Frame} frame */
  #send(frame) {
    const socket = this.#socket;
    if (socket === null || this.#ended) return;
    const before = socket.bufferedAmount;
    socket.send(encode(frame));
    this.#lastWrite = this.now();
    if (before === 0) this.#buffered = { amount: socket.bufferedAmount, since: this.#lastWrite };
  }

  /**
   * End the current connection once and tell the engine.
   * @param {M42Error} error
   * @param {boolean} retry
   * @param {number} [code] the WebSocket close code we send
   */
  #end(error, retry, code = 1000) {
    if (this.#ended) return;
    this.#ended = true;
    const wasJoined = this.#joined;
    this.#joined = false;
    this.#credit = 0;
    this.#pong = null;
    if (this.#joinTimer !== null) clearTimeout(this.#joinTimer);
    if (this.#tickTimer !== null) clearInterval(this.#tickTimer);
    this.#joinTimer = this.#tickTimer = null;
    // Our own frames made for this connection (a PING) mean nothing on the next.
    this.#relayOut = this.#relayOut.filter((frame) => !(frame instanceof Ping));
    const barrier = this.#barrier;
    this.#barrier = null;
    barrier?.resolve();
    const socket = this.#socket;
    this.#socket = null;
    if (socket !== null) {
      socket.onopen = socket.onmessage = socket.onclose = null;
      try {
        socket.close(code);
      } catch {
        // Already closing: nothing more to say to it.
      }
    }
    this.hooks.ended({ error, retry, wasJoined });
  }
}

/**
 * @param {Uint8Array} a
 * @param {Uint8Array} b
 */
function sameBytes(a, b) {
  return a.length === b.length && a.every((value, i) => value === b[i]);
}
