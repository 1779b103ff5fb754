"""The browser client against the ``m42`` CLI and against itself, through a real ``m42d serve``.

Debian's Chromium (Playwright, tests/browser_harness.py) opens Link B from a
real ``m42 new``; seat A is the CLI in subprocesses.  Checked: the same
eight safety words on both sides; a text each way with the delivery tick; a
file each way with matching SHA-256 and progress; two browsers in one room;
nothing the browser sent carries the link's secret.

The File System Access save picker needs a person to click in a dialog, so
the pages here run without it (an init script removes
``showSaveFilePicker``): incoming files take the next sink, OPFS from a
worker, the one Chromium uses where the picker is refused.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.browser_harness import chromium, chromium_profiles, m42_new, page_url, serving_relay
from tests.e2e_harness import M42_COMMAND, _clean_env, random_file, sha256_file

pytestmark = pytest.mark.slow

with contextlib.suppress(ImportError):  # browser_harness skips (fails under CI)
    from playwright.sync_api import Page, expect

FILE_SIZE = 50 * 1000 * 1000
"""The issue's 50 MB, each way."""
TRANSFER_MS = 240_000
NO_PICKER = "delete window.showSaveFilePicker;"


class CliSeat:
    """``m42`` as seat A in subprocesses: one keys dir, so every run is the same device."""

    def __init__(self, link: str, home: Path) -> None:
        self.link = link
        self.home = home
        self.keys = home / "keys"
        self.started: list[subprocess.Popen[str]] = []
        home.mkdir(parents=True, exist_ok=True)

    def __enter__(self) -> CliSeat:
        return self

    def __exit__(self, *exc: object) -> None:
        """Every process ended and its pipes closed, pass or fail."""
        for proc in self.started:
            if proc.poll() is None:
                proc.kill()
            proc.communicate(timeout=30)

    def env(self) -> dict[str, str]:
        return _clean_env(M42_LINK=self.link, XDG_DATA_HOME=str(self.home / "data"))

    def start(self, *argv: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [*M42_COMMAND, *argv, "--keys-dir", str(self.keys)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env(),
            cwd=self.home,
        )
        self.started.append(proc)
        return proc


def _events(proc: subprocess.Popen[str], until: str, limit: float) -> list[dict[str, Any]]:
    """``--jsonl`` events up to and including the first of kind ``until``."""
    assert proc.stdout is not None
    deadline = time.monotonic() + limit
    seen: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if line.startswith("{"):
            seen.append(json.loads(line))
            if seen[-1]["event"] == until:
                return seen
    proc.kill()
    err = proc.stderr.read() if proc.stderr is not None else ""
    raise AssertionError(f"no {until} event; got {[e['event'] for e in seen]}; stderr:\n{err}")


def _open_seat(page: Page, link: str) -> list[str]:
    """Open ``link`` in ``page``; the safety words once the session stands."""
    page.add_init_script(NO_PICKER)
    page.goto(link)
    expect(page.locator("section.chat")).to_be_visible()
    words = page.locator("#safety-panel .words li")
    expect(words).to_have_count(8, timeout=TRANSFER_MS)
    return [w.strip() for w in words.all_inner_texts()]


def _save_download(page: Page, card: Any, out: Path) -> Path:
    with page.expect_download(timeout=TRANSFER_MS) as info:
        card.locator("[data-action=save-file]").click()
    info.value.save_as(out)
    return out


def test_browser_and_cli_chat_and_send_files_both_ways(tmp_path: Path) -> None:
    to_cli = tmp_path / "from-browser.bin"
    to_browser = tmp_path / "from-cli.bin"
    digest_up = random_file(to_cli, FILE_SIZE)
    digest_down = random_file(to_browser, FILE_SIZE)
    with (
        contextlib.ExitStack() as stack,
        serving_relay(tmp_path / "relay") as daemon,
        chromium(tmp_path / "profile") as run,
    ):
        link_a, link_b = m42_new(page_url(daemon), tmp_path / "creator")
        cli = stack.enter_context(CliSeat(link_a, tmp_path / "alice"))
        out = tmp_path / "alice-got"
        out.mkdir()
        recv = cli.start("recv", "--jsonl", "--count", "2", "--out", str(out))
        page = run.new_page()
        browser_words = _open_seat(page, link_b)
        cli_words = _events(recv, "safety_words", 60)[-1]["words"]
        assert browser_words == cli_words

        # Browser -> CLI: a text, then 50 MB.
        field = page.locator("#composer-text")
        field.fill("hello from the browser <b>not bold</b>")
        field.press("Enter")
        mine = page.locator(".log .message.out").last
        page.locator("input[type=file]").set_input_files(str(to_cli))
        events = _events(recv, "file_done", TRANSFER_MS / 1000)
        texts = [e["text"] for e in events if e["event"] == "text"]
        assert texts == ["hello from the browser <b>not bold</b>"]
        progress = [e for e in events if e["event"] == "file_progress"]
        assert progress
        assert progress[-1]["done"] == FILE_SIZE
        assert recv.wait(timeout=60) == 0
        assert sha256_file(out / to_cli.name) == digest_up
        expect(mine.locator(".sr-only").last).to_have_text("delivered", timeout=TRANSFER_MS)
        sending = page.locator(".file-card.out").last
        expect(sending).to_contain_text("Delivered", timeout=TRANSFER_MS)

        # CLI -> browser: a text and 50 MB; the page saves it from OPFS.
        send = cli.start("send", "--text", "hello from the CLI \x1b[2J", "--file", str(to_browser))
        expect(page.locator(".log .message.in .text").last).to_have_text(
            "hello from the CLI \x1b[2J", timeout=TRANSFER_MS
        )
        card = page.locator(".file-card.in").last
        expect(card.locator(".file-name")).to_have_text(to_browser.name, timeout=TRANSFER_MS)
        card.locator("[data-action=accept-file]").click()
        expect(card.locator("[data-action=save-file]")).to_be_visible(timeout=TRANSFER_MS)
        saved = _save_download(page, card, tmp_path / "browser-got.bin")
        assert sha256_file(saved) == digest_down
        _, err = send.communicate(timeout=TRANSFER_MS / 1000)
        assert send.returncode == 0, err

        # Nothing the browser sent (URLs, headers, bodies, socket URLs) holds the secret.
        fragment = link_b.partition("#")[2]
        secret_part = fragment.split(".")[-1] if fragment.count(".") >= 5 else fragment
        everything = run.everything_sent()
        assert fragment not in everything
        assert secret_part not in everything
        assert not run.problems, run.problems


def test_the_relay_killed_mid_transfer_loses_and_doubles_nothing(tmp_path: Path) -> None:
    """The browser sends 50 MB to the CLI; the relay dies and comes back; the file is whole."""
    upload = tmp_path / "through-a-restart.bin"
    digest = random_file(upload, FILE_SIZE)
    with (
        contextlib.ExitStack() as stack,
        serving_relay(tmp_path / "relay") as daemon,
        chromium(tmp_path / "profile") as run,
    ):
        link_a, link_b = m42_new(page_url(daemon), tmp_path / "creator")
        cli = stack.enter_context(CliSeat(link_a, tmp_path / "alice"))
        out = tmp_path / "alice-got"
        out.mkdir()
        recv = cli.start("recv", "--jsonl", "--count", "2", "--out", str(out))
        page = run.new_page()
        _open_seat(page, link_b)
        page.locator("input[type=file]").set_input_files(str(upload))
        _events(recv, "file_progress", TRANSFER_MS / 1000)
        daemon.restart()  # SIGKILL, then the same addresses and state directory
        field = page.locator("#composer-text")
        field.fill("sent while the relay was away")
        field.press("Enter")
        events = _events(recv, "file_done", TRANSFER_MS / 1000)
        events += (
            _events(recv, "text", TRANSFER_MS / 1000)
            if not any(e["event"] == "text" for e in events)
            else []
        )
        assert recv.wait(timeout=60) == 0
        assert sha256_file(out / upload.name) == digest
        assert [e["text"] for e in events if e["event"] == "text"] == [
            "sent while the relay was away"
        ]
        assert len([e for e in events if e["event"] == "file_done"]) == 1
        expect(page.locator(".log .message.out .sr-only").last).to_have_text(
            "delivered", timeout=TRANSFER_MS
        )


def test_a_changed_peer_key_stops_the_browser_until_trusted(tmp_path: Path) -> None:
    with (
        contextlib.ExitStack() as stack,
        serving_relay(tmp_path / "relay") as daemon,
        chromium(tmp_path / "profile") as run,
    ):
        link_a, link_b = m42_new(page_url(daemon), tmp_path / "creator")
        first = stack.enter_context(CliSeat(link_a, tmp_path / "alice"))
        hello = first.start("send", "--text", "first device")
        page = run.new_page()
        _open_seat(page, link_b)
        expect(page.locator(".log .message.in .text").last).to_have_text("first device")
        assert hello.wait(timeout=60) == 0
        # The same link from a device with another static key: someone in the middle, or a
        # new device; the page stops and says so, and nothing of theirs is shown.
        other = stack.enter_context(CliSeat(link_a, tmp_path / "mallory"))
        sneaky = other.start("send", "--text", "not shown", "--wait", "8")
        dialog = page.locator("dialog[data-dialog=key-changed]")
        expect(dialog).to_be_visible(timeout=TRANSFER_MS)
        expect(dialog.locator(".words li")).to_have_count(8)
        sneaky.wait(timeout=60)
        expect(page.locator(".log .message.in .text")).to_have_count(1)
        assert page.locator(".log .message.in .text").last.inner_text() == "first device"


def test_two_browsers_chat_with_the_same_words(tmp_path: Path) -> None:
    with serving_relay(tmp_path / "relay") as daemon:
        link_a, link_b = m42_new(page_url(daemon), tmp_path / "creator")
        with chromium_profiles(tmp_path / "alice", tmp_path / "bob") as (alice, bob):
            page_a = alice.new_page()
            page_b = bob.new_page()
            page_a.add_init_script(NO_PICKER)
            page_a.goto(link_a)
            words_b = _open_seat(page_b, link_b)
            words = page_a.locator("#safety-panel .words li")
            expect(words).to_have_count(8, timeout=TRANSFER_MS)
            assert [w.strip() for w in words.all_inner_texts()] == words_b
            page_a.locator("#composer-text").fill("hi Bob")
            page_a.locator("#composer-text").press("Enter")
            expect(page_b.locator(".log .message.in .text").last).to_have_text("hi Bob")
            page_b.locator("#composer-text").fill("hi Alice")
            page_b.locator("#composer-text").press("Enter")
            expect(page_a.locator(".log .message.in .text").last).to_have_text("hi Alice")
            expect(page_a.locator(".log .message.out .sr-only").last).to_have_text("delivered")
            assert not alice.problems, alice.problems
            assert not bob.problems, bob.problems


def test_alice_creates_the_room_in_the_page_and_bob_opens_link_b(tmp_path: Path) -> None:
    """The landing page's "Create a room" makes the room on the relay and R in the page."""
    with (
        serving_relay(tmp_path / "relay") as daemon,
        chromium_profiles(tmp_path / "alice", tmp_path / "bob") as (alice, bob),
    ):
        page_a = alice.new_page()
        page_a.add_init_script(NO_PICKER)
        page_a.goto(page_url(daemon) + "/")
        page_a.locator("[data-action=create-room]").click()
        link_b = page_a.locator("input.link-field").input_value()
        assert link_b.startswith(page_url(daemon))
        assert "#m42." in link_b
        words_b = _open_seat(bob.new_page(), link_b)
        words_a = page_a.locator("#safety-panel .words li")
        expect(words_a).to_have_count(8, timeout=TRANSFER_MS)
        assert [w.strip() for w in words_a.all_inner_texts()] == words_b
        # Alice's page never sent R anywhere; only the page itself put it in Link B.
        assert link_b.partition("#")[2] not in alice.everything_sent()
        assert not alice.problems, alice.problems


def test_page_refuses_nothing_it_needs_under_its_own_policy(tmp_path: Path) -> None:
    """The real engine loads (words, key store, socket) with no CSP or Trusted Types refusal."""
    with serving_relay(tmp_path / "relay") as daemon, chromium(tmp_path / "p") as run:
        link_a, _ = m42_new(page_url(daemon), tmp_path / "creator")
        page = run.new_page()
        page.goto(link_a)
        expect(page.locator("section.chat")).to_be_visible()
        # Joined on the relay: the page says whom it waits for (no error, no "incomplete").
        expect(page.get_by_role("status").first).to_contain_text("Waiting for the other person")
        assert any(url.startswith("ws://") for url in run.websockets)
        assert not run.problems, run.problems
        assert os.environ.get("M42_LINK") is None  # nothing leaked into this process either
