// File cards in the conversation: one per file, both directions, each with
// its progress, rate and time left, and the buttons that fit its state.
//
// Rules:
// * Sending: a card per file, at once; the engine queues them and reports
//   progress. Text never waits for them (the engine's lanes), so nothing here
//   blocks the composer.
// * Receiving: an offer waits for the person. "Save…" picks the best sink
//   (lib/sink.js) in the click itself (the save picker needs it); a file too
//   large for what this browser can do is refused before accepting, with the
//   reason shown here and sent to the peer.
// * After acceptFile() the engine owns the sink: it closes it (file_done) or
//   aborts it (file_failed).
// * Progress lines change every second, so they are aria-hidden; what a
//   screen reader should hear (offer, done, failed) is added to the log.

import { FileCode } from "./engine.js";
import { button, h } from "./dom.js";
import { formatSize, progressLine } from "./format.js";
import { SinkRefused, chooseSink } from "../lib/sink.js";

/** @typedef {import("./engine.js").Engine} Engine */
/** @typedef {import("./engine.js").EngineEvents} EngineEvents */
/** @typedef {import("./chat-log.js").ChatLog} ChatLog */
/** @typedef {import("../lib/sink.js").SinkKind} SinkKind */

/** What a file code means, in a few words (docs/protocol.md, "Records"). */
const CODE_TEXT = /** @type {Readonly<Record<number, string>>} */ ({
  [FileCode.DECLINED]: "declined",
  [FileCode.TOO_LARGE]: "too large",
  [FileCode.NO_SPACE]: "no space left",
  [FileCode.HASH_MISMATCH]: "damaged in transit",
  [FileCode.CANCELLED]: "cancelled",
  [FileCode.WRITE_FAILED]: "could not be written",
  [FileCode.BAD_NAME]: "unusable name",
});

/**
 * @param {number} code
 * @returns {string}
 */
export function describeCode(code) {
  return CODE_TEXT[code] ?? `code ${code}`;
}

const WHERE = /** @type {Readonly<Record<SinkKind, string>>} */ ({
  "file-picker": "Writing to the file you chose.",
  opfs: "Writing to this browser's storage; you save it when it is complete.",
  memory: "Keeping it in this tab's memory; you save it when it is complete.",
});

class FileCard {
  /** @readonly @type {HTMLElement} */ element;
  /** @readonly */ outgoing;
  /** @readonly */ name;
  /** @readonly */ size;
  /** @type {HTMLProgressElement} */ #bar;
  /** @type {HTMLElement} */ #line;
  /** @type {HTMLElement} */ #note;
  /** @type {HTMLElement} */ #actions;

  /**
   * @param {boolean} outgoing
   * @param {string} name
   * @param {number} size
   */
  constructor(outgoing, name, size) {
    this.outgoing = outgoing;
    this.name = name;
    this.size = size;
    this.#bar = h("progress", { attrs: { max: String(Math.max(size, 1)), value: "0", "aria-label": `${name}, progress` } });
    this.#line = h("p", { className: "file-progress", attrs: { "aria-hidden": "true" } });
    this.#note = h("p", { className: "file-note" });
    this.#actions = h("div", { className: "actions" });
    this.element = h(
      "article",
      { className: `file-card ${outgoing ? "out" : "in"}` },
      h(
        "p",
        { className: "file-head" },
        h("span", { className: "file-direction", text: outgoing ? "You send" : "They send" }),
        " ",
        h("span", { className: "file-name", text: name, attrs: { dir: "auto" } }),
        " ",
        h("span", { className: "file-size", text: `(${formatSize(size)})` }),
      ),
      this.#bar,
      this.#line,
      this.#note,
      this.#actions,
    );
  }

  /** @param {string} state */
  set state(state) {
    this.element.dataset.state = state;
  }

  get state() {
    return this.element.dataset.state ?? "";
  }

  /** @param {string} text */
  note(text) {
    this.#note.textContent = text;
  }

  /** @param {...HTMLElement} controls */
  actions(...controls) {
    this.#actions.replaceChildren(...controls);
  }

  /** @param {{done: number, size: number, rate: number, eta: number | null}} progress */
  progress(progress) {
    this.#bar.value = Math.min(progress.done, Math.max(this.size, 1));
    this.#line.textContent = progressLine(progress);
  }

  finish() {
    this.#bar.value = Math.max(this.size, 1);
    this.#line.textContent = `${formatSize(this.size)} of ${formatSize(this.size)} (100%)`;
  }
}

export class Transfers {
  /** @type {Map<string, FileCard>} */ #cards = new Map();
  /** @type {Engine} */ #engine;
  /** @type {ChatLog} */ #log;
  /** @type {string[]} */ #urls = [];

  /**
   * @param {Engine} engine
   * @param {ChatLog} log
   */
  constructor(engine, log) {
    this.#engine = engine;
    this.#log = log;
  }

