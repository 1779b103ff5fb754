"""Tests of the unix:// transport, self-contained like any third-party plugin's.

Rules: real Unix sockets in a short private directory under /tmp (AF_UNIX
paths are limited to ~107 bytes, pytest's tmp_path is often longer); a
``trio.fail_after`` around every test that does I/O; no sleeps as
synchronisation.  Every test is async and marked for pytest-trio, so the
module runs under m42d's pytest configuration and under none.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import stat
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Final, TypeVar

import pytest
import trio
import trio.testing
from m42d_unix import ADDRESS, DEFAULT_MODE, UnixListener, UnixTransport, socket_path, unix_url

from m42d.errors import ConnectionClosed, TransportError, WireError
from m42d.relay import Relay, serve_relay
from m42d.ticket import Seat, TicketKeyRing
from m42d.transport import FrameConnection, FrameListener, Transport, load_transports
from m42d.wire import (
    Bulk,
    Control,
    CreateRoom,
    Credit,
    Frame,
    Join,
    Joined,
    PeerUp,
    Ping,
    Pong,
    RoomCreated,
)

pytestmark = pytest.mark.trio

STEP: Final = 5.0
"""Deadline for any test's I/O; a hang fails fast instead of blocking the suite."""

F = TypeVar("F")


def exists(path: str) -> bool:
    return os.path.lexists(path)


def write_file(path: str, text: str) -> None:
    with open(path, "w") as file:
        file.write(text)


def read_file(path: str) -> str:
    with open(path) as file:
        return file.read()


@pytest.fixture
def sock_dir() -> Iterator[str]:
    directory = tempfile.mkdtemp(prefix="m42u-", dir="/tmp")
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def url(sock_dir: str) -> str:
    return unix_url(os.path.join(sock_dir, "relay.sock"))


async def echo(connection: FrameConnection) -> None:
    """Answer every frame with the same frame until the client leaves."""
    with contextlib.suppress(ConnectionClosed):
        while True:
            await connection.send(await connection.receive())


@contextlib.asynccontextmanager
async def serving(
    url: str,
    handler: Callable[[FrameConnection], Awaitable[None]] = echo,
    transport: UnixTransport | None = None,
    **kwargs: object,
) -> AsyncIterator[FrameListener]:
    """A listener serving ``handler`` for the duration of the block."""
    listener = await (transport or UnixTransport()).open_listener(url, **kwargs)  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        await nursery.start(listener.serve, handler)
        yield listener
        nursery.cancel_scope.cancel()
    await listener.aclose()


async def round_trip(url: str, frame: Frame) -> Frame:
    async with UnixTransport().connect(url) as connection:
        await connection.send(frame)
        return await connection.receive()


# -- plugin discovery -------------------------------------------------------------


async def test_entry_point_is_discovered_by_m42d() -> None:
    typed: Transport = UnixTransport()  # mypy checks the signatures structurally here
    assert isinstance(typed, Transport)
    transports = load_transports()
    assert isinstance(transports["unix"], UnixTransport)
    assert isinstance(transports["unix"], Transport)


async def test_url_round_trip() -> None:
    path = "/run/m42d/a b%c.sock"
    assert socket_path(unix_url(path)) == path
    assert unix_url("/run/m42d/relay.sock") == "unix:///run/m42d/relay.sock"


@pytest.mark.parametrize(
    "bad",
    ["tls://example.org/x.sock", "unix://host/x.sock", "unix://", "unix:///x?y", "nonsense"],
)
async def test_bad_urls_are_transport_errors(bad: str) -> None:
    with pytest.raises(TransportError):
        socket_path(bad)
    with pytest.raises(TransportError):
        await UnixTransport().open_listener(bad)


# -- frames both ways -----------------------------------------------------------------


