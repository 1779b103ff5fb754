// The invitation: Link B as text, a copy button and a QR code, so Alice can
// hand it to Bob by message or by letting his phone's camera read her screen.

import { copyText } from "./clipboard.js";
import { button, h } from "./dom.js";
import { qrSvg } from "./qr.js";

/**
 * @param {string} linkB
 * @returns {HTMLElement}
 */
export function invitePanel(linkB) {
  const field = h("input", {
    className: "link-field",
    attrs: {
      type: "text",
      readonly: "",
      id: "link-b",
      spellcheck: "false",
      autocomplete: "off",
      "aria-describedby": "link-b-hint",
    },
  });
  field.value = linkB;
  field.addEventListener("focus", () => field.select());
  const result = h("p", { className: "copy-result", attrs: { "aria-live": "polite" } });
  const copy = button(
    "Copy link",
    async () => {
      const copied = await copyText(linkB, field);
      result.textContent = copied
        ? "Copied. Send it over a channel you trust."
        : "Your browser did not let the page copy: the link is selected, copy it with Ctrl+C (or long-press).";
    },
    { className: "primary", attrs: { "data-action": "copy-link-b" } },
  );
  const heading = h("h2", { text: "Invite the other person", attrs: { id: "invite-heading", tabindex: "-1" } });
  return h(
    "section",
    { className: "invite panel", attrs: { "aria-labelledby": "invite-heading" } },
    heading,
    h("p", {
      attrs: { id: "link-b-hint" },
      text: "Send them this link. Whoever opens it joins this room as them, so send it only to them, over a channel you trust, or let them scan the code.",
    }),
    h("label", { attrs: { for: "link-b" }, text: "Their link (Link B)" }),
    h("div", { className: "link-row" }, field, copy),
    result,
    h("figure", { className: "qr-figure" }, qrSvg(document, linkB, "QR code of their link"), h("figcaption", { text: "Or scan this with their phone." })),
  );
}
