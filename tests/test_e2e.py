"""End to end: a real ``m42d serve`` subprocess, real ``m42`` subprocesses, loopback.

For every installed transport (ws, tls, and unix when the plugin is there):
``m42 new`` makes the links, texts go both ways, a 50 MB file arrives with
progress and a matching hash, hostile file names stay inside ``--out``, a
changed key stops the session, a wrong token is refused, and a relay killed
with SIGKILL and started again loses nothing.

Observations come from ``m42 recv --jsonl`` lines and exit codes: the tests
see what a script or a user would see.  See tests/e2e_harness.py for the
rules (no sleeps, a deadline on every wait).
"""

from __future__ import annotations

import json
import os
import signal
import unicodedata
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from m42d.cli import EXIT_KEY_CHANGED, EXIT_OK, EXIT_REFUSED
from m42d.client import events as ev
from m42d.client.engine import Client
from m42d.client.keystore import FileKeyStore
from m42d.client.names import MAX_NAME_BYTES
from m42d.link import Link
from m42d.transport import load_transports
from tests.e2e_harness import (
    M42Process,
    M42Runner,
    RelayDaemon,
    m42_runner,
    random_file,
    sha256_file,
    start_daemon,
)

SCHEMES = [s for s in ("ws", "tls", "unix") if s in load_transports()]
MB = 1024 * 1024


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayDaemon]:
    """One daemon for the module, listening on every transport at once."""
    daemon = start_daemon(tmp_path_factory.mktemp("relay"), SCHEMES)
    try:
        yield daemon
    finally:
        daemon.terminate()


@pytest.fixture
def own_relay(tmp_path: Path) -> Iterator[RelayDaemon]:
    """A daemon of this test alone (it gets killed and restarted)."""
    daemon = start_daemon(tmp_path / "relay", SCHEMES)
    try:
        yield daemon
    finally:
        daemon.kill()


@pytest.fixture
async def m42(tmp_path: Path) -> AsyncIterator[M42Runner]:
    async with m42_runner(tmp_path / "users") as runner:
        yield runner


