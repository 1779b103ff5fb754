"""The ``m42`` command: create a room, chat, send and receive files, trust a new key.

Every subcommand is a small user interface over one
:class:`m42d.client.engine.Client`.  Exit codes (documented in
docs/client.md and in ``m42 --help``):

====  ===========================================================
0     success (``send``: everything acknowledged end to end)
1     error (a file could not be read, a transfer failed, ...)
2     usage error (bad option, missing or malformed link)
3     timeout (``--wait`` / ``--timeout`` passed first)
4     the peer's key changed: compare the safety words, then ``m42 trust``
5     refused by the relay (bad token, expired, burned, seat taken)
129   SIGHUP (the terminal closed)
130   interrupted (Ctrl-C) in ``send`` / ``recv`` / ``trust``
143   SIGTERM
====  ===========================================================

A signal leaves the way the command's own end does (see ``_Leaving``).

Secrets are never printed, except the two links by ``m42 new``.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import getpass
import hashlib
import json
import math
import os
import shutil
import signal
import ssl
import sys
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Final, TextIO

import attrs
import trio

from m42d.client import events as ev
from m42d.client.engine import Client, RelayRefused
from m42d.client.keystore import FileKeyStore, default_key_dir
from m42d.client.names import escape_text
from m42d.client.nodump import keep_secrets_out_of_core_dumps
from m42d.errors import LinkError, M42Error, TransportError
from m42d.link import Link, parse_relay_url
from m42d.session import MAX_TEXT, FileCode
from m42d.ticket import Seat, Ticket
from m42d.transport import load_transports
from m42d.wire import WIRE_VERSION, CreateRoom, Credit, Error, Ping, Pong, RoomCreated

__all__ = ["EXIT_CODES", "build_parser", "main"]

EXIT_OK: Final = 0
EXIT_ERROR: Final = 1
EXIT_USAGE: Final = 2
EXIT_TIMEOUT: Final = 3
EXIT_KEY_CHANGED: Final = 4
EXIT_REFUSED: Final = 5
EXIT_HANGUP: Final = 128 + signal.SIGHUP
EXIT_INTERRUPTED: Final = 128 + signal.SIGINT
EXIT_TERMINATED: Final = 128 + signal.SIGTERM

EXIT_CODES: Final = {
    EXIT_OK: "success",
    EXIT_ERROR: "error",
    EXIT_USAGE: "usage error (bad option, missing or malformed link)",
    EXIT_TIMEOUT: "timed out",
    EXIT_KEY_CHANGED: "the peer's key changed (compare the safety words, then run 'm42 trust')",
    EXIT_REFUSED: "refused by the relay",
    EXIT_HANGUP: "the terminal closed (SIGHUP)",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C)",
    EXIT_TERMINATED: "terminated (SIGTERM)",
}

DEFAULT_RELAY: Final = "ws://127.0.0.1:8042"
FLUSH_TIMEOUT: Final = 5.0
"""Seconds allowed at exit for the last acknowledgements to reach the relay."""

LINK_HELP: Final = (
    "the room link, or '-' to read it from stdin.  A link on the command line is "
    "visible to other users of this machine (ps) and kept in the shell's history; "
    "leave it out to be asked for it (not echoed), or use --link-file"
)

EPILOG: Final = """\
links:
  A link holds the room secret.  Anyone who has it can read and write as you.
  Command-line arguments are visible to every user of the machine (ps, /proc)
  and the shell keeps them in its history, so leave the link out and paste it
  when asked (it is not echoed), or give it with --link-file FILE (mode 0600),
  as '-' (stdin), or in $M42_LINK set from a file, never typed out.

exit codes:
""" + "\n".join(f"  {code:<4} {text}" for code, text in EXIT_CODES.items())


class UsageError(M42Error):
    """The command line is wrong; exit code 2."""


class _Exit(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


LOG_PROGRESS_EVERY: Final = 10.0
"""Seconds between progress lines per file when stderr is not a terminal (a log)."""


class _ProgressView:
    """File progress on stderr: a line redrawn in place on a terminal, one now and then in a log.

    On a terminal the engine's progress (5 events a second) would otherwise
    scroll hundreds of lines per minute; in a log or a pipe the user still
    wants to see that a long transfer moves.  Any other message printed with
    :func:`_eprint` first clears the line being redrawn, so text never lands
    in the middle of it.
    """

    def __init__(self) -> None:
        self.line_open = False
        self._last: dict[tuple[int, bool], float] = {}

    def show(self, progress: ev.Progress) -> None:
        line = _progress_line(progress)
        finished = progress.done >= progress.size
        stream = sys.stderr
        if stream.isatty():
            width = shutil.get_terminal_size().columns - 1
            stream.write("\r\x1b[K" + line[: max(width, 20)])
            self.line_open = not finished
            if finished:
                stream.write("\n")
            stream.flush()
            return
        key = (progress.file_id, progress.outgoing)
        now = time.monotonic()
        if finished or now - self._last.get(key, -math.inf) >= LOG_PROGRESS_EVERY:
            self._last[key] = now
            print(line, file=stream, flush=True)

    def end_line(self) -> None:
        if self.line_open:
            self.line_open = False
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


_PROGRESS: Final = _ProgressView()


def _eprint(*parts: object) -> None:
    _PROGRESS.end_line()
    print(*parts, file=sys.stderr, flush=True)


def _human_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError  # pragma: no cover


def _progress_line(p: ev.Progress) -> str:
    arrow = "sending" if p.outgoing else "receiving"
    pct = 100.0 * p.done / p.size if p.size else 100.0
    eta = "" if p.eta is None or p.done >= p.size else f", {p.eta:.0f} s left"
    return (
        f"{arrow} {escape_text(p.name)}: {_human_size(p.done)} of {_human_size(p.size)} "
        f"({pct:.0f}%) at {_human_size(p.rate)}/s{eta}"
    )


def _sas_line(words: Sequence[str]) -> str:
    """Safety words as docs/protocol.md shows them: single spaces."""
    return " ".join(words)


CONTINUATION: Final = "  | "
"""Starts each further line of a peer's text, so that no line of it poses as our own output."""


