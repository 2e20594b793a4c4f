"""paho's TLS connections that fail in the handshake: the half-made socket is closed at once.

A real TLS handshake against local servers (no broker needed): one that closes every
connection as soon as it is accepted (a broker restarting mid-handshake), and one that
answers with the stack's own server certificate.
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from vitalvagt.mqtt_cleanup import client_tls_context
from vitalvagt.tls import ensure_certificates
from vitalvagt.tls_files import TlsFiles


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    root = tmp_path_factory.mktemp("tls")
    files = TlsFiles(ca_dir=root / "ca", server_dir=root / "server")
    ensure_certificates(files, ["127.0.0.1", "localhost"])
    return files


def _serve(handle) -> Iterator[int]:  # type: ignore[no-untyped-def]
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                handle(conn)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        server.close()


@pytest.fixture
def hangs_up() -> Iterator[int]:
    """A port whose server closes every connection unanswered, mid-handshake."""
    yield from _serve(lambda conn: None)


def _tls_sockets_left(error: BaseException) -> list[ssl.SSLSocket]:
    """The TLS sockets still open in the frames the connect error came through."""
    found: dict[int, ssl.SSLSocket] = {}
    tb = error.__traceback__
    while tb is not None:
        for value in tb.tb_frame.f_locals.values():
            if isinstance(value, ssl.SSLSocket):
                found[id(value)] = value  # the same socket is a local of several frames
        tb = tb.tb_next
    return [s for s in found.values() if s.fileno() != -1]


def _failed_connect(client: mqtt.Client, port: int) -> OSError:
    with pytest.raises(OSError) as caught:
        client.connect("127.0.0.1", port, keepalive=5)
    return caught.value


def test_a_handshake_cut_short_leaves_no_tls_socket_open(tls: TlsFiles, hangs_up: int) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="cleanup-test")
    client.tls_set_context(client_tls_context(tls.ca_cert))
    error = _failed_connect(client, hangs_up)
    assert _tls_sockets_left(error) == []
    assert client.socket() is None


def test_paho_s_own_tls_set_leaves_it_open(tls: TlsFiles, hangs_up: int) -> None:
    """Why the context exists: with paho 2.2's tls_set the same failure leaves the socket open
    until it is freed. If this fails, paho closes it itself and the context can go."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="cleanup-test")
    client.tls_set(ca_certs=str(tls.ca_cert), tls_version=ssl.PROTOCOL_TLS_CLIENT)
    error = _failed_connect(client, hangs_up)
    left = _tls_sockets_left(error)
    for sock in left:
        sock.close()
    assert len(left) == 1


@pytest.fixture
def tls_server(tls: TlsFiles) -> Iterator[int]:
    """A port answering the handshake with the stack's server certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls.server_cert, tls.server_key)

    def handle(conn: socket.socket) -> None:
        try:
            with context.wrap_socket(conn, server_side=True):
                pass
        except (ssl.SSLError, OSError):
            pass  # the client refused the certificate

    yield from _serve(handle)


def test_the_context_verifies_the_broker_as_tls_set_does(
    tls: TlsFiles, tls_server: int, tmp_path: Path
) -> None:
    context = client_tls_context(tls.ca_cert)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    with socket.create_connection(("127.0.0.1", tls_server), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
            assert sock.version() is not None  # the handshake completed

    other = TlsFiles(ca_dir=tmp_path / "ca", server_dir=tmp_path / "server")
    ensure_certificates(other, ["127.0.0.1"])
    stranger = client_tls_context(other.ca_cert)
    with socket.create_connection(("127.0.0.1", tls_server), timeout=5) as raw:
        sock = stranger.wrap_socket(raw, server_hostname="127.0.0.1", do_handshake_on_connect=False)
        with pytest.raises(ssl.SSLCertVerificationError):
            sock.do_handshake()
        assert sock.fileno() == -1  # closed by the failed handshake itself
