"""The browser client's page in Debian's Chromium, driven by Playwright.

The page is served by tests/web_server.py with m42d.web.pages (the headers
the relay will send) and runs against the scripted engine
(m42d/web/ui/fake-engine.js, served as /ui/backend.js), which the tests
drive through ``globalThis.m42fake``.  Every test also checks, on the way
out, that nothing was requested from another origin and that the page threw
no error and broke no CSP rule.

These are slow tests (a browser per module): ``pytest -m slow
tests/test_web_page.py``.  They need ``pip install playwright`` (the Python
package only: the browser is Debian's /usr/bin/chromium, never a download)
and skip without either, except under CI, where they fail.
"""

from __future__ import annotations

import json
import os
import re
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import segno
import segno.encoder

from m42d.link import Link
from m42d.ticket import Seat
from m42d.web import pages
from tests.web_server import PageServer

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless=new",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
WAIT_MS = 10_000


def _missing(what: str) -> None:
    message = f"{what}: the browser tests cannot run"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


try:
    from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    sync_playwright = None


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if sync_playwright is None:
        _missing("playwright is not installed (pip install playwright)")
    if not CHROMIUM.exists():
        _missing(f"{CHROMIUM} is not installed (apt-get install chromium)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        expect.set_options(timeout=WAIT_MS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def server() -> Iterator[PageServer]:
    with PageServer() as page_server:
        yield page_server


@dataclass
class Visit:
    """One browser context on the test server, and what it did."""

    page: Page
    context: BrowserContext
    server: PageServer
    requests: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def fake(self, script: str) -> Any:
        """Evaluate `script` with m42fake in scope (it may use BigInt literals)."""
        return self.page.evaluate(
            f"(async () => {{ const f = globalThis.m42fake; return {script}; }})()"
        )

    def calls(self, method: str | None = None) -> list[dict[str, Any]]:
        calls: list[dict[str, Any]] = self.fake("f.calls()")
        return [c for c in calls if method is None or c["method"] == method]


def _visit(browser: Browser, server: PageServer, **context_options: Any) -> Iterator[Visit]:
    context = browser.new_context(accept_downloads=True, **context_options)
    page = context.new_page()
    visit = Visit(page, context, server)
    context.on("request", lambda request: visit.requests.append(request.url))
    page.on("pageerror", lambda exc: visit.problems.append(f"page error: {exc}"))

    def console(message: Any) -> None:
        if message.type in ("error", "warning"):
            visit.problems.append(f"console {message.type}: {message.text}")

    page.on("console", console)
    yield visit
    context.close()
    origin = server.url
    foreign = [
        url
        for url in visit.requests
        if not (url == origin or url.startswith(origin + "/") or url.startswith("blob:" + origin))
    ]
    assert foreign == [], "requests to another origin"
    assert visit.problems == []


@pytest.fixture
def visit(browser: Browser, server: PageServer) -> Iterator[Visit]:
    yield from _visit(browser, server, viewport={"width": 900, "height": 900})


def make_link(server: PageServer, seat: Seat = Seat.B) -> Link:
    ticket = (
        bytes([1, 1])
        + os.urandom(16)
        + struct.pack(">Q", int(time.time()) + 86400)
        + os.urandom(16)
    )
    return Link(server.url, seat, ticket, os.urandom(16), os.urandom(32))


def open_room(visit: Visit, *, seat: Seat = Seat.B, **options: Any) -> Link:
    """Load the page from a link's address, with fake-engine options."""
    if options:
        visit.page.add_init_script(f"globalThis.m42fakeOptions = {json.dumps(options)};")
    link = make_link(visit.server, seat)
    visit.page.goto(f"{visit.server.url}/#{link.format().split('#', 1)[1]}")
    expect(visit.page.locator("section.chat")).to_be_visible()
    return link


def last_text(visit: Visit, direction: str) -> Any:
    return visit.page.locator(f".log .message.{direction} .text").last


# -- serving and headers ---------------------------------------------------------------


def test_page_and_modules_carry_the_security_headers(visit: Visit) -> None:
    responses: list[Any] = []
    visit.page.on("response", lambda response: responses.append(response))
    visit.page.goto(visit.server.url + "/")
    expect(visit.page.locator("[data-action=create-room]")).to_be_visible()
    host = visit.server.url.removeprefix("http://")
    expected_csp = pages.content_security_policy(host, tls=False)
    by_path = {r.url.removeprefix(visit.server.url): r for r in responses}
    assert {"/", "/app.js", "/app.css", "/ui/chat.js", "/vendor/uqr/index.mjs"} <= set(by_path)
    for path, response in by_path.items():
        headers = response.all_headers()
        assert response.status == 200, path
        assert headers["content-security-policy"] == expected_csp, path
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "no-referrer"
        assert headers["cross-origin-opener-policy"] == "same-origin"
        assert headers["cross-origin-resource-policy"] == "same-origin"
        assert headers["cache-control"] == "no-store"
        assert "camera=()" in headers["permissions-policy"]
    assert by_path["/"].all_headers()["content-type"] == "text/html; charset=utf-8"
    assert by_path["/app.js"].all_headers()["content-type"] == "text/javascript; charset=utf-8"
    # The browser took the policy: COOP isolates the page, Trusted Types are on.
    assert visit.page.evaluate("window.crossOriginIsolated === false && typeof trustedTypes")
    with pytest.raises(Exception, match="TrustedHTML"):
        visit.page.evaluate("document.body.innerHTML = '<b>x</b>'")
    visit.problems.clear()  # the refusal above is logged as a CSP error, on purpose


def test_the_page_has_no_inline_code_or_style(visit: Visit) -> None:
    visit.page.goto(visit.server.url + "/")
    expect(visit.page.locator("[data-action=create-room]")).to_be_visible()
    visit.page.click("[data-action=create-room]")
    expect(visit.page.locator("svg.qr")).to_be_visible()
    report = visit.page.evaluate(
        """() => {
          const all = [...document.querySelectorAll("*")];
          return {
            styled: all.filter((e) => e.hasAttribute("style")).length,
            handlers: all.filter((e) => [...e.attributes].some((a) => a.name.startsWith("on")))
              .length,
            inline: [...document.scripts].filter((s) => !s.src).length,
            styles: document.querySelectorAll("style").length,
            external: all.flatMap((e) => ["src", "href"].map((n) => e.getAttribute(n)))
              .filter((v) => v && /^[a-z][a-z0-9+.-]*:/i.test(v) && !v.startsWith("blob:")),
          };
        }"""
    )
    assert report == {"styled": 0, "handlers": 0, "inline": 0, "styles": 0, "external": []}


def test_the_fragment_is_read_removed_and_never_sent(visit: Visit) -> None:
    link = open_room(visit)
    fragment = link.format().split("#", 1)[1]
    secret_parts = fragment.split(".")[3:]
    page = visit.page
    assert page.evaluate("location.href") == visit.server.url + "/"
    assert page.evaluate("location.hash") == ""
    # The page read it: the engine was opened with exactly this link.
    assert visit.fake("f.opened") == [link.format()]
    # Nothing that left the browser carried it: URLs the browser asked for, and
    # what reached the server.
    for url in [*visit.requests, *visit.server.targets]:
        assert "#" not in url
        assert not any(part in url for part in secret_parts)
    # Not in the session history either: back and forward give the bare page.
    page.go_back()
    page.go_forward()
    expect(page.locator("[data-action=create-room]")).to_be_visible()
    assert page.evaluate("location.href") == visit.server.url + "/"


# -- what a person sees -----------------------------------------------------------------

HOSTILE_TEXTS = [
    '<img src=x onerror="window.pwned=1">',
    "<script>window.pwned=2</script>",
    "<b>bold</b> &amp; &lt;i&gt;",
    '"><svg onload="window.pwned=3">',
    "javascript:window.pwned=4",
    "\u202egnp.exe\u202c and \u0000 and \x1b[31mred",
    "line one\nline two\n\n  indented",
]


def test_hostile_peer_texts_are_shown_as_text(visit: Visit) -> None:
    open_room(visit, peerOnline=True)
    for text in HOSTILE_TEXTS:
        visit.fake(f"f.peerText({json.dumps(text)})")
        assert last_text(visit, "in").evaluate("(e) => e.textContent") == text
    name = '<img src=x onerror="window.pwned=5">.txt'
    visit.fake(f"f.offerFile({json.dumps(name)}, 10)")
    expect(visit.page.locator(".file-card.in .file-name")).to_have_text(name)
    visit.fake(
        'f.emit("error", {message: "<b>relay</b> says <img src=x onerror=window.pwned=6>", '
        "fatal: false, code: null})"
    )
    expect(visit.page.locator(".log .system").last).to_have_text(
        "<b>relay</b> says <img src=x onerror=window.pwned=6>"
    )
    injected = visit.page.evaluate(
        "document.querySelectorAll("
        "'.log img, .log script, .log b, .log i, .log svg, .log a').length"
    )
    assert injected == 0
    assert visit.page.evaluate("window.pwned") is None


def test_a_text_of_the_full_mebibyte(visit: Visit) -> None:
    open_room(visit, peerOnline=True)
    page = visit.page
    # 1 MiB of UTF-8 in two-byte characters: shown in part, all of it on request.
    visit.fake('f.peerText("é".repeat(524288))')
    body = last_text(visit, "in")
    assert body.evaluate("(e) => e.textContent.length") == 4000
    page.locator(".log .show-all").click()
    assert body.evaluate("(e) => e.textContent.length") == 524288
    # Our side: exactly the cap goes, one byte more is refused with a reason.
    field = page.locator("#composer-text")
    field.fill("a" * (1 << 20))
    field.press("Enter")
    assert len(visit.calls("sendText")) == 1
    field.fill("é" * 524288 + "a")
    field.press("Enter")
    expect(page.locator("#composer-hint")).to_contain_text("Too long to send as a text")
    assert len(visit.calls("sendText")) == 1


def _segno_matrix(text: str, mask: int) -> list[list[bool]]:
    def standard_padding(buff: list[int], version: int, length: int) -> None:
        buff.extend([0] * (-length % 8))  # see tests/test_web_qr.py

    original = segno.encoder.write_padding_bits
    segno.encoder.write_padding_bits = standard_padding
    try:
        qr = segno.make(
            text, error="m", mode="byte", encoding="utf-8", mask=mask, boost_error=False
        )
    finally:
        segno.encoder.write_padding_bits = original
    return [[bool(cell) for cell in row] for row in qr.matrix]


def test_create_room_shows_link_b_with_copy_and_qr_then_opens_link_a(visit: Visit) -> None:
    visit.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=visit.server.url)
    page = visit.page
    page.goto(visit.server.url + "/")
    page.click("[data-action=create-room]")
    expect(page.locator("svg.qr")).to_be_visible()
    (room,) = visit.fake("f.created")
    assert room["linkB"].startswith(visit.server.url + "#m42.1.B.")
    assert page.input_value("#link-b") == room["linkB"]
    assert visit.fake("f.opened") == [room["linkA"]]
    assert Link.parse(room["linkA"]).seat is Seat.A
    # The QR code holds Link B: its path, module by module, is segno's symbol.
    svg = page.locator("svg.qr")
    version = int(svg.get_attribute("data-version") or 0)
    mask = int(svg.get_attribute("data-mask") or -1)
    assert version == 9  # 154 characters with a loopback relay URL
    expected = _segno_matrix(room["linkB"], mask)
    size = len(expected)
    assert size == 4 * version + 17
    drawn = [[False] * size for _ in range(size)]
    path = svg.locator("path").get_attribute("d") or ""
    for x, y, width in re.findall(r"M(\d+) (\d+)h(\d+)v1h-\d+z", path):
        for i in range(int(width)):
            drawn[int(y) - 4][int(x) - 4 + i] = True
    assert drawn == expected
    box = svg.bounding_box()
    assert box is not None
    assert box["width"] >= 200  # about 4 px a module: a phone camera reads it off a screen
    page.click("[data-action=copy-link-b]")
    expect(page.locator(".copy-result")).to_have_text("Copied. Send it over a channel you trust.")
    # The invitation goes when Bob comes, and the focus does not vanish with it.
    page.locator("[data-action=copy-link-b]").focus()
    visit.fake("f.peerJoins()")
    expect(page.locator(".invite")).to_have_count(0)
    assert page.evaluate("document.activeElement.id") == "composer-text"


