// Writing: a text box (Enter sends, Shift+Enter starts a new line) and a
// button that picks files. Works with the keyboard alone.
//
// A text over the protocol's cap (1 MiB of UTF-8) is refused here with a
// message rather than by the engine; the count appears only near the cap.

import { MAX_TEXT_BYTES } from "./engine.js";
import { button, h, srOnly } from "./dom.js";
import { formatSize, utf8Length } from "./format.js";

/**
 * @typedef {object} ComposerActions
 * @property {(text: string) => boolean} send false: not taken (the text stays in the box)
 * @property {(files: File[]) => void} sendFiles
 */

export class Composer {
  /** @readonly @type {HTMLFormElement} */ element;
  /** @type {HTMLTextAreaElement} */ #field;
  /** @type {HTMLElement} */ #hint;
  /** @type {HTMLButtonElement[]} */ #controls;
  /** @type {ComposerActions} */ #actions;

  /** @param {ComposerActions} actions */
  constructor(actions) {
    this.#actions = actions;
    this.#field = h("textarea", {
      className: "composer-field",
      attrs: {
        id: "composer-text",
        rows: "1",
        placeholder: "Write a message",
        "aria-describedby": "composer-hint",
        enterkeyhint: "send",
      },
    });
    this.#hint = h("p", { className: "composer-hint", attrs: { id: "composer-hint", "aria-live": "polite" } });
    const picker = h("input", { className: "sr-only", attrs: { type: "file", multiple: "", tabindex: "-1", "aria-hidden": "true" } });
    picker.addEventListener("change", () => {
      const files = Array.from(picker.files ?? []);
      picker.value = "";
      if (files.length) this.#actions.sendFiles(files);
    });
    const attach = button("Send a file", () => picker.click(), {
      className: "attach",
      attrs: { "data-action": "attach", title: "Send a file (or drop files anywhere on the chat)" },
    });
    const send = h("button", { className: "primary send", text: "Send", attrs: { type: "submit" } });
    this.#controls = [attach, send];
    this.element = h(
      "form",
      { className: "composer", attrs: { "aria-label": "Write to the other person" } },
      h("label", { className: "sr-only", attrs: { for: "composer-text" }, text: "Message" }),
      this.#field,
      h("div", { className: "composer-buttons" }, attach, send),
      picker,
      this.#hint,
      srOnly("Enter sends; Shift+Enter starts a new line."),
    );
    this.element.addEventListener("submit", (event) => {
      event.preventDefault();
      this.#submit();
    });
    this.#field.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        this.#submit();
      }
    });
    this.#field.addEventListener("input", () => this.#checkLength());
  }

  #submit() {
    if (this.#field.disabled) return;
    const text = this.#field.value;
    if (!text.trim()) return;
    if (!this.#checkLength()) return;
    if (!this.#actions.send(text)) return;
    this.#field.value = "";
    this.#hint.textContent = "";
  }

  /** @returns {boolean} whether the text fits the cap */
  #checkLength() {
    const value = this.#field.value;
    // Cheap bounds first: a UTF-16 unit is 1 to 3 bytes of UTF-8.
    if (value.length * 3 < MAX_TEXT_BYTES * 0.9) {
      if (this.#hint.dataset.kind === "length") this.#hint.textContent = "";
      return true;
    }
    const bytes = utf8Length(value);
    this.#hint.dataset.kind = "length";
    if (bytes > MAX_TEXT_BYTES) {
      this.#hint.textContent = `Too long to send as a text: ${formatSize(bytes)} of UTF-8, the limit is 1 MiB. Send it as a file instead.`;
      this.element.dataset.tooLong = "true";
      return false;
    }
    delete this.element.dataset.tooLong;
    this.#hint.textContent = bytes > MAX_TEXT_BYTES * 0.9 ? `${formatSize(bytes)} of 1 MiB` : "";
    return true;
  }

  /**
   * @param {boolean} enabled
   * @param {string} [why] shown while disabled
   */
  setEnabled(enabled, why = "") {
    this.#field.disabled = !enabled;
    for (const control of this.#controls) control.disabled = !enabled;
    this.#hint.dataset.kind = "state";
    this.#hint.textContent = enabled ? "" : why;
  }

  focus() {
    this.#field.focus();
  }
}
