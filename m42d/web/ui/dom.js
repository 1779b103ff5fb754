// Building elements without markup: every text goes in as a Text node.
//
// Rule: nothing in the page assigns innerHTML, outerHTML or insertAdjacentHTML,
// or uses document.write; the CSP's Trusted Types make those throw in
// Chromium anyway. Peer texts, file names and relay messages reach the page
// only through the `text` option or as string children (Element.append turns
// a string into a Text node, never into markup).

/**
 * @typedef {object} Props
 * @property {string} [className]
 * @property {string} [text] the element's whole text
 * @property {Record<string, string>} [attrs] attributes (no "on*" handlers: they would be inline script)
 */

/**
 * @template {keyof HTMLElementTagNameMap} K
 * @param {K} tag
 * @param {Props} [props]
 * @param {...(Node | string)} children strings become Text nodes
 * @returns {HTMLElementTagNameMap[K]}
 */
export function h(tag, props = {}, ...children) {
  const element = document.createElement(tag);
  if (props.className) element.className = props.className;
  for (const [name, value] of Object.entries(props.attrs ?? {})) {
    if (name.toLowerCase().startsWith("on")) throw new TypeError(`no inline handlers: ${name}`);
    element.setAttribute(name, value);
  }
  if (props.text !== undefined) element.textContent = props.text;
  element.append(...children);
  return element;
}

/**
 * A button that runs `action` on click (and so on Enter and Space).
 * @param {string} label
 * @param {(event: MouseEvent) => void} action
 * @param {Props} [props]
 * @returns {HTMLButtonElement}
 */
export function button(label, action, props = {}) {
  const element = h("button", { ...props, text: label, attrs: { type: "button", ...props.attrs } });
  element.addEventListener("click", action);
  return element;
}

/**
 * Text only screen readers read (the .sr-only class in app.css).
 * @param {string} text
 * @returns {HTMLSpanElement}
 */
export function srOnly(text) {
  return h("span", { className: "sr-only", text });
}
