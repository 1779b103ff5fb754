// m42d/web/lib/link.js against docs/vectors/links.json (made by m42d/link.py):
// the same inputs give the same parts or the same error message.

import assert from "node:assert/strict";
import { test } from "node:test";
import { inspect } from "node:util";

import { fromHex, toBase64url, toHex } from "../../m42d/web/lib/bytes.js";
import { LinkError } from "../../m42d/web/lib/errors.js";
import {
  DEFAULT_PORTS,
  Link,
  MAX_LINK_LENGTH,
  RelayAddress,
  makeLinks,
  parseRelayUrl,
} from "../../m42d/web/lib/link.js";
import { parseTicket } from "../../m42d/web/lib/ticket.js";
import { publishedVectors } from "./support.js";

const vectors = publishedVectors("links.json");
const kat = vectors.known_answer;

/**
 * @param {() => unknown} run
 * @returns {string | null} the LinkError message, or null if it succeeded
 */
function linkError(run) {
  try {
    run();
    return null;
  } catch (exc) {
    if (!(exc instanceof LinkError)) throw exc;
    return exc.message;
  }
}

test("the published file holds enough of both outcomes", () => {
  assert.ok(vectors.links.length >= 500);
  assert.ok(vectors.links.filter((/** @type {any} */ c) => "error" in c).length >= 300);
  assert.ok(vectors.relay_urls.filter((/** @type {any} */ c) => !("error" in c)).length >= 20);
});

test("relay URLs: the same parts or the same error as m42d/link.py", () => {
  for (const c of vectors.relay_urls) {
    const label = JSON.stringify(c.input);
    if ("error" in c) {
      assert.equal(linkError(() => parseRelayUrl(c.input)), c.error, label);
      continue;
    }
    const address = parseRelayUrl(c.input);
    assert.deepEqual(
      [address.scheme, address.host, address.port, address.effectivePort, address.path, address.url],
      [c.scheme, c.host, c.port, c.effective_port, c.path, c.url],
      label,
    );
    assert.ok(parseRelayUrl(address.url).equals(address), label);
    assert.equal(String(address), address.url);
  }
});

test("links: the same parts or the same error as m42d/link.py", () => {
  for (const c of vectors.links) {
    const label = JSON.stringify(c.input);
    if ("error" in c) {
      assert.equal(linkError(() => Link.parse(c.input)), c.error, label);
      continue;
    }
    const link = Link.parse(c.input);
    assert.deepEqual(
      {
        format: link.format(),
        relay: link.relay,
        seat: link.seat,
        ticket: toHex(link.ticket),
        token: toHex(link.token),
        secret: toHex(link.secret),
        pin: link.pin === null ? null : toHex(link.pin),
        room_id: toHex(link.roomId),
        expires: String(link.expires),
        scheme: link.scheme,
        relay_host: link.relayHost,
        relay_port: link.relayPort,
      },
      Object.fromEntries(Object.entries(c).filter(([key]) => key !== "input")),
      label,
    );
    assert.ok(Link.parse(link.format()).equals(link), label);
  }
});

test("the known answer from docs/protocol.md", () => {
  const [a, b] = makeLinks(
    kat.relay,
    { ticket: fromHex(kat.ticket), tokenA: fromHex(kat.token_a), tokenB: fromHex(kat.token_b) },
    fromHex(kat.secret),
    { pin: fromHex(kat.pin) },
  );
  assert.equal(a.format(), kat.link_a);
  assert.equal(new Link({ relay: b.relay, seat: "B", ticket: b.ticket, token: b.token, secret: b.secret }).format(), kat.link_b_no_pin);
  assert.equal(a.format().length, 199);
  assert.equal(kat.link_b_no_pin.length, 155);
  const ticket = parseTicket(a.ticket);
  assert.equal(ticket.keyId, kat.key_id);
  assert.equal(toHex(ticket.roomId), kat.room_id);
  assert.equal(ticket.expires, BigInt(kat.expires));
  assert.equal(a.relayPort, 443);
  assert.ok(Link.parse(kat.link_a).equals(a));
  assert.ok(!Link.parse(kat.link_a).equals(b));
});