@pytest.fixture(params=SCHEMES)
def scheme(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _texts(run: M42Process) -> list[str]:
    return [e["text"] for e in run.events() if e["event"] == "text"]


def _says(text: str) -> Callable[[str], bool]:
    return lambda line: text in line


def _done_values(events: list[dict[str, Any]]) -> list[int]:
    return [e["done"] for e in events if e["event"] == "file_progress"]


async def _room(m42: M42Runner, relay: RelayDaemon, scheme: str) -> tuple[str, str]:
    url = relay.url(scheme)
    if scheme == "tls":
        # Trust on first use: the pin m42 new saw must be the one the daemon logged.
        link_a, link_b = await m42.new_room(url)
        assert Link.parse(link_a).pin is not None
        assert link_a.rsplit(".", 1)[1] == relay.pin
        return link_a, link_b
    return await m42.new_room(url)


# -- chat both ways ---------------------------------------------------------------------


async def test_text_both_ways(m42: M42Runner, relay: RelayDaemon, scheme: str) -> None:
    link_a, link_b = await _room(m42, relay, scheme)
    hostile = "bell\x07 and \x1b[2J clear"

    bob = await m42.start("bob", "recv", "--jsonl", "--count", "2", link=link_b)
    alice = await m42.run("alice", "send", "--text", "hi Bob", "--text", hostile, link=link_a)
    assert alice.proc.returncode == EXIT_OK, alice.describe()
    await bob.expect_exit(EXIT_OK)
    assert _texts(bob) == ["hi Bob", hostile]
    kinds = [e["event"] for e in bob.events()]
    assert kinds.index("peer_up") < kinds.index("safety_words") < kinds.index("text")
    assert all(isinstance(e["ts"], float) for e in bob.events())
    # JSON escaped the control characters: nothing raw reached the terminal.
    assert "\x1b" not in bob.stdout.text
    assert "\x07" not in bob.stdout.text

    # The other way, plain output this time: escaped, one line per text.
    alice_in = await m42.start("alice", "recv", "--count", "1", link=link_a)
    bob_out = await m42.run("bob", "send", "--text", "hi Alice \x1b]0;owned\x07", link=link_b)
    assert bob_out.proc.returncode == EXIT_OK, bob_out.describe()
    await alice_in.expect_exit(EXIT_OK)
    assert alice_in.stdout.lines == ["hi Alice \\x1b]0;owned\\x07"]
    # Both ends of one session saw the same SAS (Alice's send, Bob's recv).
    sas = [e["words"] for e in bob.events() if e["event"] == "safety_words"]
    assert len(sas) == 1
    assert f"safety words: {' '.join(sas[0])}" in alice.stderr.text


# -- a 50 MB file ------------------------------------------------------------------------


async def test_50mb_file_with_progress(
    m42: M42Runner, relay: RelayDaemon, scheme: str, tmp_path: Path
) -> None:
    link_a, link_b = await _room(m42, relay, scheme)
    source = tmp_path / "big.bin"
    digest = await trio.to_thread.run_sync(random_file, source, 50 * MB)
    out = tmp_path / "inbox"

    bob = await m42.start("bob", "recv", "--jsonl", "--count", "1", "--out", str(out), link=link_b)
    alice = await m42.start("alice", "send", "--file", str(source), link=link_a)
    await alice.expect_exit(EXIT_OK, limit=120)
    await bob.expect_exit(EXIT_OK)

    events = bob.events()
    done = [e for e in events if e["event"] == "file_done"]
    assert len(done) == 1
    assert done[0]["size"] == 50 * MB
    saved = Path(done[0]["path"])
    assert saved == out / "big.bin"
    assert await trio.to_thread.run_sync(sha256_file, saved) == digest
    progress = _done_values(events)
    assert len(progress) >= 2, bob.describe()
    assert progress == sorted(progress)
    assert progress[-1] == 50 * MB
    assert sorted(os.listdir(out)) == ["big.bin"]  # no partial file left behind
    assert "big.bin delivered" in alice.stderr.text


# -- hostile names, existing files ---------------------------------------------------------

HOSTILE_NAMES = [
    "../../escape.txt",
    "..\\..\\windows.txt",
    "/etc/passwd",
    "evil\x1b[2J\x07\nname.txt",
    "invoice\u202egpj.exe",
    "zero\u200bwidth\u2066.txt",
    ".bashrc",
    "..",
    "x" * 900 + ".txt",
    "keep.txt",
]


def _safe(name: str) -> bool:
    return (
        "/" not in name
        and "\\" not in name
        and not name.startswith(".")
        and len(name.encode()) <= MAX_NAME_BYTES
        and not any(unicodedata.category(c) in ("Cc", "Cf") for c in name)
    )


async def test_hostile_names_stay_inside_and_nothing_is_overwritten(
    m42: M42Runner, relay: RelayDaemon, scheme: str, tmp_path: Path
) -> None:
    """A sender that lies about names (an engine in this process) against ``m42 recv``."""
    link_a, link_b = await _room(m42, relay, scheme)
    sandbox = tmp_path / "sandbox"
    out = sandbox / "inbox" / "deeper"
    out.mkdir(parents=True)
    (out / "keep.txt").write_bytes(b"precious")
    (out / "passwd").write_bytes(b"also precious")
    payload = tmp_path / "payload.bin"
    payload.write_bytes(b"payload " * 1000)
    before_outside = sorted(p for p in sandbox.rglob("*") if out not in (p, *p.parents))

    bob = await m42.start(
        "bob",
        "recv",
        "--jsonl",
        "--count",
        str(len(HOSTILE_NAMES)),
        "--out",
        str(out),
        link=link_b,
    )
    sender = Client(Link.parse(link_a), FileKeyStore(tmp_path / "alice-keys"))
    delivered: list[ev.TransferDone] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender.run)
        for name in HOSTILE_NAMES:
            await sender.send_file(payload, name=name)
        with trio.fail_after(60):
            async for event in sender.events:
                if isinstance(event, ev.TransferDone):
                    delivered.append(event)
                    if len(delivered) == len(HOSTILE_NAMES):
                        break
                assert not isinstance(event, ev.TransferFailed | ev.KeyChanged), event
        sender.close()
    await bob.expect_exit(EXIT_OK)

    saved = [Path(e["path"]) for e in bob.events() if e["event"] == "file_done"]
    assert len(saved) == len(HOSTILE_NAMES)
    for path in saved:
        assert path.parent == out, path
        assert _safe(path.name), path.name
        assert path.read_bytes() == payload.read_bytes()
    names = {p.name for p in saved}
    assert len(names) == len(HOSTILE_NAMES)  # every file got its own name
    assert "escape.txt" in names
    assert "passwd (1)" in names  # the existing "passwd" was not touched
    assert "keep (1).txt" in names
    assert (out / "keep.txt").read_bytes() == b"precious"
    assert (out / "passwd").read_bytes() == b"also precious"
    # Nothing appeared anywhere else, no partial file is left.
    after_outside = sorted(p for p in sandbox.rglob("*") if out not in (p, *p.parents))
    assert after_outside == before_outside
    assert not [p for p in os.listdir(out) if p.startswith(".")]


