// The one module that names the client engine: app.js asks it to make and
// open rooms. The UI tests' server answers this path with fake-engine.js,
// so the page's own tests run on a scripted engine; the relay serves this
// file, which runs the real one (m42d/web/engine/).

import { BrowserEngine } from "../engine/engine.js";
import { createRoom as createOnRelay } from "../engine/rooms.js";
import { openKeyStore } from "../lib/keystore.js";
import { Link } from "../lib/link.js";
import { Wordlist } from "../lib/sas.js";
import { WORDLIST_URL } from "./engine.js";

/** @typedef {import("./engine.js").Engine} Engine */

/**
 * @param {string} relayUrl
 * @returns {Promise<{linkA: string, linkB: string}>}
 */
export function createRoom(relayUrl) {
  return createOnRelay(relayUrl);
}

/** @type {Promise<Wordlist> | null} */
let wordlist = null;

/** The EFF list, fetched once per page from the relay that served it. */
function loadWordlist() {
  wordlist ??= fetch(new URL(WORDLIST_URL, document.baseURI), { credentials: "omit" })
    .then((response) => {
      if (!response.ok) throw new Error(`the word list did not load (HTTP ${response.status})`);
      return response.text();
    })
    .then((text) => Wordlist.parse(text));
  return wordlist;
}

/**
 * @param {string} link
 * @returns {Engine}
 */
export function openRoom(link) {
  return new BrowserEngine(Link.parse(link), {
    loadWordlist,
    openKeyStore: async () => {
      const store = await openKeyStore();
      return { store, persistent: store.persistent };
    },
  });
}
