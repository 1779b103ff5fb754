"""The field codecs every frame class shares: bytes, unsigned ints and UTF-8 text.

Encoding validates with the decoder's own rules but raises
:class:`~m42d.errors.LocalProtocolError` (a frame we cannot decode is our
bug); decoding raises :class:`~m42d.errors.WireError`.  One copy of those
rules keeps the two directions from drifting apart kind by kind.
"""

from __future__ import annotations

from m42d.errors import LocalProtocolError, WireError
from m42d.wire.kinds import FrameKind
from m42d.wire.limits import MAX_TEXT


def _payload_repr(payload: bytes) -> str:
    return f"<{len(payload)} bytes>"


# -- encoding helpers: validate like the decoder would, but blame ourselves --


def _enc_bytes(kind: FrameKind, field: str, value: object, lo: int, hi: int) -> bytes:
    if not isinstance(value, bytes | bytearray):
        raise LocalProtocolError(f"cannot encode {kind.name}: {field} must be bytes")
    n = len(value)
    if not lo <= n <= hi:
        rule = f"{lo} bytes" if lo == hi else f"{lo}..{hi} bytes"
        raise LocalProtocolError(f"cannot encode {kind.name}: {field} must be {rule}, got {n}")
    return bytes(value)


def _enc_uint(kind: FrameKind, field: str, value: object, lo: int, hi: int) -> int:
    if not isinstance(value, int) or not lo <= value <= hi:
        raise LocalProtocolError(f"cannot encode {kind.name}: {field} must be an int in {lo}..{hi}")
    return value


def _enc_text(kind: FrameKind, field: str, value: object) -> bytes:
    if not isinstance(value, str):
        raise LocalProtocolError(f"cannot encode {kind.name}: {field} must be str")
    try:
        raw = value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise LocalProtocolError(f"cannot encode {kind.name}: {field} is not valid UTF-8") from exc
    if len(raw) > MAX_TEXT:
        raise LocalProtocolError(
            f"cannot encode {kind.name}: {field} must be at most {MAX_TEXT} UTF-8 bytes, "
            f"got {len(raw)}"
        )
    return raw


def _dec_text(kind: FrameKind, field: str, body: memoryview, start: int) -> str:
    with body[start:] as view:
        try:
            return str(view, "utf-8")
        except UnicodeDecodeError as exc:
            raise WireError(f"{kind.name} {field} is not valid UTF-8") from exc