test("the constructor validates in the twin's order, with its messages", () => {
  const base = Link.parse(kat.link_a);
  /** @type {import("../../m42d/web/lib/link.js").LinkFields} */
  const fields = {
    relay: base.relay,
    seat: base.seat,
    ticket: base.ticket,
    token: base.token,
    secret: base.secret,
    pin: base.pin,
  };
  const ticket = base.ticket;
  const v0 = ticket.slice();
  v0[0] = 0;
  /** @type {Array<[Record<string, unknown>, string]>} */
  const cases = [
    [{ relay: "wss://u@h" }, "relay URL must not contain user info ('@')"],
    [{ seat: "a" }, "seat must be A or B"],
    [{ seat: "C", ticket: "x" }, "seat must be A or B"],
    [{ ticket: "ticket" }, "ticket must be bytes"],
    [{ ticket: Array.from(ticket) }, "ticket must be bytes"],
    [{ ticket: ticket.subarray(0, 41) }, "ticket must be 42 bytes, got 41"],
    [{ ticket: v0 }, "ticket is malformed: unsupported ticket version 0"],
    [{ token: new Uint8Array(32) }, "seat token must be 16 bytes, got 32"],
    [{ secret: new Uint8Array(16) }, "room secret must be 32 bytes, got 16"],
    [{ secret: null }, "room secret must be bytes"],
    [{ pin: new Uint8Array(16) }, "certificate pin must be 32 bytes, got 16"],
  ];
  for (const [change, message] of cases) {
    const broken = /** @type {any} */ ({ ...fields, ...change });
    assert.equal(linkError(() => new Link(broken)), message, JSON.stringify(Object.keys(change)));
  }
  const { pin: _pin, ...withoutPin } = fields;
  assert.equal(new Link(withoutPin).pin, null);
});

test("withRelay normalises and revalidates", () => {
  const link = Link.parse(kat.link_a);
  const moved = link.withRelay("TLS://[::1]:9000");
  assert.equal(moved.relay, "tls://[::1]:9000");
  assert.ok(moved.withRelay(link.relay).equals(link));
  assert.equal(linkError(() => link.withRelay("wss://")), "relay URL has no host");
});

test("relay addresses: default ports and unix socket paths", () => {
  assert.deepEqual(Object.fromEntries(DEFAULT_PORTS), { ws: 80, wss: 443, http: 80, https: 443, tls: 8043 });
  assert.equal(parseRelayUrl("constructor://h").effectivePort, null); // no prototype lookups
  const unix = parseRelayUrl("unix:///run/m42d/relay%20one%e2%82%ac.sock");
  assert.equal(unix.socketPath, "/run/m42d/relay one\u20ac.sock");
  assert.equal(unix.effectivePort, null);
  assert.ok(new RelayAddress("wss", "h", null, "").equals(parseRelayUrl("WSS://H")));
});

test("a link's token and secret show in no text made from it", () => {
  const link = Link.parse(kat.link_a);
  const secrets = [kat.secret, kat.token_a, toBase64url(fromHex(kat.secret)), toBase64url(fromHex(kat.token_a))];
  for (const text of [String(link), JSON.stringify(link), inspect(link, { showHidden: true, depth: 5 })]) {
    for (const secret of secrets) assert.ok(!text.includes(secret), text);
  }
  assert.ok(String(link).includes(kat.ticket));
  assert.ok(JSON.stringify(link).includes(kat.ticket));
  assert.equal(
    String(Link.parse(kat.link_b_no_pin)),
    `Link(relay='wss://relay.example.org', seat=B, ticket='${kat.ticket}', pin=None)`,
  );
  // Copies, not views: changing what a getter returned does not change the link.
  const secret = link.secret;
  secret.fill(0);
  assert.equal(toHex(link.secret), kat.secret);
});

test("no error message echoes input text", () => {
  const secretB64 = toBase64url(fromHex(kat.secret));
  for (const c of vectors.links) {
    if ("error" in c) assert.ok(!c.error.includes(secretB64));
  }
  const long = "x".repeat(MAX_LINK_LENGTH + 1);
  assert.equal(linkError(() => Link.parse(long)), `link is longer than ${MAX_LINK_LENGTH} characters`);
});