async def test_frames_travel_both_ways(url: str) -> None:
    seen: list[Frame] = []

    async def handler(connection: FrameConnection) -> None:
        assert connection.transport == "unix"
        assert connection.address == ADDRESS
        seen.append(await connection.receive())
        await connection.send(Control(b"from relay"))
        await connection.send_many([Bulk(b"x" * 65536), Pong(b"p")])
        seen.append(await connection.receive())

    with trio.fail_after(STEP):
        async with serving(url, handler) as listener:
            assert listener.urls == [url]
            async with UnixTransport().connect(url) as client:
                assert (client.transport, client.address) == ("unix", ADDRESS)
                await client.send(Control(b"from client"))
                assert await client.receive() == Control(b"from relay")
                assert await client.receive() == Bulk(b"x" * 65536)
                assert await client.receive() == Pong(b"p")
                await client.send_many([Bulk(b"y" * 1000)])
                with pytest.raises(ConnectionClosed):
                    await client.receive()  # the handler returned: the listener closed it
    assert seen == [Control(b"from client"), Bulk(b"y" * 1000)]


async def test_socket_file_mode_and_cleanup(url: str) -> None:
    path = socket_path(url)
    with trio.fail_after(STEP):
        async with serving(url):
            assert stat.S_ISSOCK(os.stat(path).st_mode)
            assert stat.S_IMODE(os.stat(path).st_mode) == DEFAULT_MODE
        assert not exists(path)
        async with serving(url, transport=UnixTransport(mode=0o600)):
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


async def test_close_survives_a_vanished_socket_file(url: str) -> None:
    listener = await UnixTransport().open_listener(url)
    assert repr(listener) == f"<UnixListener {url}>"
    os.unlink(socket_path(url))
    await listener.aclose()
    assert not exists(socket_path(url))


async def test_close_leaves_a_successors_socket_alone(url: str) -> None:
    path = socket_path(url)
    with trio.fail_after(STEP):
        first = await UnixTransport().open_listener(url)
        os.unlink(path)  # an operator or a newer relay took the path over
        async with serving(url):
            await first.aclose()
            await first.aclose()  # idempotent
            assert exists(path)
            assert await round_trip(url, Ping(b"1")) == Ping(b"1")


# -- listening safely ---------------------------------------------------------------------


async def test_stale_socket_file_is_replaced(url: str) -> None:
    path = socket_path(url)
    crashed = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    crashed.bind(path)
    crashed.close()  # a dead relay's file stays behind
    assert stat.S_ISSOCK(os.lstat(path).st_mode)
    with trio.fail_after(STEP):
        async with serving(url):
            assert await round_trip(url, Ping(b"new")) == Ping(b"new")


async def test_live_socket_is_not_stolen(url: str) -> None:
    with trio.fail_after(STEP):
        async with serving(url):
            with pytest.raises(TransportError, match="another process is listening"):
                await UnixTransport().open_listener(url)
            assert await round_trip(url, Ping(b"still mine")) == Ping(b"still mine")


async def test_missing_directory_is_an_error(sock_dir: str) -> None:
    url = unix_url(os.path.join(sock_dir, "absent", "relay.sock"))
    with pytest.raises(TransportError, match="absent does not exist"):
        await UnixTransport().open_listener(url)
    assert not exists(os.path.join(sock_dir, "absent"))


async def test_a_path_that_is_not_a_socket_is_kept(url: str) -> None:
    path = socket_path(url)
    write_file(path, "precious")
    with pytest.raises(TransportError, match="not a socket"):
        await UnixTransport().open_listener(url)
    assert read_file(path) == "precious"


@pytest.mark.parametrize("length", [150, 300])  # too long for AF_UNIX; for a file name
async def test_too_long_path_is_named(sock_dir: str, length: int) -> None:
    url = unix_url(os.path.join(sock_dir, "s" * length))
    with pytest.raises(TransportError, match="too long"):
        await UnixTransport().open_listener(url)


async def test_listener_refuses_tls(url: str) -> None:
    import ssl

    with pytest.raises(TransportError, match="no TLS"):
        await UnixTransport().open_listener(url, ssl_context=ssl.create_default_context())


