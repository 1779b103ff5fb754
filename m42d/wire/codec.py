"""Encode one frame to bytes and decode one whole message back, in both framings.

This is the seam every transport and the incremental decoder go through:
one table from kind byte to body parser, so that no caller ever dispatches
on a kind itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from m42d.errors import LocalProtocolError, WireError
from m42d.wire.frames import _FRAME_CLASSES, Frame
from m42d.wire.kinds import FrameKind
from m42d.wire.limits import _LIMITS_BY_BYTE, _STREAM_HEADER, _check_body_length

_DECODERS: Final[dict[int, Callable[[memoryview], Frame]]] = {
    int(cls.kind): cls._decode_body for cls in _FRAME_CLASSES
}
_KIND_BYTE: Final[dict[FrameKind, bytes]] = {kind: bytes((kind,)) for kind in FrameKind}

assert set(_DECODERS) == set(_LIMITS_BY_BYTE) == {int(k) for k in FrameKind}


def _encode_body(frame: Frame) -> bytes:
    if not isinstance(frame, _FRAME_CLASSES):
        raise LocalProtocolError(f"cannot encode {type(frame).__name__}: not a relay frame")
    return frame._encode_body()


def encode(frame: Frame) -> bytes:
    """Message form (WebSocket): ``kind:u8 | body``.

    Raises:
        LocalProtocolError: the frame breaks a rule the peer's decoder enforces.
    """
    body = _encode_body(frame)
    return _KIND_BYTE[frame.kind] + body


def encode_stream(frame: Frame) -> bytes:
    """Stream form (TCP+TLS, Unix socket): ``length:u32 | kind:u8 | body``.

    Raises:
        LocalProtocolError: the frame breaks a rule the peer's decoder enforces.
    """
    body = _encode_body(frame)
    return _STREAM_HEADER.pack(1 + len(body), frame.kind) + body


def decode(message: bytes | bytearray | memoryview) -> Frame:
    """Decode one whole message (message form: ``kind:u8 | body``).

    Raises:
        WireError: the message is empty, of an unknown kind or breaks a body rule.
    """
    with memoryview(message) as whole:
        if whole.ndim != 1 or whole.itemsize != 1:
            with whole.cast("B") as flat:
                return _decode_message_view(flat)
        return _decode_message_view(whole)


def _decode_message_view(view: memoryview) -> Frame:
    if len(view) == 0:
        raise WireError("empty message: a frame needs at least a kind byte")
    kind_byte = view[0]
    with view[1:] as body:
        _check_body_length(kind_byte, len(body))
        return _DECODERS[kind_byte](body)
