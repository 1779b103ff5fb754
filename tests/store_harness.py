"""A real Valkey/Redis server for tests, and an in-memory store with a switch to break it.

The server is Debian's ``redis-server`` (or ``valkey-server``), started on a
Unix socket in a temp dir (no TCP port at all), with persistence off.
Readiness is a PING answered, never a sleep.  Tests that need it skip when
neither binary is installed, and fail under CI, which installs one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

import attrs
import pytest
import trio

from m42d.relay.store import StoreUnavailable

SERVER = shutil.which("valkey-server") or shutil.which("redis-server")


def require_server() -> str:
    if SERVER is None:
        msg = "no valkey-server or redis-server (Debian: apt-get install redis-server)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return SERVER


@contextlib.asynccontextmanager
async def store_server(directory: Path) -> AsyncIterator[str]:
    """Run a server on ``directory/store.sock``; yields its ``unix://`` URL."""
    binary = require_server()
    sock = directory / "store.sock"
    proc = await trio.lowlevel.open_process(
        [
            binary,
            "--port",
            "0",
            "--unixsocket",
            str(sock),
            "--unixsocketperm",
            "700",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(directory),
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        log = b""
        with trio.fail_after(10):
            # The server's own readiness line, not a sleep.
            while b"ready to accept connections" not in log.lower():
                chunk = await proc.stdout.receive_some()
                assert chunk, f"{binary} exited: {log.decode(errors='replace')}"
                log += chunk
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_drain, proc.stdout)  # never block on a full pipe
            yield f"unix://{sock}"
            nursery.cancel_scope.cancel()
    finally:
        proc.terminate()
        with trio.CancelScope(shield=True):
            await proc.wait()


async def _drain(stream: trio.abc.ReceiveStream) -> None:
    while await stream.receive_some():
        pass


@attrs.define
class MemoryStore:
    """A :class:`~m42d.relay.store.SharedStore` in memory; ``down = True`` breaks every call."""

    burns: dict[bytes, int] = attrs.field(factory=dict)
    holders_: dict[bytes, str] = attrs.field(factory=dict)
    beats: set[str] = attrs.field(factory=set)
    down: bool = False
    calls: int = 0

    def _call(self) -> None:
        self.calls += 1
        if self.down:
            raise StoreUnavailable("shared store: down (test)")

    async def is_burned(self, room_id: bytes) -> bool:
        self._call()
        return room_id in self.burns

    async def burn(self, room_id: bytes, expires: int) -> None:
        self._call()
        self.burns[room_id] = expires

    async def heartbeat(self, node: str, ttl: float) -> None:
        self._call()
        self.beats.add(node)

    async def claim(self, node: str, rooms: Mapping[bytes, int]) -> None:
        self._call()
        for room in rooms:
            self.holders_[room] = node

    async def release(self, node: str, rooms: Sequence[bytes]) -> None:
        self._call()
        for room in rooms:
            if self.holders_.get(room) == node:
                del self.holders_[room]

    async def holders(self, rooms: Sequence[bytes]) -> list[str | None]:
        self._call()
        return [self.holders_.get(room) for room in rooms]

    async def alive(self, nodes: Sequence[str]) -> set[str]:
        self._call()
        return {node for node in nodes if node in self.beats}