# -- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "garbage",
    [
        pytest.param(b"\xff\xff\xff\xff\x10", id="oversize-length"),
        pytest.param(b"\x00\x00\x00\x02\xee\x00", id="unknown-kind"),
        pytest.param(b"\x00\x00\x00\x00", id="zero-length"),
    ],
)
async def test_garbage_is_a_wire_error_and_the_listener_keeps_serving(
    url: str, garbage: bytes
) -> None:
    outcomes: list[BaseException | Frame] = []

    async def handler(connection: FrameConnection) -> None:
        try:
            frame = await connection.receive()
        except (WireError, ConnectionClosed) as exc:
            outcomes.append(exc)
            return
        outcomes.append(frame)
        await connection.send(frame)

    with trio.fail_after(STEP):
        async with serving(url, handler):
            raw = await trio.open_unix_socket(socket_path(url))
            async with raw:
                await raw.send_all(garbage)
                assert await raw.receive_some(100) == b""  # the listener closed it
            assert await round_trip(url, Ping(b"ok")) == Ping(b"ok")
    assert isinstance(outcomes[0], WireError)
    assert outcomes[1] == Ping(b"ok")


async def test_a_crashing_handler_is_contained(url: str, caplog: pytest.LogCaptureFixture) -> None:
    calls = 0

    async def handler(connection: FrameConnection) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("bug in the relay")
        await echo(connection)

    with trio.fail_after(STEP), caplog.at_level(logging.ERROR):
        async with serving(url, handler):
            async with UnixTransport().connect(url) as first:
                with pytest.raises(ConnectionClosed):
                    await first.receive()
            assert await round_trip(url, Ping(b"2")) == Ping(b"2")
    assert "handler for a unix connection failed" in caplog.text


async def test_client_leaving_is_connection_closed_on_the_relay(url: str) -> None:
    outcome: list[BaseException] = []
    done = trio.Event()

    async def handler(connection: FrameConnection) -> None:
        try:
            await connection.receive()
        except ConnectionClosed as exc:
            outcome.append(exc)
        finally:
            done.set()

    with trio.fail_after(STEP):
        async with serving(url, handler):
            async with UnixTransport().connect(url):
                pass
            await done.wait()
    assert isinstance(outcome[0], ConnectionClosed)


async def test_a_half_frame_then_eof_is_a_wire_error(url: str) -> None:
    outcome: list[BaseException] = []
    done = trio.Event()

    async def handler(connection: FrameConnection) -> None:
        try:
            await connection.receive()
        except (WireError, ConnectionClosed) as exc:
            outcome.append(exc)
        finally:
            done.set()

    with trio.fail_after(STEP):
        async with serving(url, handler):
            raw = await trio.open_unix_socket(socket_path(url))
            async with raw:
                await raw.send_all(b"\x00\x00\x00\x05\x10ab")
            await done.wait()
    assert isinstance(outcome[0], WireError)


# -- connecting ----------------------------------------------------------------------------------


async def test_connect_to_nothing_is_a_transport_error(url: str) -> None:
    with trio.fail_after(STEP), pytest.raises(TransportError, match="cannot connect"):
        async with UnixTransport().connect(url):
            pass  # pragma: no cover


async def test_connect_refuses_a_pin(url: str) -> None:
    with pytest.raises(TransportError, match="pin"):
        async with UnixTransport().connect(url, pin=bytes(32)):
            pass  # pragma: no cover


async def test_connect_times_out(
    url: str, monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.abc.Clock
) -> None:
    async def never(path: str) -> trio.SocketStream:
        await trio.sleep_forever()
        raise AssertionError  # pragma: no cover

    monkeypatch.setattr(trio, "open_unix_socket", never)
    with trio.fail_after(60), pytest.raises(TransportError, match="timed out"):
        async with UnixTransport().connect(url, connect_timeout=3):
            pass  # pragma: no cover


# -- socket activation and graceful stop ----------------------------------------------------------


async def test_inherited_socket_is_adopted_and_its_file_kept(url: str) -> None:
    path = socket_path(url)
    inherited = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    inherited.bind(path)
    inherited.listen()
    with trio.fail_after(STEP):
        async with serving(url, sock=inherited) as listener:
            assert listener.urls == [url]
            assert await round_trip(url, Ping(b"fd")) == Ping(b"fd")
    assert exists(path), "the file belongs to whoever created the socket"
    assert inherited.fileno() == -1, "the listener owns and closes the socket"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="abstract sockets are Linux-only")
