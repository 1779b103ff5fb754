"""m42d_ws.masking: numpy's WebSocket masking gives exactly wsproto's bytes."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto import ConnectionType
from wsproto.connection import Connection
from wsproto.events import BytesMessage

pytest.importorskip("numpy")

from m42d_ws import masking

ORIGINAL = masking.XorMaskerSimple
"""wsproto's own masker (``install`` replaces the name in wsproto, not in masking)."""


@settings(max_examples=300, deadline=None)
@given(
    key=st.binary(min_size=4, max_size=4),
    data=st.binary(max_size=3000),
    cuts=st.lists(st.integers(min_value=1, max_value=1100), max_size=8),
)
def test_same_bytes_as_wsproto_when_a_frame_arrives_in_pieces(
    key: bytes, data: bytes, cuts: list[int]
) -> None:
    # Pieces of every size around NUMPY_MIN and 4-byte alignment, so the key
    # rotation between the numpy path and wsproto's path is exercised.
    ours, theirs = masking.NumpyXorMasker(key), ORIGINAL(key)
    out_ours, out_theirs = bytearray(), bytearray()
    pos = 0
    for cut in [*cuts, len(data)]:
        piece = bytearray(data[pos : pos + cut])
        pos += len(piece)
        out_ours += ours.process(piece)
        out_theirs += theirs.process(piece)
    assert out_ours == out_theirs


def test_large_frame_matches_and_input_is_left_alone() -> None:
    key, data = os.urandom(4), bytearray(os.urandom(65_541))
    before = bytes(data)
    assert masking.NumpyXorMasker(key).process(data) == ORIGINAL(key).process(data)
    assert data == before


def test_install_makes_wsproto_mask_with_numpy_and_frames_still_round_trip(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import wsproto.frame_protocol as frame_protocol

    monkeypatch.setattr(frame_protocol, "XorMaskerSimple", ORIGINAL)
    assert not masking.installed()
    assert masking.install()
    assert frame_protocol.XorMaskerSimple is masking.NumpyXorMasker

    client = Connection(ConnectionType.CLIENT)
    server = Connection(ConnectionType.SERVER)
    payload = os.urandom(70_000)
    wire = client.send(BytesMessage(data=payload))
    assert payload[:1000] not in wire  # masked on the wire
    got = bytearray()
    for start in range(0, len(wire), 4099):  # a frame read in several pieces
        server.receive_data(wire[start : start + 4099])
        for event in server.events():
            assert isinstance(event, BytesMessage)
            got += event.data
    assert bytes(got) == payload


def test_without_numpy_wsproto_keeps_its_masker(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    import wsproto.frame_protocol as frame_protocol

    monkeypatch.setattr(frame_protocol, "XorMaskerSimple", ORIGINAL)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "numpy" else real_find_spec(name, *a),
    )
    assert not masking.install()
    assert frame_protocol.XorMaskerSimple is ORIGINAL


def test_small_pieces_do_not_import_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    # A receiving client masks only small frames: numpy's ~80 ms import is not its cost.
    monkeypatch.setattr(masking, "_np", None)
    masker = masking.NumpyXorMasker(os.urandom(4))
    masker.process(bytearray(masking.NUMPY_MIN - 1))
    assert masking._np is None
    masker.process(bytearray(masking.NUMPY_MIN))
    assert masking._np is not None
