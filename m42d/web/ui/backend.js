// The one module that names the client engine: app.js asks it to make and
// open rooms. The UI tests' server answers this path with fake-engine.js.
//
// The engine itself (the browser twin of m42d/client/engine.py, over
// lib/noise.js, lib/stream.js and the session machine) is not part of the
// page yet. Until it is, both functions fail with EngineMissing, and the
// landing page says so instead of pretending to connect.

import { M42Error } from "../lib/errors.js";

/** @typedef {import("./engine.js").Engine} Engine */

/** The page was served without its client engine. */
export class EngineMissing extends M42Error {
  constructor() {
    super("this relay's browser client is incomplete (it has no engine yet): use the m42 command line tool for now");
  }
}

/**
 * @param {string} relayUrl
 * @returns {Promise<{linkA: string, linkB: string}>}
 */
export async function createRoom(relayUrl) {
  void relayUrl;
  throw new EngineMissing();
}

/**
 * @param {string} link
 * @returns {Engine}
 */
export function openRoom(link) {
  void link;
  throw new EngineMissing();
}