def test_keyboard_alone(visit: Visit) -> None:
    open_room(visit, peerOnline=True, autoSend=False)
    page = visit.page
    keyboard = page.keyboard
    assert page.evaluate("document.activeElement.id") == "composer-text"
    keyboard.type("hello")
    keyboard.press("Shift+Enter")
    keyboard.type("world")
    keyboard.press("Enter")
    assert [c["args"] for c in visit.calls("sendText")] == [["hello\nworld"]]
    mine = page.locator(".log .message.out").last
    expect(mine).to_have_attribute("data-tick", "queued")
    visit.fake('f.emit("sent", {seq: 1n})')
    expect(mine).to_have_attribute("data-tick", "sent")
    visit.fake("f.deliver(1)")
    expect(mine).to_have_attribute("data-tick", "delivered")
    expect(mine.locator(".sr-only").last).to_have_text("delivered")
    # Tab reaches the file button and Send, and Space on Send sends.
    keyboard.type("second")
    keyboard.press("Tab")
    assert page.evaluate("document.activeElement.dataset.action") == "attach"
    keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Send"
    keyboard.press("Space")
    assert [c["args"] for c in visit.calls("sendText")][-1] == ["second"]
    # A changed key: the dialog takes the focus, Escape is "not now" and leaves
    # everything paused with the way back focused; Tab + Enter trusts.
    visit.fake(
        'f.emit("key_changed", {words: ["one","two","three","four","five","six","seven","eight"]})'
    )
    dialog = page.locator("dialog[data-dialog=key-changed]")
    expect(dialog).to_be_visible()
    expect(dialog.locator(".words li")).to_have_count(8)
    assert page.evaluate("document.activeElement.dataset.action") == "cancel"
    keyboard.press("Escape")
    expect(dialog).to_have_count(0)
    expect(page.locator("#composer-text")).to_be_disabled()
    assert page.evaluate("document.activeElement.dataset.action") == "review-key"
    assert visit.calls("trust") == []
    keyboard.press("Enter")
    expect(dialog).to_be_visible()
    keyboard.press("Tab")
    assert page.evaluate("document.activeElement.dataset.action") == "confirm"
    keyboard.press("Enter")
    expect(dialog).to_have_count(0)
    assert len(visit.calls("trust")) == 1
    expect(page.locator("#composer-text")).to_be_enabled()
    # The safety words by keyboard: open the panel, mark them compared.
    page.locator("button[aria-controls=safety-panel]").focus()
    panel = page.locator("#safety-panel")
    if not panel.is_visible():
        keyboard.press("Enter")
    expect(panel).to_be_visible()
    page.locator("[data-action=mark-compared]").focus()
    keyboard.press("Enter")
    expect(panel.locator(".compared-state")).to_have_text("Last compared just now.")
    assert len(visit.calls("markCompared")) == 1


