"""The SDK end to end over (mutual) TLS with a CA generated here, plus a token; and what mTLS refuses."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import ssl
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from orchestrator.errors import ConfigurationError
from orchestrator.frontend.auth import JWTClaimMapper
from orchestrator.server import DevServer
from sagas import activity, workflow
from sagas.client import Client, RPCError, TLSConfig
from sagas.worker import Worker

SECRET = "tls-test-secret-long-enough-for-hs256!!"


@dataclass
class Pki:
    ca: bytes
    server_cert: Path
    server_key: Path
    client_cert: bytes
    client_key: bytes
    ca_path: Path


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _cert(
    subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Certificate | None, issuer_key: ec.EllipticCurvePrivateKey,
    *, ca: bool = False, server: bool = False,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                          key_encipherment=False, data_encipherment=False, key_agreement=False,
                          encipher_only=False, decipher_only=False),
            critical=True,
        ).add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    else:
        assert issuer is not None
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
        ).add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    tmp = tmp_path_factory.mktemp("pki")
    ca_key = _key()
    ca = _cert("sagas test CA", ca_key, None, ca_key, ca=True)
    server_key, client_key = _key(), _key()
    server = _cert("127.0.0.1", server_key, ca, ca_key, server=True)
    client = _cert("worker-1", client_key, ca, ca_key)
    pem = serialization.Encoding.PEM
    (tmp / "ca.pem").write_bytes(ca.public_bytes(pem))
    (tmp / "server.pem").write_bytes(server.public_bytes(pem))
    (tmp / "server-key.pem").write_bytes(_pem_key(server_key))
    return Pki(
        ca=ca.public_bytes(pem), server_cert=tmp / "server.pem", server_key=tmp / "server-key.pem",
        client_cert=client.public_bytes(pem), client_key=_pem_key(client_key), ca_path=tmp / "ca.pem",
    )


@pytest.fixture
async def mtls_server(pki: Pki) -> AsyncIterator[DevServer]:
    srv = DevServer(
        store_url="memory://", port=0,
        tls_cert=pki.server_cert, tls_key=pki.server_key, tls_client_ca=pki.ca_path,
        claim_mapper=JWTClaimMapper(hs256_secrets=[SECRET]), auth_required=True,
    )
    await srv.start()
    yield srv
    await srv.stop()


def token(*permissions: str) -> str:
    return jwt.encode({"sub": "t", "exp": int(time.time()) + 300, "permissions": list(permissions)}, SECRET, "HS256")


@activity.defn
async def shout(text: str) -> str:
    return text.upper() + "!"


@workflow.defn
class Shout:
    @workflow.run
    async def run(self, text: str) -> str:
        return await workflow.execute_activity(shout, text, start_to_close_timeout=timedelta(seconds=10))


async def test_sdk_end_to_end_over_mutual_tls(pki: Pki, mtls_server: DevServer) -> None:
    assert mtls_server.url.startswith("https://")
    tls = TLSConfig(server_root_ca_cert=pki.ca, client_cert=pki.client_cert, client_private_key=pki.client_key)
    async with await Client.connect(mtls_server.target, tls=tls, api_key=token("default:writer")) as client:
        info = await client.cluster_info()
        assert info.worker_broker_url.endswith("?tls=1")
        queue = f"tls-{uuid.uuid4().hex[:6]}"
        async with Worker(client, task_queue=queue, workflows=[Shout], activities=[shout]):
            result = await client.execute_workflow(Shout.run, "over tls", id=f"wf-{queue}", task_queue=queue)
        assert result == "OVER TLS!"


async def test_mtls_rejects_a_client_without_a_certificate(pki: Pki, mtls_server: DevServer) -> None:
    with pytest.raises(RPCError) as caught:
        await Client.connect(mtls_server.target, tls=TLSConfig(server_root_ca_cert=pki.ca), api_key=token("default:reader"))
    assert caught.value.status == 503
    ctx = ssl.create_default_context(cadata=pki.ca.decode())
    async with httpx.AsyncClient(verify=ctx) as http:
        with pytest.raises(httpx.HTTPError):
            await http.get(f"{mtls_server.url}/healthz")


async def test_a_certificate_is_not_a_credential(pki: Pki, mtls_server: DevServer) -> None:
    """mTLS lets the connection in; the request still needs a role."""
    tls = TLSConfig(server_root_ca_cert=pki.ca, client_cert=pki.client_cert, client_private_key=pki.client_key)
    with pytest.raises(RPCError) as caught:
        await Client.connect(mtls_server.target, tls=tls)
    assert caught.value.status == 401


async def test_client_refuses_a_server_it_cannot_verify(pki: Pki) -> None:
    async with DevServer(store_url="memory://", port=0, tls_cert=pki.server_cert, tls_key=pki.server_key) as srv:
        with pytest.raises(RPCError, match="CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
            await Client.connect(srv.target, tls=True)
        async with await Client.connect(srv.target, tls=TLSConfig(server_root_ca_cert=pki.ca)) as client:
            assert (await client.count_workflows()).count == 0
        # plain HTTP to a TLS port does not work either
        with pytest.raises(RPCError):
            await Client.connect(srv.target)


def test_tls_files_are_checked_before_anything_starts(tmp_path: Path, pki: Pki) -> None:
    with pytest.raises(ConfigurationError, match="both tls_cert and tls_key"):
        DevServer(store_url="memory://", tls_cert=pki.server_cert)
    (tmp_path / "bad.pem").write_text("not a certificate")
    srv = DevServer(store_url="memory://", port=0, tls_cert=tmp_path / "bad.pem", tls_key=pki.server_key)
    with pytest.raises(ConfigurationError, match="cannot load the frontend's TLS files"):
        srv._tls_options()


async def test_cli_over_mutual_tls_with_a_token(pki: Pki, mtls_server: DevServer, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from sagas.cli.main import app

    (tmp_path / "client.pem").write_bytes(pki.client_cert)
    (tmp_path / "client-key.pem").write_bytes(pki.client_key)
    common = ["--address", mtls_server.target, "--tls-ca", str(pki.ca_path),
              "--tls-cert", str(tmp_path / "client.pem"), "--tls-key", str(tmp_path / "client-key.pem")]
    runner = CliRunner()
    ok = await asyncio.to_thread(runner.invoke, app, ["workflow", "list", *common, "--api-key", token("default:reader")])
    assert ok.exit_code == 0 and "No workflows found" in ok.output, ok.output
    denied = await asyncio.to_thread(
        runner.invoke, app, ["workflow", "terminate", "-w", "x", *common, "--api-key", token("default:reader")]
    )
    assert denied.exit_code == 1 and "permission_denied" not in denied.output and "needs 'write'" in denied.output
    no_cert = await asyncio.to_thread(
        runner.invoke, app, ["workflow", "list", "--address", mtls_server.target, "--tls-ca", str(pki.ca_path)]
    )
    assert no_cert.exit_code == 1 and "Error" in no_cert.output
