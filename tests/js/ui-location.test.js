// m42d/web/ui/location.js: the link in the address, and which relay this page is.

import assert from "node:assert/strict";
import { test } from "node:test";

import { Link } from "../../m42d/web/lib/link.js";
import { isThisRelay, pageRelayUrl, readAddress } from "../../m42d/web/ui/location.js";
import { publishedVectors } from "./support.js";

const kat = publishedVectors("links.json").known_answer;
const fragment = kat.link_b_no_pin.slice(kat.link_b_no_pin.indexOf("#") + 1);

test("a room link in the fragment is read, and the address is given back without it", () => {
  const { link, clean } = readAddress(`https://relay.example.org/#${fragment}`);
  assert.equal(clean, "https://relay.example.org/");
  assert.equal(link, `https://relay.example.org#${fragment}`);
  assert.equal(Link.parse(/** @type {string} */ (link)).seat, "B");
});

test("any other fragment is removed too, but is no link", () => {
  assert.deepEqual(readAddress("https://relay.example.org/#main"), {
    link: null,
    clean: "https://relay.example.org/",
  });
  assert.deepEqual(readAddress("https://relay.example.org/#"), {
    link: null,
    clean: "https://relay.example.org/",
  });
  assert.deepEqual(readAddress("https://relay.example.org/"), {
    link: null,
    clean: "https://relay.example.org/",
  });
});

test("the relay URL of this page has no trailing slash", () => {
  assert.equal(pageRelayUrl("https://relay.example.org/"), "https://relay.example.org");
  assert.equal(pageRelayUrl("http://127.0.0.1:8042/?x=1"), "http://127.0.0.1:8042");
  assert.equal(pageRelayUrl("https://relay.example.org/chat/"), "https://relay.example.org/chat");
  assert.equal(pageRelayUrl("https://[::1]:8443/"), "https://[::1]:8443");
});

test("the link's relay is this page's relay: http = ws, https = wss, same host and port", () => {
  const page = "https://relay.example.org/";
  assert.ok(isThisRelay("https://relay.example.org", page));
  assert.ok(isThisRelay("wss://relay.example.org", page));
  assert.ok(isThisRelay("wss://relay.example.org:443", page));
  assert.ok(isThisRelay("wss://RELAY.example.org", page));
  assert.ok(!isThisRelay("ws://relay.example.org", page));
  assert.ok(!isThisRelay("wss://relay.example.org:8443", page));
  assert.ok(!isThisRelay("wss://other.example.org", page));
  assert.ok(!isThisRelay("tls://relay.example.org", page));
  assert.ok(!isThisRelay("unix:///run/m42d.sock", page));
  assert.ok(isThisRelay("ws://127.0.0.1:8042", "http://127.0.0.1:8042/"));
  assert.ok(isThisRelay("http://[::1]:8042", "http://[::1]:8042/"));
  assert.ok(!isThisRelay("http://[::1]:8042", "http://127.0.0.1:8042/"));
});
