"""``m42`` commands through ``main([...])``, against an in-process relay on loopback.

``main`` runs its own ``trio.run``, so each invocation runs in a worker
thread while the relay keeps serving in the test's event loop.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import json
import os
import re
import sys
import typing
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from m42d.cli import (
    EXIT_KEY_CHANGED,
    EXIT_REFUSED,
    EXIT_TIMEOUT,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    chat,
    main,
    output,
    trust,
)
from m42d.client import events as ev
from m42d.link import Link
from m42d.ticket import Seat
from tests.client_harness import Recorder, RelayUnderTest, file_digest, running_relay


@pytest.fixture
async def ws_relay() -> AsyncIterator[RelayUnderTest]:
    async with running_relay("ws") as relay:
        yield relay


async def m42(*argv: str, limit: float = 20.0) -> int:
    with trio.fail_after(limit):
        return await trio.to_thread.run_sync(main, list(argv))


# -- usage -------------------------------------------------------------------------


def test_help_lists_exit_codes_and_link_safety(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "exit codes" in out
    assert "visible to every user" in out
    assert main(["send", "--help"]) == 0
    assert "ps" in capsys.readouterr().out


def test_version_is_the_installed_packages(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"m42 {importlib.metadata.version('m42d')}"


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == EXIT_USAGE
    assert "required" in capsys.readouterr().err


def test_missing_link(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("M42_LINK", raising=False)
    assert main(["recv"]) == EXIT_USAGE
    assert "no link given" in capsys.readouterr().err


def test_bad_link_is_not_echoed(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["recv", "ws://x#m42.1.A.secretstuff"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "link is cut short" in err
    assert "secretstuff" not in err


def test_bad_numbers_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["recv", "--count", "0"]) == EXIT_USAGE
    assert main(["send", "--wait", "-1"]) == EXIT_USAGE
    assert main(["new", "--pin", "!!"]) == EXIT_USAGE
    assert "--pin" in capsys.readouterr().err


# -- new -------------------------------------------------------------------------------


async def test_new_json(ws_relay: RelayUnderTest, capsys: pytest.CaptureFixture[str]) -> None:
    assert await m42("new", "--relay", ws_relay.url, "--json") == 0
    doc = json.loads(capsys.readouterr().out)
    a, b = Link.parse(doc["link_a"]), Link.parse(doc["link_b"])
    assert (a.seat, b.seat) == (Seat.A, Seat.B)
    assert a.secret == b.secret
    assert a.room_id == b.room_id
    assert a.token != b.token
    assert doc["expires"] == a.expires
    assert a.pin is None
    # The form a browser opens: the relay serves the page at http://host:port/.
    assert a.relay == b.relay == ws_relay.url.replace("ws://", "http://", 1)


@pytest.mark.parametrize("form", ["ws", "http"])
async def test_links_from_new_work_in_both_forms(
    ws_relay: RelayUnderTest, tmp_path: Path, capsys: pytest.CaptureFixture[str], form: str
) -> None:
    """``m42 new`` prints http:// links; they and their ws:// twins both connect (WebSocket)."""
    relay = ws_relay.url if form == "ws" else ws_relay.url.replace("ws://", "http://", 1)
    assert await m42("new", "--relay", relay, "--json") == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["link_a"].startswith("http://")
    link_a, link_b = doc["link_a"], doc["link_b"]
    if form == "ws":
        link_a = link_a.replace("http://", "ws://", 1)
    (tmp_path / "link-b").write_text(link_b + "\n")
    codes: dict[str, int] = {}

    async def recv() -> None:
        codes["recv"] = await m42(
            "recv", "--link-file", str(tmp_path / "link-b"), "--keys-dir", str(tmp_path / "kb"),
            "--out", str(tmp_path / "in"), "--count", "1", "--jsonl", "--timeout", "15",
        )  # fmt: skip

    async def send() -> None:
        codes["send"] = await m42(
            "send", link_a, "--keys-dir", str(tmp_path / "ka"), "--text", "hi", "--wait", "15"
        )

    async with trio.open_nursery() as nursery:
        nursery.start_soon(recv)
        nursery.start_soon(send)
    assert codes == {"recv": 0, "send": 0}
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["text"] for line in lines if line["event"] == "text"] == ["hi"]


