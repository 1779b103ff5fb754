"""``m42 new``: create a room and print its two links (the only command that prints secrets)."""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

import trio

from m42d.cli.exits import EXIT_OK, RelayUnreachable, UsageError
from m42d.cli.output import eprint
from m42d.client.connection import RelayRefused
from m42d.client.relay_words import creation_words, lost_words
from m42d.client.rooms import create_room, first_use_pin
from m42d.errors import LinkError, M42Error, TransportError
from m42d.link import parse_relay_url
from m42d.transport import load_transports

__all__ = ["DEFAULT_RELAY", "cmd_new"]

DEFAULT_RELAY: Final = "ws://127.0.0.1:8042"


class CreationRefused(RelayRefused):
    """The relay answered CREATE_ROOM with an ERROR: said in words, not as a bare code."""

    def __str__(self) -> str:
        return creation_words(self.code, self.relay_message)


@contextmanager
def _reaching(relay_url: str, limit: float) -> Iterator[None]:
    """Say "can't reach the relay" as send/recv do (exit 6), not trio's
    "all attempts to connect ... failed" as a plain error (exit 1)."""
    try:
        yield
    except (TransportError, trio.TooSlowError) as exc:
        why = lost_words(exc, short=False)
        if isinstance(exc, trio.TooSlowError):
            why = f"no answer within {limit:g} s"
        raise RelayUnreachable(
            f"can't reach the relay {relay_url}: {why} "
            "(is m42d running there? the address comes from --relay, else $M42_RELAY)"
        ) from exc


def _decode_pin(text: str) -> bytes:
    try:
        pin = base64.urlsafe_b64decode(text.strip() + "=" * (-len(text.strip()) % 4))
    except (binascii.Error, ValueError) as exc:
        raise UsageError("--pin must be base64url (as 'm42d pin' prints it)") from exc
    if len(pin) != 32:
        raise UsageError("--pin must be a 32-byte SHA-256 in base64url")
    return pin


async def cmd_new(args: argparse.Namespace) -> int:
    relay_url = args.relay or os.environ.get("M42_RELAY") or DEFAULT_RELAY
    try:
        address = parse_relay_url(relay_url)
    except LinkError as exc:
        raise UsageError(f"bad relay URL: {exc}") from exc
    transport = load_transports().get(address.scheme)
    if transport is None:
        raise UsageError(f"no transport for {address.scheme}:// is installed")
    pin = _decode_pin(args.pin) if args.pin else None
    if pin is None:
        with _reaching(relay_url, args.timeout):
            pin = await first_use_pin(address)
        if pin is not None:
            eprint(
                "m42: trusting the relay's certificate on first use; its pin goes into both "
                "links:\n"
                f"     {base64.urlsafe_b64encode(pin).rstrip(b'=').decode()}\n"
                "     compare it with 'm42d pin' on the relay if you can."
            )
    creation_secret = b""
    if args.creation_secret_file:
        try:
            raw = await trio.to_thread.run_sync(Path(args.creation_secret_file).read_bytes)
            creation_secret = raw.strip()
        except OSError as exc:
            raise UsageError(f"cannot read --creation-secret-file: {exc.strerror}") from exc
    try:
        with _reaching(relay_url, args.timeout):
            room = await create_room(
                address, transport, pin=pin, creation_secret=creation_secret, limit=args.timeout
            )
    except RelayRefused as exc:
        raise CreationRefused(exc.code, exc.relay_message) from None
    link_a, link_b = room.link_a.format(), room.link_b.format()
    if args.json:
        print(json.dumps({"link_a": link_a, "link_b": link_b, "expires": room.expires}))
    else:
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(room.expires))
        print("Link A (yours; keep it secret):")
        print(link_a)
        print()
        print("Link B (give it to the other person over a channel you trust):")
        print(link_b)
        print()
        print(f"The room expires {when}.")
    if args.qr:
        _print_qr(link_b)
    sys.stdout.flush()
    return EXIT_OK


def _print_qr(text: str) -> None:
    try:
        import segno
    except ImportError as exc:  # pragma: no cover - segno is a declared dependency
        raise M42Error("--qr needs the 'segno' package (pip install segno)") from exc
    print("Link B as a QR code:", file=sys.stdout)
    segno.make(text, error="l", micro=False).terminal(out=sys.stdout, compact=True)
