"""Daemon hygiene that only shows on a real process: what it logs, what a
SIGHUP does to live rooms, and what running out of file descriptors does.

* No log line may contain a frame payload, a token, a ticket or a room
  secret, even at debug level, and client addresses appear only when the
  operator turns address logging on.
* SIGHUP reloads certificate, keys and limits without dropping a single
  connection: a room joined before the reload keeps relaying after it.
* EMFILE on accept makes the daemon back off, not die: once descriptors are
  free again it accepts and answers.
"""

from __future__ import annotations

import base64
import shlex
import signal
import socket
from pathlib import Path

import trio

from m42d.errors import TransportError, WireError
from m42d.transport import Transport
from m42d.wire import Bulk, Control, CreateRoom, Joined, PeerUp, Ping, Pong, RoomCreated
from tests.test_abuse import expect, join_frame
from tests.test_daemon_systemd import (
    Daemon,
    clean_env,
    running_daemon,
    serve_argv,
    transports_or_skip,
)

STEP = 20.0
MARKER = b"PAYLOAD-MARKER-7f3a"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def _room_traffic(daemon: Daemon, tls: Transport) -> RoomCreated:
    """Create a room, join both seats, relay one CONTROL and one BULK each way."""
    url = daemon.listening()["tls"]
    async with tls.connect(url, pin=daemon.pin) as c:
        await c.send(CreateRoom())
        room: RoomCreated = await expect(c, RoomCreated)
    async with tls.connect(url, pin=daemon.pin) as a, tls.connect(url, pin=daemon.pin) as b:
        await a.send(join_frame(room, "A"))
        await expect(a, Joined)
        await b.send(join_frame(room, "B"))
        await expect(b, Joined)
        await expect(a, PeerUp)
        await a.send(Control(MARKER))
        assert (await expect(b, Control)).payload == MARKER
        await b.send(Bulk(MARKER * 10))
        assert (await expect(a, Bulk)).payload == MARKER * 10
        # A wrong token too, so the refusal path logs what it logs.
        async with tls.connect(url, pin=daemon.pin) as intruder:
            await intruder.send(join_frame(room, "B", token=bytes(16)))
            with trio.fail_after(STEP):
                while True:
                    try:
                        await intruder.receive()
                    except (TransportError, WireError):  # the refusal ends the connection
                        break
    return room


async def test_debug_logs_hold_no_payload_token_ticket_or_address(tmp_path: Path) -> None:
    tls = transports_or_skip("tls")["tls"]
    argv = serve_argv(tmp_path / "state", "--listen", "tls://127.0.0.1:0", "--log-level", "debug")
    async with running_daemon(argv, env=clean_env()) as daemon:
        room = await _room_traffic(daemon, tls)
        assert await daemon.stop() == 0
    log = daemon.log
    assert "debug" in log.lower() or "DEBUG" in log, "debug logging must be on for this test"
    secrets = {
        "payload": [MARKER.decode()],
        "ticket": [room.ticket.hex(), _b64(room.ticket)],
        "token": [t.hex() for t in (room.token_a, room.token_b)]
        + [_b64(t) for t in (room.token_a, room.token_b)],
        "room id": [room.ticket[2:18].hex(), _b64(room.ticket[2:18])],
    }
    for what, forms in secrets.items():
        for form in forms:
            assert form not in log, f"a log line contains the {what}"
    # The relay's own listening address may appear; a client's (with its port) may not.
    for line in log.splitlines():
        if "listening on" in line:
            continue
        assert "127.0.0.1" not in line, f"client address logged without --log-addresses: {line}"


async def test_log_addresses_option_is_what_adds_them(tmp_path: Path) -> None:
    """The check above can see addresses: with the option on, they appear."""
    tls = transports_or_skip("tls")["tls"]
    argv = serve_argv(
        tmp_path / "state",
        "--listen",
        "tls://127.0.0.1:0",
        "--log-level",
        "debug",
        "--log-addresses",
    )
    async with running_daemon(argv, env=clean_env()) as daemon:
        await _room_traffic(daemon, tls)
        assert await daemon.stop() == 0
    lines = [ln for ln in daemon.log.splitlines() if "listening on" not in ln]
    assert any("127.0.0.1" in ln for ln in lines)


async def test_sighup_keeps_live_rooms(tmp_path: Path) -> None:
    tls = transports_or_skip("tls")["tls"]
    argv = serve_argv(tmp_path / "state", "--listen", "tls://127.0.0.1:0")
    async with running_daemon(argv, env=clean_env()) as daemon:
        url = daemon.listening()["tls"]
        async with tls.connect(url, pin=daemon.pin) as c:
            await c.send(CreateRoom())
            room: RoomCreated = await expect(c, RoomCreated)
        async with tls.connect(url, pin=daemon.pin) as a, tls.connect(url, pin=daemon.pin) as b:
            await a.send(join_frame(room, "A"))
            await expect(a, Joined)
            await b.send(join_frame(room, "B"))
            await expect(b, Joined)
            await a.send(Control(b"before"))
            assert (await expect(b, Control)).payload == b"before"
            daemon.proc.send_signal(signal.SIGHUP)
            await daemon.wait_log(lambda log: "reloaded" in log)
            await a.send(Control(b"after"))
            assert (await expect(b, Control)).payload == b"after"
            await b.send(Control(b"and back"))
            assert (await expect(a, Control)).payload == b"and back"
        assert await daemon.stop() == 0


async def test_emfile_backs_off_instead_of_dying(tmp_path: Path) -> None:
    """With a tiny descriptor limit, a pile of connections exhausts it; the
    daemon keeps running and serves again once they are gone."""
    tls = transports_or_skip("tls")["tls"]
    fd_limit = 40
    inner = shlex.join(serve_argv(tmp_path / "state", "--listen", "tls://127.0.0.1:0"))
    argv = ["bash", "-c", f"ulimit -n {fd_limit} && exec {inner}"]
    async with running_daemon(argv, env=clean_env()) as daemon:
        url = daemon.listening()["tls"]
        port = int(url.rsplit(":", 1)[1])
        held: list[socket.socket] = []
        try:
            for _ in range(fd_limit + 20):  # more than the daemon can hold open
                sock = socket.create_connection(("127.0.0.1", port), timeout=STEP)
                held.append(sock)
            await daemon.wait_log(lambda log: "EMFILE" in log or "Too many open files" in log)
            assert daemon.proc.returncode is None, daemon.log
        finally:
            for sock in held:
                sock.close()
        with trio.fail_after(STEP):
            while True:  # the back-off is a short sleep in the accept loop
                try:
                    async with tls.connect(url, pin=daemon.pin) as conn:
                        await conn.send(Ping(b"alive"))
                        pong = await expect(conn, Pong)
                        break
                except TransportError:  # still backing off: try again shortly
                    await trio.sleep(0.1)
        assert pong.data == b"alive"
        assert await daemon.stop() == 0
