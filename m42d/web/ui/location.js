// The page's own address: the link in its fragment, and its relay URL.
//
// Rules:
// * A link opened in the browser is <relay-url>#m42.1...; the fragment never
//   reaches a server (docs/protocol.md, "Link"). The page reads it once and
//   removes every fragment from the address bar (app.js calls
//   history.replaceState with `clean`), so it is neither in the history
//   shown to the next person at this screen nor in a bookmark.
// * The page is served at its relay's root (m42d.web.pages: "/" only), so
//   the relay URL of this page is its origin plus its path without the
//   trailing "/": links made here read "https://relay.example.org#m42...".
// * The page can reach only its own relay: the CSP's connect-src names this
//   host alone. A link for another relay is refused with a hint rather than
//   failing later on a blocked socket.

import { parseRelayUrl } from "../lib/link.js";

/**
 * @param {string} href the page's location.href
 * @returns {{link: string | null, clean: string}} the room link in the fragment
 *   (or null), and the address without any fragment
 */
export function readAddress(href) {
  const hash = href.indexOf("#");
  if (hash < 0) return { link: null, clean: href };
  const clean = href.slice(0, hash);
  const fragment = href.slice(hash + 1);
  const link = fragment.startsWith("m42.") ? `${pageRelayUrl(clean)}#${fragment}` : null;
  return { link, clean };
}

/**
 * The relay URL for links made on this page.
 * @param {string} href
 * @returns {string} e.g. "https://relay.example.org"
 */
export function pageRelayUrl(href) {
  const url = new URL(href);
  return `${url.origin}${url.pathname.replace(/\/+$/, "")}`;
}

/** Scheme of a relay URL -> the page scheme it is reached from. */
const PAGE_SCHEME = /** @type {Readonly<Record<string, string>>} */ ({
  http: "http:",
  ws: "http:",
  https: "https:",
  wss: "https:",
});

/**
 * Whether the relay of a link is the relay that served this page (same
 * host, port and TLS; `http` and `ws`, `https` and `wss` are the same
 * transport), i.e. whether this page can open it.
 * @param {string} relayUrl the link's relay URL (already valid: Link.relay)
 * @param {string} href the page's location.href
 * @returns {boolean}
 */
export function isThisRelay(relayUrl, href) {
  const relay = parseRelayUrl(relayUrl);
  const page = new URL(href);
  if (PAGE_SCHEME[relay.scheme] !== page.protocol) return false;
  const pageHost = page.hostname.replace(/^\[(.*)\]$/, "$1").toLowerCase();
  const pagePort = page.port ? Number(page.port) : page.protocol === "https:" ? 443 : 80;
  return relay.host === pageHost && relay.effectivePort === pagePort;
}
