// The session's phase table (m42d/web/lib/session/phases.js) against its
// Python twin's: the same rows, read from m42d/session/phases.py itself, and
// the rules its header states (tests/test_session.py's phase-table tests).

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { test } from "node:test";

import { LocalProtocolError } from "../../m42d/web/lib/errors.js";
import { Phase, Phases, TRANSITIONS, Trigger, transition } from "../../m42d/web/lib/session/phases.js";
import { ROOT } from "./support.js";

/** @typedef {import("../../m42d/web/lib/session/phases.js").PhaseName} PhaseName */
/** @typedef {import("../../m42d/web/lib/session/phases.js").TriggerName} TriggerName */

const PHASES = /** @type {PhaseName[]} */ (Object.values(Phase));
const TRIGGERS = /** @type {TriggerName[]} */ (Object.values(Trigger));

/** The twin's table, as rows of names: [phase, trigger, phase]. */
function pythonTable() {
  const source = readFileSync(path.join(ROOT, "m42d", "session", "phases.py"), "utf8");
  const short = { _O: "OFFLINE", _H: "HANDSHAKE", _E: "ESTABLISHED", _B: "BLOCKED" };
  const rows = [...source.matchAll(/^\s+\((_[OHEB]), Trigger\.([A-Z_0-9]+)\): (_[OHEB]),/gm)];
  assert.ok(rows.length > 20, "the twin's table was found");
  return rows.map(([, from, trigger, to]) => [
    short[/** @type {keyof typeof short} */ (from)],
    trigger,
    short[/** @type {keyof typeof short} */ (to)],
  ]);
}

/** @param {string} value @param {Record<string, string>} names */
const nameOf = (value, names) => /** @type {string} */ (Object.keys(names).find((k) => names[k] === value));

test("the table has exactly the twin's rows", () => {
  const ours = [...PHASES.flatMap((p) => TRIGGERS.map((t) => [p, t]))]
    .filter(([p, t]) => transition(/** @type {PhaseName} */ (p), /** @type {TriggerName} */ (t)) !== undefined)
    .map(([p, t]) => [
      nameOf(p, Phase),
      nameOf(t, Trigger),
      nameOf(/** @type {string} */ (transition(/** @type {PhaseName} */ (p), /** @type {TriggerName} */ (t))), Phase),
    ]);
  const sort = (/** @type {string[][]} */ rows) => rows.map((r) => r.join(" ")).sort();
  assert.deepEqual(sort(ours), sort(pythonTable()));
  assert.equal(TRANSITIONS.size, ours.length);
});

test("every row of the table is a move fire() makes", () => {
  for (const [from, trigger, to] of pythonTable()) {
    const phases = new Phases(/** @type {any} */ (Phase)[from]);
    assert.equal(phases.fire(/** @type {any} */ (Trigger)[trigger]), /** @type {any} */ (Phase)[to]);
    assert.equal(phases.phase, /** @type {any} */ (Phase)[to]);
  }
});

test("a move the table does not have is the machine's bug, and the phase stays", () => {
  for (const phase of PHASES) {
    for (const trigger of TRIGGERS) {
      if (transition(phase, trigger) !== undefined) continue;
      const phases = new Phases(phase);
      assert.throws(
        () => phases.fire(trigger),
        (/** @type {unknown} */ exc) =>
          exc instanceof LocalProtocolError && exc.message === `a session cannot ${trigger} while ${phase}`,
      );
      assert.equal(phases.phase, phase);
    }
  }
  const phases = new Phases();
  assert.equal(phases.phase, Phase.OFFLINE);
  assert.equal(phases.fire(Trigger.PEER_ONLINE), Phase.HANDSHAKE);
  assert.equal(phases.fire(Trigger.ESTABLISH), Phase.ESTABLISHED);
  assert.equal(phases.fire(Trigger.KEY_CHANGED), Phase.BLOCKED);
  assert.throws(() => phases.fire(Trigger.ESTABLISH), /cannot install new keys while blocked/);
  assert.equal(phases.fire(Trigger.TRUST), Phase.OFFLINE);
  assert.throws(() => phases.fire(Trigger.START), /cannot start a fresh handshake while offline/);
});

test("what the outside can cause is legal in every phase", () => {
  for (const phase of PHASES) {
    for (const trigger of [Trigger.PEER_ONLINE, Trigger.PEER_OFFLINE, Trigger.FAIL_OFFLINE]) {
      assert.notEqual(transition(phase, trigger), undefined, `${trigger} while ${phase}`);
    }
  }
  const from = (/** @type {TriggerName} */ trigger) => PHASES.filter((p) => transition(p, trigger) !== undefined);
  assert.deepEqual(from(Trigger.FAIL).sort(), PHASES.filter((p) => p !== Phase.OFFLINE).sort());
  assert.deepEqual(from(Trigger.HS1).sort(), PHASES.filter((p) => p !== Phase.BLOCKED).sort());
  // Only the user's trust and that peer's leaving end BLOCKED.
  assert.deepEqual(
    TRIGGERS.filter((t) => {
      const to = transition(Phase.BLOCKED, t);
      return to !== undefined && to !== Phase.BLOCKED;
    }).sort(),
    [Trigger.PEER_OFFLINE, Trigger.TRUST].sort(),
  );
});
