"""m42d_ws.server frames what the relay sends itself: byte for byte what wsproto would send."""

from __future__ import annotations

import os

import pytest
from m42d_ws.server import _binary_header
from wsproto import ConnectionType
from wsproto.connection import Connection
from wsproto.events import BytesMessage, Message


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65_535, 65_536, 65_601, 200_000])
def test_header_matches_wsproto_at_every_length_boundary(size: int) -> None:
    payload = os.urandom(size)
    assert _binary_header(size) + payload == Connection(ConnectionType.SERVER).send(
        Message(data=payload)
    )


def test_a_batch_of_frames_parses_as_its_messages_in_order() -> None:
    messages = [os.urandom(n) for n in (3, 125, 126, 65_601, 0, 70_000)]
    wire = b"".join(_binary_header(len(m)) + m for m in messages)
    client = Connection(ConnectionType.CLIENT)
    client.receive_data(wire)
    got = [bytes(e.data) for e in client.events() if isinstance(e, BytesMessage)]
    assert got == messages
