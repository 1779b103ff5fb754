// The contract between the page (ui/*.js, app.js) and the client engine.
//
// The engine is the browser twin of m42d/client/engine.py: it joins a seat,
// runs the session (docs/protocol.md, "End-to-end session"), keeps the
// room's static key and the peer's pin, streams files, reconnects. The page
// only shows what the engine reports and calls the methods below. The events
// are those of m42d/client/events.py, with these changes (protocol v2):
// * the per-handshake SAS is replaced by *safety words*: 8 words that stay
//   the same while neither static key changes (`safety_words`), and
//   `key_changed` carries the new words;
// * file events carry no sha256 (chunks are authenticated one by one);
// * `sent` (the text left this browser, sealed) precedes `delivered` (the
//   peer acknowledged it), for the two ticks;
// * `keystore` says whether the static key survives the tab (IndexedDB) or
//   lives in memory only (private modes).
//
// Rules for an implementation:
// * Events are delivered through an Emitter (below), in the order things
//   happened; a listener that throws does not stop the engine or the other
//   listeners (its error is reported with reportError()).
// * Texts and names in events are the peer's own. The page shows them with
//   textContent only; an engine must not pre-escape them (that would show
//   "&lt;" to the reader).
// * File names in events are already cleaned (twin of
//   m42d/client/names.py safe_file_name).
// * u64 protocol values (text seq, file ids) are BigInt; byte counts are
//   Numbers (a File's size is one).
// * Methods never throw for the peer's misbehaviour (that is an `error`
//   event); they throw LocalProtocolError for a caller's mistake (an unknown
//   file id, a text over the cap).
// * After acceptFile() the engine owns the sink: it closes it before
//   `file_done` or aborts it before `file_failed`. Every transfer ends in one
//   of the two, cancelFile() and rejectFile() included.

/** A text is at most 1 MiB of UTF-8 (docs/protocol.md, "Texts"). */
export const MAX_TEXT_BYTES = 1 << 20;

/** Safety words shown per room (two static keys -> 8 words). */
export const SAFETY_WORDS = 8;

/**
 * Where the page finds the SAS word list, relative to the page (the twin of
 * m42d.web.pages.WORDLIST_PATH; a test checks the two agree).
 */
export const WORDLIST_URL = "eff_large_wordlist.txt";

/**
 * Why a file transfer ended without success: the wire codes of
 * docs/protocol.md, "Records" (Python twin: m42d.session.FileCode). A
 * receiver may see numbers not listed here and shows them as they are.
 */
export const FileCode = Object.freeze({
  DECLINED: 1,
  TOO_LARGE: 2,
  NO_SPACE: 3,
  HASH_MISMATCH: 4,
  CANCELLED: 5,
  WRITE_FAILED: 6,
  BAD_NAME: 7,
});

/**
 * What the engine writes an accepted file into (lib/sink.js makes them).
 * Writes come in order, except that after a reconnect a transfer may resume
 * from an earlier chunk boundary, overwriting what follows it.
 * @typedef {object} FileSink
 * @property {(offset: number, bytes: Uint8Array) => Promise<void>} write
 * @property {() => Promise<File | void>} close the file is complete: commit it;
 *   a File to offer for saving (memory, OPFS), or nothing if it is already
 *   where the user chose (File System Access API)
 * @property {() => Promise<void>} abort discard everything written
 */

