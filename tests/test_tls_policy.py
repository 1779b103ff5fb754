"""The relay's TLS offer, on the real tls:// and wss:// listeners: ECDHE with AEAD only.

Standard TLS scanners flag CBC suites on TLS 1.2 (LUCKY13 and its
relatives); the relay offers the ECDHE+AEAD part of Mozilla's
"intermediate" list on 1.2, and TLS 1.3.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
import trustme

from m42d.config import RelayConfig
from m42d.daemon import open_listeners
from m42d.relay.state import RelayState
from m42d.transport import FrameConnection, FrameListener, load_transports


@pytest.fixture(params=["self-signed-ecdsa", "operator-rsa"])
async def tls_ports(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[dict[str, int]]:
    """A tls:// and a wss:// listener with the daemon's own server context.

    Both kinds of certificate: the self-signed one is ECDSA (no RSA suite
    could be chosen anyway); an operator's may well be RSA.
    """
    transports = load_transports()
    if not {"tls", "wss"} <= set(transports):
        pytest.skip("tls and ws transports are not installed")
    if request.param == "operator-rsa":
        leaf = trustme.CA(key_type=trustme.KeyType.RSA).issue_cert("127.0.0.1")
        cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
        leaf.cert_chain_pems[0].write_to_path(str(cert))
        leaf.private_key_pem.write_to_path(str(key))
        state = RelayState.open(tmp_path / "state", tls_cert=cert, tls_key=key, environ={})
    else:
        state = RelayState.open(tmp_path / "state", environ={})
    config = RelayConfig(listen=("tls://127.0.0.1:0", "wss://127.0.0.1:0"))
    listeners: list[FrameListener] = await open_listeners(config, state, transports)

    async def handler(connection: FrameConnection) -> None:
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        for listener in listeners:
            await nursery.start(listener.serve, handler)
        ports = {}
        for listener in listeners:
            url = listener.urls[0]
            ports[url.partition("://")[0]] = int(url.rsplit(":", 1)[1])
        yield ports
        nursery.cancel_scope.cancel()


def _client(ciphers: str | None, maximum: ssl.TLSVersion) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.maximum_version = maximum
    if ciphers is not None:
        context.set_ciphers(ciphers)
    return context


async def _handshake(port: int, context: ssl.SSLContext) -> tuple[str, str] | None:
    """(version, cipher) the server agreed to, or None when it refused."""
    tcp = await trio.open_tcp_stream("127.0.0.1", port)
    tls = trio.SSLStream(tcp, context, server_hostname="127.0.0.1")
    try:
        with trio.fail_after(10):
            await tls.do_handshake()
    except trio.BrokenResourceError:
        return None
    finally:
        await trio.aclose_forcefully(tls)
    version = tls.version()
    cipher = tls.cipher()
    assert version is not None
    assert cipher is not None
    return version, cipher[0]


CBC_SUITES = [
    "ECDHE-ECDSA-AES128-SHA256",
    "ECDHE-ECDSA-AES256-SHA384",
    "ECDHE-ECDSA-AES128-SHA",
    "ECDHE-RSA-AES128-SHA256",
    "DHE-RSA-AES128-GCM-SHA256",  # AEAD, but finite-field DHE: not offered either
]


@pytest.mark.parametrize("scheme", ["tls", "wss"])
@pytest.mark.parametrize("suite", CBC_SUITES)
async def test_a_client_offering_only_cbc_suites_on_tls12_is_refused(
    tls_ports: dict[str, int], scheme: str, suite: str
) -> None:
    assert await _handshake(tls_ports[scheme], _client(suite, ssl.TLSVersion.TLSv1_2)) is None


@pytest.mark.parametrize("scheme", ["tls", "wss"])
async def test_tls12_gets_an_ecdhe_aead_suite_and_tls13_works(
    tls_ports: dict[str, int], scheme: str
) -> None:
    # A TLS 1.2 client offering everything OpenSSL knows, CBC first.
    offer = "ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES128-SHA:ALL"
    agreed = await _handshake(tls_ports[scheme], _client(offer, ssl.TLSVersion.TLSv1_2))
    assert agreed is not None
    version, cipher = agreed
    assert version == "TLSv1.2"
    assert cipher.startswith("ECDHE-"), cipher
    assert "GCM" in cipher or "CHACHA20" in cipher, cipher
    agreed = await _handshake(tls_ports[scheme], _client(None, ssl.TLSVersion.TLSv1_3))
    assert agreed is not None
    assert agreed[0] == "TLSv1.3"


def test_every_tls12_suite_offered_is_ecdhe_with_aead(tmp_path: Path) -> None:
    context = RelayState.open(tmp_path, environ={}).server_ssl_context()
    for suite in context.get_ciphers():
        if suite["protocol"] == "TLSv1.2":
            assert suite["kea"] == "kx-ecdhe", suite["name"]
            assert suite["aead"], suite["name"]
