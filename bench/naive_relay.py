"""The ceiling: the simplest trio relay that could work, plain TCP or TLS on both hops.

It pairs two connections the way magic-wormhole's transit relay does (each
sends ``please relay TOKEN for side SIDE\\n``, both get ``ok\\n``), so one
benchmark client drives both.  Then it copies bytes, one task per
direction, ``receive_some(read_size)`` then ``send_all``: no framing, no
lanes, no credit, no limits.  Anything m42d does on top of this costs
something; this relay says how much there is to lose.

Run: ``python -m bench.naive_relay --port P [--cert C --key K] [--read-size N]``.
"""

from __future__ import annotations

import argparse
import contextlib
import ssl
from collections.abc import Sequence
from functools import partial

import trio

_PREFIX = b"please relay "


async def _pipe(src: trio.abc.Stream, dst: trio.abc.Stream, read_size: int) -> None:
    try:
        while data := await src.receive_some(read_size):
            await dst.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        await trio.aclose_forcefully(dst)


async def _read_line(stream: trio.abc.Stream) -> bytes:
    line = b""
    while not line.endswith(b"\n"):
        chunk = await stream.receive_some(1)
        if not chunk or len(line) > 200:
            raise trio.BrokenResourceError
        line += chunk
    return line


class _Pairing:
    def __init__(self, read_size: int) -> None:
        self.read_size = read_size
        self.waiting: dict[bytes, tuple[trio.abc.Stream, trio.Event, list[trio.abc.Stream]]] = {}

    async def handle(self, context: ssl.SSLContext | None, raw: trio.SocketStream) -> None:
        stream: trio.abc.Stream = raw
        if context is not None:
            stream = trio.SSLStream(raw, context, server_side=True)
        try:
            line = await _read_line(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            await trio.aclose_forcefully(stream)
            return
        if not line.startswith(_PREFIX):
            await trio.aclose_forcefully(stream)
            return
        token = line[len(_PREFIX) :].split(b" ", 1)[0].strip()
        entry = self.waiting.pop(token, None)
        if entry is None:
            done = trio.Event()
            partner: list[trio.abc.Stream] = []
            self.waiting[token] = (stream, done, partner)
            await done.wait()
            return  # the second arrival runs both pipes
        first, done, partner = entry
        try:
            await first.send_all(b"ok\n")
            await stream.send_all(b"ok\n")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_pipe, first, stream, self.read_size)
                nursery.start_soon(_pipe, stream, first, self.read_size)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            done.set()
            await trio.aclose_forcefully(first)
            await trio.aclose_forcefully(stream)


async def serve(port: int, context: ssl.SSLContext | None, read_size: int) -> None:
    pairing = _Pairing(read_size)
    await trio.serve_tcp(partial(pairing.handle, context), port, host="127.0.0.1")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.naive_relay")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--read-size", type=int, default=65536)
    args = parser.parse_args(argv)
    context = None
    if args.cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.cert, args.key)
    with contextlib.suppress(KeyboardInterrupt):
        trio.run(serve, args.port, context, args.read_size)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
