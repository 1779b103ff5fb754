"""Running one engine under a command: side by side with the command's work, leaving on a signal.

Ctrl-C, ``kill`` and a closed terminal each leave the way the command's own
end does: the acknowledgements owed go out (:func:`finish`), what arrived
meanwhile is shown, and the exit code is 128 + the signal.  A second signal
cuts the leaving short.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Awaitable, Callable
from typing import Final, final

import attrs
import trio

from m42d.cli.exits import EXIT_ERROR, EXIT_REFUSED
from m42d.client import events as ev
from m42d.client.engine import Client, RelayRefused

__all__ = ["FLUSH_TIMEOUT", "LEAVING_SIGNALS", "Leaving", "finish", "next_event", "with_client"]

FLUSH_TIMEOUT: Final = 5.0
"""Seconds allowed at exit for the last acknowledgements to reach the relay."""

LEAVING_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
"""Ctrl-C, ``kill``, a closed terminal: each leaves the way the command's own end does."""


@final
@attrs.define(eq=False)
class Leaving:
    """The first leaving signal stops the command's work; a second one cuts the leaving short."""

    work: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    leaving: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    watching: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    """Cancel to stop :meth:`watch` (the default handlers come back)."""
    signals: list[int] = attrs.field(factory=list)

    @property
    def exit_code(self) -> int:
        """128 + the signal's number, as a shell reports a signalled command."""
        return 128 + self.signals[0]

    async def watch(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with self.watching:
            if threading.current_thread() is not threading.main_thread():
                task_status.started()  # signals reach only the main thread (tests run us in others)
                await trio.sleep_forever()
            with trio.open_signal_receiver(*LEAVING_SIGNALS) as received:
                task_status.started()
                async for signum in received:
                    self.signals.append(signum)
                    (self.work if len(self.signals) == 1 else self.leaving).cancel()


async def with_client(
    client: Client,
    body: Callable[[Client], Awaitable[int]],
    late: Callable[[ev.ClientEvent], None] | None = None,
) -> int:
    """Run the engine and ``body`` side by side; the engine stops when the body returns.

    With ``late`` (the command's way to show an event), a leaving signal
    stops the body, the acknowledgements owed go out (:func:`finish`),
    ``late`` shows what had arrived, and the command exits with 128 + the
    signal.  Without it (chat) the body watches the signals itself.
    """
    result = EXIT_ERROR
    refused: list[RelayRefused] = []
    leave = Leaving()

    async def engine() -> None:
        try:
            await client.run()
        except RelayRefused as exc:
            refused.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(engine)
        try:
            if late is not None:
                await nursery.start(leave.watch)
            with leave.work:
                result = await body(client)
            if leave.signals:
                assert late is not None
                result = leave.exit_code
                with leave.leaving:
                    await finish(client)
                    async for event in client.events:
                        late(event)
        finally:
            leave.watching.cancel()
            client.close()
    if refused and result == EXIT_ERROR:
        return EXIT_REFUSED
    return result


async def finish(client: Client) -> None:
    """Stop receiving, let the owed acknowledgements out, close (see Client.finish)."""
    await client.finish(FLUSH_TIMEOUT)


async def next_event(client: Client, deadline: float) -> ev.ClientEvent | None:
    """The next event, or None once the engine stopped or ``deadline`` passed."""
    with trio.move_on_at(deadline):
        try:
            return await client.events.receive()
        except trio.EndOfChannel:
            return None
    return None
