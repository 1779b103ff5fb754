// The conversation: texts both ways, file cards and short system lines.
//
// Rules:
// * A peer's text is shown as text (a Text node inside an element with
//   white-space: pre-wrap), never interpreted: no markup, no links made
//   clickable, bidirectional text isolated per message (dir="auto").
// * The log is role="log" with aria-relevant="additions": a screen reader
//   reads each new entry once; changing progress lines inside file cards
//   are aria-hidden so they are not read every second.
// * A very long text (up to the 1 MiB cap) shows its first LONG_TEXT
//   characters and a button for the rest, so one text cannot make the page
//   unusable; nothing is cut from what was received.
// * The view follows new entries only while the person is at the bottom:
//   scrolling up to read is not undone by the next message.
// * The log scrolls together with the panels above it (invitation, safety
//   words), in one region between the status line and the composer, so
//   the composer stays on a phone's screen whatever is open.

import { button, h, srOnly } from "./dom.js";

export const LONG_TEXT = 4000;

/** @typedef {"queued" | "sent" | "delivered"} Tick */

const TICKS = /** @type {const} */ ({
  queued: { mark: "○", label: "waiting to be sent" },
  sent: { mark: "✓", label: "sent" },
  delivered: { mark: "✓✓", label: "delivered" },
});

/**
 * @param {Date} when
 * @returns {string} "14:05"
 */
function clock(when) {
  return when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

export class ChatLog {
  /** @readonly @type {HTMLElement} the scrolling region */ element;
  /** @readonly @type {HTMLElement} where panels go, above the entries */ panels;
  /** @type {HTMLOListElement} */ #list;
  /** Whether the view follows new entries: the person has not scrolled up. */
  #follow = true;

  constructor() {
    this.#list = h("ol", { className: "log-entries" });
    this.panels = h("div", { className: "chat-panels" });
    const log = h(
      "div",
      {
        className: "log",
        attrs: { role: "log", "aria-live": "polite", "aria-relevant": "additions", "aria-label": "Conversation" },
      },
      this.#list,
    );
    // Focusable, so the keyboard can scroll it.
    this.element = h("div", { className: "chat-body", attrs: { tabindex: "0", "aria-label": "Conversation and panels" } }, this.panels, log);
    this.element.addEventListener("scroll", () => {
      const el = this.element;
      this.#follow = el.scrollHeight - el.scrollTop - el.clientHeight < 48;
    });
    // Entries grow after they arrive (a file card's progress and buttons):
    // stay at the bottom while following.
    new ResizeObserver(() => this.#keepUp()).observe(this.#list);
  }

  #keepUp() {
    // Instantly: a smooth scroll still under way would look like the person
    // scrolling up.
    if (this.#follow) this.element.scrollTo({ top: this.element.scrollHeight, behavior: "instant" });
  }

  /**
   * A text from the peer.
   * @param {string} text
   * @returns {HTMLElement}
   */
  addIncoming(text) {
    return this.#append(this.#message("in", text));
  }

  /**
   * One of our texts; its tick moves with setTick().
   * @param {string} text
   * @returns {{entry: HTMLElement, setTick: (tick: Tick) => void}}
   */
  addOutgoing(text) {
    const entry = this.#message("out", text);
    const mark = h("span", { className: "tick", attrs: { "aria-hidden": "true" } });
    const label = srOnly("");
    const meta = /** @type {HTMLElement} */ (entry.querySelector(".meta"));
    meta.append(" ", mark, label);
    /** @param {Tick} tick */
    const setTick = (tick) => {
      entry.dataset.tick = tick;
      mark.textContent = TICKS[tick].mark;
      mark.title = TICKS[tick].label;
      label.textContent = TICKS[tick].label;
    };
    setTick("queued");
    this.#append(entry);
    return { entry, setTick };
  }

  /**
   * A line from the page itself ("the other person joined").
   * @param {string} text
   * @param {{level?: "info" | "warning"}} [options]
   * @returns {HTMLElement}
   */
  addSystem(text, { level = "info" } = {}) {
    return this.#append(h("li", { className: `entry system system-${level}`, text }));
  }

  /**
   * Any other entry (a file card).
   * @param {HTMLElement} card
   * @returns {HTMLElement}
   */
  addCard(card) {
    return this.#append(h("li", { className: "entry card-entry" }, card));
  }

  /**
   * @param {"in" | "out"} direction
   * @param {string} text
   * @returns {HTMLLIElement}
   */
  #message(direction, text) {
    const body = h("p", { className: "text", attrs: { dir: "auto" } });
    if (text.length > LONG_TEXT) {
      body.textContent = text.slice(0, LONG_TEXT);
      const more = button(`Show all ${text.length.toLocaleString()} characters`, () => {
        body.textContent = text;
        more.remove();
      }, { className: "quiet show-all" });
      return this.#wrap(direction, body, more);
    }
    body.textContent = text;
    return this.#wrap(direction, body);
  }

  /**
   * @param {"in" | "out"} direction
   * @param {...HTMLElement} parts
   * @returns {HTMLLIElement}
   */
  #wrap(direction, ...parts) {
    const who = direction === "in" ? "They wrote" : "You wrote";
    const now = new Date();
    const meta = h("p", { className: "meta" }, h("time", { attrs: { datetime: now.toISOString() }, text: clock(now) }));
    return h("li", { className: `entry message ${direction}` }, srOnly(`${who}:`), ...parts, meta);
  }

  /**
   * @template {HTMLElement} T
   * @param {T} entry
   * @returns {T}
   */
  #append(entry) {
    this.#list.append(entry.tagName === "LI" ? entry : h("li", {}, entry));
    this.#keepUp();
    return entry;
  }
}
