"""What the client engine tells a user interface, as plain values.

``m42 chat``, ``m42 send`` and ``m42 recv`` all read the same stream of
these from :attr:`m42d.client.engine.Client.events`; ``recv --jsonl`` prints
:meth:`ClientEvent.to_json` of each.  Names in these events are already
cleaned by :func:`m42d.client.names.safe_file_name`, but texts are the
peer's own: escape them (:func:`m42d.client.names.escape_text`) before
showing them on a terminal.
"""

from __future__ import annotations

from typing import Any, ClassVar, Final, TypeAlias, final

import attrs

__all__ = [
    "WRONG_SECRET_CAUSE",
    "ClientEvent",
    "Connected",
    "Delivered",
    "FileOffer",
    "KeyChanged",
    "PeerOffline",
    "PeerOnline",
    "Problem",
    "Progress",
    "Reconnecting",
    "SafetyWords",
    "TextFailed",
    "TextIn",
    "TransferDone",
    "TransferFailed",
]

WRONG_SECRET_CAUSE: Final = "wrong_secret"


class _Base:
    kind: ClassVar[str]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: ``{"event": kind, ...fields}``."""
        out: dict[str, Any] = {"event": self.kind}
        for field in attrs.fields(type(self)):  # type: ignore[arg-type]
            value = getattr(self, field.name)
            out[field.name] = list(value) if isinstance(value, tuple) else value
        return out


@final
@attrs.frozen
class Connected(_Base):
    """Joined the seat on the relay (every reconnect too).

    ``peer_online``: the other seat is occupied (a :class:`PeerOnline` follows),
    so an interface need not say "waiting for the other person".
    """

    kind: ClassVar[str] = "connected"
    relay: str
    peer_online: bool = False


@final
@attrs.frozen
class Reconnecting(_Base):
    """The connection ended; the next attempt starts in ``delay`` seconds."""

    kind: ClassVar[str] = "reconnecting"
    delay: float
    reason: str


@final
@attrs.frozen
class PeerOnline(_Base):
    kind: ClassVar[str] = "peer_up"


@final
@attrs.frozen
class PeerOffline(_Base):
    kind: ClassVar[str] = "peer_down"


@final
@attrs.frozen
class SafetyWords(_Base):
    """A secure session stands: the safety words both people should see alike.

    They stay the same while neither side's key changes (first_contact: the
    peer's key was pinned just now, so this is the time to compare them).
    """

    kind: ClassVar[str] = "safety_words"
    words: tuple[str, ...]
    first_contact: bool


@final
@attrs.frozen
class KeyChanged(_Base):
    """The peer's key is not the pinned one: nothing flows until the user trusts it.

    ``words`` are the safety words with the new key: compare them first.
    """

    kind: ClassVar[str] = "key_changed"
    words: tuple[str, ...]


@final
@attrs.frozen
class TextIn(_Base):
    kind: ClassVar[str] = "text"
    seq: int
    text: str


@final
@attrs.frozen
class TextFailed(_Base):
    """The peer refused our text ``seq`` (over its cap, say): it will not be delivered."""

    kind: ClassVar[str] = "text_failed"
    seq: int
    reason: str


@final
@attrs.frozen
class Delivered(_Base):
    """The peer acknowledged our text ``seq`` end to end."""

    kind: ClassVar[str] = "delivered"
    seq: int


@final
@attrs.frozen
class FileOffer(_Base):
    """The peer offers a file; answer with ``accept_file`` or ``reject_file``.

    With ``accepted`` the engine took it already (its accept policy is
    "all"): nothing to answer, but an interface can say what is coming, and
    a script learns the name and size before the first progress.
    """

    kind: ClassVar[str] = "file_offer"
    file_id: int
    name: str
    size: int
    accepted: bool = False


@final
@attrs.frozen
class Progress(_Base):
    """Bytes confirmed so far; ``rate`` in bytes/s, ``eta`` in seconds (None if unknown)."""

    kind: ClassVar[str] = "file_progress"
    file_id: int
    outgoing: bool
    name: str
    done: int
    size: int
    rate: float
    eta: float | None


@final
@attrs.frozen
class TransferDone(_Base):
    """Incoming: authenticated and saved at ``path``.  Outgoing: the peer confirmed it."""

    kind: ClassVar[str] = "file_done"
    file_id: int
    outgoing: bool
    name: str
    size: int
    path: str | None


@final
@attrs.frozen
class TransferFailed(_Base):
    """A transfer ended without success; ``code`` is a :class:`m42d.session.FileCode`."""

    kind: ClassVar[str] = "file_failed"
    file_id: int
    outgoing: bool
    name: str
    code: int
    reason: str


@final
@attrs.frozen
class Problem(_Base):
    """Something went wrong; ``fatal`` means the engine stops (``code``: relay ERROR code).

    ``cause`` names, for scripts and for the commands' exit codes, a problem
    that is not the relay's: :data:`WRONG_SECRET_CAUSE` (the two links' room
    secrets differ; said once, the handshake keeps failing alike).
    """

    kind: ClassVar[str] = "error"
    message: str
    fatal: bool = False
    code: int | None = None
    cause: str | None = None


ClientEvent: TypeAlias = (
    Connected
    | Reconnecting
    | PeerOnline
    | PeerOffline
    | SafetyWords
    | KeyChanged
    | TextIn
    | TextFailed
    | Delivered
    | FileOffer
    | Progress
    | TransferDone
    | TransferFailed
    | Problem
)
