"""Where the TLS files of the broker's gateway listener live: the CA's and the server's.

Apart from the certificate making (vitalvagt/tls.py, which needs the cryptography library)
so that a tablet can find the CA file to verify the broker against without that library.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TlsFiles:
    """The CA's files in ``ca_dir`` (its key stays with the stack's owner) and the server's in
    ``server_dir`` (the broker's own directory: mosquitto must read the key)."""

    ca_dir: Path
    server_dir: Path

    @property
    def ca_key(self) -> Path:
        return self.ca_dir / "ca.key"

    @property
    def ca_cert(self) -> Path:
        return self.ca_dir / "ca.crt"

    @property
    def server_key(self) -> Path:
        return self.server_dir / "server.key"

    @property
    def server_cert(self) -> Path:
        return self.server_dir / "server.crt"
