// The other person's key changed: nothing flows until this person, having
// compared the new safety words with them, decides to trust it.
//
// A changed key is what a man-in-the-middle looks like, but far more often
// the other person opened their link in another browser or cleared its data.
// The dialog says both, shows the new words, and makes "not now" the safe
// default (Escape, the focused button).

import { ask } from "./dialog.js";
import { h } from "./dom.js";

/**
 * @param {string[]} words the new safety words
 * @returns {Promise<boolean>} true if the person chose to trust the new key
 */
export function askTrustNewKey(words) {
  return ask({
    name: "key-changed",
    title: "Their key changed",
    body: [
      "This browser knew another key for them. Usually they opened their link in another browser or cleared its data, but someone listening in between would look the same.",
      "Nothing is sent or received until you decide. Call or meet them and compare these words:",
      h("ol", { className: "words" }, ...words.map((word) => h("li", { text: word }))),
      "Trust the new key only if they see exactly these words.",
    ],
    confirm: "They match: trust the new key",
    cancel: "Not now",
  });
}
