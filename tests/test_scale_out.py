"""Three m42d nodes behind nginx with a shared Valkey/Redis: a node dies and comes back.

On loopback: ``redis-server`` (tests/store_harness.py), three ``m42d serve``
processes sharing one ticket-key file and the store, and nginx running
docs/nginx/m42d-cluster.conf itself (only ports and certificate paths
rewritten; each rewrite must match).  200 rooms chat and 10 send files, all
through nginx with real client engines (Noise, acks, resume), while:

1. node two is killed with SIGKILL: its rooms' seats reconnect through
   nginx, land together on a live node, and carry on;
2. node two is started again on its port and one seat of every room
   reconnects: rooms whose hash points at node two again are split for a
   moment (one seat back on two, the other still elsewhere) and healed by
   the store's lone-seat rule;
3. a room is burned on one node and then refused by every node, asked
   directly (not through nginx).

After each step every text sent so far must have arrived exactly once, in
order, and every file with its SHA-256, within :data:`BOUND` seconds.  A
Grafana-free summary of each node's metrics is printed (``-s`` shows it).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import resource
import shutil
import signal
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final

import attrs
import pytest
import trio
import trustme

from m42d.client import events as ev
from m42d.client.engine import Client, RelayRefused
from m42d.client.keystore import FileKeyStore
from m42d.link import Link
from m42d.ticket import Seat, Ticket
from m42d.transport import Transport
from m42d.wire import Error, ErrorCode, Join, RoomCreated
from tests.client_harness import TrackingTransport
from tests.store_harness import require_server, store_server
from tests.test_daemon_systemd import (
    Daemon,
    _free_port,
    clean_env,
    create_room,
    expect,
    running_daemon,
    serve_argv,
    transports_or_skip,
)
from tests.test_nginx import NGINX, _drain, rewrite

pytestmark = [
    pytest.mark.slow,
    pytest.mark.nginx,
    pytest.mark.skipif(
        NGINX is None, reason="nginx is not installed (Debian: apt-get install nginx-light)"
    ),
]

ROOMS: Final = 200
FILE_ROOMS: Final = 10
FILE_SIZE: Final = 3 * 1024 * 1024
BOUND: Final = 60.0
"""Seconds within which, after each step, every room is talking again and caught up."""
SNIPPET: Final = Path(__file__).resolve().parent.parent / "docs" / "nginx" / "m42d-cluster.conf"
CONFIG: Final = """
[limits]
max_connections = 5000
max_connections_per_address = 4000
join_rate = 1000000
create_rate = 1000000
max_queued_per_address = 268435456
"""


@attrs.define
class Node:
    name: str
    port: int
    state: Path
    daemon: Daemon | None = None


@attrs.define
class SeatClient:
    """One seat's engine and what it saw."""

    client: Client
    tracker: TrackingTransport
    texts: list[str] = attrs.field(factory=list)
    files: list[str] = attrs.field(factory=list)
    sent: int = 0
    refused: list[int] = attrs.field(factory=list)

    async def watch(self) -> None:
        async for event in self.client.events:
            if isinstance(event, ev.TextIn):
                self.texts.append(event.text)
            elif isinstance(event, ev.TransferDone) and not event.outgoing and event.path:
                self.files.append(event.path)
            elif isinstance(event, ev.Problem) and event.fatal and event.code is not None:
                self.refused.append(event.code)


@attrs.define
class Room:
    index: int
    links: tuple[Link, Link]
    a: SeatClient
    b: SeatClient
    source: Path | None = None

    def seats(self) -> tuple[SeatClient, SeatClient]:
        return self.a, self.b


