"""Two real client engines through a hostile relay (tests/hostile_relay.py).

Each test plays one thing a relay operator could do -- swap keys, replay,
drop, duplicate, reorder, truncate or extend -- and checks three things:
the clients notice (a ``Problem`` / ``FileFailed`` with a clear reason, or
the attack is simply absorbed), nothing tampered is ever shown or saved as
good (texts shown are exactly the texts sent, in order, at most once; every
completed file in the download folder has the right bytes), and once the
relay behaves again everything sent arrives exactly once.

Timers are shortened through ``session_options`` (handshake 1.5 s, probe
and stall 0.5 s) so that each test finishes in a second or two on the real
clock; the engines tick every 50 ms.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Final

import attrs
import pytest
import trio

from m42d.client import events as ev
from m42d.client.engine import WRONG_SECRET, Client
from m42d.crypto.stream import CHUNK_SIZE
from m42d.session import (
    Envelope,
    HandshakeComplete,
    MemoryKeyStore,
    SessionOptions,
    TextReceived,
)
from m42d.ticket import Seat
from m42d.wire import Bulk, Control, Frame
from tests.client_harness import Recorder
from tests.hostile_relay import HostileRelay, Middle, chunk_header, envelope, is_data, passthrough

SESSION: Final = SessionOptions(handshake_timeout=1.5, probe_after=0.5, stall_after=0.5)
STEP: Final = 15.0
FILE_SIZE: Final = 4 * CHUNK_SIZE + 1000  # five chunks, the last one short
LAST_CHUNK: Final = 4


@attrs.define
class Scene:
    hostile: HostileRelay
    a: Recorder
    b: Recorder
    keys: dict[Seat, MemoryKeyStore]
    down: Path
    src: Path
    sent: dict[Seat, list[str]] = attrs.field(factory=lambda: {Seat.A: [], Seat.B: []})

    def send(self, seat: Seat, text: str) -> None:
        (self.a if seat is Seat.A else self.b).client.send_text(text)
        self.sent[seat].append(text)

    def shown(self, seat: Seat) -> list[str]:
        return [t.text for t in (self.a if seat is Seat.A else self.b).of(ev.TextIn)]

    def check_texts(self) -> None:
        """What each side showed is exactly a prefix of what the other sent: no forgery, no dup."""
        for seat, sender in ((Seat.A, Seat.B), (Seat.B, Seat.A)):
            shown = self.shown(seat)
            assert shown == self.sent[sender][: len(shown)], (seat, shown)

    async def all_delivered(self) -> None:
        """Every text sent was shown exactly once and reported delivered."""

        def done(r: Recorder, sender: Seat) -> bool:
            return len(r.of(ev.Delivered)) >= len(self.sent[sender])

        await self.a.wait_for(lambda r: done(r, Seat.A), STEP)
        await self.b.wait_for(lambda r: done(r, Seat.B), STEP)
        await self.b.wait_for(lambda r: len(r.of(ev.TextIn)) >= len(self.sent[Seat.A]), STEP)
        await self.a.wait_for(lambda r: len(r.of(ev.TextIn)) >= len(self.sent[Seat.B]), STEP)
        assert self.shown(Seat.B) == self.sent[Seat.A]
        assert self.shown(Seat.A) == self.sent[Seat.B]

    def check_files(self, good: bytes) -> None:
        """No completed file in the download folder holds anything but the real content."""
        for path in self.down.iterdir():
            if not path.name.endswith(".m42part"):
                assert path.read_bytes() == good, f"{path.name} saved with wrong content"

    def partials(self) -> list[Path]:
        return [p for p in self.down.iterdir() if p.name.endswith(".m42part")]

    def problems(self, r: Recorder) -> list[str]:
        return [p.message for p in r.of(ev.Problem)]


def established(r: Recorder) -> bool:
    return r.client.established and bool(r.of(ev.SafetyWords))


@asynccontextmanager
async def scene(tmp_path: Path, middle: Middle = passthrough) -> AsyncIterator[Scene]:
    down = tmp_path / "down"
    down.mkdir()
    src = tmp_path / "src"
    src.mkdir()
    async with trio.open_nursery() as nursery:
        hostile = HostileRelay.make(nursery)
        hostile.middle = middle
        link_a, link_b = hostile.links()
        keys = {Seat.A: MemoryKeyStore(), Seat.B: MemoryKeyStore()}
        recorders = []
        for link in (link_a, link_b):
            client = Client(
                link,
                keys[link.seat],
                transports=hostile.transports,
                download_dir=down if link.seat is Seat.B else None,
                accept="all",
                backoff_base=0.01,
                backoff_cap=0.2,
                tick_interval=0.05,
                session_options=SESSION,
            )
            recorder = Recorder(client)
            nursery.start_soon(recorder.run)
            await nursery.start(client.run)
            recorders.append(recorder)
        yield Scene(hostile, recorders[0], recorders[1], keys, down, src)
        nursery.cancel_scope.cancel()


async def established_pair(s: Scene) -> None:
    await s.a.wait_for(established, STEP)
    await s.b.wait_for(established, STEP)


# -- the key swap ------------------------------------------------------------------------


@pytest.mark.parametrize("quiet", [False, True], ids=["relay-resets", "relay-silent"])
async def test_key_swap_fails_on_both_sides_and_shows_nothing(tmp_path: Path, quiet: bool) -> None:
    async with scene(tmp_path) as s:
        swap = s.hostile.start_keyswap(quiet=quiet)
        s.send(Seat.A, "for Bob's eyes only")
        s.send(Seat.B, "and this for Alice")
        await s.a.wait_for(lambda r: r.of(ev.Problem), STEP)
        await s.b.wait_for(lambda r: r.of(ev.Problem), STEP)
        for r in (s.a, s.b):
            assert not r.of(ev.SafetyWords), "a handshake with the relay must never complete"
            assert not r.of(ev.TextIn)
            assert not r.client.established
            assert all(
                p.startswith("secure session broke: ") or p == WRONG_SECRET for p in s.problems(r)
            )
        # B's check of message 3 fails, as with a wrong room secret, and says so once.
        assert s.problems(s.b).count(WRONG_SECRET) == 1, s.problems(s.b)
        # A hears of it from B's RESET (which the relay passes on as its own),
        # or, if the relay swallows that, by its handshake deadline.
        expected = "handshake timed out" if quiet else WRONG_SECRET
        assert any(expected in p for p in s.problems(s.a)), s.problems(s.a)
        # Nothing pinned: a later honest handshake is still "first contact".
        assert not s.keys[Seat.A].peers
        assert not s.keys[Seat.B].peers
        # The relay's own sessions learned nothing either.
        for events in swap.events.values():
            assert not [e for e in events if isinstance(e, HandshakeComplete | TextReceived)]
        # The relay gives up: a fresh session delivers everything exactly once.
        s.hostile.keyswap = None
        await s.hostile.bounce(Seat.B)
        await s.hostile.bounce(Seat.A)
        await established_pair(s)
        await s.all_delivered()
        assert s.a.of(ev.SafetyWords)[-1].words == s.b.of(ev.SafetyWords)[-1].words
        assert s.a.of(ev.SafetyWords)[-1].first_contact


# -- the control lane ----------------------------------------------------------------------


def one_shot(kind: str) -> tuple[Middle, dict[str, bool]]:
    """A middle that meddles with the first DATA record from A after it is armed."""
    state = {"armed": False, "done": False}
    held: list[Frame] = []

    def middle(seat: Seat, frame: Frame) -> Sequence[Frame]:
        if seat is not Seat.A or not is_data(frame) or not state["armed"]:
            return [frame]
        if held:
            state["armed"] = False
            state["done"] = True
            return [frame, held.pop()]
        if kind == "drop":
            state["armed"], state["done"] = False, True
            return []
        if kind == "duplicate":
            state["armed"], state["done"] = False, True
            return [frame, frame]
        if kind == "tamper":
            state["armed"], state["done"] = False, True
            assert isinstance(frame, Control)
            payload = bytearray(frame.payload)
            payload[-1] ^= 0x01
            return [Control(bytes(payload))]
        assert kind == "reorder"
        held.append(frame)
        return []

    return middle, state


@pytest.mark.parametrize("kind", ["drop", "duplicate", "reorder", "tamper"])
async def test_control_lane_meddling_is_detected_and_recovered(tmp_path: Path, kind: str) -> None:
    middle, state = one_shot(kind)
    async with scene(tmp_path, middle) as s:
        await established_pair(s)
        state["armed"] = True
        for i in range(4):
            s.send(Seat.A, f"text {i}")
        await s.b.wait_for(lambda r: r.of(ev.Problem), STEP)
        assert state["done"]
        problem = s.problems(s.b)[0]
        assert problem.startswith("secure session broke: control record failed to decrypt")
        s.check_texts()
        await s.all_delivered()


async def test_lost_last_record_is_found_by_the_probe(tmp_path: Path) -> None:
    middle, state = one_shot("drop")
    async with scene(tmp_path, middle) as s:
        await established_pair(s)
        state["armed"] = True
        s.send(Seat.A, "the only text, dropped")
        await s.all_delivered()
        assert state["done"]


# -- replays ------------------------------------------------------------------------------------


async def reconnect_both(s: Scene) -> None:
    gen = s.hostile.generation[Seat.A] + 1
    await s.hostile.cut(Seat.A)
    await s.hostile.cut(Seat.B)
    await s.hostile.wait_joined(Seat.A, Seat.B, generation=gen)


async def test_replay_from_an_earlier_session_is_refused(tmp_path: Path) -> None:
    async with scene(tmp_path) as s:
        await established_pair(s)
        s.send(Seat.A, "first session")
        await s.all_delivered()
        old = [f for f in s.hostile.sent_by(Seat.A, generation=1) if is_data(f)]
        assert old
        sas_count = len(s.a.of(ev.SafetyWords))
        await reconnect_both(s)
        await s.a.wait_for(lambda r: len(r.of(ev.SafetyWords)) > sas_count and established(r), STEP)
        await s.b.wait_for(established, STEP)
        problems = len(s.b.of(ev.Problem))
        for frame in old:
            await s.hostile.inject(Seat.B, frame)
        await s.b.wait_for(lambda r: len(r.of(ev.Problem)) > problems, STEP)
        assert "failed to decrypt" in s.problems(s.b)[-1]
        s.send(Seat.A, "second session")
        await s.all_delivered()  # "first session" was shown once, not twice


async def test_stale_handshake_after_reconnect_is_ignored_or_refused(tmp_path: Path) -> None:
    stale: dict[int, Frame] = {}
    replayed = {"done": False}

    def middle(seat: Seat, frame: Frame) -> Sequence[Frame]:
        kind = envelope(frame)
        if kind in (Envelope.HS1, Envelope.HS2, Envelope.HS3) and kind not in stale:
            stale[kind] = frame  # the first session's handshake, kept for later
            return [frame]
        if kind == Envelope.HS1 and not replayed["done"] and s.hostile.generation[seat] > 1:
            # The new HS1 goes through, followed by the old session's HS1 and HS3.
            replayed["done"] = True
            return [frame, stale[Envelope.HS1], stale[Envelope.HS3]]
        return [frame]

    async with scene(tmp_path, middle) as s:
        await established_pair(s)
        s.send(Seat.A, "before")
        s.send(Seat.B, "before, from B")
        await s.all_delivered()
        await reconnect_both(s)
        await s.hostile.inject(Seat.A, stale[Envelope.HS2])  # A: not its handshake id
        s.send(Seat.A, "after")
        s.send(Seat.B, "after, from B")
        await s.all_delivered()
        assert replayed["done"]
        await established_pair(s)
        s.check_texts()


# -- the bulk lane: files --------------------------------------------------------------------


def write_file(s: Scene, name: str = "payload.bin") -> tuple[Path, bytes]:
    data = os.urandom(FILE_SIZE)
    path = s.src / name
    path.write_bytes(data)
    return path, data


def bulk_once(kind: str) -> Middle:
    """Meddle with chunk 1 of the file the first time it passes."""
    done = {"yes": False}
    held: list[Frame] = []

    def middle(seat: Seat, frame: Frame) -> Sequence[Frame]:
        header = chunk_header(frame)
        if header is None:
            return [frame]
        if held and header[1] == 2:
            return [frame, held.pop()]
        if header[1] != 1 or done["yes"]:
            return [frame]
        done["yes"] = True
        if kind == "drop":
            return []
        if kind == "duplicate":
            return [frame, frame]
        assert kind == "reorder"
        held.append(frame)
        return []

    return middle


@pytest.mark.parametrize("kind", ["drop", "duplicate", "reorder"])
async def test_bulk_lane_meddling_still_saves_the_right_file(tmp_path: Path, kind: str) -> None:
    async with scene(tmp_path, bulk_once(kind)) as s:
        path, data = write_file(s)
        await established_pair(s)
        await s.a.client.send_file(path)
        await s.b.wait_for(lambda r: r.of(ev.TransferDone), STEP)
        await s.a.wait_for(lambda r: r.of(ev.TransferDone), STEP)
        done = s.b.of(ev.TransferDone)[0]
        assert done.path is not None
        assert Path(done.path).read_bytes() == data  # noqa: ASYNC240
        s.check_files(data)
        assert not s.partials()


def on_last_chunk(action: Callable[[Frame], Sequence[Frame]], active: dict[str, bool]) -> Middle:
    def middle(seat: Seat, frame: Frame) -> Sequence[Frame]:
        header = chunk_header(frame)
        if active["on"] and header is not None and header[1] == LAST_CHUNK:
            return action(frame)
        return [frame]

    return middle


async def test_truncated_file_is_never_saved_then_resumes(tmp_path: Path) -> None:
    active = {"on": True}
    dropped: list[Frame] = []

    def drop(frame: Frame) -> Sequence[Frame]:
        dropped.append(frame)
        return []

    async with scene(tmp_path, on_last_chunk(drop, active)) as s:
        path, data = write_file(s)
        await established_pair(s)
        await s.a.client.send_file(path)
        # The receiver keeps asking for the missing end (stall_after) and never
        # completes, whatever the relay does meanwhile.
        with trio.move_on_after(2.0):
            await s.b.wait_for(lambda r: r.of(ev.TransferDone), STEP)
        assert len(dropped) >= 2, "the receiver should have asked again for the end"
        assert not s.b.of(ev.TransferDone)
        assert not s.a.of(ev.TransferDone)
        assert [p.name for p in s.down.iterdir()] == [p.name for p in s.partials()]
        active["on"] = False
        await s.b.wait_for(lambda r: r.of(ev.TransferDone), STEP)
        await s.a.wait_for(lambda r: r.of(ev.TransferDone), STEP)
        s.check_files(data)
        assert [p.read_bytes() == data for p in s.down.iterdir()] == [True]


async def test_file_extended_with_a_forged_chunk_is_not_affected(tmp_path: Path) -> None:
    active = {"on": True}

    def extend(frame: Frame) -> Sequence[Frame]:
        header = chunk_header(frame)
        assert header is not None
        forged = Bulk(frame.payload[:8] + (LAST_CHUNK + 1).to_bytes(8, "big") + os.urandom(500))
        return [frame, forged]

    async with scene(tmp_path, on_last_chunk(extend, active)) as s:
        path, data = write_file(s)
        await established_pair(s)
        await s.a.client.send_file(path)
        await s.b.wait_for(lambda r: r.of(ev.TransferDone), STEP)
        await s.a.wait_for(lambda r: r.of(ev.TransferDone), STEP)
        s.check_files(data)
        assert not s.partials()


async def test_forged_final_chunk_ends_the_transfer_cleanly(tmp_path: Path) -> None:
    active = {"on": True}

    def forge(frame: Frame) -> Sequence[Frame]:
        # Same file id and index, but a body the relay made up: it cannot
        # seal a chunk without the file key.
        body = bytearray(frame.payload)
        body[-1] ^= 0xFF
        return [Bulk(bytes(body))]

    async with scene(tmp_path, on_last_chunk(forge, active)) as s:
        path, _data = write_file(s)
        await established_pair(s)
        await s.a.client.send_file(path)
        await s.b.wait_for(lambda r: r.of(ev.TransferFailed), STEP)
        await s.a.wait_for(lambda r: r.of(ev.TransferFailed), STEP)
        failed_b = s.b.of(ev.TransferFailed)[0]
        failed_a = s.a.of(ev.TransferFailed)[0]
        assert "file chunk rejected" in failed_b.reason
        assert failed_a.code == failed_b.code
        assert not s.b.of(ev.TransferDone)
        assert not s.a.of(ev.TransferDone)
        assert list(s.down.iterdir()) == [], "the partial file must be removed"
        # The session itself stands: texts still flow.
        s.send(Seat.A, "still here")
        await s.all_delivered()
