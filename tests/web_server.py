"""A loopback HTTP server for the browser client, for the UI tests only.

It answers every request with :func:`m42d.web.pages.respond`, exactly what the
WebSocket listener answers plain GETs with, so Chromium loads the real
page with its real headers.  ``overrides`` swaps a path's body (the tests
serve ``ui/fake-engine.js`` as ``/ui/backend.js``).  It runs trio in a thread
of its own, because Playwright's sync API owns the test's thread.

Rules: 127.0.0.1 and port 0 only; every connection has a deadline; it
records the target of every request so tests can check what reached it.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Final

import h11
import trio

from m42d.web import pages

WEB: Final = Path(__file__).resolve().parent.parent / "m42d" / "web"
FAKE_BACKEND: Final = {"/ui/backend.js": (WEB / "ui" / "fake-engine.js").read_bytes()}
CONNECTION_DEADLINE: Final = 30.0
START_DEADLINE: Final = 10.0


class PageServer:
    """``with PageServer() as server: server.url`` is ``http://127.0.0.1:<port>``."""

    def __init__(self, overrides: Mapping[str, bytes] = FAKE_BACKEND) -> None:
        self.overrides = dict(overrides)
        self.targets: list[str] = []
        self.port = 0
        self._ready = threading.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self._cancel: trio.CancelScope | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="page-server", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> PageServer:
        self._thread.start()
        if not self._ready.wait(START_DEADLINE):
            raise RuntimeError("the page server did not start")
        if self._error is not None:
            raise RuntimeError("the page server failed") from self._error
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._token is not None and self._cancel is not None:
            cancel = self._cancel
            trio.from_thread.run_sync(cancel.cancel, trio_token=self._token)
        self._thread.join(START_DEADLINE)

    def _run(self) -> None:
        try:
            trio.run(self._serve)
        except BaseException as exc:  # reported to __enter__
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        self._token = trio.lowlevel.current_trio_token()
        with trio.CancelScope() as scope:
            self._cancel = scope
            self._ready.set()
            await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, stream: trio.SocketStream) -> None:
        with trio.move_on_after(CONNECTION_DEADLINE):
            with contextlib.suppress(
                trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError
            ):
                await self._exchange(stream)
        await stream.aclose()

    async def _exchange(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(65536)
                if not data:
                    return
                conn.receive_data(data)
                continue
            if isinstance(event, h11.Request):
                await self._answer(stream, conn, event)
                continue
            if isinstance(event, h11.EndOfMessage) or event is h11.PAUSED:
                # Keep-alive: the next request on this connection.
                if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
                    conn.start_next_cycle()
                    continue
                if event is h11.PAUSED:
                    return
                continue
            if isinstance(event, h11.ConnectionClosed):
                return

    async def _answer(
        self, stream: trio.SocketStream, conn: h11.Connection, request: h11.Request
    ) -> None:
        target = request.target.decode("latin-1")
        self.targets.append(target)
        host = next((value for name, value in request.headers if name == b"host"), None)
        response = pages.respond(request.method, request.target, host=host, tls=False)
        path = target.split("?", 1)[0]
        if path in self.overrides and response.status == 200:
            body = self.overrides[path]
            headers = [
                (name, str(len(body)) if name == "content-length" else value)
                for name, value in response.headers
            ]
            response = pages.Response(
                200, tuple(headers), b"" if request.method == b"HEAD" else body
            )
        await stream.send_all(
            conn.send(h11.Response(status_code=response.status, headers=list(response.headers)))
            or b""
        )
        await stream.send_all(conn.send(h11.Data(data=response.body)) or b"")
        await stream.send_all(conn.send(h11.EndOfMessage()) or b"")
