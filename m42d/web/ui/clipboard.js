// Copying a link to the clipboard, with a way out where the browser refuses.
//
// navigator.clipboard needs a secure context and a click; where it is
// missing or refused (a permission prompt dismissed, an embedded view), the
// text is selected in its field so Ctrl+C / long-press copies it, and the
// person is told so.

/**
 * Copy `text`; on failure select it in `field`.
 * @param {string} text
 * @param {HTMLInputElement | HTMLTextAreaElement} field shows the same text
 * @returns {Promise<boolean>} whether the clipboard now holds it
 */
export async function copyText(text, field) {
  try {
    if (!navigator.clipboard?.writeText) throw new Error("no clipboard API");
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    field.focus();
    field.select();
    return false;
  }
}