def _text_block(text: str, continuation: str = CONTINUATION) -> str:
    """A peer's text for a terminal: escaped, its further lines marked as continuations."""
    first, *more = escape_text(text, keep_newlines=True).split("\n")
    return "\n".join([first, *(continuation + line for line in more)])


# -- links -------------------------------------------------------------------------


def _read_link(args: argparse.Namespace, stdin: TextIO) -> Link:
    """The link from the argument, '-' (stdin), --link-file, $M42_LINK or a prompt, in that order.

    The prompt (a terminal, nothing else given) does not echo: the link
    lands neither on the screen nor in the shell's history.
    """
    text: str | None = None
    if args.link == "-":
        text = stdin.readline()
        if not text:
            raise UsageError("no link on stdin")
    elif args.link is not None:
        text = args.link
    elif args.link_file is not None:
        text = _read_link_file(Path(args.link_file))
    elif "M42_LINK" in os.environ:
        text = os.environ["M42_LINK"]
    elif _isatty(stdin) and _isatty(sys.stderr):
        try:
            text = getpass.getpass("m42: paste the link (it is not shown): ", stream=sys.stderr)
        except EOFError:
            text = ""
    if not text or not text.strip():
        raise UsageError(
            "no link given: use --link-file FILE or '-' (stdin), or run on a terminal to be asked"
        )
    try:
        return Link.parse(text.strip().splitlines()[0])
    except LinkError as exc:
        raise UsageError(f"bad link: {exc}") from exc