@pytest.fixture
def phone(browser: Browser, server: PageServer) -> Iterator[Visit]:
    yield from _visit(
        browser,
        server,
        viewport={"width": 320, "height": 568},
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
    )


def _no_sideways_scroll(visit: Visit) -> None:
    width = visit.page.evaluate("[document.documentElement.scrollWidth, innerWidth]")
    assert width[0] <= width[1] == 320


def test_a_phone_sized_screen(phone: Visit) -> None:
    page = phone.page
    page.goto(phone.server.url + "/")
    _no_sideways_scroll(phone)
    page.click("[data-action=create-room]")
    expect(page.locator("svg.qr")).to_be_visible()
    _no_sideways_scroll(phone)
    qr = page.locator("svg.qr").bounding_box()
    assert qr is not None
    assert 200 <= qr["width"] <= 300
    phone.fake("f.peerJoins()")
    phone.fake('f.peerText("x".repeat(600))')  # one unbroken word
    phone.fake(
        'f.offerFile("a-very-long-file-name-without-any-spaces-" + "z".repeat(80) + ".tar.gz", '
        "123456789)"
    )
    _no_sideways_scroll(phone)
    composer = page.locator("#composer-text").bounding_box()
    assert composer is not None
    assert composer["y"] + composer["height"] <= 568 + page.evaluate("scrollY")
    for selector in ("#composer-text", "[data-action=attach]", "button.send"):
        box = page.locator(selector).bounding_box()
        assert box is not None
        assert box["x"] >= 0
        assert box["x"] + box["width"] <= 320
        assert box["height"] >= 40  # a finger's target
    # The key-change dialog fits: title, all eight words and both buttons on screen.
    phone.fake(
        'f.emit("key_changed", {words: ["one","two","three","four","five","six","seven","eight"]})'
    )
    dialog = page.locator("dialog[data-dialog=key-changed]")
    expect(dialog).to_be_visible()
    for part in (
        dialog.locator("h2"),
        dialog.locator(".words"),
        dialog.locator("[data-action=confirm]"),
        dialog.locator("[data-action=cancel]"),
    ):
        box = part.bounding_box()
        assert box is not None
        assert box["y"] >= 0
        assert box["y"] + box["height"] <= 568
        assert box["x"] + box["width"] <= 320