async def test_same_file_twice_gets_a_new_name(
    m42: M42Runner, relay: RelayDaemon, tmp_path: Path
) -> None:
    """Through ``m42 send --file`` (the naming does not depend on the transport)."""
    link_a, link_b = await _room(m42, relay, "ws")
    source = tmp_path / "report.pdf"
    source.write_bytes(b"%PDF first")
    out = tmp_path / "inbox"
    for _ in range(2):
        bob = await m42.start(
            "bob", "recv", "--jsonl", "--count", "1", "--out", str(out), link=link_b
        )
        alice = await m42.run("alice", "send", "--file", str(source), link=link_a)
        assert alice.proc.returncode == EXIT_OK, alice.describe()
        await bob.expect_exit(EXIT_OK)
        source.write_bytes(b"%PDF second")
    assert (out / "report.pdf").read_bytes() == b"%PDF first"
    assert (out / "report (1).pdf").read_bytes() == b"%PDF second"


# -- keys and tokens ------------------------------------------------------------------------


async def test_changed_key_is_detected_then_trusted(
    m42: M42Runner, relay: RelayDaemon, scheme: str
) -> None:
    link_a, link_b = await _room(m42, relay, scheme)
    # First contact pins Bob's key at Alice's.
    alice = await m42.start("alice", "recv", "--jsonl", "--count", "1", link=link_a)
    bob = await m42.run("bob", "send", "--text", "first", link=link_b)
    assert bob.proc.returncode == EXIT_OK, bob.describe()
    await alice.expect_exit(EXIT_OK)

    # "Bob" again, from a fresh XDG_DATA_HOME: a new static key for seat B.
    alice = await m42.start("alice", "recv", "--jsonl", "--count", "1", link=link_a)
    mallory = await m42.start("mallory", "send", "--text", "trust me", link=link_b)
    await alice.expect_exit(EXIT_KEY_CHANGED)
    changed = [e for e in alice.events() if e["event"] == "key_changed"]
    assert len(changed) == 1
    assert "the peer's key changed" in alice.stderr.text
    assert "m42 trust" in alice.stderr.text
    assert "trust me" not in _texts(alice)  # nothing flowed

    # Alice compares the words and trusts the new key; the text then arrives,
    # during `trust` (which prints it) or at the next `recv`, exactly once.
    trusted = await m42.run("alice", "trust", "--yes", link=link_a)
    assert trusted.proc.returncode == EXIT_OK, trusted.describe()
    assert "the peer's key changed" in trusted.stdout.text
    assert "Trusted.  Safety words:" in trusted.stdout.text
    if "peer: trust me" not in trusted.stdout.lines:
        alice = await m42.start("alice", "recv", "--count", "1", link=link_a)
        await alice.expect_exit(EXIT_OK)
        assert alice.stdout.lines == ["trust me"]
    await mallory.expect_exit(EXIT_OK)


