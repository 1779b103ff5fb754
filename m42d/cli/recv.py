"""``m42 recv``: print received texts on stdout, save files into ``--out``."""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import TextIO

import trio

from m42d.cli.exits import (
    EXIT_ERROR,
    EXIT_KEY_CHANGED,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_TIMEOUT,
    EXIT_WRONG_SECRET,
    UsageError,
)
from m42d.cli.links import key_store, read_link
from m42d.cli.output import (
    PROGRESS,
    eprint,
    fatal,
    human_size,
    key_changed_message,
    sas_line,
    text_block,
)
from m42d.cli.running import finish, next_event, with_client
from m42d.cli.status import Status
from m42d.client import events as ev
from m42d.client.engine import Client
from m42d.client.names import escape_text

__all__ = ["cmd_recv"]


async def cmd_recv(args: argparse.Namespace, stdin: TextIO) -> int:
    link = read_link(args, stdin)
    out_dir = Path(args.out)
    try:
        await trio.to_thread.run_sync(lambda: out_dir.mkdir(parents=True, exist_ok=True))
    except OSError as exc:
        raise UsageError(f"cannot create --out directory: {exc.strerror}") from exc
    client = Client(
        link, key_store(args), download_dir=out_dir, accept="all", max_size=args.max_size
    )
    deadline = math.inf if args.timeout is None else trio.current_time() + args.timeout
    status = Status(link.relay, quiet=args.jsonl)

    def show(event: ev.ClientEvent) -> None:
        status.show(event)
        if args.jsonl:
            if not isinstance(event, ev.Connected | ev.Reconnecting):
                record = event.to_json()
                record["ts"] = time.time()
                print(json.dumps(record), flush=True)
        elif isinstance(event, ev.TextIn):
            print(text_block(event.text), flush=True)
        elif isinstance(event, ev.SafetyWords):
            eprint(f"m42: secure session; safety words: {sas_line(event.words)}")
        elif isinstance(event, ev.Problem) and not event.fatal:
            eprint(f"m42: {escape_text(event.message)}")
        elif isinstance(event, ev.FileOffer):
            eprint(f"m42: receiving {escape_text(event.name)} ({human_size(event.size)})")
        elif isinstance(event, ev.TransferDone) and not event.outgoing:
            eprint(f"m42: saved {escape_text(str(event.path))}")
        elif isinstance(event, ev.TransferFailed) and not event.outgoing:
            eprint(f"m42: {escape_text(event.name)} failed: {escape_text(event.reason)}")
        elif isinstance(event, ev.Progress):
            PROGRESS.show(event)

    def late(event: ev.ClientEvent) -> None:
        if isinstance(event, ev.TextIn | ev.TransferDone | ev.TransferFailed):
            show(event)

    async def body(client: Client) -> int:
        status.starting()
        received = 0

        async def finish_showing() -> None:
            # Texts that came in with the last counted one were acknowledged
            # too: show them rather than lose them.
            await finish(client)
            async for after in client.events:
                late(after)

        while (event := await next_event(client, deadline)) is not None:
            show(event)
            if isinstance(event, ev.TextIn) or (
                isinstance(event, ev.TransferDone) and not event.outgoing
            ):
                received += 1
                if args.count is not None and received >= args.count:
                    await finish_showing()
                    return EXIT_OK
            elif isinstance(event, ev.KeyChanged):
                eprint(key_changed_message(event))
                return EXIT_KEY_CHANGED
            elif isinstance(event, ev.Problem) and event.cause == ev.WRONG_SECRET_CAUSE:
                await finish(client)  # B's RESET names the cause to A: let it out
                return EXIT_WRONG_SECRET  # show() said it
            elif isinstance(event, ev.Problem) and event.fatal:
                return (
                    fatal(event)
                    if not args.jsonl
                    else (EXIT_REFUSED if event.code is not None else EXIT_ERROR)
                )
        if trio.current_time() >= deadline:
            if not status.reached:
                return status.give_up(args.timeout)
            await finish_showing()
            return EXIT_TIMEOUT if args.count is not None else EXIT_OK
        return EXIT_ERROR

    return await with_client(client, body, late)
