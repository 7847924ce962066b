"""TLS settings of a client connection (mirrors ``temporalio.service.TLSConfig``)."""

from __future__ import annotations

import os
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TLSConfig:
    """TLS to the orchestrator: a private CA, a client certificate (mutual TLS), an SNI name.

    Example::

        tls = TLSConfig(
            server_root_ca_cert=Path("ca.pem").read_bytes(),
            client_cert=Path("client.pem").read_bytes(),          # mutual TLS only
            client_private_key=Path("client-key.pem").read_bytes(),
        )
        client = await Client.connect("orchestrator:7233", tls=tls, api_key=token)

    Without ``server_root_ca_cert`` the system's CA store verifies the server.
    ``domain`` overrides the name the server certificate is checked against
    (and sent as SNI) when it differs from the address's host.
    """

    server_root_ca_cert: bytes | None = None
    domain: str | None = None
    client_cert: bytes | None = None
    client_private_key: bytes | None = None

    def ssl_context(self) -> ssl.SSLContext:
        """The client-side ``ssl.SSLContext`` (raises ``ValueError`` for unusable PEM data)."""
        if (self.client_cert is None) != (self.client_private_key is None):
            raise ValueError("TLSConfig needs both client_cert and client_private_key for mutual TLS, or neither")
        try:
            cadata = self.server_root_ca_cert.decode() if self.server_root_ca_cert is not None else None
            ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=cadata)
            if self.client_cert is not None and self.client_private_key is not None:
                _load_client_cert(ctx, self.client_cert, self.client_private_key)
        except (ssl.SSLError, UnicodeDecodeError) as exc:
            raise ValueError(f"TLSConfig holds unusable PEM data ({exc}); pass the PEM files' bytes") from None
        return ctx


def _load_client_cert(ctx: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    # The ssl module loads certificate chains from files only: write them where only we can read.
    with tempfile.TemporaryDirectory(prefix="sagas-tls-") as tmp:
        cert_path, key_path = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
        for path, data in ((cert_path, cert), (key_path, key)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        ctx.load_cert_chain(cert_path, key_path)