async def test_new_plain_with_qr_from_env(
    ws_relay: RelayUnderTest, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("M42_RELAY", ws_relay.url)
    assert await m42("new", "--qr") == 0
    out = capsys.readouterr().out
    assert "Link A" in out
    assert "Link B" in out
    assert "QR" in out
    assert "\u2588" in out or "\u2580" in out  # block characters of the QR code


async def test_new_tls_trusts_on_first_use(capsys: pytest.CaptureFixture[str]) -> None:
    async with running_relay("tls") as relay:
        assert await m42("new", "--relay", relay.url, "--json") == 0
    captured = capsys.readouterr()
    assert "first use" in captured.err
    doc = json.loads(captured.out)
    assert Link.parse(doc["link_a"]).pin == relay.pin
    assert Link.parse(doc["link_b"]).pin == relay.pin


async def test_new_refused_by_private_relay(
    ws_relay: RelayUnderTest, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    ws_relay.relay.creation_secret = b"letmein"
    secret_file = tmp_path / "secret"
    secret_file.write_text("wrong\n")
    code = await m42("new", "--relay", ws_relay.url, "--creation-secret-file", str(secret_file))
    assert code == EXIT_REFUSED
    err = capsys.readouterr().err
    assert "m42: this relay makes rooms only for those who know its creation secret" in err
    assert "--creation-secret-file FILE" in err
    assert not re.search(r"(?<![\d:.])403(?!\d)", err), err
    secret_file.write_text("letmein\n")
    assert (
        await m42("new", "--relay", ws_relay.url, "--creation-secret-file", str(secret_file)) == 0
    )


# -- send / recv -----------------------------------------------------------------------


async def test_send_and_recv_jsonl(
    ws_relay: RelayUnderTest, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    link_a, link_b = ws_relay.links()
    data = os.urandom(300_000)
    (tmp_path / "payload.bin").write_bytes(data)
    out_dir = tmp_path / "in"
    link_file = tmp_path / "link-b"
    link_file.write_text(link_b.format() + "\n")
    codes: dict[str, int] = {}

    async def recv() -> None:
        codes["recv"] = await m42(
            "recv", "--link-file", str(link_file), "--keys-dir", str(tmp_path / "kb"),
            "--out", str(out_dir), "--count", "3", "--jsonl", "--timeout", "15",
        )  # fmt: skip

    async def send() -> None:
        codes["send"] = await m42(
            "send", link_a.format(), "--keys-dir", str(tmp_path / "ka"),
            "--text", "hello \x1b]0;pwned\x07", "--text", "second",
            "--file", str(tmp_path / "payload.bin"), "--wait", "15",
        )  # fmt: skip

    async with trio.open_nursery() as nursery:
        nursery.start_soon(recv)
        nursery.start_soon(send)
    assert codes == {"recv": 0, "send": 0}
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    kinds = [line["event"] for line in lines]
    assert "peer_up" in kinds
    assert "safety_words" in kinds
    assert all(isinstance(line["ts"], float) for line in lines)
    assert [line["text"] for line in lines if line["event"] == "text"] == [
        "hello \x1b]0;pwned\x07",
        "second",
    ]
    done = [line for line in lines if line["event"] == "file_done"]
    assert len(done) == 1
    assert file_digest(done[0]["path"]) == hashlib.sha256(data).digest()
    offer = kinds.index("file_offer")
    assert offer < kinds.index("file_progress")
    assert {k: lines[offer][k] for k in ("file_id", "name", "size", "accepted")} == {
        "file_id": done[0]["file_id"],
        "name": "payload.bin",
        "size": len(data),
        "accepted": True,
    }


def test_every_jsonl_event_and_its_fields_are_in_the_docs() -> None:
    """docs/client.md's table is what scripts rely on: it names every field recv prints."""
    import re

    import attrs

    doc = (Path(__file__).parent.parent / "docs" / "client.md").read_text()
    table = doc.split("### `recv --jsonl` events", 1)[1].split("\n### ", 1)[0]
    documented: dict[str, set[str]] = {}
    for row in re.findall(r"^\| `(\w+)` \|([^|]*)\|", table, re.MULTILINE):
        documented[row[0]] = set(re.findall(r"`(\w+)`", row[1]))
    printed = {
        cls.kind: {field.name for field in attrs.fields(cls)}
        for cls in typing.get_args(ev.ClientEvent)
        if cls not in (ev.Connected, ev.Reconnecting)
    }
    assert set(documented) == set(printed)
    for kind, fields in printed.items():
        assert fields <= documented[kind], kind


async def test_recv_plain_escapes_text(
    ws_relay: RelayUnderTest,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    link_a, link_b = ws_relay.links()
    monkeypatch.setenv("M42_LINK", link_b.format())
    codes: dict[str, int] = {}

    async def recv() -> None:
        codes["recv"] = await m42(
            "recv", "--keys-dir", str(tmp_path / "kb"), "--out", str(tmp_path), "--count", "1"
        )

    async def send() -> None:
        codes["send"] = await m42(
            "send", link_a.format(), "--keys-dir", str(tmp_path / "ka"),
            "--text", "evil \x1b[2J\u202eline",
        )  # fmt: skip

    async with trio.open_nursery() as nursery:
        nursery.start_soon(recv)
        nursery.start_soon(send)
    assert codes == {"recv": 0, "send": 0}
    out = capsys.readouterr().out
    assert out == "evil \\x1b[2J\\u202eline\n"


async def test_send_text_from_stdin_and_link_from_stdin_conflict(
    ws_relay: RelayUnderTest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    link_a, _ = ws_relay.links()
    monkeypatch.setattr("sys.stdin", io.StringIO(link_a.format() + "\n"))
    assert await m42("send", "-", "--keys-dir", str(tmp_path)) == EXIT_USAGE


async def test_send_times_out_without_peer(
    ws_relay: RelayUnderTest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    link_a, _ = ws_relay.links()
    monkeypatch.setattr("sys.stdin", io.StringIO("from stdin"))
    code = await m42("send", link_a.format(), "--keys-dir", str(tmp_path), "--wait", "0.3")
    assert code == EXIT_TIMEOUT


async def test_recv_wrong_token_refused(
    ws_relay: RelayUnderTest, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    link_a, _ = ws_relay.links()
    bad = Link(link_a.relay, link_a.seat, link_a.ticket, bytes(16), link_a.secret)
    code = await m42("recv", bad.format(), "--keys-dir", str(tmp_path), "--out", str(tmp_path))
    assert code == EXIT_REFUSED
    err = capsys.readouterr().err
    assert "m42: the relay does not accept this link" in err
    assert not re.search(r"(?<![\d:.])401(?!\d)", err), err  # no bare code (a port may hold 401)
    assert bad.format() not in err


async def test_recv_timeout_with_count(ws_relay: RelayUnderTest, tmp_path: Path) -> None:
    _, link_b = ws_relay.links()
    args = ("recv", link_b.format(), "--keys-dir", str(tmp_path), "--out", str(tmp_path))
    assert await m42(*args, "--timeout", "0.3", "--count", "1") == EXIT_TIMEOUT
    assert await m42(*args, "--timeout", "0.3") == 0


@pytest.mark.slow
async def test_key_change_then_trust(
    ws_relay: RelayUnderTest, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    link_a, link_b = ws_relay.links()
    kb = str(tmp_path / "kb")

    async def pair(a_keys: str) -> dict[str, int]:
        codes: dict[str, int] = {}

        async def recv() -> None:
            codes["recv"] = await m42(
                "recv", link_b.format(), "--keys-dir", kb, "--out", str(tmp_path),
                "--count", "1", "--timeout", "15",
            )  # fmt: skip

        async def send() -> None:
            codes["send"] = await m42(
                "send", link_a.format(), "--keys-dir", a_keys, "--text", "hi", "--wait", "15"
            )

        async with trio.open_nursery() as nursery:
            nursery.start_soon(recv)
            nursery.start_soon(send)
        return codes

    assert await pair(str(tmp_path / "ka1")) == {"recv": 0, "send": 0}
    capsys.readouterr()
    # A comes back with new keys and a message: B, who pinned A's old key,
    # stops with exit code 4 and nothing is shown.
    codes: dict[str, int] = {}
    a_done = trio.Event()

    async def send_with_new_keys() -> None:
        codes["send"] = await m42(
            "send", link_a.format(), "--keys-dir", str(tmp_path / "ka2"), "--text", "after",
            "--wait", "40", limit=60,
        )  # fmt: skip
        a_done.set()

    recv_b = ("recv", link_b.format(), "--keys-dir", kb, "--out", str(tmp_path))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(send_with_new_keys)
        assert await m42(*recv_b, "--timeout", "15") == EXIT_KEY_CHANGED
        captured = capsys.readouterr()
        assert "key changed" in captured.err
        assert "after" not in captured.out
        # B compares the SAS and trusts; the message then arrives exactly once.
        assert await m42("trust", link_b.format(), "--keys-dir", kb, "--yes", "--wait", "15") == 0
        if not a_done.is_set():
            assert await m42(*recv_b, "--count", "1", "--timeout", "15") == 0
        with trio.fail_after(15):
            await a_done.wait()
    assert codes["send"] == 0
    out = capsys.readouterr().out
    assert "Trusted" in out
    assert out.count("after") == 1


class _FakeStderr(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def _progress(done: int, size: int = 100) -> ev.Progress:
    return ev.Progress(1, True, "a.bin", done, size, 10.0, 1.0)


def test_progress_on_a_terminal_is_one_line_redrawn(monkeypatch: pytest.MonkeyPatch) -> None:
    """Many progress events make one redrawn line; a message clears it first; 100% ends it."""
    err = _FakeStderr(tty=True)
    monkeypatch.setattr(sys, "stderr", err)
    view = output.ProgressView()
    monkeypatch.setattr(output, "PROGRESS", view)
    for done in range(0, 100, 10):
        view.show(_progress(done))
    assert err.getvalue().count("\n") == 0
    assert err.getvalue().count("\r\x1b[K") == 10
    output.eprint("m42: secure session")
    assert err.getvalue().endswith("\r\x1b[Km42: secure session\n")
    view.show(_progress(100))
    assert err.getvalue().endswith("(100%) at 10 B/s\n")
    assert not view.line_open


def test_progress_in_a_log_is_a_line_now_and_then(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not a terminal: no control characters, the first and the last line, none in between."""
    err = _FakeStderr(tty=False)
    monkeypatch.setattr(sys, "stderr", err)
    view = output.ProgressView()
    for done in range(0, 101, 10):
        view.show(_progress(done))
    lines = err.getvalue().splitlines()
    assert [line.split("(")[1].split(")")[0] for line in lines] == ["0%", "100%"]
    assert "\x1b" not in err.getvalue()
    assert "\r" not in err.getvalue()


# -- a hostile peer or relay against the client (second review) ------------------------


HOSTILE_TEXT = "hello\nm42: saved /home/you/invoice.pdf\x1b[2J"
FORGED_STATUS = "m42: saved /home/you/invoice.pdf"


async def test_new_escapes_the_relays_error_text(capsys: pytest.CaptureFixture[str]) -> None:
    """The relay's words reach the terminal only escaped (m42 new printed them raw)."""
    from m42d.transport import FrameConnection, load_transports
    from m42d.wire import CreateRoom, Error

    async def refuse(conn: FrameConnection) -> None:
        assert isinstance(await conn.receive(), CreateRoom)
        await conn.send(Error(499, "\x1b]0;pwned\x07\x1b[2Jgo away\nm42: room created"))

    listener = await load_transports()["ws"].open_listener("ws://127.0.0.1:0")
    async with trio.open_nursery() as nursery:
        await nursery.start(listener.serve, refuse)
        assert await m42("new", "--relay", listener.urls[0]) == EXIT_REFUSED
        nursery.cancel_scope.cancel()
    err = capsys.readouterr().err
    assert "\x1b" not in err
    assert "\x07" not in err
    assert "\\x1b]0;pwned\\x07\\x1b[2Jgo away\\x0am42: room created" in err
    assert not any(line.startswith("m42: room created") for line in err.splitlines())


async def test_recv_marks_every_further_line_of_a_text(
    ws_relay: RelayUnderTest, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A text cannot forge a status line: its further lines start with "  | "."""
    link_a, link_b = ws_relay.links()
    async with trio.open_nursery() as nursery:
        peer = Recorder(ws_relay.client(link_a, tmp_path))
        nursery.start_soon(peer.run)
        await nursery.start(peer.client.run)
        peer.client.send_text(HOSTILE_TEXT)
        code = await m42(
            "recv", link_b.format(), "--keys-dir", str(tmp_path / "kb"),
            "--out", str(tmp_path), "--count", "1",
        )  # fmt: skip
        nursery.cancel_scope.cancel()
    assert code == 0
    out = capsys.readouterr().out
    assert out == "hello\n  | m42: saved /home/you/invoice.pdf\\x1b[2J\n"
    assert not any(line.startswith(FORGED_STATUS) for line in out.splitlines())


async def test_send_marks_every_further_line_of_a_text_it_shows(
    ws_relay: RelayUnderTest, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    link_a, link_b = ws_relay.links()
    async with trio.open_nursery() as nursery:
        peer = Recorder(ws_relay.client(link_b, tmp_path))
        nursery.start_soon(peer.run)
        await nursery.start(peer.client.run)
        peer.client.send_text(HOSTILE_TEXT)
        code = await m42(
            "send", link_a.format(), "--keys-dir", str(tmp_path / "ka"), "--text", "mine"
        )
        await peer.wait_for(lambda r: r.of(ev.TextIn))
        nursery.cancel_scope.cancel()
    assert code == 0
    # The peer re-sends its text right behind its HELLO, so it comes before
    # the acknowledgement of ours, on the same ordered lane.
    out = capsys.readouterr().out
    assert out == "hello\n  | m42: saved /home/you/invoice.pdf\\x1b[2J\n"


def test_every_further_line_of_a_text_is_marked_on_every_path() -> None:
    """recv and send use the plain marker, trust and chat one aligned under their prefix."""
    assert output.text_block(HOSTILE_TEXT) == (
        "hello\n  | m42: saved /home/you/invoice.pdf\\x1b[2J"
    )
    assert output.text_block("a\nb\n", trust.TRUST_CONTINUATION) == "a\n      | b\n      | "
    assert output.text_block("one line") == "one line"
    assert output.text_block("x\u2028y\rz") == "x\\u2028y\\x0dz"  # other line breaks: escaped
    assert chat.CHAT_CONTINUATION.index("|") == len("[12:34:56] ")  # after the time stamp


def test_no_core_dumps_while_holding_secrets(tmp_path: Path) -> None:
    """RLIMIT_CORE 0 and PR_SET_DUMPABLE 0, set before any link is read."""
    import subprocess

    probe = (
        "import ctypes, resource, sys\n"
        "from m42d.cli import main\n"
        "main(['recv', '--keys-dir', sys.argv[1], 'ws://x#not-a-link'])\n"
        "dumpable = ctypes.CDLL(None).prctl(3, 0, 0, 0, 0)\n"
        "print(resource.getrlimit(resource.RLIMIT_CORE), dumpable)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.strip() == "(0, 0) 0"


def test_a_link_file_others_can_read_is_warned_about(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    link = tmp_path / "link"
    link.write_text("ws://x#not-a-link\n")
    link.chmod(0o644)
    assert main(["recv", "--link-file", str(link)]) == EXIT_USAGE
    assert "can be read by other users" in capsys.readouterr().err
    link.chmod(0o600)
    assert main(["recv", "--link-file", str(link)]) == EXIT_USAGE
    assert "can be read by other users" not in capsys.readouterr().err


def test_on_a_terminal_the_link_is_asked_for_without_echo(tmp_path: Path) -> None:
    """The preferred form for people: no argument, no variable, no shell history."""
    import fcntl
    import subprocess
    import termios
    import time

    from m42d.link import make_links
    from m42d.ticket import TicketKeyRing
    from tests.e2e_harness import M42_COMMAND

    issued = TicketKeyRing.generate().mint(now=int(time.time()), ttl=3600)
    link = make_links("ws://127.0.0.1:9", issued, os.urandom(32))[1]  # nobody listens there
    main_fd, tty_fd = os.openpty()

    def controlling_tty() -> None:
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    env = {k: v for k, v in os.environ.items() if not k.startswith("M42_")}
    env["XDG_DATA_HOME"] = str(tmp_path)
    proc = subprocess.Popen(
        [*M42_COMMAND, "recv", "--out", str(tmp_path / "in"), "--timeout", "1"],
        stdin=tty_fd,
        stdout=tty_fd,
        stderr=tty_fd,
        env=env,
        preexec_fn=controlling_tty,
    )
    os.close(tty_fd)
    seen = b""
    try:
        while b"paste the link" not in seen:
            seen += os.read(main_fd, 4096)
        os.write(main_fd, link.format().encode() + b"\n")
        assert proc.wait(timeout=60) == EXIT_UNREACHABLE  # the link was read: it got that far
        while True:
            try:
                chunk = os.read(main_fd, 4096)
            except OSError:
                break  # the terminal closed with the process
            if not chunk:
                break
            seen += chunk
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(main_fd)
    assert b"(it is not shown)" in seen
    assert link.format().encode() not in seen
    assert link.format().split("#")[1].encode() not in seen


def test_send_refuses_a_text_over_the_cap_before_connecting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import time

    from m42d.link import make_links
    from m42d.session import MAX_TEXT
    from m42d.ticket import TicketKeyRing

    issued = TicketKeyRing.generate().mint(now=int(time.time()), ttl=3600)
    link = make_links("ws://127.0.0.1:9", issued, os.urandom(32))[0]  # nobody listens there
    argv = ["send", "--keys-dir", str(tmp_path), link.format(), "--text", "x" * (MAX_TEXT + 1)]
    assert main(argv) == EXIT_USAGE
    assert "over the 1048576-byte cap; send it with --file" in capsys.readouterr().err
    assert not (tmp_path / f"{link.room_id.hex()}-A.json").exists()  # it never got that far


def test_a_link_given_twice_is_a_usage_error_that_names_both(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`m42 send --link-file F hello` used to parse "hello" as the link and
    report the good link file as a "bad link" with no '#'."""
    link = tmp_path / "link"
    link.write_text("ws://x#not-a-link\n")
    link.chmod(0o600)
    assert main(["send", "--link-file", str(link), "hello"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "the link is given twice, as LINK and as --link-file" in err
    assert "use --text" in err
    assert "bad link" not in err
    assert main(["recv", "--link-file", str(link), "hello"]) == EXIT_USAGE
    assert "use --text" not in capsys.readouterr().err
