"""The browser's own WebCrypto against the published known answers (links, STREAM, SAS).

tests/js/ checks m42d/web/lib against docs/vectors/ under Node; this runs the
same checks in Debian's Chromium on the page served by a real ``m42d
serve``, so the modules are judged on the crypto a person's browser has
(browsers differ in what WebCrypto accepts). The session transcript's full
replay stays in Node (tests/js/session-transcript.test.js): it needs the
test-only deterministic random source, which the page does not ship.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.browser_harness import chromium, page_url, serving_relay

pytestmark = pytest.mark.slow

VECTORS = Path(__file__).resolve().parent.parent / "docs" / "vectors"

CHECK = """
async ({links, stream, sas}) => {
  const { Link, parseRelayUrl } = await import("/lib/link.js");
  const { toHex, fromHex } = await import("/lib/bytes.js");
  const { FileKey, StreamEncryptor, decryptChunk } = await import("/lib/stream.js");
  const { Wordlist, sasWords } = await import("/lib/sas.js");
  const failures = [];
  const same = (got, want, label) => {
    if (JSON.stringify(got) !== JSON.stringify(want)) failures.push([label, got, want]);
  };
  const errorOf = (fn) => { try { fn(); return null; } catch (exc) { return exc.message; } };
  for (const c of links.relay_urls) {
    if ("error" in c) { same(errorOf(() => parseRelayUrl(c.input)), c.error, c.input); continue; }
    const a = parseRelayUrl(c.input);
    same([a.scheme, a.host, a.port, a.effectivePort, a.path, a.url],
         [c.scheme, c.host, c.port, c.effective_port, c.path, c.url], c.input);
  }
  for (const c of links.links) {
    if ("error" in c) { same(errorOf(() => Link.parse(c.input)), c.error, c.input); continue; }
    const l = Link.parse(c.input);
    same([l.format(), l.seat, toHex(l.ticket), toHex(l.secret), toHex(l.roomId)],
         [c.format, c.seat, c.ticket, c.secret, c.room_id], c.input);
  }
  const pattern = (size, offset) => Uint8Array.from({ length: size }, (_, j) => (j + offset) % 251);
  const sha256 = async (data) => toHex(new Uint8Array(await crypto.subtle.digest("SHA-256", data)));
  for (const c of stream.seal) {
    const key = new FileKey(fromHex(c.key), fromHex(c.salt));
    const plain = pattern(c.plaintext.size, c.plaintext.offset);
    const encryptor = await StreamEncryptor.create(key);
    const sealed = await encryptor.encryptChunk(BigInt(c.index), plain, { last: c.last });
    const label = `seal ${c.index}`;
    if (c.sealed.hex !== undefined) same(toHex(sealed), c.sealed.hex, label);
    else same([sealed.length, await sha256(sealed)], [c.sealed.size, c.sealed.sha256], label);
    const [opened, last] = await decryptChunk(key, BigInt(c.index), sealed);
    same([toHex(opened) === toHex(plain), last], [true, c.last], `open ${c.index}`);
  }
  const text = await (await fetch("/eff_large_wordlist.txt")).text();
  const wordlist = Wordlist.parse(text);
  for (const c of sas.cases) same(await sasWords(fromHex(c.hash), wordlist), c.words, c.hash);
  const checked =
    links.relay_urls.length + links.links.length + stream.seal.length + sas.cases.length;
  return { failures: failures.slice(0, 5), count: failures.length, checked };
}
"""


def _load(name: str) -> Any:
    return json.loads((VECTORS / name).read_text(encoding="utf-8"))


def test_the_page_modules_pass_the_published_vectors_in_chromium(tmp_path: Path) -> None:
    vectors = {
        "links": _load("links.json"),
        "stream": _load("stream.json"),
        "sas": _load("sas.json"),
    }
    with serving_relay(tmp_path / "relay") as daemon, chromium(tmp_path / "profile") as run:
        page = run.new_page()
        page.goto(page_url(daemon) + "/")
        result = page.evaluate(CHECK, vectors)
        assert result["count"] == 0, result["failures"]
        assert result["checked"] > 700
        assert not run.problems, run.problems