def _next_frame(visit: Visit) -> None:
    """Scroll events are dispatched before the next animation frame's callbacks."""
    visit.page.evaluate("new Promise((done) => requestAnimationFrame(() => done()))")


def test_the_log_follows_new_entries_unless_scrolled_up(visit: Visit) -> None:
    open_room(visit, peerOnline=True)
    log = visit.page.locator(".chat-body")
    for i in range(40):
        visit.fake(f'f.peerText("line {i}")')
    gap = "(e) => e.scrollHeight - e.scrollTop - e.clientHeight"
    assert log.evaluate(gap) < 2
    assert log.evaluate("(e) => e.scrollTop") > 0
    log.evaluate("(e) => e.scrollTo({top: 0, behavior: 'instant'})")
    _next_frame(visit)
    visit.fake('f.peerText("while reading back")')
    visit.fake('f.offerFile("grows-later.bin", 1000)')
    _next_frame(visit)
    assert log.evaluate("(e) => e.scrollTop") == 0
    log.evaluate("(e) => e.scrollTo({top: e.scrollHeight, behavior: 'instant'})")
    _next_frame(visit)
    visit.fake('f.peerText("at the bottom again")')
    assert log.evaluate(gap) < 2


def test_an_engine_that_refuses_a_text_or_a_file(visit: Visit, tmp_path: Path) -> None:
    open_room(visit, peerOnline=True)
    page = visit.page
    visit.fake(
        "(f.current.sendText = () => { throw new Error('<b>engine</b> stopped'); }, "
        "f.current.sendFile = () => { throw new Error('no more files'); }, 0)"
    )
    page.fill("#composer-text", "keep me")
    page.press("#composer-text", "Enter")
    expect(page.locator(".notice[data-key=send] p")).to_have_text("Not sent: <b>engine</b> stopped")
    assert page.input_value("#composer-text") == "keep me"
    expect(page.locator(".log .message.out")).to_have_count(0)
    (tmp_path / "a.txt").write_text("a")
    page.locator(".composer input[type=file]").set_input_files([tmp_path / "a.txt"])
    expect(page.locator(".log .system").last).to_have_text("a.txt was not sent: no more files")
    expect(page.locator(".file-card")).to_have_count(0)


