// Python's string semantics, where the protocol's rules were written against
// them. Python twin: the str methods m42d/link.py and m42d/crypto/sas.py call
// (strip, len, splitlines).
//
// Rules:
// * "Whitespace" is exactly what Python's str.strip() removes (str.isspace()),
//   not JS's trim() set: Python also strips U+001C..U+001F and U+0085, JS also
//   strips U+FEFF. The link parser must refuse the same texts on both sides.
// * A length is counted in code points, as Python's len(), not in UTF-16 units.
// * Lines are split as Python's str.splitlines() splits them.
// * A string with a lone surrogate has no UTF-8 form: Python's encode()
//   refuses it, where JS's TextEncoder would quietly write U+FFFD.

/** Python's str.isspace() set (all in the BMP). */
const WHITESPACE = new Set([
  0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x1c, 0x1d, 0x1e, 0x1f, 0x20, 0x85, 0xa0, 0x1680, 0x2000, 0x2001,
  0x2002, 0x2003, 0x2004, 0x2005, 0x2006, 0x2007, 0x2008, 0x2009, 0x200a, 0x2028, 0x2029, 0x202f,
  0x205f, 0x3000,
]);

/** Python's str.splitlines() boundaries, \r\n being one. */
const LINE_BREAK = /\r\n|[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]/;

/**
 * Python's str.strip() with no argument.
 * @param {string} text
 * @returns {string}
 */
export function strip(text) {
  let start = 0;
  let end = text.length;
  while (start < end && WHITESPACE.has(text.charCodeAt(start))) start++;
  while (end > start && WHITESPACE.has(text.charCodeAt(end - 1))) end--;
  return text.slice(start, end);
}

/**
 * Python's len() of a str: code points (a lone surrogate counts one).
 * @param {string} text
 * @returns {number}
 */
export function codePoints(text) {
  let n = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < text.length) {
      const d = text.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) i++;
    }
    n++;
  }
  return n;
}

/**
 * Python's str.isascii().
 * @param {string} text
 * @returns {boolean}
 */
export function isAscii(text) {
  for (let i = 0; i < text.length; i++) if (text.charCodeAt(i) > 0x7f) return false;
  return true;
}

/**
 * Python's str.splitlines(): no empty last line for a final line break.
 * @param {string} text
 * @returns {string[]}
 */
export function splitLines(text) {
  if (!text) return [];
  const lines = text.split(new RegExp(LINE_BREAK.source, "g"));
  if (lines[lines.length - 1] === "") lines.pop();
  return lines;
}

/**
 * Whether a string holds a lone surrogate (which has no UTF-8 form).
 * @param {string} text
 * @returns {boolean}
 */
export function hasLoneSurrogate(text) {
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff) {
      const d = i + 1 < text.length ? text.charCodeAt(i + 1) : 0;
      if (d < 0xdc00 || d > 0xdfff) return true;
      i++;
    } else if (c >= 0xdc00 && c <= 0xdfff) {
      return true;
    }
  }
  return false;
}
