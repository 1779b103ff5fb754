// One line saying where the conversation stands: connecting, waiting for
// the other person, together, reconnecting, paused or stopped.
//
// It is a role="status" region, so a screen reader hears each change once;
// the coloured dot repeats it for the eye and is not the only signal.

import { h } from "./dom.js";

/** @typedef {"connecting" | "waiting" | "online" | "reconnecting" | "paused" | "stopped"} ChatState */

export class ConnectionStatus {
  /** @readonly @type {HTMLElement} */ element;
  /** @type {HTMLElement} */ #text;
  /** @type {ChatState} */ state = "connecting";
  #peerOnline = false;
  #linked = false;

  constructor() {
    this.#text = h("span", { className: "status-text" });
    this.element = h(
      "p",
      { className: "status", attrs: { role: "status" } },
      h("span", { className: "dot", attrs: { "aria-hidden": "true" } }),
      this.#text,
    );
    this.#set("connecting", "Connecting to the relay…");
  }

  /**
   * @param {ChatState} state
   * @param {string} text
   */
  #set(state, text) {
    this.state = state;
    this.element.dataset.state = state;
    this.#text.textContent = text;
  }

  get blocked() {
    return this.state === "paused" || this.state === "stopped";
  }

  connected() {
    this.#linked = true;
    if (!this.blocked) this.#showPeer();
  }

  /** @param {boolean} online */
  peer(online) {
    this.#peerOnline = online;
    if (!this.blocked && this.#linked) this.#showPeer();
  }

  #showPeer() {
    if (this.#peerOnline) this.#set("online", "The other person is here.");
    else this.#set("waiting", "Waiting for the other person. What you send now reaches them when they come.");
  }

  /**
   * @param {number} delay seconds
   * @param {string} reason
   */
  reconnecting(delay, reason) {
    this.#linked = false;
    if (this.blocked) return;
    const when = delay < 1 ? "now" : `in ${Math.ceil(delay)} s`;
    this.#set("reconnecting", `Connection lost (${reason}). Reconnecting ${when}…`);
  }

  paused() {
    if (this.state !== "stopped") this.#set("paused", "Paused: the other person's key changed.");
  }

  resumed() {
    if (this.state !== "paused") return;
    this.state = "connecting";
    if (this.#linked) this.#showPeer();
    else this.#set("connecting", "Connecting to the relay…");
  }

  /** @param {string} message */
  stopped(message) {
    this.#set("stopped", message);
  }
}
