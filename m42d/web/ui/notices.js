// Page-wide notices: things the person should know that belong to no message
// (private mode, a link for another relay, an error that stopped the page).
//
// Rule: status notices go in a role="status" region (read when the reader
// is idle), errors in role="alert" (read at once); each can be dismissed,
// and one with a `key` replaces the earlier notice with that key instead of
// piling up.

import { button, h } from "./dom.js";

/** @typedef {"info" | "warning" | "error"} NoticeLevel */

export class Notices {
  /** @type {HTMLElement} */ #status;
  /** @type {HTMLElement} */ #alerts;
  /** @type {Map<string, HTMLElement>} */ #byKey = new Map();

  /** @param {HTMLElement} container */
  constructor(container) {
    this.#status = h("div", { className: "notices", attrs: { role: "status" } });
    this.#alerts = h("div", { className: "notices", attrs: { role: "alert" } });
    container.replaceChildren(this.#alerts, this.#status);
  }

  /**
   * Show a notice.
   * @param {NoticeLevel} level
   * @param {string} message one or two sentences: what happened and what to do
   * @param {{key?: string, dismissible?: boolean}} [options]
   * @returns {HTMLElement}
   */
  show(level, message, { key, dismissible = true } = {}) {
    if (key !== undefined) this.clear(key);
    const notice = h("div", { className: `notice notice-${level}` }, h("p", { text: message }));
    notice.dataset.level = level;
    if (dismissible) {
      notice.append(
        button("Dismiss", () => notice.remove(), {
          className: "quiet",
          attrs: { "aria-label": "Dismiss this notice" },
        }),
      );
    }
    if (key !== undefined) {
      notice.dataset.key = key;
      this.#byKey.set(key, notice);
    }
    (level === "error" ? this.#alerts : this.#status).append(notice);
    return notice;
  }

  /** @param {string} key */
  clear(key) {
    this.#byKey.get(key)?.remove();
    this.#byKey.delete(key);
  }
}
