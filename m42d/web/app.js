// The page's entry point: read the link from the address, remove it from
// the address bar, then show the landing page or the chat.
//
// Rules:
// * The fragment is read once, first thing, and replaced out of the
//   address bar and the session history (history.replaceState) before
//   anything else runs; the page never writes it anywhere.
// * Nothing starts without a secure context: WebCrypto (crypto.subtle) only
//   exists on https:// pages and http://localhost.
// * A link for another relay is refused here: this page can connect only to
//   the relay that served it (its CSP says so).

import { LinkError } from "./lib/errors.js";
import { Link } from "./lib/link.js";
import { removeStaleOpfsFiles } from "./lib/sink.js";
import { createRoom, openRoom } from "./ui/backend.js";
import { ChatScreen } from "./ui/chat.js";
import { landingScreen } from "./ui/landing.js";
import { isThisRelay, pageRelayUrl, readAddress } from "./ui/location.js";
import { Notices } from "./ui/notices.js";

const main = /** @type {HTMLElement} */ (document.getElementById("main"));
const notices = new Notices(/** @type {HTMLElement} */ (document.getElementById("notices")));

/** @type {ChatScreen | null} */
let chat = null;

/**
 * Take the room link out of the address bar; returns it (or null).
 * @returns {string | null}
 */
function takeLinkFromAddress() {
  const { link, clean } = readAddress(location.href);
  if (clean !== location.href) history.replaceState(null, "", clean);
  return link;
}

/**
 * @param {unknown} exc
 * @returns {string}
 */
function describe(exc) {
  return exc instanceof Error ? exc.message : String(exc);
}

function showLanding() {
  chat?.close();
  chat = null;
  main.replaceChildren(
    landingScreen({
      async create(report) {
        try {
          const { linkA, linkB } = await createRoom(pageRelayUrl(location.href));
          openChat(linkA, linkB, report);
        } catch (exc) {
          report(`Could not create a room: ${describe(exc)}.`);
        }
      },
      open(link, report) {
        openChat(link, null, report);
      },
    }),
  );
}

/**
 * @param {string} linkText
 * @param {string | null} invite Link B, when this page just made the room
 * @param {(message: string) => void} report where to say why the link cannot be opened
 */
function openChat(linkText, invite, report) {
  /** @type {Link} */
  let link;
  try {
    link = Link.parse(linkText);
  } catch (exc) {
    if (exc instanceof LinkError) {
      report(`This is not a valid room link: ${exc.message}.`);
      return;
    }
    throw exc;
  }
  if (!isThisRelay(link.relay, location.href)) {
    report(
      `This link is for another relay (${link.relay}). Open it on that relay's page, or with the m42 command line tool.`,
    );
    return;
  }
  let engine;
  try {
    engine = openRoom(link.format());
  } catch (exc) {
    report(`Could not open the room: ${describe(exc)}.`);
    return;
  }
  chat?.close();
  chat = new ChatScreen(engine, {
    notices,
    ownLink: link.format(),
    invite,
    onEnd: (message) => notices.show("info", `${message} Reload the page to make a new room.`, { key: "ended" }),
  });
  main.replaceChildren(chat.element);
  engine.start();
  chat.focus();
}

function start() {
  const link = takeLinkFromAddress();
  if (!window.isSecureContext || !globalThis.crypto?.subtle) {
    notices.show(
      "error",
      "This page needs a secure connection: open it with https:// (or on localhost). Without one the browser withholds the cryptography it needs.",
      { dismissible: false },
    );
    return;
  }
  void removeStaleOpfsFiles();
  window.addEventListener("hashchange", () => {
    const next = takeLinkFromAddress();
    if (next !== null) openChat(next, null, (message) => notices.show("error", message, { key: "link" }));
  });
  if (link === null) {
    showLanding();
    return;
  }
  showLanding();
  openChat(link, null, (message) => notices.show("error", message, { key: "link" }));
}

start();