async def test_wrong_token_is_refused(m42: M42Runner, relay: RelayDaemon, scheme: str) -> None:
    _, link_b = await _room(m42, relay, scheme)
    real = Link.parse(link_b)
    forged = attrs.evolve(real, token=bytes(b ^ 0x55 for b in real.token)).format()

    intruder = await m42.run("eve", "recv", "--jsonl", "--timeout", "20", link=forged)
    assert intruder.proc.returncode == EXIT_REFUSED, intruder.describe()
    errors = [e for e in intruder.events() if e["event"] == "error"]
    assert len(errors) == 1
    assert errors[0]["code"] == 401
    assert errors[0]["fatal"] is True

    plain = await m42.run("eve", "send", "--text", "hello?", link=forged)
    assert plain.proc.returncode == EXIT_REFUSED, plain.describe()
    assert "the relay does not accept this link" in plain.stderr.text
    assert "401" not in plain.stderr.text  # the number is for scripts (--jsonl), not people
    assert real.token.hex() not in plain.stderr.text


# -- a relay restart ----------------------------------------------------------------------------


async def test_chat_survives_relay_kill(
    m42: M42Runner, own_relay: RelayDaemon, scheme: str
) -> None:
    """Texts typed before, during and after a SIGKILL of the relay arrive exactly once."""
    link_a, link_b = await _room(m42, own_relay, scheme)
    bob = await m42.start("bob", "recv", "--jsonl", "--count", "5", link=link_b)
    alice = await m42.start("alice", "chat", link=link_a, stdin=True)
    await alice.wait_line(lambda line: "secure session; safety words:" in line)
    await alice.type("before")
    await alice.wait_line(lambda line: "delivered #1" in line)

    await trio.to_thread.run_sync(own_relay.kill)
    lost = await alice.wait_line(lambda line: "lost the relay: " in line)
    await alice.type("during 1")
    await alice.type("during 2")
    await alice.wait_line(lambda line: "during 2" in line and "(sent #3)" in line, start=lost)
    await trio.to_thread.run_sync(own_relay.restart)
    await alice.type("after")
    for seq in (2, 3, 4):
        await alice.wait_line(_says(f"delivered #{seq}"), limit=60)
    # The control lane is in order: once this one is in, a duplicate of an
    # earlier text would have been counted, and recv would have stopped early.
    await alice.type("sentinel")
    await bob.expect_exit(EXIT_OK, limit=60)
    assert _texts(bob) == ["before", "during 1", "during 2", "after", "sentinel"]
    sas = [e["event"] for e in bob.events()].count("safety_words")
    assert sas == 2  # a fresh handshake after the restart
    # Ctrl-C leaves like /quit.
    alice.proc.send_signal(signal.SIGINT)
    await alice.expect_exit(EXIT_OK)
    assert "bye" in alice.stderr.text


# -- two chats, as the "Done when" walkthrough ---------------------------------------


