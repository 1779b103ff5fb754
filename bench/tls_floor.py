"""OpenSSL's own memory per server-side TLS connection: the floor under section d's TLS rooms.

Section d counts ~68 KiB of relay RSS per TLS room (two connections).  How
much of that any TLS relay on OpenSSL must hold, and how much is trio and
m42d, is what this measures: ``N`` server ``ssl.SSLObject`` s on memory BIOs
(as trio's ``SSLStream`` uses them), with the relay's own server context and
certificate, each after a full handshake and one small record each way, as
a joined seat has had.  The client side of each pair is dropped before the
next one is made, so its memory is reused and only the server objects
accumulate; RSS growth divided by ``N`` is the per-connection floor.  One
process, no sockets: kernel socket buffers are not in RSS either way.

Run: ``python -m bench.tls_floor [--connections N]``.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import ssl
import tempfile
from pathlib import Path

from m42d.relay.state import RelayState

KIB = 1024


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def _pump(src: ssl.MemoryBIO, dst: ssl.MemoryBIO) -> None:
    data = src.read()
    if data:
        dst.write(data)


def _connected(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> object:
    """One server-side connection after a handshake and a record each way."""
    s_in, s_out, c_in, c_out = (ssl.MemoryBIO() for _ in range(4))
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=None)
    for _ in range(10):
        for side in (client, server):
            with contextlib.suppress(ssl.SSLWantReadError):
                side.do_handshake()
        _pump(c_out, s_in)
        _pump(s_out, c_in)
        if server.version() is not None and client.version() is not None:
            break
    client.write(b"j" * 60)
    _pump(c_out, s_in)
    server.read(4096)
    server.write(b"k" * 9)
    _pump(s_out, c_in)
    client.read(4096)
    return (server, s_in, s_out)


def measure(connections: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        server_ctx = RelayState.open(Path(tmp) / "state").server_ssl_context()
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.check_hostname = False
    client_ctx.verify_mode = ssl.CERT_NONE
    kept = [_connected(server_ctx, client_ctx) for _ in range(50)]  # warm the allocator
    gc.collect()
    before = _rss_bytes()
    kept += [_connected(server_ctx, client_ctx) for _ in range(connections)]
    gc.collect()
    grown = _rss_bytes() - before
    return {"connections": connections, "kib_per_connection": grown / connections / KIB}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--connections", type=int, default=2000)
    args = parser.parse_args(argv)
    r = measure(args.connections)
    print(
        f"OpenSSL server connection after handshake (memory BIOs, relay's context): "
        f"{r['kib_per_connection']:.1f} KiB each over {r['connections']} connections"
    )


if __name__ == "__main__":
    main()
