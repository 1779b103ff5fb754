"""Debian's Chromium, driven by Playwright, against a real ``m42d serve`` (no tests here).

The relay is tests/e2e_harness.py's :class:`RelayDaemon` (``python -m m42d
serve`` on loopback, port 0, ready when it has said where it listens); the
browser is ``/usr/bin/chromium`` with a fresh profile in a temp dir, never a
Playwright download.  :class:`BrowserRun` records what the browser sent
(every request with its headers, every WebSocket URL) and what went wrong
in the page (uncaught errors, CSP refusals), so a test can check that
nothing carried a link's fragment and that the policy was never broken.

Rules: loopback only; every wait has a deadline (Playwright's, set here);
the browser and the daemon are closed on the way out, pass or fail.
Missing Playwright or Chromium skips, except under CI, where it fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import attrs
import pytest

from tests.e2e_harness import M42_COMMAND, STEP, RelayDaemon, _clean_env, start_daemon

CHROMIUM: Final = Path("/usr/bin/chromium")
CHROMIUM_ARGS: Final = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
WAIT_MS: Final = 15_000

try:
    from playwright.sync_api import BrowserContext, Page, Playwright, expect, sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    sync_playwright = None  # type: ignore[assignment]


def missing(what: str) -> None:
    """Skip (fail under CI) because the browser tests cannot run here."""
    message = f"{what}: the browser tests cannot run"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@attrs.define(eq=False)
class Sent:
    """One request the browser made: what a server (or a proxy) would see of it."""

    url: str
    method: str
    headers: dict[str, str]
    post_data: str | None


@attrs.define(eq=False)
class BrowserRun:
    """One Chromium profile (a fresh user-data dir) and what its pages did."""

    context: BrowserContext
    sent: list[Sent] = attrs.field(factory=list)
    websockets: list[str] = attrs.field(factory=list)
    problems: list[str] = attrs.field(factory=list)

    def new_page(self) -> Page:
        page = self.context.new_page()
        page.on("pageerror", lambda exc: self.problems.append(f"page error: {exc}"))
        page.on("websocket", lambda ws: self.websockets.append(ws.url))

        def console(message: Any) -> None:
            text = message.text
            if "Content Security Policy" in text or "Trusted Type" in text:
                self.problems.append(f"console {message.type}: {text}")

        page.on("console", console)
        return page

    def _record(self, request: Any) -> None:
        self.sent.append(
            Sent(request.url, request.method, dict(request.all_headers()), request.post_data)
        )

    def everything_sent(self) -> str:
        """Every URL, header and body the browser sent, as one text to search."""
        return json.dumps([attrs.asdict(s) for s in self.sent] + self.websockets)


@contextlib.contextmanager
def chromium(profile: Path) -> Iterator[BrowserRun]:
    """Headless Chromium with a fresh profile in ``profile``; closed on the way out."""
    with chromium_profiles(profile) as (run,):
        yield run


@contextlib.contextmanager
def chromium_profiles(*profiles: Path) -> Iterator[tuple[BrowserRun, ...]]:
    """One headless Chromium per profile (two people on two machines), from one Playwright.

    Playwright's sync API runs one driver per thread, so several browsers
    in one test share it rather than nesting :func:`chromium`.
    """
    if sync_playwright is None:
        missing("playwright is not installed (pip install playwright)")
    if not CHROMIUM.exists():
        missing(f"{CHROMIUM} is not installed (apt-get install chromium)")
    playwright: Playwright
    with sync_playwright() as playwright, contextlib.ExitStack() as stack:
        runs = []
        for profile in profiles:
            profile.mkdir(parents=True, exist_ok=True)
            context = playwright.chromium.launch_persistent_context(
                str(profile),
                executable_path=str(CHROMIUM),
                args=CHROMIUM_ARGS,
                headless=True,
            )
            stack.callback(context.close)
            context.set_default_timeout(WAIT_MS)
            run = BrowserRun(context)
            context.on("request", lambda request, run=run: run._record(request))
            runs.append(run)
        expect.set_options(timeout=WAIT_MS)
        yield tuple(runs)


@contextlib.contextmanager
def serving_relay(tmp: Path) -> Iterator[RelayDaemon]:
    """``m42d serve --listen ws://127.0.0.1:0`` until the block ends."""
    daemon = start_daemon(tmp, ["ws"])
    try:
        yield daemon
    finally:
        daemon.kill()


def page_url(daemon: RelayDaemon) -> str:
    """Where the browser finds the page: the ws listener's address as ``http://``."""
    return daemon.url("ws").replace("ws://", "http://", 1)


def m42_new(relay_url: str, home: Path) -> tuple[str, str]:
    """``m42 new --relay URL --json`` in a subprocess: (Link A, Link B), as a user gets them."""
    home.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [*M42_COMMAND, "new", "--relay", relay_url, "--json"],
        capture_output=True,
        env=_clean_env(HOME=str(home), XDG_DATA_HOME=str(home / "data")),
        cwd=home,
        timeout=STEP,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    doc = json.loads(done.stdout)
    return doc["link_a"], doc["link_b"]