def test_private_mode_says_the_key_lives_in_this_tab(visit: Visit) -> None:
    open_room(visit, persistent=False)
    expect(visit.page.locator(".notice[data-key=keystore]")).to_contain_text(
        "lives in this tab only"
    )


def test_connection_states_are_shown(visit: Visit) -> None:
    open_room(visit)
    status = visit.page.locator("p.status")
    expect(status).to_have_attribute("data-state", "waiting")
    visit.fake("f.peerJoins()")
    expect(status).to_have_attribute("data-state", "online")
    visit.fake('f.emit("reconnecting", {delay: 4, reason: "relay closed the connection"})')
    expect(status).to_have_text(
        "Connection lost (relay closed the connection). Reconnecting in 4 s…"
    )
    visit.fake('f.emit("connected", {relay: location.origin})')
    expect(status).to_have_attribute("data-state", "online")
    visit.fake('f.emit("peer_down", {})')
    expect(status).to_have_attribute("data-state", "waiting")
    visit.fake('f.emit("error", {message: "room burned", fatal: true, code: 411})')
    expect(status).to_have_text("This room was burned: its links no longer work.")
    expect(visit.page.locator("#composer-text")).to_be_disabled()


def test_a_changed_key_that_leaves_lifts_the_pause(visit: Visit) -> None:
    """The device with the new key left: nothing is left to trust, the chat waits as usual."""
    open_room(visit, peerOnline=True)
    page = visit.page
    visit.fake(
        'f.emit("key_changed", {words: ["one","two","three","four","five","six","seven","eight"]})'
    )
    dialog = page.locator("dialog[data-dialog=key-changed]")
    expect(dialog).to_be_visible()
    visit.fake('f.emit("peer_down", {})')
    expect(page.locator(".paused-bar")).to_be_hidden()
    expect(page.locator("p.status")).to_have_attribute("data-state", "waiting")
    expect(page.locator("#composer-text")).to_be_enabled()
    expect(page.locator(".log")).to_contain_text("The device with the new key left.")
    # The question still open when it left decides nothing.
    dialog.locator("[data-action=confirm]").click()
    assert visit.calls("trust") == []


