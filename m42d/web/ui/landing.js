// The landing page: make a room, or open a link that was pasted rather than
// clicked (a link made by the m42 command line tool names a ws:// or wss://
// relay, which a browser does not open by itself).

import { button, h } from "./dom.js";

/**
 * @typedef {object} LandingActions
 * @property {(report: (message: string) => void) => Promise<void>} create make a room
 *   (report() shows why it failed)
 * @property {(link: string, report: (message: string) => void) => void} open open a pasted link
 */

/**
 * @param {LandingActions} actions
 * @returns {HTMLElement}
 */
export function landingScreen(actions) {
  const createError = h("p", { className: "form-error", attrs: { role: "alert" } });
  const create = button(
    "Create a room",
    async () => {
      create.disabled = true;
      create.textContent = "Creating…";
      createError.textContent = "";
      try {
        await actions.create((message) => {
          createError.textContent = message;
        });
      } finally {
        create.disabled = false;
        create.textContent = "Create a room";
      }
    },
    { className: "primary large", attrs: { "data-action": "create-room" } },
  );

  const field = h("textarea", {
    className: "link-field",
    attrs: {
      id: "paste-link",
      rows: "3",
      spellcheck: "false",
      autocomplete: "off",
      placeholder: "https://relay.example.org#m42.1.B…",
    },
  });
  const openError = h("p", { className: "form-error", attrs: { role: "alert", id: "paste-error" } });
  field.setAttribute("aria-describedby", "paste-error");
  const form = h(
    "form",
    { className: "open-link" },
    h("label", { attrs: { for: "paste-link" }, text: "Paste a link you were given" }),
    field,
    h("div", { className: "actions" }, h("button", { text: "Open", attrs: { type: "submit" } })),
    openError,
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    openError.textContent = "";
    actions.open(field.value, (message) => {
      openError.textContent = message;
    });
  });

  return h(
    "section",
    { className: "landing", attrs: { "aria-labelledby": "landing-heading" } },
    h("h1", { text: "Private chat for two", attrs: { id: "landing-heading" } }),
    h("p", {
      className: "lead",
      text: "Talk and swap files with one other person. Everything is encrypted here, in your browser; the relay passes it on and keeps nothing.",
    }),
    h("div", { className: "actions" }, create),
    createError,
    h("h2", { text: "Have a link?" }),
    h("p", { text: "Links open this page by themselves. If yours came from the m42 command line tool, paste it here." }),
    form,
  );
}
