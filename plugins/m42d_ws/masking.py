"""WebSocket masking in C when numpy is importable (``pip install 'm42d[fast]'``).

Every byte a client sends over a WebSocket is XORed with a 4-byte key, and
the relay XORs it back.  wsproto does this in Python (strided ``bytearray``
slices through ``translate``): ~70-120 µs per 64 KiB frame here, about a
fifth of ``m42 send``'s CPU and a quarter of the relay's over ws
(docs/benchmarks.md, the fifth pass).  numpy XORs the same frame as 32-bit
words in ~8 µs.  Without numpy nothing changes: wsproto's own masker stays.

:func:`install` replaces the masker class in ``wsproto.frame_protocol``,
which looks it up by name for every frame it masks (client) or unmasks
(server).  The replacement is a subclass with wsproto's semantics (a new
``bytearray`` out; the key rotated by the length of each piece, so a frame
unmasked in several reads comes out the same), so it holds for every
wsproto user in the process; that is m42d's own client and relay here.
"""

from __future__ import annotations

import importlib.util
from typing import Any, Final

import wsproto.frame_protocol as frame_protocol
from wsproto.frame_protocol import XorMaskerSimple

__all__ = ["NumpyXorMasker", "install", "installed"]

NUMPY_MIN: Final = 256
"""Below this many bytes wsproto's own loop is as fast as numpy's call overhead."""

_np: Any = None
"""numpy, imported by the first piece of :data:`NUMPY_MIN` bytes or more (~80 ms of
CPU): a receiving client, which masks only small frames, never pays for it."""


def _numpy() -> Any:
    global _np
    if _np is None:
        import numpy

        _np = numpy
    return _np


class NumpyXorMasker(XorMaskerSimple):
    """wsproto's masker; pieces of :data:`NUMPY_MIN` bytes or more are XORed by numpy."""

    def __init__(self, masking_key: bytearray | bytes) -> None:
        super().__init__(masking_key)
        self._masking_key: bytearray | bytes

    def process(self, data: bytearray) -> bytearray:
        size = len(data)
        if size < NUMPY_MIN:
            small: bytearray = super().process(data)
            return small
        np = _numpy()
        key = bytes(self._masking_key)
        out = bytearray(data)
        whole = size - size % 4
        # Native byte order on both sides: the word is the key read the way the data is.
        words = np.frombuffer(out, dtype=np.uint32, count=whole // 4)
        np.bitwise_xor(words, np.frombuffer(key, dtype=np.uint32)[0], out=words)
        for i in range(whole, size):
            out[i] ^= key[i - whole]
        rotation = size % 4
        self._masking_key = key[rotation:] + key[:rotation]
        return out


def install() -> bool:
    """Make wsproto mask with numpy when it is installed; True if it now does.

    numpy is only looked for here; it is imported when a large piece is masked.
    """
    if installed():
        return True
    if importlib.util.find_spec("numpy") is None:
        return False
    frame_protocol.XorMaskerSimple = NumpyXorMasker  # type: ignore[misc]
    return True


def installed() -> bool:
    return frame_protocol.XorMaskerSimple is NumpyXorMasker