def test_burning_asks_first(visit: Visit) -> None:
    open_room(visit, peerOnline=True)
    page = visit.page
    page.click(".menu summary")
    page.click("[data-action=burn]")
    dialog = page.locator("dialog[data-dialog=burn]")
    expect(dialog).to_be_visible()
    dialog.locator("[data-action=cancel]").click()
    expect(dialog).to_have_count(0)
    assert visit.calls("burn") == []
    page.click(".menu summary")
    page.click("[data-action=burn]")
    dialog.locator("[data-action=confirm]").click()
    expect(page.locator("p.status")).to_have_text("You burned this room: its links no longer work.")
    assert len(visit.calls("burn")) == 1
    expect(page.locator("#composer-text")).to_be_disabled()


def test_links_that_this_page_cannot_open(visit: Visit) -> None:
    page = visit.page
    page.goto(visit.server.url + "/")
    other = make_link(visit.server).with_relay("wss://elsewhere.example.org").format()
    page.fill("#paste-link", other)
    page.click(".open-link button[type=submit]")
    expect(page.locator("#paste-error")).to_contain_text(
        "This link is for another relay (wss://elsewhere.example.org)"
    )
    page.fill("#paste-link", "https://relay.example.org#m42.1.C.x.y.z")
    page.click(".open-link button[type=submit]")
    expect(page.locator("#paste-error")).to_have_text(
        "This is not a valid room link: seat must be A or B."
    )
    # A CLI link for this relay, written with ws://, opens.
    mine = make_link(visit.server).with_relay(visit.server.url.replace("http://", "ws://")).format()
    page.fill("#paste-link", mine)
    page.click(".open-link button[type=submit]")
    expect(page.locator("section.chat")).to_be_visible()
    assert visit.fake("f.opened") == [mine]


# -- files --------------------------------------------------------------------------------

CHUNK = 65536

NO_PICKER = "Object.defineProperty(window, 'showSaveFilePicker', {value: undefined});"
NO_OPFS = "Object.defineProperty(StorageManager.prototype, 'getDirectory', {value: undefined});"
# The File System Access path with a real FileSystemWritableFileStream: the
# "picker" hands out a file in the origin private file system, which a test
# can read back (a headless browser shows no dialog).
FAKE_PICKER = """
window.showSaveFilePicker = async ({suggestedName}) => {
  window.pickedName = suggestedName;
  const root = await navigator.storage.getDirectory();
  return root.getFileHandle("picked.bin", {create: true});
};
"""


def _pattern(start: int, length: int, salt: int) -> bytes:
    return bytes((i * 7 + salt) & 255 for i in range(start, start + length))


def _feed(visit: Visit, file_id: str, start: int, length: int, salt: int) -> None:
    visit.fake(
        f'f.feed("{file_id}", '
        f"Array.from({{length: {length}}}, (_, i) => ((i + {start}) * 7 + {salt}) & 255))"
    )


@pytest.mark.parametrize(
    ("sink", "init", "note"),
    [
        ("file-picker", FAKE_PICKER, "Writing to the file you chose."),
        ("opfs", NO_PICKER, "Writing to this browser's storage; you save it when it is complete."),
        (
            "memory",
            NO_PICKER + NO_OPFS,
            "Keeping it in this tab's memory; you save it when it is complete.",
        ),
    ],
)
def test_receiving_a_file_with_resume(visit: Visit, sink: str, init: str, note: str) -> None:
    page = visit.page
    page.add_init_script(init)
    open_room(visit, peerOnline=True)
    size = 3 * CHUNK + 1000
    file_id = visit.fake(f'f.offerFile("report.bin", {size})')
    card = page.locator(".file-card.in")
    expect(card).to_have_attribute("data-state", "offered")
    card.locator("[data-action=accept-file]").click()
    expect(card).to_have_attribute("data-state", "receiving")
    expect(card.locator(".file-note")).to_have_text(note)
    assert [c["args"] for c in visit.calls("acceptFile")] == [[file_id]]
    _feed(visit, file_id, 0, CHUNK, salt=1)
    _feed(visit, file_id, CHUNK, CHUNK, salt=1)
    expect(card.locator(".file-progress")).to_contain_text(
        "128.0 KiB of 193.0 KiB (66%), 1.0 MiB/s"
    )
    # A reconnect resumes at chunk 1 with different bytes: they must win.
    visit.fake(f"(f.current.accepted.get({file_id}n).offset = {CHUNK}, 0)")
    _feed(visit, file_id, CHUNK, CHUNK, salt=2)
    _feed(visit, file_id, 2 * CHUNK, CHUNK + 1000, salt=2)
    expected = _pattern(0, CHUNK, 1) + _pattern(CHUNK, 2 * CHUNK + 1000, 2)
    visit.fake(f'f.finishIncoming("{file_id}")')
    expect(card).to_have_attribute("data-state", "done")
    if sink == "file-picker":
        assert page.evaluate("window.pickedName") == "report.bin"
        stored = page.evaluate(
            """async () => {
              const root = await navigator.storage.getDirectory();
              const file = await (await root.getFileHandle("picked.bin")).getFile();
              return Array.from(new Uint8Array(await file.arrayBuffer()));
            }"""
        )
        assert bytes(stored) == expected
        expect(card.locator(".file-note")).to_have_text("Received and saved where you chose.")
        return
    with page.expect_download() as download_info:
        card.locator("[data-action=save-file]").click()
    download = download_info.value
    assert download.suggested_filename == "report.bin"
    assert Path(download.path()).read_bytes() == expected


