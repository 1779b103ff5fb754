// Making a file name from the peer safe to show and to save.
// Python twin: m42d/client/names.py (safe_file_name); both pass
// tests/js/names-cases.json.
//
// Everything the peer sends is hostile until proven otherwise: a name may try
// to climb out of a folder ("../../.bashrc"), hide its real extension behind a
// right-to-left override ("invoice\u202egpj.exe") or carry control characters.
//
// Rules (the twin's):
// * The result is one path component (the last real one of a path): no "/",
//   "\", NUL or other control, format (bidi, zero-width) or line-separator
//   characters, never empty, never starting with "." (so never ".", ".." or a
//   hidden file), at most MAX_NAME_BYTES bytes of UTF-8, keeping a short
//   extension when it has to cut.

export const MAX_NAME_BYTES = 200;
export const MAX_EXTENSION_BYTES = 16;
export const FALLBACK_NAME = "file";

// Cc: controls; Cf: format (bidi, zero-width, BOM); Cs: lone surrogates;
// Zl/Zp: line and paragraph separators; Co/Cn: private use and unassigned.
const UNSAFE = /[\p{Cc}\p{Cf}\p{Cs}\p{Zl}\p{Zp}\p{Co}\p{Cn}\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/gu;

const encoder = new TextEncoder();

/** @param {string} text */
const utf8Length = (text) => encoder.encode(text).length;

/**
 * The longest prefix of `text` whose UTF-8 fits in `limit` bytes (whole code points).
 * @param {string} text
 * @param {number} limit
 */
function cutUtf8(text, limit) {
  let out = "";
  let size = 0;
  for (const char of text) {
    size += utf8Length(char);
    if (size > limit) break;
    out += char;
  }
  return out;
}

/**
 * Python's str.strip() set of whitespace, as the twin strips.
 * @param {string} text
 */
const strip = (text) => text.replace(/^[\s\u001c-\u001f\u0085]+|[\s\u001c-\u001f\u0085]+$/gu, "");

/**
 * A file name from the peer made into one harmless path component.
 * @param {string} name
 * @param {number} [maxBytes]
 * @returns {string}
 */
export function safeFileName(name, maxBytes = MAX_NAME_BYTES) {
  const visible = name.normalize("NFC").replace(UNSAFE, "").replace(/\\/g, "/");
  // Like a browser: a path keeps only its last real component.
  let cleaned = "";
  for (const part of visible.split("/").reverse()) {
    // No leading dots (hidden files, "." and ".."); no trailing dots or spaces.
    cleaned = strip(strip(part).replace(/^\.+/, "")).replace(/[. ]+$/, "");
    if (cleaned) break;
  }
  if (!cleaned) return FALLBACK_NAME;
  if (utf8Length(cleaned) <= maxBytes) return cleaned;
  const dot = cleaned.lastIndexOf(".");
  if (dot > 0) {
    const ext = cleaned.slice(dot + 1);
    const extBytes = utf8Length(ext);
    if (extBytes > 0 && extBytes <= MAX_EXTENSION_BYTES) {
      const suffix = `.${ext}`;
      const cut = cutUtf8(cleaned.slice(0, dot), maxBytes - utf8Length(suffix)).replace(/[. ]+$/, "");
      if (cut) return cut + suffix;
    }
  }
  return cutUtf8(cleaned, maxBytes).replace(/[. ]+$/, "") || FALLBACK_NAME;
}
