"""The browser client as a person gets it: from ``m42d serve`` itself, in Debian's Chromium.

A real relay subprocess (its ws listener answers plain GETs with
m42d.web.pages), links made by the real ``m42 new``, and a headless Chromium
with a fresh profile (tests/browser_harness.py).  Checked here: the headers
every file of the page arrives with, that a link's fragment leaves the
address bar and travels in no request, and that the key store keeps a
non-extractable key in the browser's own IndexedDB.

Slow (a browser and a daemon per module): ``pytest -m slow
tests/test_browser_serve.py``.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from m42d.link import Link
from m42d.web import pages
from tests.browser_harness import BrowserRun, chromium, m42_new, page_url, serving_relay
from tests.e2e_harness import RelayDaemon

pytestmark = pytest.mark.slow

LANDING = "[data-action=create-room]"


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayDaemon]:
    with serving_relay(tmp_path_factory.mktemp("relay")) as daemon:
        yield daemon


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[BrowserRun]:
    with chromium(tmp_path / "profile") as run:
        yield run
        assert run.problems == []


def _host(relay: RelayDaemon) -> str:
    return page_url(relay).removeprefix("http://")


def test_the_relay_serves_the_page_with_strict_headers(
    browser: BrowserRun, relay: RelayDaemon
) -> None:
    base = page_url(relay)
    responses: list[Any] = []
    page = browser.new_page()
    page.on("response", lambda response: responses.append(response))
    first = page.goto(base + "/")
    assert first is not None
    assert first.status == 200
    page.wait_for_selector(LANDING)
    host = _host(relay)
    by_path = {r.url.removeprefix(base): r for r in responses}
    assert {"/", "/app.js", "/app.css", "/lib/link.js", "/ui/landing.js"} <= set(by_path)
    for path, response in by_path.items():
        headers = response.all_headers()
        assert response.status == 200, path
        csp = headers["content-security-policy"]
        assert csp == pages.content_security_policy(host, tls=False), path
        directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
        assert directives["default-src"] == "'none'"
        assert directives["script-src"] == "'self'"  # no inline, no eval
        assert directives["style-src"] == "'self'"
        assert directives["connect-src"] == f"'self' ws://{host} wss://{host}"
        assert "unsafe" not in csp
        assert headers["referrer-policy"] == "no-referrer"
        assert headers["cross-origin-opener-policy"] == "same-origin"
        assert headers["cross-origin-resource-policy"] == "same-origin"
        for feature in ("camera=()", "microphone=()", "geolocation=()", "usb=()"):
            assert feature in headers["permissions-policy"], path
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["cache-control"] == "no-store"
    assert by_path["/"].all_headers()["content-type"] == "text/html; charset=utf-8"
    # The page loaded nothing from anywhere else, and sent no Referer.
    for sent in browser.sent:
        assert sent.url.startswith(base + "/"), sent.url
        assert "referer" not in sent.headers, sent.url
    # HEAD: the same headers and length, no body.
    head = browser.context.request.head(base + "/")
    assert head.status == 200
    assert head.headers["content-length"] == str(len(first.body()))
    assert head.headers["content-security-policy"] == first.all_headers()["content-security-policy"]
    assert head.body() == b""


def test_a_links_fragment_leaves_the_address_bar_and_no_request_carries_it(
    browser: BrowserRun, relay: RelayDaemon, tmp_path: Path
) -> None:
    _link_a, link_b = m42_new(relay.url("ws"), tmp_path / "alice")
    base = page_url(relay)
    assert link_b.startswith(base + "#m42."), link_b  # m42 new prints the page's address
    fragment = link_b.split("#", 1)[1]
    link = Link.parse(link_b)
    secrets = [
        fragment,
        *fragment.split(".")[3:],  # ticket, token, secret, each in base64url
        base64.urlsafe_b64encode(link.secret).rstrip(b"=").decode(),
        link.secret.hex(),
    ]
    page = browser.new_page()
    page.goto(link_b)
    page.wait_for_function("location.hash === ''")
    assert page.url == base + "/"
    assert page.evaluate("location.href") == base + "/"
    # Not kept in the session history either: back (to the blank tab) and
    # forward again give the bare page.
    page.go_back()
    page.go_forward()
    page.wait_for_selector(LANDING)
    assert page.url == base + "/"
    sent = browser.everything_sent()
    assert browser.sent, "the page made no request at all?"
    assert "#" not in "".join(s.url for s in browser.sent)
    for secret in secrets:
        assert secret not in sent


KEYSTORE_SAVE = """async () => {
  const ks = await import("/lib/keystore.js");
  const noise = await import("/lib/noise.js");
  const store = await ks.openKeyStore();
  const pair = await noise.generateKeyPair();
  const room = new Uint8Array(16).fill(7);
  await store.saveStatic(room, "A", pair);
  await store.savePeer(room, "A", new Uint8Array(32).fill(9));
  await store.markCompared(room, "A", 1234);
  return {persistent: store.persistent, reason: store.reason, pub: Array.from(pair.publicKey)};
}"""

KEYSTORE_LOAD = """async () => {
  const ks = await import("/lib/keystore.js");
  const noise = await import("/lib/noise.js");
  const store = await ks.openKeyStore();
  const room = new Uint8Array(16).fill(7);
  const pair = await store.loadStatic(room, "A");
  let exported = true;
  try { await crypto.subtle.exportKey("pkcs8", pair.privateKey); } catch { exported = false; }
  return {
    persistent: store.persistent,
    extractable: pair.privateKey.extractable,
    exported,
    pub: Array.from(pair.publicKey),
    derived: Array.from(await noise.publicKeyOf(pair.privateKey)),
    peer: Array.from(await store.loadPeer(room, "A")),
    comparedAt: await store.loadComparedAt(room, "A"),
  };
}"""


def test_the_key_store_keeps_a_non_extractable_key_in_indexeddb(
    browser: BrowserRun, relay: RelayDaemon
) -> None:
    base = page_url(relay)
    page = browser.new_page()
    page.goto(base + "/")
    page.wait_for_selector(LANDING)
    saved = page.evaluate(KEYSTORE_SAVE)
    assert saved["persistent"] is True
    assert saved["reason"] is None
    page.close()
    # A new page of the same profile (the person comes back): the key is there,
    # usable (its public key is derived from it) and still unexportable.
    again = browser.new_page()
    again.goto(base + "/")
    again.wait_for_selector(LANDING)
    loaded = again.evaluate(KEYSTORE_LOAD)
    assert loaded["persistent"] is True
    assert loaded["extractable"] is False
    assert loaded["exported"] is False
    assert loaded["pub"] == saved["pub"] == loaded["derived"]
    assert loaded["peer"] == [9] * 32
    assert loaded["comparedAt"] == 1234


def test_without_indexeddb_the_key_store_says_it_is_for_this_tab(
    browser: BrowserRun, relay: RelayDaemon
) -> None:
    page = browser.new_page()
    page.add_init_script("Object.defineProperty(window, 'indexedDB', {value: undefined});")
    page.goto(page_url(relay) + "/")
    page.wait_for_selector(LANDING)
    result = page.evaluate(
        """async () => {
          const ks = await import("/lib/keystore.js");
          const store = await ks.openKeyStore();
          return {persistent: store.persistent, reason: store.reason};
        }"""
    )
    assert result["persistent"] is False
    assert "private window" in result["reason"]
