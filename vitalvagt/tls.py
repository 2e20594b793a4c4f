"""The embedded stack's private certificate authority and the broker's server certificate.

``ensure_certificates`` makes, once, a CA (key and self-signed certificate) and a server
certificate signed by it for the broker's gateway listener, with the subject alternative
names a gateway may connect to (``127.0.0.1``, ``localhost`` and ``VV_HOST``). Gateways
verify the server against ``ca.crt``; the CA's key never leaves the state directory and is
needed only to issue a new server certificate (for example when ``VV_HOST`` changes).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
from pathlib import Path

from vitalvagt.tls_files import TlsFiles

CA_DAYS = 3650
SERVER_DAYS = 825  # the longest validity clients such as Apple's accept for a server cert


def server_names(host: str) -> list[str]:
    """The names a server certificate for ``host`` covers: loopback and ``host`` (for a
    wildcard address, this machine's host name)."""
    names = ["127.0.0.1", "localhost"]
    if host in ("0.0.0.0", "::", ""):
        host = socket.gethostname()
    if host and host not in names:
        names.append(host)
    return names


def _write_private(path: Path, data: bytes) -> None:
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _san(names: list[str]):  # type: ignore[no-untyped-def]
    from cryptography import x509

    out: list[x509.GeneralName] = []
    for n in names:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            out.append(x509.DNSName(n))
    return x509.SubjectAlternativeName(out)


def _ca_key_usage():  # type: ignore[no-untyped-def]
    from cryptography import x509

    flags = dict.fromkeys(
        ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
         "key_agreement", "encipher_only", "decipher_only"),
        False,
    )  # fmt: skip
    return x509.KeyUsage(key_cert_sign=True, crl_sign=True, **flags)


def _cert_names(path: Path, ca_cert) -> set[str] | None:  # type: ignore[no-untyped-def]
    """The SAN entries of a certificate file, or None if it is missing, unreadable, not
    issued by ``ca_cert`` or expires within 30 days."""
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature

    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        cert.verify_directly_issued_by(ca_cert)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, TypeError, InvalidSignature, x509.ExtensionNotFound):
        return None
    if cert.not_valid_after_utc - dt.datetime.now(dt.UTC) < dt.timedelta(days=30):
        return None
    return {str(v) for v in san.get_values_for_type(x509.IPAddress)} | set(
        san.get_values_for_type(x509.DNSName)
    )


def ensure_certificates(files: TlsFiles, names: list[str]) -> bool:
    """Create the CA once and a server certificate for ``names`` when there is none, it
    lacks one of the names or it is about to expire. Returns whether the server certificate was
    (re)issued."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    files.ca_dir.mkdir(parents=True, exist_ok=True)
    files.server_dir.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    pem = serialization.Encoding.PEM
    key_format = serialization.PrivateFormat.PKCS8
    no_pw = serialization.NoEncryption()

    if files.ca_key.exists() and files.ca_cert.exists():
        ca_key = serialization.load_pem_private_key(files.ca_key.read_bytes(), password=None)
        ca_cert = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    else:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Vitalvagt embedded stack"),
                x509.NameAttribute(NameOID.COMMON_NAME, "Vitalvagt private CA"),
            ]
        )
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_ca_key_usage(), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
            .sign(ca_key, hashes.SHA256())
        )
        _write_private(files.ca_key, ca_key.private_bytes(pem, key_format, no_pw))
        files.ca_cert.write_bytes(ca_cert.public_bytes(pem))

    have = _cert_names(files.server_cert, ca_cert) if files.server_key.exists() else None
    if have is not None and set(names) <= have:
        return False

    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=SERVER_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_san(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    _write_private(files.server_key, key.private_bytes(pem, key_format, no_pw))
    files.server_cert.write_bytes(cert.public_bytes(pem))
    return True