def test_a_file_too_large_for_memory_is_refused_before_accepting(visit: Visit) -> None:
    page = visit.page
    page.add_init_script(NO_PICKER + NO_OPFS)
    open_room(visit, peerOnline=True)
    file_id = visit.fake('f.offerFile("huge.iso", 300 * 1024 * 1024)')
    card = page.locator(".file-card.in")
    card.locator("[data-action=accept-file]").click()
    expect(card).to_have_attribute("data-state", "failed")
    expect(card.locator(".file-note")).to_contain_text("keeps at most 256 MiB in memory")
    assert visit.calls("acceptFile") == []
    ((rejected_id, code, reason),) = [c["args"] for c in visit.calls("rejectFile")]
    assert (rejected_id, code) == (file_id, 2)
    assert "256 MiB" in reason


def test_opfs_sink_abort_and_stale_files(visit: Visit) -> None:
    """The worker sink directly: abort removes its entry, old entries are swept."""
    visit.page.goto(visit.server.url + "/")
    result = visit.page.evaluate(
        """async () => {
          const sink = await import("/lib/sink.js");
          const root = await navigator.storage.getDirectory();
          const names = async () => {
            const dir = await root.getDirectoryHandle(sink.OPFS_DIRECTORY, {create: true});
            const out = [];
            for await (const name of dir.keys()) out.push(name);
            return out;
          };
          const a = await sink.opfsSink("a.bin", 10);
          await a.write(0, Uint8Array.of(1, 2, 3));
          const during = (await names()).length;
          await a.abort();
          const afterAbort = (await names()).length;
          const b = await sink.opfsSink("b.bin", 10);
          await b.write(0, Uint8Array.of(4, 5));
          const file = await b.close();
          const content = Array.from(new Uint8Array(await file.arrayBuffer()));
          const kept = await sink.removeStaleOpfsFiles(Date.now());
          const swept = await sink.removeStaleOpfsFiles(Date.now() + sink.STALE_MS + 1000);
          const left = (await names()).length;
          return {during, afterAbort, name: file.name, content, kept, swept, left};
        }"""
    )
    assert result == {
        "during": 1,
        "afterAbort": 0,
        "name": "b.bin",
        "content": [4, 5],
        "kept": 0,
        "swept": 1,
        "left": 0,
    }


