"""The relay's state at rest: ticket keys, TLS certificate, burn deny-list. Nothing else.

Rules of this module (the privacy promise depends on them):

* The state directory holds exactly three kinds of thing: the ticket key
  ring (``ticket-keys.json``), the TLS certificate and key when the relay
  made its own (``tls-cert.pem``, ``tls-key.pem``), and the burn deny-list
  (``burned.bin``).  No message, no address, no per-room record except a
  burned room's id and expiry, which are needed to keep refusing it.
* The directory is 0700, secret files are 0600.  Every whole-file write is
  atomic (temporary file in the same directory, fsync, rename, fsync of the
  directory), so a crash leaves the old file or the new one, never a mix.
* The deny-list is an append-only log of fixed-size records, compacted
  atomically when it opens and when dead records outnumber live ones; a
  torn last record (crash mid-append) is dropped.  It is bounded: past
  ``max_entries`` live entries a burn is refused rather than growing.
* Secrets never appear in a repr or in an error message: errors name the
  file and what is wrong with it, never its content.

Why this module is a little over 500 lines: everything the relay keeps on
disk (ticket key ring, deny-list, TLS certificate) shares one directory,
one atomic-write discipline and one set of permission checks; each part is
a small function or class, and apart they would each repeat the rules.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import logging
import os
import ssl
import stat
import struct
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Final, final

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from m42d.errors import ConfigError, LocalProtocolError, M42Error
from m42d.ticket import ROOM_ID_SIZE, KeyRingError, TicketKeyRing

__all__ = [
    "CERT_FILE",
    "DENY_LIST_FILE",
    "KEY_FILE",
    "KEY_RING_FILE",
    "DenyList",
    "DenyListFull",
    "RelayState",
    "atomic_write",
    "certificate_pin",
    "default_state_dir",
    "pin_to_text",
    "rotate_key_file",
    "tls_paths",
]

log = logging.getLogger("m42d.state")

KEY_RING_FILE: Final = "ticket-keys.json"
CERT_FILE: Final = "tls-cert.pem"
KEY_FILE: Final = "tls-key.pem"
DENY_LIST_FILE: Final = "burned.bin"

CREDENTIAL_TLS_CERT: Final = "tls.crt"
CREDENTIAL_TLS_KEY: Final = "tls.key"

KEY_ID_LIMIT: Final = 256
"""Key ids are 0..255: one byte in the ticket."""

CERT_VALIDITY: Final = datetime.timedelta(days=3653)
"""Self-signed certificates last ten years: renewing one changes the pin and breaks links."""

DENY_LIST_MAGIC: Final = b"M42DENY\x01"
_RECORD: Final = struct.Struct(f">{ROOM_ID_SIZE}sQ")
DEFAULT_MAX_BURNED: Final = 1_000_000


class DenyListFull(M42Error):
    """The burn deny-list holds its maximum number of live entries; the burn is refused."""


def default_state_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where the relay keeps its state when neither config nor command line says.

    ``$STATE_DIRECTORY`` first, because systemd sets it from
    ``StateDirectory=`` (colon-separated when several are listed; the first
    is ours); then the XDG base directory spec.
    """
    env = os.environ if environ is None else environ
    systemd_dir = env.get("STATE_DIRECTORY", "").split(":")[0]
    if systemd_dir:
        return Path(systemd_dir)
    xdg = env.get("XDG_STATE_HOME", "")
    # The XDG spec says a relative path is invalid and must be ignored.
    if xdg and Path(xdg).is_absolute():
        return Path(xdg) / "m42d"
    home = env.get("HOME") or str(Path.home())
    return Path(home) / ".local" / "state" / "m42d"


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` so that readers and crashes see old or new, never half.

    When the file already exists and we run as root (``m42d rotate-keys``
    run by an administrator), the new file keeps the old owner, so a
    service running as an unprivileged user can still read it.
    """
    try:
        owner = path.stat() if path.exists() else None
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as f:
                os.fchmod(f.fileno(), mode)
                if owner is not None and os.geteuid() == 0:
                    os.fchown(f.fileno(), owner.st_uid, owner.st_gid)
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            tmp.replace(path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(path.parent)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from exc


def _prepare_dir(state_dir: Path) -> None:
    try:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = state_dir.stat()
        if not stat.S_ISDIR(st.st_mode):
            raise ConfigError(f"state directory {state_dir} is not a directory")
        # It holds the ticket keys: nobody else may list or read it.  Only
        # tighten a directory we own; someone else's we leave alone.
        if st.st_mode & 0o077 and st.st_uid == os.geteuid():
            state_dir.chmod(0o700)
    except FileExistsError as exc:
        raise ConfigError(f"state directory {state_dir} is not a directory") from exc
    except OSError as exc:
        raise ConfigError(f"cannot use state directory {state_dir}: {exc.strerror or exc}") from exc


# --- deny-list ----------------------------------------------------------------


@final
@attrs.define
class DenyList:
    """Burned rooms, each refused until its ticket would have expired anyway.

    A record is 24 bytes: the 16-byte room id and the expiry as an unsigned
    64-bit big-endian count of Unix seconds, after an 8-byte header
    ``M42DENY\\x01``.  Writes block for one fsync; a burn is rare and
    rate-limited, so the relay may call it from its event loop or wrap it in
    ``trio.to_thread.run_sync``.
    """

    path: Path
    max_entries: int = DEFAULT_MAX_BURNED
    _entries: dict[bytes, int] = attrs.field(factory=dict, repr=False)
    _records_on_disk: int = attrs.field(default=0, repr=False)

    @classmethod
    def open(
        cls, path: Path, *, now: int | None = None, max_entries: int = DEFAULT_MAX_BURNED
    ) -> DenyList:
        """Load the deny-list at ``path`` (creating it), dropping expired entries.

        Raises:
            ConfigError: the file is unreadable or not a deny-list.
        """
        now = int(time.time()) if now is None else now
        deny = cls(path, max_entries)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            deny._compact()
            return deny
        except OSError as exc:
            raise ConfigError(f"cannot read deny-list {path}: {exc.strerror or exc}") from exc
        if not raw.startswith(DENY_LIST_MAGIC):
            raise ConfigError(f"{path} is not an m42d deny-list (bad header)")
        body = memoryview(raw)[len(DENY_LIST_MAGIC) :]
        whole = len(body) - len(body) % _RECORD.size
        for room_id, expires in _RECORD.iter_unpack(body[:whole]):
            if expires > deny._entries.get(room_id, 0):
                deny._entries[room_id] = expires
        records = whole // _RECORD.size
        deny.prune(now)
        if whole != len(body) or records != len(deny._entries):
            deny._compact()
        else:
            deny._records_on_disk = records
        return deny

    def __len__(self) -> int:
        return len(self._entries)

    def is_burned(self, room_id: bytes, now: int) -> bool:
        """True while ``room_id`` is burned and ``now`` has not passed its expiry.

        Like a ticket, a burn holds up to and including the second ``expires``.
        """
        expires = self._entries.get(room_id)
        return expires is not None and now <= expires

    def burn(self, room_id: bytes, expires: int, *, now: int | None = None) -> None:
        """Refuse ``room_id`` until ``expires`` (Unix seconds); durable when this returns.

        Raises:
            DenyListFull: ``max_entries`` live entries already; nothing was written.
            ConfigError: the file could not be written.
        """
        if len(room_id) != ROOM_ID_SIZE:
            raise LocalProtocolError(f"room id must be {ROOM_ID_SIZE} bytes")
        now = int(time.time()) if now is None else now
        if expires < now or self._entries.get(room_id, 0) >= expires:
            return  # expired anyway, or already burned at least as long
        if room_id not in self._entries and len(self._entries) >= self.max_entries:
            self.prune(now)
            if len(self._entries) >= self.max_entries:
                raise DenyListFull(f"the burn deny-list is full ({self.max_entries} entries)")
        self._entries[room_id] = expires
        if self._records_on_disk >= 2 * len(self._entries) + 1024:
            self.prune(now)
            self._compact()
            return
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
            try:
                os.write(fd, _RECORD.pack(room_id, expires))
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            del self._entries[room_id]
            raise ConfigError(f"cannot write deny-list {self.path}: {exc.strerror or exc}") from exc
        self._records_on_disk += 1

    def prune(self, now: int) -> int:
        """Forget entries whose expiry has passed (in memory); return how many."""
        dead = [room for room, expires in self._entries.items() if expires < now]
        for room in dead:
            del self._entries[room]
        return len(dead)

    def _compact(self) -> None:
        body = b"".join(_RECORD.pack(room, exp) for room, exp in self._entries.items())
        atomic_write(self.path, DENY_LIST_MAGIC + body)
        self._records_on_disk = len(self._entries)


# --- ticket keys --------------------------------------------------------------


def _read_key_ring(path: Path) -> TicketKeyRing:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read ticket key file {path}: {exc.strerror or exc}") from exc
    try:
        return TicketKeyRing.from_json(raw)
    except KeyRingError as exc:
        # KeyRingError names the field, never a key; add which file it was.
        raise ConfigError(f"ticket key file {path} is invalid: {exc}") from exc


def _load_or_create_key_ring(path: Path) -> TicketKeyRing:
    if not path.exists():
        ring = TicketKeyRing.generate()
        atomic_write(path, ring.to_json().encode())
        return ring
    return _read_key_ring(path)


def _age_order(ring: TicketKeyRing) -> list[int]:
    """Key ids newest first.

    :meth:`TicketKeyRing.rotate` takes the next free id after the current
    one, wrapping at 256, so age is the distance *behind* the current id.
    """
    return sorted(ring.key_ids, key=lambda key_id: (ring.current - key_id) % KEY_ID_LIMIT)


# --- TLS ----------------------------------------------------------------------


def _make_self_signed() -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "m42d relay")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + CERT_VALIDITY)
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.IPAddress(ipaddress.ip_address("::1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


TLS12_CIPHERS: Final = ":".join(
    [
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    ]
)
"""TLS 1.2 suites offered: ECDHE key exchange with an AEAD cipher only, the
ECDHE part of Mozilla's "intermediate" list.  OpenSSL's default also offers
CBC suites (HMAC-then-encrypt, the LUCKY13 family scanners flag) and
finite-field DHE; no m42 client needs either.  TLS 1.3 suites are all
AEAD and keep OpenSSL's defaults."""


def _new_server_context() -> ssl.SSLContext:
    """The one server context, for every TLS listener (``tls://`` and ``wss://``)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(TLS12_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION
    # No TLS 1.3 session tickets: m42 clients never resume (each connection
    # checks the pinned certificate afresh), and issuing two tickets per
    # join cost relay CPU and bytes for nothing.
    ctx.num_tickets = 0
    return ctx


def _load_certificate(cert_path: Path, key_path: Path) -> tuple[bytes, ssl.SSLContext]:
    """Check the pair loads and matches; return the leaf certificate's pin and a context."""
    pin = certificate_pin(cert_path)
    ctx = _new_server_context()
    try:
        ctx.load_cert_chain(cert_path, key_path)
    except OSError as exc:
        # ssl.SSLError is an OSError; its text names the problem (e.g. key
        # values mismatch), never key material.
        reason = exc.strerror if exc.strerror else getattr(exc, "reason", None) or "unreadable"
        raise ConfigError(
            f"cannot use TLS certificate {cert_path} with key {key_path}: {reason}"
        ) from exc
    return pin, ctx


# --- the state ----------------------------------------------------------------


@final
@attrs.define
class RelayState:
    """The opened state directory: what a running relay needs from disk.

    Build it with :meth:`open`.  Reload it (SIGHUP) with :meth:`reload`.
    """

    state_dir: Path
    cert_path: Path
    key_path: Path
    self_signed: bool
    deny_list: DenyList
    pin: bytes = attrs.field(repr=lambda pin: pin.hex())
    _ticket_keys: TicketKeyRing
    _ssl_context: ssl.SSLContext = attrs.field(repr=False)

    @classmethod
    def open(
        cls,
        state_dir: Path,
        *,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
        environ: Mapping[str, str] | None = None,
        max_burned: int = DEFAULT_MAX_BURNED,
        now: int | None = None,
    ) -> RelayState:
        """Open ``state_dir`` (creating it and any missing file) and load everything.

        The TLS certificate comes from, in order: ``tls_cert``/``tls_key``;
        ``$CREDENTIALS_DIRECTORY/tls.crt`` and ``tls.key`` (systemd
        ``LoadCredential=``); else a self-signed one made here on first start.

        Raises:
            ConfigError: a file is unreadable, corrupt, or a certificate does not match its key.
        """
        _prepare_dir(state_dir)
        tls_cert, tls_key, self_signed = tls_paths(
            state_dir, tls_cert=tls_cert, tls_key=tls_key, environ=environ
        )
        if self_signed:
            _ensure_self_signed(tls_cert, tls_key)
        pin, ctx = _load_certificate(tls_cert, tls_key)
        ring = _load_or_create_key_ring(state_dir / KEY_RING_FILE)
        deny = DenyList.open(state_dir / DENY_LIST_FILE, now=now, max_entries=max_burned)
        return cls(
            state_dir=state_dir,
            cert_path=tls_cert,
            key_path=tls_key,
            self_signed=self_signed,
            deny_list=deny,
            pin=pin,
            ticket_keys=ring,
            ssl_context=ctx,
        )

    @property
    def pin_b64(self) -> str:
        """The pin as links carry it: unpadded base64url of SHA-256(certificate DER)."""
        return pin_to_text(self.pin)

    @property
    def ticket_keys(self) -> TicketKeyRing:
        """The key ring the relay mints and verifies tickets with.

        :meth:`reload` replaces the ring object, so look it up here for each
        use rather than keeping a reference.
        """
        return self._ticket_keys

    def server_ssl_context(self) -> ssl.SSLContext:
        """The server TLS context (TLS 1.2 minimum; 1.3 is preferred by negotiation).

        The same object is returned for the life of the state: :meth:`reload`
        loads a new certificate *into* it, so listeners that keep a reference
        serve the new certificate to new connections without restarting.
        """
        return self._ssl_context

    def rotate_keys(self, keep: int = 2) -> int:
        """Rotate the key file (see :func:`rotate_key_file`) and use the result.

        Returns the new current key id.
        """
        self._ticket_keys = rotate_key_file(self.state_dir, keep=keep)
        return self._ticket_keys.current

    def reload(self) -> None:
        """Re-read the certificate and the key ring (SIGHUP); all or nothing.

        If anything fails to load, the state keeps what it had and the
        error propagates, so a bad edit never takes a running relay down.
        The deny-list is not re-read: only this process writes it.
        """
        pin, _ = _load_certificate(self.cert_path, self.key_path)
        ring = _read_key_ring(self.state_dir / KEY_RING_FILE)
        # Validated above with a fresh context, so this load cannot fail on
        # content; it updates the live context in place for new handshakes.
        self._ssl_context.load_cert_chain(self.cert_path, self.key_path)
        self.pin = pin
        self._ticket_keys = ring


def _ensure_self_signed(cert_path: Path, key_path: Path) -> None:
    have_cert, have_key = cert_path.exists(), key_path.exists()
    if have_cert and have_key:
        return
    if have_cert != have_key:
        # Regenerating would silently change the pin and break every link.
        missing = key_path if have_cert else cert_path
        raise ConfigError(
            f"{missing} is missing but its pair exists; restore it, or delete both "
            "to make a new certificate (this changes the pin: links must be remade)"
        )
    cert_pem, key_pem = _make_self_signed()
    atomic_write(key_path, key_pem, mode=0o600)
    atomic_write(cert_path, cert_pem, mode=0o644)
    log.info("created a self-signed TLS certificate in %s", cert_path.parent)


def rotate_key_file(state_dir: Path, *, keep: int = 2) -> TicketKeyRing:
    """Add a new current ticket key to the state directory's ring; keep ``keep`` in total.

    Tickets minted under a dropped key stop verifying: with ``keep=2``,
    rotate at most once per ``room_ttl`` so every live ticket still
    verifies.  Works on the file alone, so ``m42d rotate-keys`` can run
    beside a live daemon, which picks the new ring up on SIGHUP.
    """
    if not 1 <= keep < KEY_ID_LIMIT:
        raise ConfigError(f"keep must be between 1 and {KEY_ID_LIMIT - 1}")
    _prepare_dir(state_dir)
    path = state_dir / KEY_RING_FILE
    ring = _load_or_create_key_ring(path)
    try:
        ring.rotate()
        for key_id in _age_order(ring)[keep:]:
            ring.remove(key_id)
    except KeyRingError as exc:
        raise ConfigError(f"cannot rotate ticket keys: {exc}") from exc
    atomic_write(path, ring.to_json().encode())
    return ring


def tls_paths(
    state_dir: Path,
    *,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> tuple[Path, Path, bool]:
    """Where the relay's certificate and key are: ``(cert, key, self_signed)``.

    In order: the operator's ``tls_cert``/``tls_key``; systemd credentials
    ``$CREDENTIALS_DIRECTORY/tls.crt`` and ``tls.key``; else the
    self-signed pair in the state directory (which may not exist yet).
    """
    if (tls_cert is None) != (tls_key is None):
        raise ConfigError("tls_cert and tls_key must be given together")
    if tls_cert is not None and tls_key is not None:
        return tls_cert, tls_key, False
    env = os.environ if environ is None else environ
    cred_dir = env.get("CREDENTIALS_DIRECTORY", "")
    if cred_dir:
        cred_cert, cred_key = (
            Path(cred_dir) / CREDENTIAL_TLS_CERT,
            Path(cred_dir) / CREDENTIAL_TLS_KEY,
        )
        if cred_cert.exists() and cred_key.exists():
            return cred_cert, cred_key, False
        if cred_cert.exists() or cred_key.exists():
            raise ConfigError(
                f"credentials tls.crt and tls.key must be given together (in {cred_dir})"
            )
    return state_dir / CERT_FILE, state_dir / KEY_FILE, True


def certificate_pin(cert_path: Path) -> bytes:
    """SHA-256 of the DER of the first (leaf) certificate in a PEM file."""
    try:
        pem = cert_path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"cannot read TLS certificate {cert_path}: {exc.strerror or exc}"
        ) from exc
    try:
        leaf = x509.load_pem_x509_certificates(pem)[0]
    except ValueError as exc:
        raise ConfigError(f"{cert_path} is not a PEM certificate") from exc
    return hashlib.sha256(leaf.public_bytes(serialization.Encoding.DER)).digest()


def pin_to_text(pin: bytes) -> str:
    """The pin as links carry it: unpadded base64url."""
    return base64.urlsafe_b64encode(pin).rstrip(b"=").decode("ascii")
