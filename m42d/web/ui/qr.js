// A QR code of a link, drawn in the page as SVG built with DOM calls.
//
// Rules:
// * Byte mode (the link's UTF-8 bytes, passed as bytes so the encoder cannot
//   pick another mode), error correction M, the smallest version that fits:
//   a Link B of 155 characters is version 9, 199 (with a pin) version 10.
// * The encoder is vendored unmodified (vendor/uqr, see its README); only its
//   module matrix is used, never its string renderers: the SVG is made with
//   createElementNS and numeric attributes, so no markup is ever parsed.
// * Dark on light whatever the page's colour scheme, with the standard's
//   four-module quiet zone: phone cameras need both.

import { encode } from "../vendor/uqr/index.mjs";

export const QUIET_ZONE = 4;
export const ERROR_CORRECTION = "M";
/** Version 40 at level M holds 2,331 bytes, more than the longest link (1,280 characters). */
export const MAX_VERSION = 40;

const SVG_NS = "http://www.w3.org/2000/svg";

/**
 * @typedef {object} QrMatrix
 * @property {number} version 1..40
 * @property {number} size modules per side, without the quiet zone
 * @property {number} mask the mask pattern chosen, 0..7
 * @property {boolean[][]} dark dark[row][column]
 */

/**
 * The module matrix of `text` (byte mode, level M).
 * @param {string} text
 * @param {{mask?: number}} [options] a fixed mask pattern (tests compare with another encoder)
 * @returns {QrMatrix}
 */
export function qrMatrix(text, { mask = -1 } = {}) {
  const bytes = Array.from(new TextEncoder().encode(text));
  const qr = encode(bytes, {
    ecc: ERROR_CORRECTION,
    border: 0,
    maskPattern: mask,
    boostEcc: false,
    maxVersion: MAX_VERSION,
  });
  return { version: qr.version, size: qr.size, mask: qr.maskPattern, dark: qr.data };
}

/**
 * The SVG path data of the dark modules: one rectangle per horizontal run,
 * offset by the quiet zone.
 * @param {QrMatrix} matrix
 * @returns {string}
 */
export function qrPathData(matrix) {
  const parts = [];
  for (let y = 0; y < matrix.size; y++) {
    const row = matrix.dark[y];
    for (let x = 0; x < matrix.size; ) {
      if (!row[x]) {
        x++;
        continue;
      }
      let end = x + 1;
      while (end < matrix.size && row[end]) end++;
      parts.push(`M${x + QUIET_ZONE} ${y + QUIET_ZONE}h${end - x}v1h${x - end}z`);
      x = end;
    }
  }
  return parts.join("");
}

/**
 * An <svg> element showing `text` as a QR code.
 * @param {Document} doc
 * @param {string} text
 * @param {string} label what the code holds, for screen readers
 * @returns {SVGSVGElement}
 */
export function qrSvg(doc, text, label) {
  const matrix = qrMatrix(text);
  const side = matrix.size + 2 * QUIET_ZONE;
  const svg = /** @type {SVGSVGElement} */ (doc.createElementNS(SVG_NS, "svg"));
  svg.setAttribute("viewBox", `0 0 ${side} ${side}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", label);
  svg.setAttribute("shape-rendering", "crispEdges");
  svg.setAttribute("class", "qr");
  svg.dataset.version = String(matrix.version);
  svg.dataset.mask = String(matrix.mask);
  const background = doc.createElementNS(SVG_NS, "rect");
  background.setAttribute("width", String(side));
  background.setAttribute("height", String(side));
  background.setAttribute("fill", "#fff");
  const modules = doc.createElementNS(SVG_NS, "path");
  modules.setAttribute("d", qrPathData(matrix));
  modules.setAttribute("fill", "#000");
  svg.append(background, modules);
  return svg;
}
