// Shared by the Node tests of m42d/web/lib: where the files are, and the rule
// for third-party vectors (tests/conftest.py's): skip when absent, fail under CI.

import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
export const VECTORS_DIR = process.env.M42_VECTORS_DIR ?? path.join(ROOT, "..", "shared", "vectors");
export const WORDLIST_PATH = path.join(ROOT, "m42d", "crypto", "data", "eff_large_wordlist.txt");

/**
 * A JSON file of docs/vectors/ (published by the Python tests).
 * @param {string} name
 * @returns {any}
 */
export function publishedVectors(name) {
  return JSON.parse(readFileSync(path.join(ROOT, "docs", "vectors", name), "utf8"));
}

/**
 * The third-party Noise vector files, or a reason to skip (an Error under CI).
 * @returns {{files: Record<string, any[]>} | {skip: string}}
 */
export function noiseVectors() {
  const names = ["cacophony.txt", "snow.txt"];
  if (!names.every((name) => existsSync(path.join(VECTORS_DIR, name)))) {
    const message = `Noise test vectors not found in ${VECTORS_DIR} (set M42_VECTORS_DIR)`;
    if (process.env.CI) throw new Error(message);
    return { skip: message };
  }
  /** @type {Record<string, any[]>} */
  const files = {};
  for (const name of names) {
    files[name] = JSON.parse(readFileSync(path.join(VECTORS_DIR, name), "utf8")).vectors;
  }
  return { files };
}
