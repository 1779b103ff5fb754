"""atheris target: the link and relay URL parsers.

Run: ``python tests/fuzz_targets/fuzz_link.py [corpus] -max_total_time=20``.
Anything but :class:`~m42d.errors.LinkError` escaping is a crash; a link that
parses must format back to itself.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from m42d.errors import LinkError
    from m42d.link import Link, parse_relay_url

SEED = "wss://relay.example:443/p#m42.1.A."


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    mode = fdp.ConsumeIntInRange(0, 2)
    text = fdp.ConsumeUnicodeNoSurrogates(fdp.remaining_bytes())
    if mode == 1:
        text = SEED + text  # start deep inside the fragment parser
    try:
        if mode == 2:
            address = parse_relay_url(text)
            assert parse_relay_url(address.url) == address
        else:
            link = Link.parse(text)
            assert Link.parse(link.format()) == link
    except LinkError:
        pass


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
