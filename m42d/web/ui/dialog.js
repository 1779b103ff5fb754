// Modal dialogs (<dialog>.showModal(): focus stays inside, Escape cancels,
// the page behind is inert) for the two decisions that cannot be undone or
// must not be made by accident: burning the room and trusting a new key.

import { button, h } from "./dom.js";

/**
 * @typedef {object} DialogSpec
 * @property {string} title
 * @property {(Node | string)[]} body paragraphs and lists; strings become text
 * @property {string} confirm the label of the button that does it
 * @property {string} [cancel]
 * @property {boolean} [danger] style the confirm button as destructive
 * @property {string} [name] data-dialog, for tests and styles
 */

/**
 * Show a modal dialog; resolves true if the person confirmed.
 * @param {DialogSpec} spec
 * @returns {Promise<boolean>}
 */
export function ask(spec) {
  return new Promise((resolve) => {
    const opener = document.activeElement instanceof HTMLElement ? document.activeElement : null;
    const titleId = `dialog-title-${Math.random().toString(36).slice(2)}`;
    /** @type {HTMLDialogElement} */
    const dialog = h("dialog", { className: "dialog", attrs: { "aria-labelledby": titleId } });
    if (spec.name) dialog.dataset.dialog = spec.name;
    let answer = false;
    const confirm = button(spec.confirm, () => {
      answer = true;
      dialog.close();
    }, { className: spec.danger ? "danger" : "primary", attrs: { "data-action": "confirm" } });
    const cancel = button(spec.cancel ?? "Cancel", () => dialog.close(), {
      attrs: { "data-action": "cancel", autofocus: "" },
    });
    dialog.append(
      h("h2", { text: spec.title, attrs: { id: titleId } }),
      ...spec.body.map((part) => (typeof part === "string" ? h("p", { text: part }) : part)),
      h("div", { className: "actions" }, cancel, confirm),
    );
    dialog.addEventListener("close", () => {
      dialog.remove();
      opener?.focus();
      resolve(answer);
    });
    document.body.append(dialog);
    dialog.showModal();
    // The safe button has the focus; the reading starts at the title, even
    // where the dialog is taller than a phone's screen.
    dialog.scrollTop = 0;
  });
}
