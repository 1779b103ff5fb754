// The safety words: 8 words both people see alike as long as neither of
// them changes key. Reading them to each other once (by voice, in person)
// proves nobody sits in between; the page remembers when that was done.

import { button, h } from "./dom.js";
import { formatAgo } from "./format.js";

/** @typedef {import("./engine.js").EngineEvents["safety_words"]} SafetyWordsEvent */

export class SafetyWords {
  /** @readonly @type {HTMLElement} */ element;
  /** @readonly @type {HTMLButtonElement} */ toggle;
  /** @type {HTMLOListElement} */ #words;
  /** @type {HTMLElement} */ #state;
  /** @type {HTMLElement} */ #firstContact;
  /** @type {HTMLButtonElement} */ #compare;

  /** @param {() => Promise<void>} markCompared */
  constructor(markCompared) {
    this.#words = h("ol", { className: "words", attrs: { "aria-label": "Safety words, in order" } });
    this.#state = h("p", { className: "compared-state" });
    this.#firstContact = h("p", {
      className: "first-contact",
      text: "New contact: compare these words with them once, on a call or in person. If they match, nobody is in between.",
      attrs: { hidden: "" },
    });
    this.#compare = button(
      "We compared them: they match",
      async () => {
        this.#compare.disabled = true;
        try {
          await markCompared();
        } finally {
          this.#compare.disabled = false;
        }
      },
      { attrs: { "data-action": "mark-compared" } },
    );
    this.element = h(
      "section",
      { className: "safety panel", attrs: { id: "safety-panel", hidden: "", "aria-labelledby": "safety-heading" } },
      h("h2", { text: "Safety words", attrs: { id: "safety-heading", tabindex: "-1" } }),
      this.#firstContact,
      h("p", {
        text: "The other person sees the same 8 words in the same order, unless someone is in between. Read them to each other; never send them in this chat.",
      }),
      this.#words,
      this.#state,
      h("div", { className: "actions" }, this.#compare),
    );
    this.toggle = button("Safety words", () => this.show(this.element.hidden, { focus: true }), {
      className: "quiet",
      attrs: { "aria-expanded": "false", "aria-controls": "safety-panel", disabled: "" },
    });
  }

  /**
   * @param {boolean} open
   * @param {{focus?: boolean}} [options] move the focus into the panel (when the
   *   person opened it; never when it opens by itself, mid-sentence)
   */
  show(open, { focus = false } = {}) {
    this.element.hidden = !open;
    this.toggle.setAttribute("aria-expanded", String(open));
    if (open && focus) /** @type {HTMLElement} */ (this.element.querySelector("h2")).focus();
  }

  /**
   * @param {SafetyWordsEvent} event
   * @param {number} [now]
   */
  update({ words, firstContact, comparedAt }, now = Date.now()) {
    this.toggle.disabled = false;
    this.#words.replaceChildren(...words.map((word) => h("li", { text: word })));
    this.#firstContact.hidden = !(firstContact && comparedAt === null);
    if (comparedAt === null) {
      this.#state.textContent = "Not compared yet.";
      this.element.dataset.compared = "no";
    } else {
      const when = new Date(comparedAt);
      this.#state.replaceChildren(
        "Last compared ",
        h("time", { attrs: { datetime: when.toISOString(), title: when.toLocaleString() }, text: formatAgo(comparedAt, now) }),
        ".",
      );
      this.element.dataset.compared = "yes";
    }
    if (firstContact && comparedAt === null && this.element.hidden) this.show(true);
  }
}