def _read_link_file(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8")
        mode = path.stat().st_mode
    except OSError as exc:
        raise UsageError(f"cannot read --link-file: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise UsageError("--link-file is not UTF-8 text") from exc
    if mode & 0o077:
        _eprint(
            f"m42: warning: {escape_text(str(path))} can be read by other users; "
            f"the link in it is a secret (chmod 600 {escape_text(str(path))})"
        )
    return text


def _key_store(args: argparse.Namespace) -> FileKeyStore:
    return FileKeyStore(Path(args.keys_dir) if args.keys_dir else default_key_dir())


# -- running a client ----------------------------------------------------------------


LEAVING_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
"""Ctrl-C, ``kill``, a closed terminal: each leaves the way the command's own end does."""


@attrs.define(eq=False)
class _Leaving:
    """The first leaving signal stops the command's work; a second one cuts the leaving short."""

    work: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    leaving: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    watching: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    """Cancel to stop :meth:`watch` (the default handlers come back)."""
    signals: list[int] = attrs.field(factory=list)

    @property
    def exit_code(self) -> int:
        """128 + the signal's number, as a shell reports a signalled command."""
        return 128 + self.signals[0]

    async def watch(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with self.watching:
            if threading.current_thread() is not threading.main_thread():
                task_status.started()  # signals reach only the main thread (tests run us in others)
                await trio.sleep_forever()
            with trio.open_signal_receiver(*LEAVING_SIGNALS) as received:
                task_status.started()
                async for signum in received:
                    self.signals.append(signum)
                    (self.work if len(self.signals) == 1 else self.leaving).cancel()


async def _with_client(
    client: Client,
    body: Callable[[Client], Awaitable[int]],
    late: Callable[[ev.ClientEvent], None] | None = None,
) -> int:
    """Run the engine and ``body`` side by side; the engine stops when the body returns.

    With ``late`` (the command's way to show an event), a leaving signal
    stops the body, the acknowledgements owed go out (:func:`_finish`),
    ``late`` shows what had arrived, and the command exits with 128 + the
    signal.  Without it (chat) the body watches the signals itself.
    """
    result = EXIT_ERROR
    refused: list[RelayRefused] = []
    leave = _Leaving()

    async def engine() -> None:
        try:
            await client.run()
        except RelayRefused as exc:
            refused.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(engine)
        try:
            if late is not None:
                await nursery.start(leave.watch)
            with leave.work:
                result = await body(client)
            if leave.signals:
                assert late is not None
                result = leave.exit_code
                with leave.leaving:
                    await _finish(client)
                    async for event in client.events:
                        late(event)
        finally:
            leave.watching.cancel()
            client.close()
    if refused and result == EXIT_ERROR:
        return EXIT_REFUSED
    return result


async def _finish(client: Client) -> None:
    """Stop receiving, let the owed acknowledgements out, close (see Client.finish)."""
    await client.finish(FLUSH_TIMEOUT)


def _fatal(event: ev.Problem) -> int:
    _eprint(f"m42: {escape_text(event.message)}")
    return EXIT_REFUSED if event.code is not None else EXIT_ERROR


def _key_changed_message(event: ev.KeyChanged) -> str:
    return (
        "WARNING: the peer's key changed.  This happens when the other person reinstalled\n"
        "or lost their keys, or when someone else holds their link.  Compare these words\n"
        f"with them by voice:  {_sas_line(event.words)}\n"
        "If they match, run 'm42 trust' (or /trust in chat)."
    )


# -- m42 new ---------------------------------------------------------------------------


async def probe_certificate_pin(host: str, port: int, *, limit: float = 10.0) -> bytes:
    """SHA-256 of the certificate a TLS server presents (trust on first use).

    Raises:
        TransportError: the connection or the TLS handshake failed.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with trio.fail_after(limit):
            tcp = await trio.open_tcp_stream(host, port)
            tls = trio.SSLStream(tcp, context, server_hostname=host)
            try:
                await tls.do_handshake()
                der = tls.getpeercert(binary_form=True)
            finally:
                await trio.aclose_forcefully(tls)
    except trio.TooSlowError as exc:
        raise TransportError("the relay did not complete TLS in time") from exc
    except (OSError, trio.BrokenResourceError) as exc:
        # trio's BrokenResourceError has no text of its own; the SSL or OS
        # error behind it says what happened.
        cause = exc.__cause__ or exc.__context__ or exc
        raise TransportError(
            f"cannot reach the relay over TLS: {cause or type(cause).__name__}"
        ) from exc
    if not der:
        raise TransportError("the relay presented no certificate")
    return hashlib.sha256(der).digest()


def _decode_pin(text: str) -> bytes:
    try:
        pin = base64.urlsafe_b64decode(text.strip() + "=" * (-len(text.strip()) % 4))
    except (binascii.Error, ValueError) as exc:
        raise UsageError("--pin must be base64url (as 'm42d pin' prints it)") from exc
    if len(pin) != 32:
        raise UsageError("--pin must be a 32-byte SHA-256 in base64url")
    return pin


async def cmd_new(args: argparse.Namespace) -> int:
    relay_url = args.relay or os.environ.get("M42_RELAY") or DEFAULT_RELAY
    try:
        address = parse_relay_url(relay_url)
    except LinkError as exc:
        raise UsageError(f"bad relay URL: {exc}") from exc
    transports = load_transports()
    transport = transports.get(address.scheme)
    if transport is None:
        raise UsageError(f"no transport for {address.scheme}:// is installed")
    pin = _decode_pin(args.pin) if args.pin else None
    if address.scheme == "tls" and pin is None:
        port = address.effective_port
        assert port is not None
        pin = await probe_certificate_pin(address.host, port)
        _eprint(
            "m42: trusting the relay's certificate on first use; its pin goes into both links:\n"
            f"     {base64.urlsafe_b64encode(pin).rstrip(b'=').decode()}\n"
            "     compare it with 'm42d pin' on the relay if you can."
        )
    creation_secret = b""
    if args.creation_secret_file:
        try:
            raw = await trio.to_thread.run_sync(Path(args.creation_secret_file).read_bytes)
            creation_secret = raw.strip()
        except OSError as exc:
            raise UsageError(f"cannot read --creation-secret-file: {exc.strerror}") from exc
    async with transport.connect(address.url, pin=pin) as conn:
        await conn.send(CreateRoom(WIRE_VERSION, creation_secret))
        with trio.fail_after(args.timeout):
            while True:
                frame = await conn.receive()
                if isinstance(frame, RoomCreated):
                    break
                if isinstance(frame, Error):
                    raise RelayRefused(frame.code, frame.message)
                if isinstance(frame, Ping):
                    await conn.send(Pong(frame.data))
                elif not isinstance(frame, Credit | Pong):
                    raise TransportError(f"the relay answered {frame.kind.name}")
    secret = os.urandom(32)
    link_a = Link(address.url, Seat.A, frame.ticket, frame.token_a, secret, pin)
    link_b = Link(address.url, Seat.B, frame.ticket, frame.token_b, secret, pin)
    expires = Ticket.parse(frame.ticket).expires
    if args.json:
        print(
            json.dumps({"link_a": link_a.format(), "link_b": link_b.format(), "expires": expires})
        )
    else:
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(expires))
        print("Link A (yours; keep it secret):")
        print(link_a.format())
        print()
        print("Link B (give it to the other person over a channel you trust):")
        print(link_b.format())
        print()
        print(f"The room expires {when}.")
    if args.qr:
        _print_qr(link_b.format())
    sys.stdout.flush()
    return EXIT_OK


def _print_qr(text: str) -> None:
    try:
        import segno
    except ImportError as exc:  # pragma: no cover - segno is a declared dependency
        raise M42Error("--qr needs the 'segno' package (pip install segno)") from exc
    print("Link B as a QR code:", file=sys.stdout)
    segno.make(text, error="l", micro=False).terminal(out=sys.stdout, compact=True)


# -- m42 send ----------------------------------------------------------------------------


async def cmd_send(args: argparse.Namespace, stdin: TextIO) -> int:
    link = _read_link(args, stdin)
    texts: list[str] = list(args.text or [])
    files = [Path(p) for p in args.file or []]
    if not texts and not files:
        if args.link == "-":
            raise UsageError("the link came from stdin; give the message with --text or --file")
        texts.append(stdin.read())
    for text in texts:
        _check_text(text)
    for path in files:
        if not path.is_file():
            raise UsageError(f"not a file: {path}")
    client = Client(link, _key_store(args), download_dir=None, max_size=None)

    def late(event: ev.ClientEvent) -> None:
        if isinstance(event, ev.TextIn):
            print(_text_block(event.text), flush=True)

    async def body(client: Client) -> int:
        pending_texts = {client.send_text(text) for text in texts}
        pending_files: set[int] = set()
        for path in files:
            pending_files.add(await client.send_file(path))
        deadline = math.inf if args.wait is None else trio.current_time() + args.wait
        failed = False
        while (event := await _next_event(client, deadline)) is not None:
            if isinstance(event, ev.SafetyWords):
                deadline = math.inf
                _eprint(f"m42: secure session; safety words: {_sas_line(event.words)}")
            elif isinstance(event, ev.Delivered):
                pending_texts.discard(event.seq)
            elif isinstance(event, ev.FileDone) and event.outgoing:
                pending_files.discard(event.file_id)
                _eprint(f"m42: {escape_text(event.name)} delivered ({_human_size(event.size)})")
            elif isinstance(event, ev.FileFailed) and event.outgoing:
                pending_files.discard(event.file_id)
                failed = True
                _eprint(
                    f"m42: {escape_text(event.name)} not delivered: {escape_text(event.reason)}"
                )
            elif isinstance(event, ev.Progress):
                _PROGRESS.show(event)
            elif isinstance(event, ev.KeyChanged):
                _eprint(_key_changed_message(event))
                return EXIT_KEY_CHANGED
            elif isinstance(event, ev.Problem) and event.fatal:
                return _fatal(event)
            elif isinstance(event, ev.TextIn):
                # The session acknowledged it: the peer sees it as delivered.
                late(event)
            if not pending_texts and not pending_files:
                await _finish(client)
                async for after in client.events:
                    late(after)
                return EXIT_ERROR if failed else EXIT_OK
        if trio.current_time() >= deadline:
            _eprint(f"m42: the peer did not come within {args.wait:g} s")
            return EXIT_TIMEOUT
        return EXIT_ERROR

    return await _with_client(client, body, late)


def _check_text(text: str) -> None:
    """Refuse, before connecting, a text the peer would have to refuse."""
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise UsageError("the text is not valid UTF-8") from None
    if size > MAX_TEXT:
        raise UsageError(
            f"a text of {size} bytes is over the {MAX_TEXT}-byte cap; send it with --file"
        )


async def _next_event(client: Client, deadline: float) -> ev.ClientEvent | None:
    """The next event, or None once the engine stopped or ``deadline`` passed."""
    with trio.move_on_at(deadline):
        try:
            return await client.events.receive()
        except trio.EndOfChannel:
            return None
    return None


# -- m42 recv ---------------------------------------------------------------------------


async def cmd_recv(args: argparse.Namespace, stdin: TextIO) -> int:
    link = _read_link(args, stdin)
    out_dir = Path(args.out)
    try:
        await trio.to_thread.run_sync(lambda: out_dir.mkdir(parents=True, exist_ok=True))
    except OSError as exc:
        raise UsageError(f"cannot create --out directory: {exc.strerror}") from exc
    client = Client(
        link, _key_store(args), download_dir=out_dir, accept="all", max_size=args.max_size
    )
    deadline = math.inf if args.timeout is None else trio.current_time() + args.timeout

    def show(event: ev.ClientEvent) -> None:
        if args.jsonl:
            if not isinstance(event, ev.Connected | ev.Reconnecting):
                record = event.to_json()
                record["ts"] = time.time()
                print(json.dumps(record), flush=True)
        elif isinstance(event, ev.TextIn):
            print(_text_block(event.text), flush=True)
        elif isinstance(event, ev.SafetyWords):
            _eprint(f"m42: secure session; safety words: {_sas_line(event.words)}")
        elif isinstance(event, ev.Problem) and not event.fatal:
            _eprint(f"m42: {escape_text(event.message)}")
        elif isinstance(event, ev.FileDone) and not event.outgoing:
            _eprint(f"m42: saved {escape_text(str(event.path))}")
        elif isinstance(event, ev.FileFailed) and not event.outgoing:
            _eprint(f"m42: {escape_text(event.name)} failed: {escape_text(event.reason)}")
        elif isinstance(event, ev.Progress):
            _PROGRESS.show(event)

    def late(event: ev.ClientEvent) -> None:
        if isinstance(event, ev.TextIn | ev.FileDone | ev.FileFailed):
            show(event)

    async def body(client: Client) -> int:
        received = 0

        async def finish() -> None:
            # Texts that came in with the last counted one were acknowledged
            # too: show them rather than lose them.
            await _finish(client)
            async for after in client.events:
                late(after)

        while (event := await _next_event(client, deadline)) is not None:
            show(event)
            if isinstance(event, ev.TextIn) or (
                isinstance(event, ev.FileDone) and not event.outgoing
            ):
                received += 1
                if args.count is not None and received >= args.count:
                    await finish()
                    return EXIT_OK
            elif isinstance(event, ev.KeyChanged):
                _eprint(_key_changed_message(event))
                return EXIT_KEY_CHANGED
            elif isinstance(event, ev.Problem) and event.fatal:
                return (
                    _fatal(event)
                    if not args.jsonl
                    else (EXIT_REFUSED if event.code is not None else EXIT_ERROR)
                )
        if trio.current_time() >= deadline:
            await finish()
            return EXIT_TIMEOUT if args.count is not None else EXIT_OK
        return EXIT_ERROR

    return await _with_client(client, body, late)


# -- m42 trust ----------------------------------------------------------------------------


async def _ask(prompt: str, stdin: TextIO) -> str:
    print(prompt, end="", flush=True)
    line = await trio.to_thread.run_sync(stdin.readline, abandon_on_cancel=True)
    return line.strip().lower()


async def cmd_trust(args: argparse.Namespace, stdin: TextIO) -> int:
    if args.link == "-" and not args.yes:
        raise UsageError("the link came from stdin, so stdin cannot confirm; add --yes")
    link = _read_link(args, stdin)
    client = Client(link, _key_store(args))
    deadline = math.inf if args.wait is None else trio.current_time() + args.wait

    def late(event: ev.ClientEvent) -> None:
        if isinstance(event, ev.TextIn):
            print(f"peer: {_text_block(event.text, TRUST_CONTINUATION)}", flush=True)

    async def body(client: Client) -> int:
        trusted = False
        while (event := await _next_event(client, deadline)) is not None:
            if isinstance(event, ev.SafetyWords):
                if trusted:
                    print(f"Trusted.  Safety words: {_sas_line(event.words)}")
                else:
                    print(
                        f"The peer's key is the pinned one; nothing to trust.  safety words: "
                        f"{_sas_line(event.words)}"
                    )
                # Texts the peer had queued arrive right behind the handshake
                # and are acknowledged: show them rather than swallow them.
                await _finish(client)
                async for after in client.events:
                    late(after)
                return EXIT_OK
            if isinstance(event, ev.KeyChanged):
                print(_key_changed_message(event))
                if not args.yes:
                    answer = await _ask("Do the words match? Type 'yes' to trust: ", stdin)
                    if answer != "yes":
                        print("Not trusted.")
                        return EXIT_KEY_CHANGED
                client.trust()
                trusted = True
            elif isinstance(event, ev.Problem) and event.fatal:
                return _fatal(event)
        _eprint("m42: the peer did not come in time")
        return EXIT_TIMEOUT

    return await _with_client(client, body, late)


TRUST_CONTINUATION: Final = "    " + CONTINUATION  # under "peer: "


# -- m42 chat -------------------------------------------------------------------------------

CHAT_HELP: Final = """\
commands:
  /send PATH   send a file            /verify   show the safety words again
  /accept      take the offered file  /reject   refuse it (also: y / n)
  /cancel      stop every transfer    /trust    accept a changed key
  /burn        destroy the room       /quit     leave (Ctrl-C too)
  /help        this text
anything else is sent as a message"""


def _isatty(stream: object) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except (OSError, ValueError):
        return False


def _user_path(text: str) -> Path:
    return Path(os.path.expanduser(text))


def _stamp() -> str:
    return time.strftime("%H:%M:%S")


CHAT_CONTINUATION: Final = "           | "  # under "[HH:MM:SS] "


async def cmd_chat(args: argparse.Namespace, stdin: TextIO) -> int:
    if args.link == "-":
        raise UsageError(
            "chat reads messages from stdin; give the link with --link-file or M42_LINK"
        )
    link = _read_link(args, stdin)
    download = Path(args.out)
    await trio.to_thread.run_sync(lambda: download.mkdir(parents=True, exist_ok=True))
    client = Client(
        link,
        _key_store(args),
        download_dir=download,
        accept="all" if args.accept else "ask",
        max_size=args.max_size,
    )
    out = sys.stdout
    # On a terminal the line the user typed is replaced by our own
    # "you: ... (sent #n)" line, so every message shows once, with its state.
    interactive = _isatty(stdin) and _isatty(out)

    def say(line: str) -> None:
        # A closed terminal (SIGHUP) fails every write: leaving must go on.
        with contextlib.suppress(OSError):
            print(line, file=out, flush=True)

    def erase_typed(line: str) -> None:
        columns = max(1, shutil.get_terminal_size().columns)
        rows = max(1, math.ceil(len(line) / columns))
        out.write("\x1b[1A\x1b[2K" * rows)
        out.flush()

    async def body(client: Client) -> int:
        sent: dict[int, str] = {}
        transfers: dict[tuple[int, bool], str] = {}
        offers: deque[ev.FileOffer] = deque()
        last_progress: dict[tuple[int, bool], float] = {}
        result = EXIT_OK
        done = trio.Event()
        shown = trio.Event()

        async def show() -> None:
            nonlocal result
            lost = False
            async for event in client.events:
                if isinstance(event, ev.PeerUp):
                    say(f"[{_stamp()}] * peer online")
                elif isinstance(event, ev.PeerDown):
                    if not done.is_set():  # not our own leaving
                        say(f"[{_stamp()}] * peer offline")
                elif isinstance(event, ev.Connected):
                    if lost:
                        say(f"[{_stamp()}] * connected to the relay again")
                    lost = False
                elif isinstance(event, ev.Reconnecting):
                    # One line for the loss, quieter lines for each retry.
                    what = "still no relay" if lost else "connection lost"
                    say(
                        f"[{_stamp()}] * {what} ({escape_text(event.reason)}); "
                        f"retrying in {event.delay:.1f} s"
                    )
                    lost = True
                elif isinstance(event, ev.SafetyWords):
                    first = (
                        " (first contact: compare these words by voice)"
                        if event.first_contact
                        else ""
                    )
                    words = _sas_line(event.words)
                    say(f"[{_stamp()}] * secure session; safety words: {words}{first}")
                elif isinstance(event, ev.KeyChanged):
                    say(_key_changed_message(event))
                elif isinstance(event, ev.TextIn):
                    say(f"[{_stamp()}] peer: {_text_block(event.text, CHAT_CONTINUATION)}")
                elif isinstance(event, ev.Delivered):
                    preview = sent.pop(event.seq, "")
                    say(f"[{_stamp()}] \u2713 delivered #{event.seq}: {escape_text(preview[:40])}")
                elif isinstance(event, ev.FileOffer):
                    offers.append(event)
                    say(
                        f"[{_stamp()}] * peer offers {escape_text(event.name)} "
                        f"({_human_size(event.size)}); accept? (y/n)"
                    )
                elif isinstance(event, ev.Progress):
                    key = (event.file_id, event.outgoing)
                    transfers.setdefault(key, event.name)
                    now = trio.current_time()
                    if event.done >= event.size or now - last_progress.get(key, -math.inf) >= 1.0:
                        last_progress[key] = now
                        say(f"[{_stamp()}] {_progress_line(event)}")
                elif isinstance(event, ev.FileDone):
                    transfers.pop((event.file_id, event.outgoing), None)
                    if event.outgoing:
                        say(f"[{_stamp()}] \u2713 {escape_text(event.name)} delivered")
                    else:
                        say(f"[{_stamp()}] * saved {escape_text(str(event.path))}")
                elif isinstance(event, ev.FileFailed):
                    transfers.pop((event.file_id, event.outgoing), None)
                    side = "sending" if event.outgoing else "receiving"
                    say(
                        f"[{_stamp()}] ! {side} {escape_text(event.name)} failed: "
                        f"{escape_text(event.reason)}"
                    )
                elif isinstance(event, ev.Problem):
                    say(f"[{_stamp()}] ! {escape_text(event.message)}")
                    if event.fatal:
                        result = EXIT_REFUSED if event.code is not None else EXIT_ERROR
                        done.set()
            done.set()
            shown.set()

        async def read_input() -> None:
            while True:
                try:
                    line = await trio.to_thread.run_sync(stdin.readline, abandon_on_cancel=True)
                except OSError:
                    line = ""  # the terminal went away
                if not line:
                    done.set()
                    return
                text = line.rstrip("\n")
                if interactive:
                    erase_typed(text)
                if not text.strip():
                    continue
                if await command(text):
                    done.set()
                    return

        async def command(text: str) -> bool:
            """Handle one input line; True to leave."""
            word, _, rest = text.strip().partition(" ")
            lowered = text.strip().lower()
            if offers and lowered in ("y", "yes", "n", "no", "/accept", "/reject"):
                offer = offers.popleft()
                if lowered in ("y", "yes", "/accept"):
                    try:
                        client.accept_file(offer.file_id)
                        transfers[(offer.file_id, False)] = offer.name
                        say(f"[{_stamp()}] * receiving {escape_text(offer.name)}")
                    except (OSError, M42Error) as exc:
                        say(f"[{_stamp()}] ! cannot accept: {escape_text(str(exc))}")
                else:
                    with _suppress_m42():
                        client.reject_file(offer.file_id)
                    say(f"[{_stamp()}] * refused {escape_text(offer.name)}")
                return False
            if word == "/quit":
                return True
            if word == "/help":
                say(CHAT_HELP)
            elif word == "/cancel":
                if not transfers:
                    say("! no transfer to cancel")
                for (file_id, outgoing), name in list(transfers.items()):
                    transfers.pop((file_id, outgoing), None)
                    with _suppress_m42():
                        if outgoing:
                            client.cancel_file(file_id)
                        else:
                            client.reject_file(
                                file_id, "cancelled by the receiver", FileCode.CANCELLED
                            )
                    say(f"[{_stamp()}] * cancelled {escape_text(name)}")
            elif word == "/verify":
                words = client.safety_words
                say(f"safety words: {_sas_line(words)}" if words else "no secure session yet")
            elif word == "/trust":
                try:
                    client.trust()
                    say("* trusting the new key; reconnecting the session")
                except M42Error as exc:
                    say(f"! {escape_text(str(exc))}")
            elif word == "/burn":
                client.burn()
                say("* burning the room")
            elif word == "/send":
                path = _user_path(rest.strip())
                if not rest.strip() or not await trio.to_thread.run_sync(path.is_file):
                    say("! usage: /send PATH (an existing file)")
                    return False
                try:
                    file_id = await client.send_file(path)
                    transfers[(file_id, True)] = path.name
                    size = client.outgoing_size(file_id)
                    say(f"[{_stamp()}] * offering {escape_text(path.name)} ({_human_size(size)})")
                except (OSError, M42Error) as exc:
                    say(f"! cannot send: {escape_text(str(exc))}")
            elif word.startswith("/") and not word.startswith("//"):
                say(f"! unknown command {escape_text(word)}; /help lists them")
            else:
                message = text[1:] if text.startswith("//") else text
                try:
                    seq = client.send_text(message)
                except M42Error as exc:
                    say(f"! {escape_text(str(exc))}")
                    return False
                sent[seq] = message
                say(f"[{_stamp()}] you: {escape_text(message)}  (sent #{seq})")
            return False

        # Ctrl-C, kill or a closed terminal leaves like /quit: the
        # acknowledgements owed still go out.  A second one leaves at once.
        leave = _Leaving()
        say(f"m42 chat, seat {link.seat.value}.  /help for commands.")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(show)
            nursery.start_soon(read_input)
            await nursery.start(leave.watch)
            with leave.work:
                await done.wait()
            if leave.signals:
                done.set()  # not our peer's leaving: no "peer offline" line
                with contextlib.suppress(OSError):
                    _eprint("\nbye")
                if leave.signals[0] != signal.SIGINT:
                    result = leave.exit_code
            with leave.leaving:
                # Texts that arrive while leaving are shown (their
                # acknowledgements went out), not swallowed.
                await _finish(client)
                with trio.move_on_after(FLUSH_TIMEOUT):
                    await shown.wait()
            nursery.cancel_scope.cancel()
        return result

    return await _with_client(client, body)


class _suppress_m42:
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, value: object, tb: object) -> bool:
        return isinstance(value, M42Error)


# -- argument parsing -------------------------------------------------------------------------


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be a positive number")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be a positive integer")
    return value


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks"
    )
    linked = argparse.ArgumentParser(add_help=False)
    linked.add_argument("link", nargs="?", metavar="LINK", help=LINK_HELP)
    linked.add_argument("--link-file", metavar="FILE", help="read the link from FILE")
    linked.add_argument(
        "--keys-dir",
        metavar="DIR",
        help="where room keys live (default: $XDG_DATA_HOME/m42/keys)",
    )

    parser = argparse.ArgumentParser(
        prog="m42",
        description="End-to-end-encrypted chat and file transfer for two people, "
        "through an m42d relay.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    fmt = argparse.RawDescriptionHelpFormatter

    new = sub.add_parser(
        "new",
        parents=[common],
        formatter_class=fmt,
        help="create a room and print its two links",
        description="Ask the relay for a room, draw the room secret on this machine and print "
        "Link A (yours) and Link B (for the other person).  The relay never sees the secret.",
    )
    new.add_argument(
        "--relay",
        metavar="URL",
        help=f"relay address (default: $M42_RELAY, else {DEFAULT_RELAY})",
    )
    new.add_argument(
        "--pin",
        metavar="B64",
        help="the relay's TLS certificate pin ('m42d pin' prints it); for tls:// without it "
        "the certificate presented now is trusted and pinned",
    )
    new.add_argument(
        "--creation-secret-file",
        metavar="FILE",
        help="file holding the relay's room-creation secret (private relays)",
    )
    new.add_argument("--json", action="store_true", help='print {"link_a","link_b","expires"}')
    new.add_argument("--qr", action="store_true", help="also draw Link B as a QR code")
    new.add_argument(
        "--timeout", type=_positive_float, default=10.0, help="seconds to wait for the relay"
    )

    chat = sub.add_parser(
        "chat",
        parents=[common, linked],
        formatter_class=fmt,
        help="talk interactively and swap files",
        description="Interactive chat.  Type a line to send it; /help lists commands.",
        epilog=CHAT_HELP,
    )
    chat.add_argument(
        "--out", metavar="DIR", default=".", help="where received files go (default: .)"
    )
    chat.add_argument("--accept", action="store_true", help="accept every offered file")
    chat.add_argument(
        "--max-size", metavar="BYTES", type=_positive_int, help="refuse larger incoming files"
    )

    send = sub.add_parser(
        "send",
        parents=[common, linked],
        formatter_class=fmt,
        help="send texts or files, exit when the peer confirmed them",
        description="Send texts and files; exits 0 only after the peer acknowledged all of "
        "them end to end.  Without --text or --file, stdin is sent as one text.",
    )
    send.add_argument("--text", action="append", metavar="TEXT", help="a message (repeatable)")
    send.add_argument("--file", action="append", metavar="PATH", help="a file (repeatable)")
    send.add_argument(
        "--wait",
        type=_positive_float,
        metavar="SECONDS",
        help="give up (exit 3) if no secure session stands within SECONDS (default: wait)",
    )

    recv = sub.add_parser(
        "recv",
        parents=[common, linked],
        formatter_class=fmt,
        help="receive texts (stdout) and files (--out)",
        description="Print received texts on stdout and save files into --out.  Texts are "
        "printed with control characters escaped.",
    )
    recv.add_argument("--out", metavar="DIR", default=".", help="where files go (default: .)")
    recv.add_argument(
        "--count", type=_positive_int, metavar="N", help="exit 0 after N texts or files"
    )
    recv.add_argument(
        "--timeout",
        type=_positive_float,
        metavar="SECONDS",
        help="stop after SECONDS: exit 3 if --count was not reached, else 0",
    )
    recv.add_argument(
        "--jsonl",
        action="store_true",
        help="one JSON object per event (peer_up, peer_down, safety_words, text, file_progress, "
        "file_done, file_failed, key_changed, delivered, error), each with a 'ts'",
    )
    recv.add_argument(
        "--max-size", metavar="BYTES", type=_positive_int, help="refuse larger incoming files"
    )

    trust = sub.add_parser(
        "trust",
        parents=[common, linked],
        formatter_class=fmt,
        help="accept the peer's changed key after comparing the safety words",
        description="Connect, show the safety words with the peer's new key and pin it once "
        "you confirm that the other person sees the same words.",
    )
    trust.add_argument(
        "--yes", action="store_true", help="do not ask (you compared the safety words)"
    )
    trust.add_argument(
        "--wait", type=_positive_float, metavar="SECONDS", help="give up after SECONDS (exit 3)"
    )
    return parser


async def _dispatch(args: argparse.Namespace, stdin: TextIO) -> int:
    if args.command == "new":
        return await cmd_new(args)
    if args.command == "send":
        return await cmd_send(args, stdin)
    if args.command == "recv":
        return await cmd_recv(args, stdin)
    if args.command == "trust":
        return await cmd_trust(args, stdin)
    return await cmd_chat(args, stdin)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``m42``; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    debug = bool(getattr(args, "debug", False))
    keep_secrets_out_of_core_dumps()  # before any link or key is read
    try:
        try:
            return trio.run(_dispatch, args, sys.stdin)
        finally:
            _PROGRESS.end_line()  # never leave the prompt after a half-drawn line
    except BaseException as raised:
        inner = _sole_exception(raised)
        if isinstance(inner, KeyboardInterrupt):
            if args.command == "chat":
                _eprint("\nbye")
                return EXIT_OK
            return EXIT_INTERRUPTED
        if debug or not isinstance(inner, M42Error | OSError | trio.TooSlowError):
            raise
        if isinstance(inner, UsageError):
            parser.print_usage(sys.stderr)
            _eprint(f"m42: error: {escape_text(str(inner))}")
            return EXIT_USAGE
        if isinstance(inner, trio.TooSlowError):
            _eprint("m42: timed out")
            return EXIT_TIMEOUT
        # An error may carry the relay's words (RelayRefused) or a peer's
        # file name: escaped like everything else that reaches the terminal.
        _eprint(f"m42: {escape_text(str(inner) or type(inner).__name__)}")
        return EXIT_REFUSED if isinstance(inner, RelayRefused) else EXIT_ERROR


def _sole_exception(exc: BaseException) -> BaseException:
    """The one exception inside nested single-member groups (trio nurseries wrap errors)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc
