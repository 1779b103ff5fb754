"""Links as people paste them: what copying adds is tolerated, a cut link gets a hint."""

from __future__ import annotations

import argparse
import io
import os
import time
from typing import Any

import pytest

from m42d.cli import EXIT_USAGE, main
from m42d.cli.links import CUT_HINT, BadLink, read_link
from m42d.link import Link, make_links
from m42d.ticket import TicketKeyRing


def _link(pin: bool = False) -> Link:
    issued = TicketKeyRing.generate().mint(now=int(time.time()), ttl=3600)
    link = make_links(
        "ws://127.0.0.1:9", issued, os.urandom(32), pin=os.urandom(32) if pin else None
    )
    return link[1]


def _read(text: str) -> Link:
    args = argparse.Namespace(link=text, link_file=None)
    return read_link(args, io.StringIO())


@pytest.mark.parametrize(
    "paste",
    [
        "  {}\n",
        '"{}"',
        "'{}'",
        "<{}>",
        "`{}`",
        "\u201c{}\u201d",
        "({}).",
        "<{}>,",
        ' "<{}>" ',
    ],
)
def test_surrounding_quotes_brackets_and_punctuation_are_tolerated(paste: str) -> None:
    link = _link()
    assert _read(paste.format(link.format())) == link


def test_a_link_wrapped_over_lines_is_joined() -> None:
    link = _link(pin=True)
    text = link.format()
    wrapped = "\n".join(text[at : at + 60] for at in range(0, len(text), 60))
    assert _read(wrapped + "\n") == link
    assert _read(text[:70] + " \r\n  " + text[70:]) == link


@pytest.mark.parametrize("pin", [False, True])
def test_every_cut_of_a_link_gets_the_hint_to_copy_it_whole(pin: bool) -> None:
    text = _link(pin=pin).format()
    start = text.index("#")  # cut inside the relay URL is just another address
    # A pinned link cut just before its pin is a whole link without one.
    whole = {text.rindex("."), text.rindex(".") + 1} if pin else set()
    for end in sorted(set(range(start, len(text))) - whole):
        with pytest.raises(BadLink) as raised:
            _read(text[:end])
        assert str(raised.value) == CUT_HINT, (end, str(raised.value))


def test_a_damaged_link_is_not_called_cut() -> None:
    text = _link().format()
    damaged = text[:-5] + "!!!!!"
    with pytest.raises(BadLink) as raised:
        _read(damaged)
    assert str(raised.value) != CUT_HINT
    assert "bad link" in str(raised.value)
    assert text.split(".")[-1] not in str(raised.value)


def test_a_cut_link_is_one_line_without_the_usage_text(capsys: pytest.CaptureFixture[str]) -> None:
    text = _link().format()
    assert main(["recv", text[: len(text) - 10]]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [f"m42: error: {CUT_HINT}"]
    assert text.rsplit(".", 1)[1][:20] not in err


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        (lambda f: [*f[:3], "A+/", *f[4:]], "the part that names the room (its ticket) is not"),
        (lambda f: [*f[:4], "x", *f[5:]], "the part that lets this link in (its seat token)"),
        (lambda f: [*f[:2], "C", *f[3:]], "the link must say A or B (whose link it is)"),
    ],
)
def test_a_damaged_part_is_named_in_words(damage: Any, words: str) -> None:
    relay, fragment = _link().format().split("#")
    text = relay + "#" + ".".join(damage(fragment.split(".")))
    with pytest.raises(BadLink) as caught:
        _read(text)
    assert words in str(caught.value), str(caught.value)
