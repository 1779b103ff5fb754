"""What ``m42`` says when something goes wrong with the relay or the other seat: in words.

Through ``main([...])`` in a worker thread, against an in-process relay on
loopback, as in test_cli_commands.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import cast

import attrs
import pytest
import trio

from m42d.cli import EXIT_REFUSED, main
from m42d.cli.chat import ChatEngine, ChatScreen
from m42d.client import events as ev
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
    assert "409" not in err


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