@attrs.define
class Cluster:
    nodes: list[Node]
    url: str
    ssl_context: ssl.SSLContext
    transports: dict[str, Transport]
    tmp: Path
    store_url: str
    nursery: trio.Nursery

    async def start(self, node: Node) -> None:
        config = self.tmp / "m42d.toml"
        config.write_text(CONFIG)
        argv = serve_argv(
            node.state,
            "--config", str(config),
            "--listen", f"ws://127.0.0.1:{node.port}",
            "--store", self.store_url,
            "--node", node.name,
            "--metrics", "127.0.0.1:0",
        )  # fmt: skip
        ready = trio.Event()

        async def run() -> None:
            async with running_daemon(argv, env=clean_env()) as daemon:
                node.daemon = daemon
                ready.set()
                await trio.sleep_forever()

        self.nursery.start_soon(run)
        await ready.wait()

    def kill(self, node: Node) -> None:
        assert node.daemon is not None
        node.daemon.proc.send_signal(signal.SIGKILL)

    async def metrics(self, node: Node) -> dict[str, float]:
        assert node.daemon is not None
        stream = await trio.open_tcp_stream("127.0.0.1", node.daemon.metrics_port)
        async with stream:
            await stream.send_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := await stream.receive_some():
                data += chunk
        values: dict[str, float] = {}
        for line in data.decode().splitlines():
            match = re.match(r"^(m42d_[a-z_]+)(\{[^}]*\})? ([0-9.e+-]+)$", line)
            if match:
                key = match.group(1) + (match.group(2) or "")
                values[key] = float(match.group(3))
        return values


def cluster_nginx_config(tmp: Path, ports: list[int], port: int, cert: Path, key: Path) -> str:
    text = SNIPPET.read_text()
    servers = [f"    server 127.0.0.1:{p} max_fails=1 fail_timeout=5s;" for p in ports]
    text = rewrite(
        text,
        r"^    server 10\.0\.0\.11:8042 max_fails=1 fail_timeout=5s;\n"
        r"    server 10\.0\.0\.11:8044 max_fails=1 fail_timeout=5s;\n"
        r"    server 10\.0\.0\.12:8042 max_fails=1 fail_timeout=5s;$",
        "\n".join(servers),
    )
    text = rewrite(text, r"^    listen 443 ssl;$", f"    listen 127.0.0.1:{port} ssl;")
    text = rewrite(text, r"^    listen \[::\]:443 ssl;\n", "")
    text = rewrite(text, r"^    ssl_certificate     \S+;$", f"    ssl_certificate {cert};")
    text = rewrite(text, r"^    ssl_certificate_key \S+;$", f"    ssl_certificate_key {key};")
    # 420 clients and as many upstream connections come from one address here.
    text = rewrite(
        text, r"^        limit_conn m42d_conn 64;$", "        limit_conn m42d_conn 4000;"
    )
    text = rewrite(
        text,
        r"^        limit_req zone=m42d_req burst=60 nodelay;$",
        "        limit_req zone=m42d_req burst=100000 nodelay;",
    )
    return text