def test_sending_files_by_picker_and_drop_while_texts_go_on(visit: Visit, tmp_path: Path) -> None:
    page = visit.page
    open_room(visit, peerOnline=True)
    first = tmp_path / "holiday.jpg"
    second = tmp_path / "notes.txt"
    first.write_bytes(b"j" * 5_000_000)
    second.write_bytes(b"n" * 1000)
    page.locator(".composer input[type=file]").set_input_files([first, second])
    assert [c["args"] for c in visit.calls("sendFile")] == [
        [{"file": "holiday.jpg", "size": 5_000_000}],
        [{"file": "notes.txt", "size": 1000}],
    ]
    cards = page.locator(".file-card.out")
    expect(cards).to_have_count(2)
    expect(cards.nth(1)).to_have_attribute("data-state", "waiting")
    visit.fake("f.progressOut(1, 2000000, 1500000, 2)")
    expect(cards.nth(0)).to_have_attribute("data-state", "sending")
    expect(cards.nth(0).locator(".file-progress")).to_have_text(
        "1.9 MiB of 4.8 MiB (40%), 1.4 MiB/s, 2 s left"
    )
    # Text while a file is in flight.
    page.fill("#composer-text", "sent during the upload")
    page.press("#composer-text", "Enter")
    assert [c["args"] for c in visit.calls("sendText")] == [["sent during the upload"]]
    # Drag and drop onto the chat.
    page.evaluate(
        """() => {
          const data = new DataTransfer();
          data.items.add(new File(["dropped"], "dropped.txt"));
          const chat = document.querySelector("section.chat");
          const init = {dataTransfer: data, bubbles: true, cancelable: true};
          chat.dispatchEvent(new DragEvent("dragenter", init));
          chat.dispatchEvent(new DragEvent("drop", init));
        }"""
    )
    assert visit.calls("sendFile")[-1]["args"] == [{"file": "dropped.txt", "size": 7}]
    expect(page.locator("section.chat.dropping")).to_have_count(0)
    # Done and failed both reach the log (read out by screen readers).
    visit.fake(
        'f.emit("file_done", {fileId: 1n, outgoing: true, name: "holiday.jpg", size: 5000000, '
        "file: null})"
    )
    expect(cards.nth(0).locator(".file-note")).to_have_text("Delivered: they have it.")
    cards.nth(1).locator("[data-action=cancel-file]").click()
    assert visit.calls("cancelFile")[-1]["args"] == ["2"]
    visit.fake(
        'f.emit("file_failed", {fileId: 2n, outgoing: true, name: "notes.txt", code: 5, '
        'reason: "cancelled by sender"})'
    )
    expect(page.locator(".log .system").last).to_have_text(
        "Sending notes.txt stopped (cancelled: cancelled by sender)."
    )


# -- the picture for the README -------------------------------------------------------------


def chat_with_a_file_in_progress(visit: Visit) -> None:
    """The scene of docs/images/browser-chat.png (tests/web_screenshot.py)."""
    page = visit.page
    page.add_init_script(FAKE_PICKER)
    open_room(visit, peerOnline=True)
    visit.fake(
        "f.current.emit('safety_words', {words: f.current.words, firstContact: false, "
        "comparedAt: Date.now() - 3 * 86400000})"
    )
    page.click("button[aria-controls=safety-panel]")  # opened by itself at first contact
    expect(page.locator("#safety-panel")).to_be_hidden()
    visit.fake('f.peerText("Hi! Did the photos from Saturday come out?")')
    page.fill("#composer-text", "They did. Sending them now, the whole folder zipped.")
    page.press("#composer-text", "Enter")
    visit.fake("f.deliver(1)")
    page.evaluate(
        """() => {
          const data = new DataTransfer();
          data.items.add(new File([new Uint8Array(42 * 1024 * 1024)], "saturday-photos.zip"));
          const input = document.querySelector(".composer input[type=file]");
          input.files = data.files;
          input.dispatchEvent(new Event("change"));
        }"""
    )
    visit.fake("f.progressOut(1, 17301504, 3355443, 7.97)")
    visit.fake('f.peerText("Great, I can see it coming. Here is the <b>map</b> of the trail.")')
    file_id = visit.fake('f.offerFile("trail-map.pdf", 25794560)')
    page.locator(".file-card.in [data-action=accept-file]").click()
    expect(page.locator(".file-card.in")).to_have_attribute("data-state", "receiving")
    visit.fake(
        f'f.emit("file_progress", {{fileId: {file_id}n, outgoing: false, name: "trail-map.pdf", '
        "done: 10695475, size: 25794560, rate: 2516582, eta: 6.1})"
    )
    page.fill("#composer-text", "Texts go through while the files are on their way.")
    page.press("#composer-text", "Enter")
    page.evaluate("document.activeElement.blur()")


def test_the_screenshot_scene_renders(visit: Visit) -> None:
    chat_with_a_file_in_progress(visit)
    card = visit.page.locator(".file-card.out")
    expect(card).to_have_attribute("data-state", "sending")
    expect(card.locator(".file-progress")).to_have_text(
        "16.5 MiB of 42.0 MiB (39%), 3.2 MiB/s, 8 s left"
    )
    incoming = visit.page.locator(".file-card.in .file-progress")
    expect(incoming).to_have_text("10.2 MiB of 24.6 MiB (41%), 2.4 MiB/s, 7 s left")