  /**
   * @param {bigint} fileId
   * @param {boolean} outgoing
   * @returns {string}
   */
  static key(fileId, outgoing) {
    return `${outgoing ? "out" : "in"}:${fileId}`;
  }

  /**
   * Offer our files to the peer.
   * @param {File[]} files
   */
  send(files) {
    for (const file of files) {
      /** @type {bigint} */
      let fileId;
      try {
        fileId = this.#engine.sendFile(file);
      } catch (exc) {
        this.#log.addSystem(`${file.name} was not sent: ${exc instanceof Error ? exc.message : String(exc)}`, { level: "warning" });
        continue;
      }
      const card = new FileCard(true, file.name, file.size);
      card.state = "waiting";
      card.note("Waiting for them to accept.");
      card.actions(button("Cancel", () => this.#engine.cancelFile(fileId), { className: "quiet", attrs: { "data-action": "cancel-file" } }));
      this.#cards.set(Transfers.key(fileId, true), card);
      this.#log.addCard(card.element);
    }
  }

  /** @param {EngineEvents["file_offer"]} offer */
  offered({ fileId, name, size }) {
    const key = Transfers.key(fileId, false);
    if (this.#cards.has(key)) return; // a re-offer after a reconnect: the card is there
    const card = new FileCard(false, name, size);
    card.state = "offered";
    card.note("Save it, or decline.");
    const save = button("Save…", () => this.#accept(fileId, card), { className: "primary", attrs: { "data-action": "accept-file" } });
    const decline = button("Decline", () => {
      this.#engine.rejectFile(fileId, FileCode.DECLINED, "declined");
      card.state = "failed";
      card.note("You declined it.");
      card.actions();
    }, { attrs: { "data-action": "decline-file" } });
    card.actions(save, decline);
    this.#cards.set(key, card);
    this.#log.addCard(card.element);
  }

  /**
   * @param {bigint} fileId
   * @param {FileCard} card
   */
  async #accept(fileId, card) {
    if (card.state !== "offered") return;
    card.state = "choosing";
    /** @type {import("../lib/sink.js").SinkChoice | null} */
    let choice;
    try {
      choice = await chooseSink({ name: card.name, size: card.size });
    } catch (exc) {
      if (exc instanceof SinkRefused) {
        this.#engine.rejectFile(fileId, exc.code, exc.message);
        card.state = "failed";
        card.note(exc.message);
        card.actions();
        this.#log.addSystem(`Could not receive ${card.name}: ${exc.message}`, { level: "warning" });
        return;
      }
      card.state = "offered";
      card.note(`Could not start saving (${exc instanceof Error ? exc.message : String(exc)}). Try again, or decline.`);
      return;
    }
    if (choice === null) {
      card.state = "offered";
      return; // the save dialog was closed: the offer still stands
    }
    this.#engine.acceptFile(fileId, choice.sink);
    card.state = "receiving";
    card.note(WHERE[choice.kind]);
    card.actions(
      button("Stop", () => this.#engine.rejectFile(fileId, FileCode.CANCELLED, "stopped by the receiver"), {
        className: "quiet",
        attrs: { "data-action": "cancel-file" },
      }),
    );
  }

  /** @param {EngineEvents["file_progress"]} progress */
  progress(progress) {
    const card = this.#cards.get(Transfers.key(progress.fileId, progress.outgoing));
    if (!card) return;
    if (card.state === "waiting") {
      card.state = "sending";
      card.note("");
    }
    card.progress(progress);
  }

  /** @param {EngineEvents["file_done"]} done */
  done({ fileId, outgoing, name, file }) {
    const card = this.#cards.get(Transfers.key(fileId, outgoing));
    if (!card) return;
    card.state = "done";
    card.finish();
    if (outgoing) {
      card.note("Delivered: they have it.");
      card.actions();
      this.#log.addSystem(`They received ${name}.`);
      return;
    }
    if (file) {
      const url = URL.createObjectURL(file);
      this.#urls.push(url);
      const save = h("a", { className: "button primary", text: "Save to your device", attrs: { href: url, download: name, "data-action": "save-file" } });
      card.actions(save);
      card.note("Received. It stays in this tab until you save it or close the page.");
    } else {
      card.actions();
      card.note("Received and saved where you chose.");
    }
    this.#log.addSystem(`Received ${name}.`);
  }

  /** @param {EngineEvents["file_failed"]} failed */
  failed({ fileId, outgoing, name, code, reason }) {
    const card = this.#cards.get(Transfers.key(fileId, outgoing));
    const why = reason ? `${describeCode(code)}: ${reason}` : describeCode(code);
    if (card) {
      card.state = "failed";
      card.actions();
      card.note(outgoing ? `Not sent (${why}).` : `Not received (${why}).`);
    }
    this.#log.addSystem(`${outgoing ? "Sending" : "Receiving"} ${name} stopped (${why}).`, { level: "warning" });
  }

  /** Release the saved files' object URLs (the page is leaving the room). */
  dispose() {
    for (const url of this.#urls) URL.revokeObjectURL(url);
    this.#urls = [];
  }
}
