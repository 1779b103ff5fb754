// The chat screen: wires one engine's events to the log, the transfers,
// the safety words, the status line and the composer.
//
// Rules:
// * The engine is the only source of truth about the session: the page
//   shows what it reports and never guesses (a text is "sent" when the
//   engine says so, not when Enter was pressed).
// * A changed peer key pauses everything (status, composer, files) until
//   the person trusts the new key; "not now" leaves it paused with a way
//   back to the decision.
// * Files can be dropped anywhere on the screen.

import { copyText } from "./clipboard.js";
import { ChatLog } from "./chat-log.js";
import { Composer } from "./composer.js";
import { ask } from "./dialog.js";
import { button, h } from "./dom.js";
import { invitePanel } from "./invite.js";
import { askTrustNewKey } from "./key-change.js";
import { SafetyWords } from "./safety-words.js";
import { ConnectionStatus } from "./status.js";
import { Transfers } from "./transfers.js";

/** @typedef {import("./engine.js").Engine} Engine */
/** @typedef {import("./notices.js").Notices} Notices */

/** The relay's ERROR code for a burned room (docs/protocol.md, "Connection lifecycle"). */
const BURNED = 411;

/**
 * @typedef {object} ChatOptions
 * @property {Notices} notices
 * @property {string} ownLink this seat's link, for "Copy my link"
 * @property {string | null} invite Link B, when this page just made the room
 * @property {(message: string) => void} onEnd the room is over (burned): leave the screen
 */

export class ChatScreen {
  /** @readonly @type {HTMLElement} */ element;
  /** @type {Engine} */ #engine;
  /** @type {ChatLog} */ #log;
  /** @type {Composer} */ #composer;
  /** @type {ConnectionStatus} */ #status;
  /** @type {Transfers} */ #transfers;
  /** @type {SafetyWords} */ #words;
  /** @type {Map<bigint, (tick: import("./chat-log.js").Tick) => void>} */ #ticks = new Map();
  /** @type {string[] | null} new words while a changed key waits for a decision */
  #changedWords = null;
  /** @type {HTMLElement | null} */ #invite = null;
  /** @type {HTMLElement} */ #pausedBar;
  /** @type {(() => void)[]} */ #unsubscribe = [];
  /** @type {ChatOptions} */ #options;

