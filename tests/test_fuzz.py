"""Bad input: every parser that takes outside bytes, fed arbitrary data.

The rule each test checks: only the project's own error for that parser
escapes (``WireError``, ``LinkError``, ``TicketError``, ``ConfigError``),
or, for the session and the relay, nothing at all -- a hostile peer or relay
must not be able to raise through them.  No hang (every test is bounded),
no unbounded memory (the decoder's buffer stays under its cap).

Existing fuzzing this extends: ``tests/test_wire.py`` (garbage and mutated
frames), ``tests/test_link.py`` (arbitrary and mutated links),
``tests/test_session.py::test_garbage_control_payloads_never_raise``.  The
coverage-guided atheris targets are in ``tests/fuzz_targets/`` and run by
:func:`test_atheris_targets` (slow).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any, Final

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from m42d.config import RelayConfig, load_config, parse_config
from m42d.errors import ConfigError, LinkError, TicketError, WireError
from m42d.link import Link, parse_relay_url
from m42d.relay import Relay, RelayLimits
from m42d.session import Envelope, SessionFailed, TextReceived
from m42d.ticket import Seat, Ticket, TicketKeyRing
from m42d.transport import StreamFrameConnection
from m42d.wire import LENGTH_PREFIX_SIZE, MAX_FRAME, FrameDecoder, Join, decode, encode_stream
from tests.session_harness import Pair

FUZZ_TARGETS: Final = Path(__file__).parent / "fuzz_targets"
ATHERIS_SECONDS: Final = 20

# -- wire -----------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    chunks=st.lists(st.binary(max_size=300), max_size=20),
    max_frame=st.integers(min_value=1, max_value=MAX_FRAME),
)
def test_decoder_memory_stays_bounded(chunks: list[bytes], max_frame: int) -> None:
    """Whatever arrives, the decoder holds at most its cap and fails only with WireError."""
    max_buffer = LENGTH_PREFIX_SIZE + max_frame + 300
    decoder = FrameDecoder(max_frame=max_frame, max_buffer=max_buffer)
    try:
        for chunk in chunks:
            decoder.receive_data(chunk)
            assert decoder.buffered <= max_buffer
            for _frame in decoder:
                pass
        decoder.eof()
    except WireError:
        pass


@settings(max_examples=300, deadline=None)
@given(kind=st.integers(0, 255), body=st.binary(max_size=80))
def test_every_kind_byte_with_any_body(kind: int, body: bytes) -> None:
    """The message form: one kind byte and any body decode or raise WireError, nothing else."""
    try:
        frame = decode(bytes([kind]) + body)
    except WireError:
        return
    assert decode(encode_stream(frame)[LENGTH_PREFIX_SIZE:]) == frame


# -- links and tickets -------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=120))
def test_relay_url_parser_only_raises_link_error(text: str) -> None:
    try:
        address = parse_relay_url(text)
    except LinkError:
        return
    assert parse_relay_url(address.url) == address


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200).map(lambda b: b.decode("latin-1")))
def test_link_parser_on_byte_soup(text: str) -> None:
    with contextlib.suppress(LinkError):
        Link.parse("ws://relay.example:1#m42.1.A." + text)


KEYRING: Final = TicketKeyRing.generate()


@settings(max_examples=300, deadline=None)
@given(ticket=st.binary(max_size=60), token=st.binary(max_size=20), seat=st.sampled_from(Seat))
def test_ticket_verify_only_raises_ticket_error(ticket: bytes, token: bytes, seat: Seat) -> None:
    with pytest.raises(TicketError):
        KEYRING.verify(ticket, seat, token, now=1_700_000_000)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=60))
def test_ticket_parse_only_raises_ticket_error(data: bytes) -> None:
    with contextlib.suppress(TicketError):
        Ticket.parse(data)


# -- session inputs -----------------------------------------------------------------------

ENVELOPES: Final = st.sampled_from([int(e) for e in Envelope] + [0, 6, 255])


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    inputs=st.lists(
        st.tuples(
            st.sampled_from(Seat),
            st.booleans(),
            st.one_of(st.binary(max_size=300), st.tuples(ENVELOPES, st.binary(max_size=200))),
        ),
        min_size=1,
        max_size=12,
    )
)
def test_session_never_raises_on_arbitrary_payloads(
    inputs: list[tuple[Seat, bool, bytes | tuple[int, bytes]]],
) -> None:
    """Arbitrary CONTROL and BULK payloads on an established session: no exception,
    nothing shown, and once the garbage stops the pair recovers and delivers."""
    pair = Pair.make()
    pair.connect()
    assert pair.a.session.established
    assert pair.b.session.established
    for seat, control, raw in inputs:
        payload = bytes([raw[0]]) + raw[1] if isinstance(raw, tuple) else raw
        session = pair.side(seat).session
        if control:
            session.receive_control(payload)
        else:
            session.receive_bulk(payload)
    assert not pair.a.of(TextReceived)
    assert not pair.b.of(TextReceived)
    # Recovery: A retries (with back-off after repeated failures), B answers.
    pair.a.session.send_text("after the garbage")
    for _ in range(12):
        pair.now += 31.0
        pair.a.session.tick(pair.now)
        pair.b.session.tick(pair.now)
        pair.pump()
    assert [e.text for e in pair.b.of(TextReceived)] == ["after the garbage"]
    if pair.b.of(SessionFailed):
        assert all(e.reason for e in pair.b.of(SessionFailed))


# -- configuration ----------------------------------------------------------------------------

KEYS: Final = [
    "listen",
    "state_dir",
    "room_ttl",
    "creation_secret",
    "creation_secret_file",
    "log_addresses",
    "log_level",
    "metrics_listen",
    "limits",
    "max_connections",
    "join_timeout",
    "ping_interval",
    "idle_timeout",
    "max_payload",
    "bulk_window",
    "unknown",
]
SCALARS: Final = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.text(max_size=20),
    st.sampled_from(["ws://127.0.0.1:0", "tls://[::1]:8043", "unix:///tmp/x", "", "debug"]),
)
VALUES: Final = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.sampled_from(KEYS), inner, max_size=4),
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=6))
def test_parse_config_only_raises_config_error(data: dict[str, Any]) -> None:
    try:
        config: RelayConfig | ConfigError = parse_config(data, base_dir=Path("/nonexistent-fuzz"))
    except ConfigError as exc:
        config = exc
    assert isinstance(config, RelayConfig) or str(config)


TOML_ALPHABET: Final = st.sampled_from(
    [*list("[]{}=\".,#\n \t'0123456789-+_:eE"), *KEYS, "true", "false", "inf", "nan", "limits."]
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=200), st.lists(TOML_ALPHABET, max_size=40).map("".join)))
def test_config_file_only_raises_config_error(text: str) -> None:
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"m42d-fuzz-{os.getpid()}.toml"
    try:
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        message = str(path)
        try:
            load_config(path)
        except ConfigError as exc:
            message = str(exc)
        assert message.startswith(str(path))
    finally:
        path.unlink(missing_ok=True)


def test_toml_that_parses_goes_through_the_same_checks() -> None:
    data = tomllib.loads("[limits]\nmax_payload = 1e400\n")
    with pytest.raises(ConfigError, match=r"limits\.max_payload"):
        parse_config(data)


# -- the relay ---------------------------------------------------------------------------------


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def _feed_relay(garbage: bytes, joined: bool, cuts: list[int]) -> None:
    relay = Relay(KEYRING, limits=RelayLimits(join_timeout=1, idle_timeout=2, ping_interval=1))
    issued = KEYRING.mint(now=int(relay.wall_clock()), ttl=3600)
    client_stream, server_stream = trio.testing.memory_stream_pair()
    server = StreamFrameConnection(server_stream, transport="memory", address="192.0.2.7")
    data = garbage
    if joined:
        data = encode_stream(Join(Seat.A, issued.ticket.to_bytes(), issued.token_a)) + garbage

    async def serve() -> None:
        try:
            await relay.handle_connection(server)
        finally:
            await server.aclose()  # what the listener does after the handler

    with trio.fail_after(60):  # virtual seconds: the clock jumps when all wait
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            last = 0
            try:
                for cut in [*sorted(cuts), len(data)]:
                    await client_stream.send_all(data[last:cut])
                    last = cut
                await client_stream.send_eof()
            except trio.BrokenResourceError:
                pass  # the relay hung up on a bad frame before the rest was sent
            # Drain whatever the relay answers until it closes.
            while await client_stream.receive_some(65536):
                pass


@settings(max_examples=100, deadline=None)
@given(
    garbage=st.binary(max_size=400),
    joined=st.booleans(),
    cuts=st.lists(st.integers(0, 460), max_size=4),
)
def test_relay_survives_arbitrary_bytes(garbage: bytes, joined: bool, cuts: list[int]) -> None:
    """Any byte stream, before or after JOIN: the connection ends, nothing in the relay breaks."""
    handler = _Errors()
    logger = logging.getLogger("m42d")
    logger.addHandler(handler)
    try:
        cuts = [c for c in cuts if c <= len(garbage) + (64 if joined else 0)]
        trio.run(
            _feed_relay, garbage, joined, cuts, clock=trio.testing.MockClock(autojump_threshold=0)
        )
    finally:
        logger.removeHandler(handler)
    assert not handler.records, [r.getMessage() for r in handler.records]


# -- atheris (coverage-guided, slow) ---------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("target", ["fuzz_wire.py", "fuzz_link.py"])
def test_atheris_targets(target: str, tmp_path: Path) -> None:
    """Each target runs ATHERIS_SECONDS under libFuzzer; a crash or a leak fails the test."""
    if importlib.util.find_spec("atheris") is None:
        pytest.skip("atheris is not installed (pip install atheris; it needs a clang build)")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    result = subprocess.run(
        [
            sys.executable,
            str(FUZZ_TARGETS / target),
            str(corpus),
            f"-max_total_time={ATHERIS_SECONDS}",
            "-rss_limit_mb=1024",
            "-timeout=5",
            f"-artifact_prefix={tmp_path}/",
        ],
        capture_output=True,
        text=True,
        timeout=ATHERIS_SECONDS + 120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "Done" in result.stderr, result.stderr[-2000:]
