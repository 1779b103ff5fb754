"""``m42 trust``: show the safety words with the peer's new key, pin it once confirmed."""

from __future__ import annotations

import argparse
import math
from typing import Final, TextIO

import trio

from m42d.cli.exits import EXIT_ERROR, EXIT_KEY_CHANGED, EXIT_OK, EXIT_WRONG_SECRET, UsageError
from m42d.cli.links import key_store, read_link
from m42d.cli.output import CONTINUATION, eprint, fatal, key_changed_message, sas_line, text_block
from m42d.cli.running import finish, next_event, with_client
from m42d.cli.status import Status
from m42d.client import events as ev
from m42d.client.engine import Client
from m42d.client.names import escape_text

__all__ = ["TRUST_CONTINUATION", "cmd_trust"]

TRUST_CONTINUATION: Final = "    " + CONTINUATION  # under "peer: "


async def _ask(prompt: str, stdin: TextIO) -> str:
    print(prompt, end="", flush=True)
    line = await trio.to_thread.run_sync(stdin.readline, abandon_on_cancel=True)
    return line.strip().lower()


async def cmd_trust(args: argparse.Namespace, stdin: TextIO) -> int:
    if args.link == "-" and not args.yes:
        raise UsageError("the link came from stdin, so stdin cannot confirm; add --yes")
    link = read_link(args, stdin)
    client = Client(link, key_store(args))
    deadline = math.inf if args.wait is None else trio.current_time() + args.wait

    def late(event: ev.ClientEvent) -> None:
        if isinstance(event, ev.TextIn):
            print(f"peer: {text_block(event.text, TRUST_CONTINUATION)}", flush=True)

    async def body(client: Client) -> int:
        trusted = False
        status = Status(link.relay, quiet=True)  # only to say, at the end, who did not come
        while (event := await next_event(client, deadline)) is not None:
            status.show(event)
            if isinstance(event, ev.SafetyWords):
                if trusted:
                    print(f"Trusted.  Safety words: {sas_line(event.words)}")
                else:
                    print(
                        f"The peer's key is the pinned one; nothing to trust.  safety words: "
                        f"{sas_line(event.words)}"
                    )
                # Texts the peer had queued arrive right behind the handshake
                # and are acknowledged: show them rather than swallow them.
                await finish(client)
                async for after in client.events:
                    late(after)
                return EXIT_OK
            if isinstance(event, ev.KeyChanged):
                print(key_changed_message(event))
                if not args.yes:
                    answer = await _ask("Do the words match? Type 'yes' to trust: ", stdin)
                    if answer != "yes":
                        print("Not trusted.")
                        return EXIT_KEY_CHANGED
                client.trust()
                trusted = True
            elif isinstance(event, ev.Problem) and event.cause == ev.WRONG_SECRET_CAUSE:
                eprint(f"m42: {escape_text(event.message)}")
                await finish(client)  # B's RESET names the cause to A: let it out
                return EXIT_WRONG_SECRET
            elif isinstance(event, ev.Problem) and event.fatal:
                return fatal(event)
        if args.wait is not None and trio.current_time() >= deadline:
            return status.give_up(args.wait)
        eprint("m42: the engine stopped before the other person came")
        return EXIT_ERROR

    return await with_client(client, body, late)