async def test_two_chats(m42: M42Runner, relay: RelayDaemon, tmp_path: Path) -> None:
    """``m42 chat`` on both seats: same SAS, delivery ticks, a file with progress both ways."""
    link_a, link_b = await _room(m42, relay, "ws")
    alice = await m42.start("alice", "chat", link=link_a, stdin=True)
    bob = await m42.start("bob", "chat", "--out", "downloads", link=link_b, stdin=True)
    sas_a = alice.stdout.lines[await alice.wait_line(_says("secure session; safety words:"))]
    sas_b = bob.stdout.lines[await bob.wait_line(_says("secure session; safety words:"))]
    assert sas_a.partition("safety words:")[2] == sas_b.partition("safety words:")[2]
    assert "first contact" in sas_a

    await alice.type("Hi Bob \x1b[31m")
    await alice.wait_line(_says("(sent #1)"))
    await alice.wait_line(_says("\u2713 delivered #1"))
    await bob.wait_line(_says("peer: Hi Bob \\x1b[31m"))

    photo = alice.home / "photo.jpg"
    digest = await trio.to_thread.run_sync(random_file, photo, 3 * MB)
    await alice.type("/send photo.jpg")
    await bob.wait_line(_says("peer offers photo.jpg (3.0 MiB); accept? (y/n)"))
    await bob.type("y")
    await bob.wait_line(_says("* saved "))
    await alice.wait_line(_says("\u2713 photo.jpg delivered"))
    assert any("receiving photo.jpg: 3.0 MiB of 3.0 MiB (100%)" in x for x in bob.stdout.lines)
    assert any("sending photo.jpg: 3.0 MiB of 3.0 MiB (100%)" in x for x in alice.stdout.lines)
    assert sha256_file(bob.home / "downloads" / "photo.jpg") == digest

    mark = len(bob.stdout.lines)
    await bob.type("/help")
    await bob.wait_line(_says("/cancel"), start=mark)
    await bob.type("/cancel")
    await bob.wait_line(_says("no transfer to cancel"), start=mark)
    await bob.type("/verify")
    verify = await bob.wait_line(_says("safety words:"), start=mark)
    words = sas_b.partition("safety words:")[2].partition("(")[0].strip()
    assert bob.stdout.lines[verify].startswith(f"safety words: {words} (")

    await bob.type("/quit")
    await bob.expect_exit(EXIT_OK)
    await alice.wait_line(_says("* peer offline"))
    alice.proc.send_signal(signal.SIGINT)
    await alice.expect_exit(EXIT_OK)


@pytest.mark.slow
async def test_200mb_transfer_resumes_after_relay_kill(
    m42: M42Runner, own_relay: RelayDaemon, scheme: str, tmp_path: Path
) -> None:
    link_a, link_b = await _room(m42, own_relay, scheme)
    size = 200 * MB
    source = tmp_path / "huge.bin"
    digest = await trio.to_thread.run_sync(random_file, source, size)
    out = tmp_path / "inbox"

    bob = await m42.start("bob", "recv", "--jsonl", "--count", "1", "--out", str(out), link=link_b)
    alice = await m42.start("alice", "send", "--file", str(source), link=link_a)
    # Kill the relay as soon as the receiver reports real progress.
    index, first = await bob.wait_event(
        lambda e: e["event"] == "file_progress" and 0 < e["done"] < e["size"], limit=120
    )
    await trio.to_thread.run_sync(own_relay.kill)
    down, _ = await bob.wait_event(lambda e: e["event"] == "peer_down", start=index)
    before_kill = max(_done_values(bob.events()[: down + 1]))
    assert before_kill < size, "the transfer finished before the kill; nothing was resumed"
    await trio.to_thread.run_sync(own_relay.restart)

    await alice.expect_exit(EXIT_OK, limit=300)
    await bob.expect_exit(EXIT_OK, limit=60)
    events = bob.events()
    done = [e for e in events if e["event"] == "file_done"]
    assert len(done) == 1
    assert await trio.to_thread.run_sync(sha256_file, Path(done[0]["path"])) == digest
    assert sorted(os.listdir(out)) == ["huge.bin"]
    # Resumed, not restarted: progress never went back below what had arrived.
    after = _done_values(events[down:])
    assert after, json.dumps(events[-5:])
    assert min(after) >= before_kill
    assert [e["event"] for e in events].count("safety_words") >= 2
    assert first["done"] > 0
