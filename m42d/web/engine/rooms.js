// Making a room from the browser: CREATE_ROOM over a WebSocket on the relay's
// creation path, then the room secret R drawn here. Python twin:
// m42d/client/rooms.py.
//
// Rules:
// * R is drawn in this page (WebCrypto) and never leaves it but inside the
//   links' fragments; the relay sees only CREATE_ROOM.
// * One answer is awaited, within CREATE_TIMEOUT_MS: ROOM_CREATED, or an
//   ERROR said in words (403: the relay wants a creation secret, which a
//   browser cannot give; 429: too many rooms from here just now).

import { LinkError, M42Error } from "../lib/errors.js";
import { makeLinks, parseRelayUrl } from "../lib/link.js";
import { CreateRoom, ErrorCode, ErrorFrame, RoomCreated, decodeFromRelay, encode } from "../lib/wire.js";

/** @typedef {import("./connection.js").SocketLike} SocketLike */

export const CREATE_PATH = "/m42/v1";
export const CREATE_TIMEOUT_MS = 15_000;

/** Making the room failed; the message says why in words. */
export class RoomNotCreated extends M42Error {}

/**
 * The WebSocket URL the relay creates rooms on (m42d_ws.room_path()'s twin).
 * @param {string} relayUrl http(s):// or ws(s)://
 */
export function createUrl(relayUrl) {
  const address = parseRelayUrl(relayUrl);
  const scheme = { http: "ws", https: "wss", ws: "ws", wss: "wss" }[address.scheme];
  if (scheme === undefined) throw new LinkError(`a browser cannot reach a ${address.scheme}:// relay`);
  const host = address.host.includes(":") ? `[${address.host}]` : address.host;
  const port = address.port === null ? "" : `:${address.port}`;
  return `${scheme}://${host}${port}${address.path.replace(/\/+$/, "")}${CREATE_PATH}`;
}

/**
 * Ask the relay at `relayUrl` for a room; both links name `relayUrl`.
 * @param {string} relayUrl
 * @param {{openSocket?: (url: string) => SocketLike, timeoutMs?: number}} [options]
 * @returns {Promise<{linkA: string, linkB: string}>}
 */
export function createRoom(relayUrl, options = {}) {
  const url = createUrl(relayUrl);
  const open = options.openSocket ?? ((u) => /** @type {SocketLike} */ (/** @type {unknown} */ (new WebSocket(u))));
  return new Promise((resolve, reject) => {
    const socket = open(url);
    socket.binaryType = "arraybuffer";
    let settled = false;
    /** @param {() => void} finish */
    const settle = (finish) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.onopen = socket.onmessage = socket.onclose = null;
      try {
        socket.close(1000);
      } catch {
        // already closing
      }
      finish();
    };
    const timer = setTimeout(
      () => settle(() => reject(new RoomNotCreated("the relay did not answer in time"))),
      options.timeoutMs ?? CREATE_TIMEOUT_MS,
    );
    socket.onopen = () => socket.send(encode(new CreateRoom()));
    socket.onerror = () => {};
    socket.onclose = () => settle(() => reject(new RoomNotCreated("cannot reach the relay (is it running, and is this its address?)")));
    socket.onmessage = (event) => {
      let frame;
      try {
        frame = decodeFromRelay(event.data);
      } catch {
        settle(() => reject(new RoomNotCreated("the relay answered with something that is not m42")));
        return;
      }
      if (frame instanceof RoomCreated) {
        const secret = globalThis.crypto.getRandomValues(new Uint8Array(32));
        const [a, b] = makeLinks(relayUrl, frame, secret);
        settle(() => resolve({ linkA: a.format(), linkB: b.format() }));
      } else if (frame instanceof ErrorFrame) {
        settle(() => reject(new RoomNotCreated(refusal(frame))));
      }
    };
  });
}

/** @param {ErrorFrame} frame */
function refusal(frame) {
  if (frame.code === ErrorCode.FORBIDDEN) {
    return "this relay makes rooms only for those who know its creation secret: use `m42 new` on the command line";
  }
  if (frame.code === ErrorCode.RATE_LIMITED) return "too many rooms made from here just now: try again in a minute";
  return `the relay refused to make a room (${frame.code}): ${frame.message}`;
}
