"""What ``m42`` says when something goes wrong with the relay or the other seat: in words.

Through ``main([...])`` in a worker thread, against an in-process relay on
loopback, as in test_cli_commands.
"""

from __future__ import annotations

import functools
import re
import socket
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import cast

import attrs
import pytest
import trio
import trio.lowlevel

from m42d.cli import EXIT_REFUSED, EXIT_TIMEOUT, EXIT_UNREACHABLE, EXIT_WRONG_SECRET, main
from m42d.cli.chat import ChatEngine, ChatScreen
from m42d.client import events as ev
from m42d.client.connection import RelayRefused
from m42d.client.relay_words import MAX_REASON, lost_words, refusal_words, retry_words
from m42d.errors import ConnectionClosed, TransportError
from m42d.ticket import Seat
from m42d.wire import ErrorCode
from tests.client_harness import Recorder, RelayUnderTest, running_relay


@pytest.fixture
async def ws_relay() -> AsyncIterator[RelayUnderTest]:
    async with running_relay("ws") as relay:
        yield relay


async def m42(*argv: str, limit: float = 20.0) -> int:
    with trio.fail_after(limit):
        return await trio.to_thread.run_sync(main, list(argv))


async def test_a_link_opened_elsewhere_is_said_to_the_one_pushed_out(
    ws_relay: RelayUnderTest, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    link_a, link_b = ws_relay.links()
    codes: list[int] = []
    ended = trio.Event()
    async with trio.open_nursery() as nursery:
        b = Recorder(ws_relay.client(link_b, tmp_path))
        nursery.start_soon(b.run)
        await nursery.start(b.client.run)

        async def recv() -> None:
            argv = ["recv", link_a.format(), "--keys-dir", str(tmp_path / "k1")]
            codes.append(await m42(*argv, "--out", str(tmp_path / "in")))
            ended.set()

        nursery.start_soon(recv)
        await b.wait_for(lambda r: r.of(ev.SafetyWords))  # the recv holds seat A
        intruder = ws_relay.client(link_a, tmp_path / "elsewhere")
        nursery.start_soon(intruder.run)
        with trio.fail_after(20):
            await ended.wait()
        nursery.cancel_scope.cancel()
    assert codes == [EXIT_REFUSED]
    err = capsys.readouterr().err
    assert "m42: your link (seat A) was opened somewhere else" in err
    assert "open the link here again to take it back" in err  # the next step, not only news
    assert not re.search(r"(?<![\d:.])409(?!\d)", err), err  # no bare code (a port may hold 409)


@pytest.mark.parametrize("code", list(ErrorCode))
def test_refusals_are_words_without_numbers_or_relay_terms(code: ErrorCode) -> None:
    words = refusal_words(code, code.sentence, Seat.B)
    assert not re.search(r"\d", words.replace("m42", "")), words
    assert "ticket" not in words
    assert "token" not in words
    assert "seat" not in words or "(seat B)" in words


def test_a_lost_connection_is_one_short_line_without_close_codes() -> None:
    reasons = [
        lost_words(ConnectionClosed("websocket closed (1006)")),
        lost_words(TransportError("cannot connect to 127.0.0.1:9: " + "x" * 200)),
        lost_words(trio.TooSlowError()),
        retry_words(ErrorCode.RATE_LIMITED),
        retry_words(ErrorCode.UNAVAILABLE),
    ]
    assert "1006" not in reasons[0]
    trio_words = "cannot connect to ws://h:1: all attempts to connect to h:1 failed"
    assert lost_words(TransportError(trio_words)) == "cannot connect: nothing answered"
    assert all(len(reason) <= MAX_REASON for reason in reasons)
    lines: list[str] = []
    screen = ChatScreen(cast(ChatEngine, None), _Lines(lines), clock=lambda: "12:00:00")
    for reason in reasons:
        screen.show(ev.Reconnecting(12.3, reason))  # no engine is asked anything
    assert len(lines) == len(reasons)
    assert all(len(line) <= 100 and "\n" not in line for line in lines), lines


@attrs.define
class _Lines:
    lines: list[str]

    def show(self, line: str) -> None:
        self.lines.append(line)


def _dead_relay_url() -> str:
    """A loopback port nobody listens on (bound once on port 0, then closed)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"ws://127.0.0.1:{port}"


async def test_send_with_a_dead_relay_names_the_relay_not_the_peer(
    ws_relay: RelayUnderTest, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dead = _dead_relay_url()
    link_a = ws_relay.links()[0].with_relay(dead)
    started = trio.current_time()
    argv = ["send", link_a.format(), "--keys-dir", str(tmp_path), "--text", "hi", "--wait", "2"]
    assert await m42(*argv, limit=10) == EXIT_UNREACHABLE
    assert trio.current_time() - started < 8  # the wait, not a connect timeout after it
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"m42: connecting to the relay {dead}"
    assert err[1].startswith(f"m42: can't reach the relay {dead}: cannot connect: ")
    assert err[-1].startswith(f"m42: could not reach the relay {dead} within 2 s: cannot connect")
    assert not any("other person" in line or "peer" in line for line in err)
    assert all(len(line) < 120 for line in err)


async def test_send_without_a_peer_says_it_waits_for_them_then_that_they_did_not_come(
    ws_relay: RelayUnderTest, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    link_a, _ = ws_relay.links()
    argv = ["send", link_a.format(), "--keys-dir", str(tmp_path), "--text", "hi", "--wait", "0.5"]
    assert await m42(*argv) == EXIT_TIMEOUT
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"m42: connecting to the relay {link_a.relay}",
        "m42: connected; waiting for the other person to open their link",
        "m42: the other person did not come within 0.5 s",
    ]


async def test_send_says_a_file_waits_for_the_other_persons_yes(
    ws_relay: RelayUnderTest, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    link_a, link_b = ws_relay.links()
    (tmp_path / "f.txt").write_bytes(b"12345")
    down = tmp_path / "down"
    down.mkdir()
    codes: list[int] = []
    sent = trio.Event()
    async with trio.open_nursery() as nursery:
        b = Recorder(ws_relay.client(link_b, tmp_path, download_dir=down, accept="ask"))
        nursery.start_soon(b.run)
        await nursery.start(b.client.run)

        async def send() -> None:
            argv = ["send", link_a.format(), "--keys-dir", str(tmp_path / "ka")]
            codes.append(await m42(*argv, "--file", str(tmp_path / "f.txt")))
            sent.set()

        nursery.start_soon(send)
        await b.wait_for(lambda r: r.of(ev.FileOffer))
        b.client.accept_file(b.of(ev.FileOffer)[0].file_id)
        await b.wait_for(lambda r: r.of(ev.TransferDone))
        with trio.fail_after(20):
            await sent.wait()
        nursery.cancel_scope.cancel()
    assert codes == [0]
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"m42: connecting to the relay {link_a.relay}"
    assert err[1].startswith("m42: secure session; safety words:")
    assert err[2] == "m42: offered f.txt (5 B); waiting for the other person to accept it"
    assert err[-1] == "m42: f.txt delivered (5 B)"


def test_help_lists_every_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["send", "--help"]) == 0
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "6    the relay could not be reached" in out
    assert "3    timed out: the other person did not come within --wait" in out


async def test_a_wrong_secret_is_named_once_on_each_side_and_exits_7(
    ws_relay: RelayUnderTest, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    link_a, link_b = ws_relay.links()
    changed_b = attrs.evolve(link_b, secret=bytes(32))
    codes: dict[str, int] = {}
    async with trio.open_nursery() as nursery:

        async def run(name: str, *argv: str) -> None:
            codes[name] = await m42(*argv, "--keys-dir", str(tmp_path / name))

        nursery.start_soon(run, "send", "send", link_a.format(), "--text", "hi")
        nursery.start_soon(run, "recv", "recv", changed_b.format(), "--out", str(tmp_path))
    assert codes == {"send": EXIT_WRONG_SECRET, "recv": EXIT_WRONG_SECRET}
    err = capsys.readouterr().err
    line = "m42: this link's secret does not match the other person's: was the link changed?"
    assert err.count(line) == 2  # once on each side
    assert "secure session broke" not in err


async def test_the_engine_says_a_wrong_secret_once_however_often_the_handshake_fails(
    ws_relay: RelayUnderTest, tmp_path: Path
) -> None:
    link_a, link_b = ws_relay.links()
    link_b = attrs.evolve(link_b, secret=bytes(32))
    relayed = trio.Event()

    class Watched(Counter[str]):
        def __setitem__(self, lane: str, count: int) -> None:
            super().__setitem__(lane, count)
            if lane == "control" and count >= 12:
                relayed.set()

    ws_relay.relay.counters.frames = Watched(ws_relay.relay.counters.frames)
    recorders = [
        Recorder(ws_relay.client(link, tmp_path / link.seat.value)) for link in (link_a, link_b)
    ]
    async with trio.open_nursery() as nursery:
        for recorder in recorders:
            nursery.start_soon(recorder.run)
            await nursery.start(recorder.client.run)
        # Each attempt is HS1, HS2, HS3 and B's RESET: wait for three of them.
        with trio.fail_after(20):
            await relayed.wait()
        nursery.cancel_scope.cancel()
    for recorder in recorders:
        problems = recorder.of(ev.Problem)
        assert [p.cause for p in problems] == [ev.WRONG_SECRET_CAUSE]
        assert problems[0].message.startswith("this link's secret does not match")


async def test_the_room_recovers_once_a_device_on_someones_link_leaves(
    ws_relay: RelayUnderTest, tmp_path: Path
) -> None:
    """Alice's link opened elsewhere: Alice is told and stops, Bob is stopped on the
    changed key; once that device leaves and Alice comes back, the chat goes on with
    the words compared before and no /trust (which would have pinned the stranger)."""
    link_a, link_b = ws_relay.links()
    pushed_out: list[RelayRefused] = []

    async def run_alice(*, task_status: trio.TaskStatus[None]) -> None:
        try:
            await alice.client.run(task_status=task_status)
        except RelayRefused as exc:
            pushed_out.append(exc)

    async with trio.open_nursery() as nursery:
        alice = Recorder(ws_relay.client(link_a, tmp_path / "alice"))
        bob = Recorder(ws_relay.client(link_b, tmp_path / "bob"))
        nursery.start_soon(alice.run)
        await nursery.start(run_alice)
        nursery.start_soon(bob.run)
        await nursery.start(bob.client.run)
        await bob.wait_for(lambda r: r.of(ev.SafetyWords))
        words = bob.of(ev.SafetyWords)[0].words

        stranger = Recorder(ws_relay.client(link_a, tmp_path / "elsewhere"))
        nursery.start_soon(stranger.run)
        await nursery.start(stranger.client.run)
        await alice.wait_for(lambda r: any(p.fatal for p in r.of(ev.Problem)))
        assert "opened somewhere else" in alice.of(ev.Problem)[-1].message
        await bob.wait_for(lambda r: r.of(ev.KeyChanged))
        stranger.client.close()
        await bob.wait_for(lambda r: r.of(ev.PeerOffline))

        back = Recorder(ws_relay.client(link_a, tmp_path / "alice"))  # her own keys
        nursery.start_soon(back.run)
        await nursery.start(back.client.run)
        await bob.wait_for(lambda r: len(r.of(ev.SafetyWords)) == 2)
        assert bob.of(ev.SafetyWords)[1].words == words
        bob.client.send_text("you are back")
        await back.wait_for(lambda r: r.of(ev.TextIn))
        assert [t.text for t in back.of(ev.TextIn)] == ["you are back"]
        assert stranger.of(ev.TextIn) == []
        nursery.cancel_scope.cancel()
    assert [exc.code for exc in pushed_out] == [ErrorCode.SEAT_TAKEN]


async def test_m42_new_with_nothing_at_the_address_says_so_and_exits_6(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """It used to print trio's "all attempts to connect ... failed" and exit 1,
    which a script cannot tell from a bug (send and recv exit 6)."""
    with socket.socket() as bound:  # bound, never listening: the port refuses
        bound.bind(("127.0.0.1", 0))
        relay = f"ws://127.0.0.1:{bound.getsockname()[1]}"
        assert await m42("new", "--relay", relay, "--timeout", "5") == EXIT_UNREACHABLE
    err = capsys.readouterr().err
    assert f"m42: can't reach the relay {relay}: " in err
    assert "is m42d running there?" in err
    assert "all attempts" not in err


async def test_m42_new_against_a_web_server_says_it_is_not_a_relay(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async def not_a_relay(stream: trio.SocketStream) -> None:
        await stream.receive_some(65536)
        await stream.send_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, not_a_relay, 0, host="127.0.0.1")
        )
        port = listeners[0].socket.getsockname()[1]
        relay = f"ws://127.0.0.1:{port}"
        assert await m42("new", "--relay", relay, "--timeout", "5") == EXIT_UNREACHABLE
        nursery.cancel_scope.cancel()
    err = capsys.readouterr().err
    assert "something answered, but not as an m42 relay does (HTTP 404)" in err