async def test_inherited_abstract_socket_is_shown_with_an_at_sign() -> None:
    name = f"m42d-unix-test-{os.getpid()}-{id(object())}"
    inherited = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    inherited.bind("\0" + name)
    inherited.listen()
    listener = await UnixTransport().open_listener("unix:///unused.sock", sock=inherited)
    try:
        assert listener.urls == [f"unix://@{name}"]
    finally:
        await listener.aclose()


async def test_inherited_socket_of_the_wrong_kind_is_refused(url: str) -> None:
    with (
        socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp,
        pytest.raises(TransportError, match="not an AF_UNIX stream"),
    ):
        await UnixTransport().open_listener(url, sock=tcp)


async def test_stopping_serve_keeps_live_connections(url: str) -> None:
    """With a handler nursery, cancelling serve() stops accepting only (graceful stop)."""
    with trio.fail_after(STEP):
        async with trio.open_nursery() as handlers:
            listener = await UnixTransport().open_listener(url)
            assert isinstance(listener, UnixListener)
            accepting = trio.CancelScope()

            async def accept(*, task_status: trio.TaskStatus[None]) -> None:
                with accepting:
                    await listener.serve(echo, handler_nursery=handlers, task_status=task_status)

            await handlers.start(accept)
            async with UnixTransport().connect(url) as client:
                await client.send(Ping(b"accepted"))
                assert await client.receive() == Ping(b"accepted")
                accepting.cancel()
                await trio.testing.wait_all_tasks_blocked()
                assert not exists(socket_path(url))
                with pytest.raises(TransportError):
                    await round_trip(url, Ping(b"late"))
                await client.send(Control(b"still here"))
                assert await client.receive() == Control(b"still here")


# -- end to end through the relay -------------------------------------------------------------


async def next_frame(connection: FrameConnection, credit: list[int]) -> Frame:
    """The next frame other than CREDIT; the CREDIT amounts are collected in ``credit``."""
    while True:
        frame = await connection.receive()
        if not isinstance(frame, Credit):
            return frame
        credit.append(frame.amount)


async def expect(connection: FrameConnection, cls: type[F], credit: list[int]) -> F:
    frame = await next_frame(connection, credit)
    assert isinstance(frame, cls), f"expected {cls.__name__}, got {frame!r}"
    return frame


async def test_two_clients_share_a_room_over_unix(url: str) -> None:
    relay = Relay(TicketKeyRing.generate())
    listener = await UnixTransport().open_listener(url)
    credit_a: list[int] = []
    credit_b: list[int] = []
    chunk = bytes(range(256)) * 256  # one full 64 KiB bulk payload
    with trio.fail_after(STEP):
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_relay, relay, [listener])
            transport = load_transports()["unix"]
            async with transport.connect(url) as alice, transport.connect(url) as bob:
                await alice.send(CreateRoom())
                room = await expect(alice, RoomCreated, credit_a)

                await alice.send(Join(Seat.A, room.ticket, room.token_a))
                assert not (await expect(alice, Joined, credit_a)).peer_online
                await bob.send(Join(Seat.B, room.ticket, room.token_b))
                assert (await expect(bob, Joined, credit_b)).peer_online
                await expect(alice, PeerUp, credit_a)

                await alice.send(Control(b"hello bob"))
                assert await expect(bob, Control, credit_b) == Control(b"hello bob")
                assert sum(credit_b) >= len(chunk)  # granted with JOINED, before any relayed frame
                await bob.send_many([Bulk(chunk), Control(b"sent you a file")])
                # Lanes are the relay's business: the control frame may overtake the bulk one.
                got = [await next_frame(alice, credit_a) for _ in range(2)]
                assert sorted(got, key=lambda f: f.kind) == [
                    Control(b"sent you a file"),
                    Bulk(chunk),
                ]

            assert relay.statistics().joins == 2
            relay.stop()
    assert not exists(socket_path(url))
