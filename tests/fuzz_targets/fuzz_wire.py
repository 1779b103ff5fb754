"""atheris target: the relay frame decoder (message and stream forms).

Run: ``python tests/fuzz_targets/fuzz_wire.py [corpus] -max_total_time=20``.
Anything but :class:`~m42d.errors.WireError` escaping is a crash; so is a
decoder holding more than its ``max_buffer``.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from m42d.errors import WireError
    from m42d.wire import FrameDecoder, decode, encode, encode_stream


def test_one_input(data: bytes) -> None:
    if not data:
        return
    try:
        frame = decode(data)
    except WireError:
        pass
    else:
        # What decodes must encode back to the same frame in both forms.
        assert decode(encode(frame)) == frame
        assert decode(encode_stream(frame)[4:]) == frame
    # The stream form, fed in pieces whose sizes come from the first byte.
    step = 1 + data[0] % 97
    decoder = FrameDecoder(max_frame=1 + data[-1] * 64, max_buffer=64 * 1024)
    try:
        for start in range(1, len(data), step):
            decoder.receive_data(data[start : start + step])
            assert decoder.buffered <= 64 * 1024
            for _frame in decoder:
                pass
        decoder.eof()
    except WireError:
        pass


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
