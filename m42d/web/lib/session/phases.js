// The phases of a session, and the one table of the transitions between them.
// Python twin: m42d/session/phases.py.
//
// In the style of h11's _state.py: the machine never assigns a phase; it
// fires a trigger, and TRANSITIONS says where that leads from the phase it
// is in. A pair the table does not list is a bug in the machine, not
// something the peer did, and throws LocalProtocolError.
//
// Rules and invariants (the twin's):
// * OFFLINE: the peer is not known to be online (or this side just trusted a
//   changed key and has not seen it since). Nothing is sealed; records wait.
// * HANDSHAKE: a handshake is in flight or due (A retries, B waits for HS1
//   and repeats its RESET). A renewing A is here too: it still receives on
//   the old keys but holds back what it sends.
// * ESTABLISHED: keys are confirmed; records are sealed and sent at once. A
//   HS1 does not leave it (message 1 proves nothing); HS3 or B's HELLO moves
//   it to the new keys without leaving it.
// * BLOCKED: the peer presented a key other than the pinned one. Nothing
//   flows, B ignores HS1, A starts no handshake, until the user trusts the
//   key or that peer goes (PEER_OFFLINE: the changed key is forgotten, and
//   the next presence gets a fresh handshake, which the pinned key passes and
//   a changed one blocks again: so a room recovers by itself once a device
//   that opened someone's link leaves and theirs comes back). A new presence
//   without a leaving, failures and garbage leave it BLOCKED.
// * Triggers from the outside are legal wherever they can arrive: the glue's
//   PEER_ONLINE and PEER_OFFLINE and the FAIL_OFFLINE any input can cause in
//   every phase, FAIL in every phase the peer can be online in (all but
//   OFFLINE). The others are fired only where the machine's own state implies
//   the phase: START only while HANDSHAKE, RENEW only while ESTABLISHED,
//   ESTABLISH and KEY_CHANGED only with a handshake in flight, HS1 never
//   while BLOCKED, TRUST only while BLOCKED.

import { LocalProtocolError } from "../errors.js";

export const Phase = Object.freeze({
  OFFLINE: "offline",
  HANDSHAKE: "handshake",
  ESTABLISHED: "established",
  BLOCKED: "blocked",
});
/** @typedef {typeof Phase[keyof typeof Phase]} PhaseName */

/** Each trigger's value says what it does, for the message of a bad move. */
export const Trigger = Object.freeze({
  PEER_ONLINE: "see the peer come online", // JOINED with the peer, PEER_UP
  PEER_OFFLINE: "see the peer go offline", // PEER_DOWN, or our connection dropped
  START: "start a fresh handshake", // A sends HS1 (fresh)
  RENEW: "renew the keys", // A sends HS1 (renew) on the live session
  HS1: "answer a HS1", // B sends HS2
  ESTABLISH: "install new keys", // B read HS3, or A read B's HELLO on the new keys
  KEY_CHANGED: "meet a changed peer key", // the peer's static key is not the pinned one
  TRUST: "trust the changed key", // the user accepted it
  FAIL: "fail", // the session or the handshake broke, with the peer online
  FAIL_OFFLINE: "fail offline", // ... with the peer offline
});
/** @typedef {typeof Trigger[keyof typeof Trigger]} TriggerName */

const O = Phase.OFFLINE;
const H = Phase.HANDSHAKE;
const E = Phase.ESTABLISHED;
const B = Phase.BLOCKED;

/** @type {ReadonlyArray<readonly [PhaseName, TriggerName, PhaseName]>} */
const TABLE = [
  [O, Trigger.PEER_ONLINE, H],
  [O, Trigger.PEER_OFFLINE, O],
  [O, Trigger.HS1, H], // an HS1 before the relay said the peer is there
  [O, Trigger.FAIL_OFFLINE, O],
  [H, Trigger.PEER_ONLINE, H],
  [H, Trigger.PEER_OFFLINE, O],
  [H, Trigger.START, H],
  [H, Trigger.HS1, H],
  [H, Trigger.ESTABLISH, E],
  [H, Trigger.KEY_CHANGED, B],
  [H, Trigger.FAIL, H],
  [H, Trigger.FAIL_OFFLINE, O],
  [E, Trigger.PEER_ONLINE, H], // a new presence: whatever keys we had may be stale
  [E, Trigger.PEER_OFFLINE, O],
  [E, Trigger.RENEW, H],
  [E, Trigger.HS1, E], // HS1 proves nothing: the session stands until HS3
  [E, Trigger.ESTABLISH, E], // B: a renewal, or a fresh session over a live one
  [E, Trigger.KEY_CHANGED, B],
  [E, Trigger.FAIL, H],
  [E, Trigger.FAIL_OFFLINE, O],
  [B, Trigger.PEER_ONLINE, B],
  [B, Trigger.PEER_OFFLINE, O], // the changed key went with that peer
  [B, Trigger.TRUST, O],
  [B, Trigger.FAIL, B],
  [B, Trigger.FAIL_OFFLINE, B],
];

/**
 * @param {PhaseName} phase
 * @param {TriggerName} trigger
 */
const key = (phase, trigger) => `${phase}\u0000${trigger}`;

/** @type {ReadonlyMap<string, PhaseName>} (phase, trigger) -> the phase it leads to */
export const TRANSITIONS = new Map(TABLE.map(([from, trigger, to]) => [key(from, trigger), to]));

/**
 * Where `trigger` leads from `phase`, or undefined where the table has no move.
 * @param {PhaseName} phase
 * @param {TriggerName} trigger
 * @returns {PhaseName | undefined}
 */
export function transition(phase, trigger) {
  return TRANSITIONS.get(key(phase, trigger));
}

/** The phase a session is in; it changes only by fire(). */
export class Phases {
  /** @type {PhaseName} */ #phase;

  /** @param {PhaseName} [phase] */
  constructor(phase = Phase.OFFLINE) {
    this.#phase = phase;
  }

  get phase() {
    return this.#phase;
  }

  /**
   * Move by the table; returns the new phase.
   * @param {TriggerName} trigger
   * @returns {PhaseName}
   * @throws {LocalProtocolError} the table has no such move from this phase
   */
  fire(trigger) {
    const next = transition(this.#phase, trigger);
    if (next === undefined) throw new LocalProtocolError(`a session cannot ${trigger} while ${this.#phase}`);
    this.#phase = next;
    return next;
  }
}