  /**
   * @param {Engine} engine
   * @param {ChatOptions} options
   */
  constructor(engine, options) {
    this.#engine = engine;
    this.#options = options;
    this.#log = new ChatLog();
    this.#status = new ConnectionStatus();
    this.#transfers = new Transfers(engine, this.#log);
    this.#words = new SafetyWords(() => engine.markCompared());
    this.#composer = new Composer({
      send: (text) => this.#sendText(text),
      sendFiles: (files) => this.#transfers.send(files),
    });
    this.#pausedBar = h(
      "div",
      { className: "paused-bar", attrs: { hidden: "" } },
      h("p", { text: "Paused: the other person's key changed. Nothing is sent or received until you decide." }),
      button("Compare the new words", () => this.#decideOnKey(), { className: "primary", attrs: { "data-action": "review-key" } }),
    );
    const menu = this.#menu();
    const header = h("header", { className: "chat-header" }, this.#status.element, h("div", { className: "header-buttons" }, this.#words.toggle, menu));
    this.element = h("section", { className: "chat", attrs: { "aria-label": "Chat" } }, header, this.#log.element, this.#composer.element);
    this.#log.panels.append(this.#pausedBar, this.#words.element);
    if (options.invite !== null) {
      this.#invite = invitePanel(options.invite);
      this.#log.panels.append(this.#invite);
    }
    this.#dropZone();
    this.#listen();
  }

  /** @returns {HTMLElement} */
  #menu() {
    const items = h("div", { className: "menu-items" });
    const menu = h("details", { className: "menu" }, h("summary", { text: "Room" }), items);
    const mine = h("input", { className: "sr-only", attrs: { type: "text", readonly: "", tabindex: "-1", "aria-hidden": "true" } });
    mine.value = this.#options.ownLink;
    const close = () => menu.removeAttribute("open");
    items.append(
      button("Copy my link", async () => {
        close();
        const copied = await copyText(this.#options.ownLink, mine);
        this.#options.notices.show(
          "info",
          copied
            ? "Your own link is copied. Keep it private: it brings you back to this room as you."
            : "The browser did not let the page copy your link.",
          { key: "own-link" },
        );
      }, { attrs: { "data-action": "copy-own-link" } }),
      button("Burn the room…", () => {
        close();
        this.#burn();
      }, { className: "danger-text", attrs: { "data-action": "burn" } }),
      mine,
    );
    menu.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && menu.hasAttribute("open")) {
        close();
        /** @type {HTMLElement} */ (menu.querySelector("summary")).focus();
      }
    });
    return menu;
  }

  #dropZone() {
    const zone = this.element;
    let depth = 0;
    zone.addEventListener("dragenter", (event) => {
      if (!event.dataTransfer?.types.includes("Files")) return;
      event.preventDefault();
      depth++;
      zone.classList.add("dropping");
    });
    zone.addEventListener("dragover", (event) => {
      if (event.dataTransfer?.types.includes("Files")) event.preventDefault();
    });
    zone.addEventListener("dragleave", () => {
      if (--depth <= 0) {
        depth = 0;
        zone.classList.remove("dropping");
      }
    });
    zone.addEventListener("drop", (event) => {
      event.preventDefault();
      depth = 0;
      zone.classList.remove("dropping");
      if (this.#status.blocked) return;
      const transfer = event.dataTransfer;
      if (!transfer) return;
      /** @type {File[]} */
      const files = [];
      let folders = 0;
      for (const item of Array.from(transfer.items)) {
        if (item.kind !== "file") continue;
        if (item.webkitGetAsEntry?.()?.isDirectory) {
          folders++;
          continue;
        }
        const file = item.getAsFile();
        if (file) files.push(file);
      }
      if (folders) {
        this.#options.notices.show("warning", "Folders cannot be sent as they are: send a zip of the folder instead.", { key: "folders" });
      }
      if (files.length) this.#transfers.send(files);
    });
  }

  /**
   * @param {string} text
   * @returns {boolean} whether the engine took it
   */
  #sendText(text) {
    let seq;
    try {
      seq = this.#engine.sendText(text);
    } catch (exc) {
      this.#options.notices.show("error", `Not sent: ${exc instanceof Error ? exc.message : String(exc)}`, { key: "send" });
      return false;
    }
    const { setTick } = this.#log.addOutgoing(text);
    this.#ticks.set(seq, setTick);
    return true;
  }

  #listen() {
    const on = this.#engine.on.bind(this.#engine);
    this.#unsubscribe.push(
      on("connected", () => this.#status.connected()),
      on("reconnecting", ({ delay, reason }) => this.#status.reconnecting(delay, reason)),
      on("peer_up", () => {
        this.#status.peer(true);
        this.#log.addSystem("The other person joined.");
        this.#dropInvite();
      }),
      on("peer_down", () => {
        this.#status.peer(false);
        this.#log.addSystem("The other person left.");
        if (this.#changedWords !== null) {
          // The session forgot the key that device offered: nothing is left to
          // decide, and the pinned key, if it comes back, resumes the chat.
          this.#changedWords = null;
          this.#pausedBar.hidden = true;
          this.#status.resumed();
          this.#composer.setEnabled(true);
          this.#log.addSystem("The device with the new key left. If the other person comes back on their own device, the conversation goes on by itself.");
        }
      }),
      on("keystore", ({ persistent }) => {
        if (persistent) return;
        this.#options.notices.show(
          "warning",
          "This browser does not let the page keep data (a private window?). Your key for this room lives in this tab only: if you close it and come back, the other person will be told your key changed.",
          { key: "keystore" },
        );
      }),
      on("safety_words", (event) => {
        this.#words.update(event);
      }),
      on("key_changed", ({ words }) => {
        this.#changedWords = words;
        this.#status.paused();
        this.#composer.setEnabled(false, "Paused until you decide about their new key.");
        this.#pausedBar.hidden = false;
        this.#log.addSystem("Their key changed: the conversation is paused.", { level: "warning" });
        this.#decideOnKey();
      }),
      on("text", ({ text }) => {
        this.#log.addIncoming(text);
      }),
      on("sent", ({ seq }) => this.#ticks.get(seq)?.("sent")),
      on("delivered", ({ seq }) => {
        this.#ticks.get(seq)?.("delivered");
        this.#ticks.delete(seq);
      }),
      on("file_offer", (offer) => this.#transfers.offered(offer)),
      on("file_progress", (progress) => this.#transfers.progress(progress)),
      on("file_done", (done) => this.#transfers.done(done)),
      on("file_failed", (failed) => this.#transfers.failed(failed)),
      on("error", ({ message, fatal, code }) => {
        if (!fatal) {
          this.#log.addSystem(message, { level: "warning" });
          return;
        }
        const text = code === BURNED ? "This room was burned: its links no longer work." : `Stopped: ${message}`;
        this.#status.stopped(text);
        this.#composer.setEnabled(false, text);
      }),
    );
  }

  /** The invitation has done its job; the focus must not vanish with it. */
  #dropInvite() {
    const invite = this.#invite;
    if (invite === null) return;
    this.#invite = null;
    const hadFocus = invite.contains(document.activeElement);
    invite.remove();
    if (hadFocus) this.#composer.focus();
  }

  async #decideOnKey() {
    const words = this.#changedWords;
    if (words === null) return;
    const trusted = await askTrustNewKey(words);
    if (this.#changedWords !== words) return; // that device left while the question was open
    if (!trusted) {
      // The composer is disabled: the way back to the decision gets the focus.
      /** @type {HTMLElement} */ (this.#pausedBar.querySelector("button")).focus();
      return;
    }
    this.#engine.trust();
    this.#changedWords = null;
    this.#pausedBar.hidden = true;
    this.#status.resumed();
    this.#composer.setEnabled(true);
    this.#log.addSystem("You trusted their new key.");
  }

  async #burn() {
    const burn = await ask({
      name: "burn",
      title: "Burn this room?",
      body: [
        "Both links stop working, for good, for both of you. Nobody can join this room again.",
        "What is on the screen stays until you leave the page.",
      ],
      confirm: "Burn the room",
      danger: true,
    });
    if (!burn) return;
    try {
      await this.#engine.burn();
    } catch (exc) {
      this.#options.notices.show("error", `The room could not be burned: ${exc instanceof Error ? exc.message : String(exc)}`, { key: "burn" });
      return;
    }
    this.#status.stopped("You burned this room: its links no longer work.");
    this.#composer.setEnabled(false, "This room is burned.");
    this.#options.onEnd("You burned the room. Its links no longer work.");
  }

  /** Put the focus where a person starts: the text box. */
  focus() {
    if (this.#invite) /** @type {HTMLElement} */ (this.#invite.querySelector("h2")).focus();
    else this.#composer.focus();
  }

  /** Leave: stop listening and close the engine. */
  close() {
    for (const off of this.#unsubscribe) off();
    this.#transfers.dispose();
    this.#engine.close();
  }
}
