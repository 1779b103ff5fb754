// Numbers and times as the page shows them. No DOM: tested under Node.
//
// Sizes use the CLI's binary units (m42d/cli.py _human_size): whole bytes
// below 1 KiB, one decimal above, so both clients show the same figures.

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB"];

/**
 * @param {number} bytes
 * @returns {string} "0 B", "512 B", "1.5 KiB", "12.3 MiB", "2.0 GiB"
 */
export function formatSize(bytes) {
  if (!Number.isFinite(bytes) || bytes < 0) return "?";
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit++;
  }
  if (unit === 0) return `${Math.round(value)} B`;
  // 1023.95 KiB would round to "1024.0 KiB": show the next unit instead.
  if (value >= 1023.95 && unit < UNITS.length - 1) return `1.0 ${UNITS[unit + 1]}`;
  return `${value.toFixed(1)} ${UNITS[unit]}`;
}

/**
 * @param {number} bytesPerSecond
 * @returns {string} "2.1 MiB/s"
 */
export function formatRate(bytesPerSecond) {
  return `${formatSize(bytesPerSecond)}/s`;
}

/**
 * Time left, rounded up so a transfer never shows "0 s left" before it ends.
 * @param {number | null} seconds
 * @returns {string} "" when unknown, "1 s left", "2 min 5 s left", "1 h 3 min left"
 */
export function formatEta(seconds) {
  if (seconds === null || !Number.isFinite(seconds) || seconds < 0) return "";
  const s = Math.max(1, Math.ceil(seconds));
  if (s < 60) return `${s} s left`;
  if (s < 3600) {
    const rest = s % 60;
    return rest ? `${Math.floor(s / 60)} min ${rest} s left` : `${s / 60} min left`;
  }
  const minutes = Math.floor((s % 3600) / 60);
  const hours = Math.floor(s / 3600);
  if (hours >= 48) return `${Math.round(hours / 24)} days left`;
  return minutes ? `${hours} h ${minutes} min left` : `${hours} h left`;
}

/**
 * @param {number} done
 * @param {number} size
 * @returns {number} whole percent, 100 only when done
 */
export function percent(done, size) {
  if (size <= 0) return 100;
  if (done >= size) return 100;
  return Math.min(99, Math.floor((100 * done) / size));
}

/**
 * One line of progress, the CLI's order: "12.3 MiB of 40.0 MiB (30%), 2.1 MiB/s, 15 s left".
 * @param {{done: number, size: number, rate: number, eta: number | null}} progress
 * @returns {string}
 */
export function progressLine({ done, size, rate, eta }) {
  const parts = [`${formatSize(done)} of ${formatSize(size)} (${percent(done, size)}%)`];
  if (done < size) {
    parts.push(formatRate(rate));
    const left = formatEta(eta);
    if (left) parts.push(left);
  }
  return parts.join(", ");
}

/**
 * How long ago `then` was, for "last compared ...".
 * @param {number} then ms since the epoch
 * @param {number} now ms since the epoch
 * @returns {string} "just now", "5 minutes ago", "yesterday", "12 days ago"
 */
export function formatAgo(then, now) {
  const seconds = Math.floor((now - then) / 1000);
  if (seconds < 60) return "just now";
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return minutes === 1 ? "1 minute ago" : `${minutes} minutes ago`;
  const hours = Math.floor(minutes / 60);
  if (hours < 24) return hours === 1 ? "1 hour ago" : `${hours} hours ago`;
  const days = Math.floor(hours / 24);
  return days === 1 ? "yesterday" : `${days} days ago`;
}

/**
 * The UTF-8 length of a text without encoding it (a lone surrogate counts
 * as U+FFFD, 3 bytes, as TextEncoder writes it).
 * @param {string} text
 * @returns {number}
 */
export function utf8Length(text) {
  let n = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < text.length) {
      const d = text.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        n += 4;
        i++;
      } else n += 3;
    } else n += 3;
  }
  return n;
}
