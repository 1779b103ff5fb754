"""``m42 send``: send texts and files, exit 0 only once the peer acknowledged all of them."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import TextIO

import trio

from m42d.cli.exits import (
    EXIT_ERROR,
    EXIT_KEY_CHANGED,
    EXIT_OK,
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
from m42d.cli.paths import file_problem
from m42d.cli.running import finish, next_event, with_client
from m42d.cli.status import Status
from m42d.client import events as ev
from m42d.client.engine import Client
from m42d.client.names import escape_text
from m42d.session import MAX_TEXT

__all__ = ["cmd_send"]


async def cmd_send(args: argparse.Namespace, stdin: TextIO) -> int:
    link = read_link(args, stdin)
    texts: list[str] = list(args.text or [])
    files = [Path(p) for p in args.file or []]
    if not texts and not files:
        if args.link == "-":
            raise UsageError("the link came from stdin; give the message with --text or --file")
        texts.append(stdin.read())
    for text in texts:
        _check_text(text)
    for path in files:
        if (problem := file_problem(path)) is not None:
            raise UsageError(f"cannot send {path}: {problem}")
    client = Client(link, key_store(args), download_dir=None, max_size=None)
    status = Status(link.relay)

    def late(event: ev.ClientEvent) -> None:
        if isinstance(event, ev.TextIn):
            print(text_block(event.text), flush=True)

    async def body(client: Client) -> int:
        status.starting()
        pending_texts = {client.send_text(text) for text in texts}
        pending_files: dict[int, str] = {}
        for path in files:
            pending_files[await client.send_file(path)] = path.name
        deadline = math.inf if args.wait is None else trio.current_time() + args.wait
        failed = False
        while (event := await next_event(client, deadline)) is not None:
            status.show(event)
            if isinstance(event, ev.SafetyWords):
                deadline = math.inf
                eprint(f"m42: secure session; safety words: {sas_line(event.words)}")
                for file_id, name in pending_files.items():
                    status.offered(file_id, name, client.outgoing_size(file_id))
            elif isinstance(event, ev.Delivered):
                pending_texts.discard(event.seq)
            elif isinstance(event, ev.TransferDone) and event.outgoing:
                pending_files.pop(event.file_id, None)
                eprint(f"m42: {escape_text(event.name)} delivered ({human_size(event.size)})")
            elif isinstance(event, ev.TransferFailed) and event.outgoing:
                pending_files.pop(event.file_id, None)
                failed = True
                eprint(f"m42: {escape_text(event.name)} not delivered: {escape_text(event.reason)}")
            elif isinstance(event, ev.Progress):
                PROGRESS.show(event)
            elif isinstance(event, ev.KeyChanged):
                eprint(key_changed_message(event))
                return EXIT_KEY_CHANGED
            elif isinstance(event, ev.Problem) and event.cause == ev.WRONG_SECRET_CAUSE:
                eprint(f"m42: {escape_text(event.message)}")
                await finish(client)  # B's RESET names the cause to A: let it out
                return EXIT_WRONG_SECRET
            elif isinstance(event, ev.Problem) and event.fatal:
                return fatal(event)
            elif isinstance(event, ev.TextIn):
                # The session acknowledged it: the peer sees it as delivered.
                late(event)
            if not pending_texts and not pending_files:
                await finish(client)
                async for after in client.events:
                    late(after)
                return EXIT_ERROR if failed else EXIT_OK
        if trio.current_time() >= deadline:
            return status.give_up(args.wait)
        return EXIT_ERROR

    return await with_client(client, body, late)


def _check_text(text: str) -> None:
    """Refuse, before connecting, a text the peer would have to refuse."""
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise UsageError("the text is not valid UTF-8") from None
    if size > MAX_TEXT:
        raise UsageError(
            f"a text of {size} bytes is over the {MAX_TEXT}-byte cap; send it with --file"
        )