/**
 * Every event, by type, with what it carries.
 * @typedef {object} EngineEvents
 * @property {{relay: string}} connected joined the seat on the relay (every reconnect too)
 * @property {{delay: number, reason: string}} reconnecting the connection ended; the
 *   next attempt starts in `delay` seconds
 * @property {{}} peer_up the other seat is connected
 * @property {{}} peer_down the other seat left
 * @property {{persistent: boolean}} keystore whether this room's static key is kept
 *   beyond this tab (false: IndexedDB is unavailable, e.g. a private window)
 * @property {{words: string[], firstContact: boolean, comparedAt: number | null}} safety_words
 *   the room's 8 safety words, whether the peer's key was pinned just now, and
 *   when (ms since the epoch) the user last marked them compared, if ever;
 *   sent after each handshake and after markCompared()
 * @property {{words: string[]}} key_changed the peer's static key is not the
 *   pinned one: nothing flows until trust() (the words are the new ones)
 * @property {{seq: bigint, text: string}} text a text from the peer
 * @property {{seq: bigint}} sent our text `seq` left this browser
 * @property {{seq: bigint}} delivered the peer acknowledged our text `seq`
 * @property {{fileId: bigint, name: string, size: number}} file_offer the peer offers
 *   a file: answer with acceptFile() or rejectFile()
 * @property {{fileId: bigint, outgoing: boolean, name: string, done: number, size: number,
 *   rate: number, eta: number | null}} file_progress bytes confirmed so far; `rate` in
 *   bytes/s, `eta` in seconds (null if unknown)
 * @property {{fileId: bigint, outgoing: boolean, name: string, size: number,
 *   file: File | null}} file_done incoming: the sink was closed (`file` is what its
 *   close() returned, to offer for saving); outgoing: the peer confirmed it
 * @property {{fileId: bigint, outgoing: boolean, name: string, code: number,
 *   reason: string}} file_failed a transfer ended without success (`code`: FileCode)
 * @property {{message: string, fatal: boolean, code: number | null, cause?: string}} error
 *   something went wrong; `fatal`: the engine stopped (`code`: the relay's ERROR
 *   code, e.g. 411 for a burned room); `cause` "wrong_secret": the two links' room
 *   secrets differ (said once, as m42's Problem.cause)
 */

/** @typedef {keyof EngineEvents} EngineEventType */

/**
 * @template {EngineEventType} K
 * @typedef {(detail: EngineEvents[K]) => void} Listener
 */

/**
 * The client engine of one seat in one room.
 * @typedef {object} Engine
 * @property {<K extends EngineEventType>(type: K, listener: Listener<K>) => () => void} on
 *   subscribe; returns the function that unsubscribes
 * @property {"A" | "B"} seat
 * @property {() => void} start connect and keep reconnecting until close()
 * @property {(text: string) => bigint} sendText queue a text (at most
 *   MAX_TEXT_BYTES of UTF-8); its seq comes back in `sent` and `delivered`
 * @property {(file: File) => bigint} sendFile offer a file; read by slices, never whole
 * @property {(fileId: bigint, sink: FileSink) => void} acceptFile receive an offered file into `sink`
 * @property {(fileId: bigint, code: number, reason: string) => void} rejectFile refuse an
 *   offer or stop receiving (`code`: FileCode; `reason` is shown to the peer)
 * @property {(fileId: bigint) => void} cancelFile stop sending one of our files
 * @property {() => void} trust accept the changed peer key (after the people
 *   compared the new words); the session resumes
 * @property {() => Promise<void>} markCompared record that the words were compared
 *   now; a `safety_words` event follows with the new comparedAt
 * @property {() => Promise<void>} burn burn the room on the relay: both links stop
 *   working; the engine stops
 * @property {() => void} close leave (the seat stays valid)
 */

/**
 * What the page needs before it has an engine: making a room and opening one.
 * @typedef {object} Backend
 * @property {(relayUrl: string) => Promise<{linkA: string, linkB: string}>} createRoom ask
 *   the relay for a room and draw its secret R here; the links' relay URL is `relayUrl`
 * @property {(link: string) => Engine} openRoom an engine for the seat of `link`
 *   (not started); throws LinkError for a bad link
 */

/**
 * A small typed event emitter for engines. Not EventTarget: its listeners
 * would get Event objects, and a throwing listener would be silent.
 */
export class Emitter {
  /** @type {Map<EngineEventType, Set<(detail: any) => void>>} */
  #listeners = new Map();

  /**
   * @template {EngineEventType} K
   * @param {K} type
   * @param {Listener<K>} listener
   * @returns {() => void} unsubscribe
   */
  on(type, listener) {
    let set = this.#listeners.get(type);
    if (set === undefined) {
      set = new Set();
      this.#listeners.set(type, set);
    }
    set.add(listener);
    return () => {
      set.delete(listener);
    };
  }

  /**
   * Call every listener of `type`; one that throws is reported, not propagated.
   * @template {EngineEventType} K
   * @param {K} type
   * @param {EngineEvents[K]} detail
   */
  emit(type, detail) {
    for (const listener of [...(this.#listeners.get(type) ?? [])]) {
      try {
        listener(detail);
      } catch (exc) {
        report(exc);
      }
    }
  }
}

/**
 * @param {unknown} exc
 */
function report(exc) {
  if (typeof globalThis.reportError === "function") globalThis.reportError(exc);
  else queueMicrotask(() => {
    throw exc;
  });
}