@contextlib.asynccontextmanager
async def nginx(tmp: Path, ports: list[int]) -> AsyncIterator[tuple[str, ssl.SSLContext]]:
    assert NGINX is not None
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    leaf.private_key_pem.write_to_path(str(key))
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    context = ssl.create_default_context()
    ca.configure_trust(context)
    prefix = tmp / "nginx"
    prefix.mkdir()
    for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (prefix / name).mkdir()
    port = _free_port()
    (prefix / "m42d.conf").write_text(cluster_nginx_config(prefix, ports, port, cert, key))
    temps = "\n".join(
        f"    {name}_temp_path {prefix / name};"
        for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    user = "user root;\n" if os.geteuid() == 0 else ""
    (prefix / "nginx.conf").write_text(
        f"{user}worker_processes 2;\nworker_rlimit_nofile 8192;\n"
        "events { worker_connections 4096; }\n"
        f"http {{\n{temps}\n    include {prefix / 'm42d.conf'};\n}}\n"
    )
    directives = f"daemon off; pid {prefix / 'nginx.pid'}; error_log stderr notice;"
    proc = await trio.lowlevel.open_process(
        [NGINX, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-g", directives],
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        log = b""
        with trio.fail_after(10):
            while b"start worker process" not in log:
                chunk = await proc.stderr.receive_some()
                assert chunk, f"nginx exited: {log.decode(errors='replace')}"
                log += chunk
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_drain, proc.stderr)
            yield f"wss://127.0.0.1:{port}", context
            nursery.cancel_scope.cancel()
    finally:
        proc.terminate()
        with trio.CancelScope(shield=True):
            await proc.wait()


@contextlib.asynccontextmanager
async def cluster(tmp: Path) -> AsyncIterator[Cluster]:
    require_server()
    transports = transports_or_skip("ws", "wss")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 8192 and (hard == resource.RLIM_INFINITY or hard >= 8192):
        resource.setrlimit(resource.RLIMIT_NOFILE, (8192, hard))
    nodes = [Node(f"node-{i}", _free_port(), tmp / f"state-{i}") for i in (1, 2, 3)]
    (tmp / "store").mkdir()
    async with store_server(tmp / "store") as store_url, trio.open_nursery() as nursery:
        c = Cluster(nodes, "", ssl.create_default_context(), transports, tmp, store_url, nursery)
        await c.start(nodes[0])
        # Every node holds the same ticket keys, as the operator copies them.
        keys = nodes[0].state / "ticket-keys.json"
        with trio.fail_after(10):
            while not keys.exists():  # noqa: ASYNC110 (the first node writes it at start)
                await trio.sleep(0.05)
        for node in nodes[1:]:
            node.state.mkdir(mode=0o700)
            shutil.copy2(keys, node.state / "ticket-keys.json")
            await c.start(node)
        async with nginx(tmp, [n.port for n in nodes]) as (url, context):
            c.url, c.ssl_context = url, context
            yield c
        nursery.cancel_scope.cancel()


def digest(path: Path | str) -> bytes:
    return hashlib.sha256(Path(path).read_bytes()).digest()


async def open_room(c: Cluster, index: int, created: RoomCreated, nursery: trio.Nursery) -> Room:
    secret = os.urandom(32)
    a_link = Link(c.url, Seat.A, created.ticket, created.token_a, secret, None)
    b_link = Link(c.url, Seat.B, created.ticket, created.token_b, secret, None)
    seats = []
    for link in (a_link, b_link):
        tracker = TrackingTransport(c.transports["wss"])
        down = c.tmp / "down" / f"{index}-{link.seat.value}"
        down.mkdir(parents=True)
        client = Client(
            link,
            FileKeyStore(c.tmp / "keys" / f"{index}-{link.seat.value}"),
            download_dir=down,
            accept="all",
            transports={"wss": tracker},
            ssl_context=c.ssl_context,
            backoff_base=0.2,
            backoff_cap=2.0,
        )
        seat = SeatClient(client, tracker)
        nursery.start_soon(seat.watch)
        nursery.start_soon(run_client, client)
        seats.append(seat)
    return Room(index, (a_link, b_link), seats[0], seats[1])


async def run_client(client: Client) -> None:
    """Run an engine; a burned room stops it (its Problem event says so, watched above)."""
    with contextlib.suppress(RelayRefused):
        await client.run()


def say(room: Room, step: str) -> None:
    for name, seat in (("a", room.a), ("b", room.b)):
        seat.sent += 1
        seat.client.send_text(f"{room.index}:{name}:{seat.sent}:{step}")


async def caught_up(rooms: list[Room], within: float, what: str) -> float:
    """Seconds until every room's texts and files have all arrived; exactly once, in order."""
    started = trio.current_time()
    with trio.move_on_after(within) as timer:
        while True:
            late = [r for r in rooms if not _caught_up(r)]
            if not late:
                break
            await trio.sleep(0.25)
    if timer.cancelled_caught:
        late = [r for r in rooms if not _caught_up(r)]
        pytest.fail(
            f"{what}: {len(late)} rooms not caught up within {within} s, e.g. room "
            f"{late[0].index}: B has {len(late[0].b.texts)} of {late[0].a.sent}, "
            f"A has {len(late[0].a.texts)} of {late[0].b.sent}"
        )
    for room in rooms:
        for me, peer, name in ((room.a, room.b, "b"), (room.b, room.a, "a")):
            expected = [f"{room.index}:{name}:{n}:" for n in range(1, peer.sent + 1)]
            got = [t.rsplit(":", 1)[0] + ":" for t in me.texts]
            assert got == expected, f"room {room.index}: lost, duplicated or reordered texts"
    return trio.current_time() - started


def _caught_up(room: Room) -> bool:
    texts = len(room.b.texts) >= room.a.sent and len(room.a.texts) >= room.b.sent
    files = room.source is None or len(room.b.files) >= 1
    return texts and files and room.a.client.established and room.b.client.established


async def routed_to(c: Cluster, node: Node) -> None:
    """Wait until nginx sends requests to ``node`` again (after its fail_timeout).

    Room creations go to any node (their hash key is per request), so one
    that shows up in the node's own counter proves nginx routes there.
    """
    with trio.fail_after(BOUND):
        while not (await c.metrics(node)).get("m42d_rooms_created_total", 0):
            await create_room(c.transports["wss"], c.url, ssl_context=c.ssl_context)
            await trio.sleep(0.2)


async def summary(c: Cluster, step: str) -> None:
    print(f"\n-- {step}")
    for node in c.nodes:
        if node.daemon is None or node.daemon.proc.returncode is not None:
            print(f"{node.name}: down")
            continue
        m = await c.metrics(node)
        bulk = m.get('m42d_relayed_bytes_total{lane="bulk"}', 0) / 2**20
        print(
            f"{node.name}: rooms {m.get('m42d_rooms', 0):.0f}, peers {m.get('m42d_peers', 0):.0f}, "
            f"joins {m.get('m42d_joins_total', 0):.0f}, "
            f"moved {m.get('m42d_rooms_moved_total', 0):.0f}, "
            f"store_up {m.get('m42d_store_up', 0):.0f}, relayed {bulk:.0f} MiB bulk"
        )


async def test_nodes_die_and_return_and_rooms_carry_on(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c, trio.open_nursery() as clients:
        created = [
            await create_room(c.transports["wss"], c.url, ssl_context=c.ssl_context)
            for _ in range(ROOMS)
        ]
        rooms = [await open_room(c, i, room, clients) for i, room in enumerate(created)]
        for room in rooms:
            say(room, "hello")
        seconds = await caught_up(rooms, BOUND, "start")
        await summary(c, f"{ROOMS} rooms up and caught up in {seconds:.1f} s")

        # Files in some rooms, texts in all, then node two dies mid-way.
        for room in rooms[:FILE_ROOMS]:
            room.source = c.tmp / f"file-{room.index}.bin"
            room.source.write_bytes(os.urandom(FILE_SIZE))
            await room.a.client.send_file(room.source)
        for room in rooms:
            say(room, "before-kill")
        c.kill(c.nodes[1])
        for room in rooms:
            say(room, "after-kill")
        seconds = await caught_up(rooms, BOUND, "after SIGKILL of node-2")
        await summary(c, f"node-2 killed: every room caught up again in {seconds:.1f} s")

        # Node two returns; one seat of every room reconnects (a network blip):
        # rooms that hash to node two again are split until healed.
        await c.start(c.nodes[1])
        await routed_to(c, c.nodes[1])
        for room in rooms:
            await room.a.tracker.connections[-1].aclose()
            say(room, "after-return")
        seconds = await caught_up(rooms, BOUND, "after node-2 returned")
        await summary(c, f"node-2 back, seats reconnected: caught up in {seconds:.1f} s")
        moved = 0.0
        for node in c.nodes:
            moved += (await c.metrics(node)).get("m42d_rooms_moved_total", 0)
        print(f"lone seats moved to their room's node: {moved:.0f}")

        for room in rooms[:FILE_ROOMS]:
            assert room.source is not None
            assert [digest(p) for p in room.b.files] == [digest(room.source)]

        # A room burned on one node is refused by every node, asked directly.
        burned = rooms[-1]
        burned.a.client.burn()
        with trio.fail_after(BOUND):
            while ErrorCode.BURNED not in burned.b.refused:  # noqa: ASYNC110
                await trio.sleep(0.1)
        ticket = created[-1]
        for node in c.nodes:
            ws = c.transports["ws"]
            async with ws.connect(
                f"ws://127.0.0.1:{node.port}", room_id=Ticket.parse(ticket.ticket).room_id
            ) as conn:
                await conn.send(Join(Seat.B, ticket.ticket, ticket.token_b))
                refusal = await expect(conn, Error)
                assert refusal.code == ErrorCode.BURNED, (node.name, refusal)
        await summary(c, "a burned room is refused by every node")
        clients.cancel_scope.cancel()
