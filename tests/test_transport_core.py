"""m42d.transport: plugin loading, URL helpers and the stream framing."""

from __future__ import annotations

import importlib.metadata
import logging

import pytest
import trio
import trio.testing

from m42d.errors import (
    ClosedLocally,
    ConnectionBroken,
    ConnectionClosed,
    PeerClosed,
    TransportError,
    WireError,
)
from m42d.transport import (
    ENTRY_POINT_GROUP,
    StreamFrameConnection,
    client_ssl_context,
    format_url,
    load_transports,
    parse_url,
)
from m42d.wire import Bulk, Control, Ping


class _Entry:
    def __init__(self, name: str, value: str, loader: object) -> None:
        self.name = name
        self.value = value
        self._loader = loader

    def load(self) -> object:
        if isinstance(self._loader, BaseException):
            raise self._loader
        return self._loader


class _Good:
    async def open_listener(self, url: str, **kwargs: object) -> None: ...

    def connect(self, url: str, **kwargs: object) -> None: ...


def test_broken_plugins_are_logged_and_skipped(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def crash() -> None:
        raise RuntimeError("constructor blew up")

    entries = [
        _Entry("broken", "nowhere:Thing", ImportError("no module named nowhere")),
        _Entry("crashy", "crashy:Thing", crash),
        _Entry("odd", "odd:Thing", object),
        _Entry("good", "good:Thing", _Good),
    ]

    def fake_entry_points(*, group: str) -> list[_Entry]:
        assert group == ENTRY_POINT_GROUP
        return entries

    monkeypatch.setattr(importlib.metadata, "entry_points", fake_entry_points)
    with caplog.at_level(logging.WARNING, logger="m42d.transport"):
        found = load_transports()
    assert list(found) == ["good"]
    text = caplog.text
    assert "'broken'" in text
    assert "'crashy'" in text
    assert "'odd'" in text
    assert all(r.name == "m42d.transport" for r in caplog.records)


def test_parse_and_format_url() -> None:
    parsed = parse_url("TLS://[::1]:9/x", ("tls",), 8043)
    assert (parsed.scheme, parsed.host, parsed.port, parsed.path) == ("tls", "::1", 9, "/x")
    assert parse_url("tls://relay.example", ("tls",), 8043).port == 8043
    assert parse_url("wss://h", ("wss",), lambda s: 443).port == 443
    assert format_url("tls", "::1", 9) == "tls://[::1]:9"
    with pytest.raises(TransportError, match="invalid"):
        parse_url("tls://h:99999", ("tls",), 1)


def test_pin_must_be_a_sha256() -> None:
    with pytest.raises(TransportError, match="32 bytes"):
        client_ssl_context(None, b"short")
    assert client_ssl_context(None, bytes(32)).check_hostname is False


async def test_stream_frames_split_anywhere_and_eof() -> None:
    left, right = trio.testing.memory_stream_pair()
    sender = StreamFrameConnection(left, transport="memory")
    receiver = StreamFrameConnection(right, transport="memory", address="x")
    assert (receiver.address, receiver.transport) == ("x", "memory")
    with trio.fail_after(5):
        await sender.send_many([Control(b"a"), Bulk(b"b" * 60_000)])
        await sender.send_many([])
        await sender.send(Ping(b"z"))
        assert await receiver.receive() == Control(b"a")
        assert await receiver.receive() == Bulk(b"b" * 60_000)
        assert await receiver.receive() == Ping(b"z")
        await sender.aclose()
        # "It closed" (the other end), "you closed it" and "it broke" stay apart.
        with pytest.raises(PeerClosed):
            await receiver.receive()
        with pytest.raises(ClosedLocally):
            await sender.send(Ping())
        await sender.aclose()  # idempotent


async def test_stream_eof_mid_frame_is_a_wire_error() -> None:
    left, right = trio.testing.memory_stream_pair()
    receiver = StreamFrameConnection(right, transport="memory")
    with trio.fail_after(5):
        await left.send_all(b"\x00\x00\x00\x05\x10ab")
        await left.aclose()
        with pytest.raises(WireError, match="mid-frame"):
            await receiver.receive()


async def test_a_broken_stream_is_connection_broken_not_a_clean_close() -> None:
    left, right = trio.testing.memory_stream_pair()
    receiver = StreamFrameConnection(right, transport="memory")

    async def broken(max_bytes: int | None = None) -> bytes:
        raise trio.BrokenResourceError("reset")

    right.receive_some = broken  # type: ignore[method-assign]
    with trio.fail_after(5), pytest.raises(ConnectionBroken, match="broke") as info:
        await receiver.receive()
    assert isinstance(info.value, ConnectionClosed)
    assert not isinstance(info.value, PeerClosed | ClosedLocally)
    await left.aclose()
    await receiver.aclose()
