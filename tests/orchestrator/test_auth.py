"""Authentication and authorization at the frontend: nobody gets in where they do not belong."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from orchestrator.errors import ConfigurationError, PermissionDeniedError, UnauthenticatedError
from orchestrator.frontend.auth import (
    AllowAllAuthorizer,
    APIKeyClaimMapper,
    ClaimMapperChain,
    Claims,
    Credentials,
    FrontendAuth,
    JWTClaimMapper,
    Permission,
    RoleAuthorizer,
    Target,
    claim_mapper_from_config,
    queue_target,
)
from orchestrator.server import DevServer, Orchestrator, OrchestratorConfig
from tests.e2e.minimal_worker import MinimalWorker, complete_workflow

SECRET = "a-test-secret-that-is-long-enough-for-hs256"
ADMIN_KEY = "admin-api-key"
CI_KEY = "ci-api-key"


def token(claims: dict[str, Any], *, secret: str = SECRET, ttl: float = 86400.0, **extra: Any) -> str:
    """A signed JWT. Parametrized tokens are made at collection time, which can be many minutes
    before the test runs in a long suite: the default lifetime outlasts any run."""
    now = int(time.time())
    return jwt.encode({"sub": "test", "iat": now, "exp": now + ttl, **claims, **extra}, secret, algorithm="HS256")


def bearer(value: str) -> dict[str, str]:
    return {"authorization": f"Bearer {value}"}


def unsigned(claims: dict[str, Any]) -> str:
    """An ``alg=none`` token (PyJWT refuses to make one)."""

    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part({'exp': int(time.time()) + 300, **claims})}."


def mapper() -> ClaimMapperChain:
    return ClaimMapperChain(
        APIKeyClaimMapper(
            {
                ADMIN_KEY: {"sub": "root", "permissions": ["*:admin"]},
                "sha256:" + __import__("hashlib").sha256(CI_KEY.encode()).hexdigest(): {
                    "sub": "ci", "namespaces": {"alpha": "writer"},
                },
            }
        ),
        JWTClaimMapper(hs256_secrets=[SECRET]),
    )


@pytest.fixture
async def server() -> AsyncIterator[DevServer]:
    srv = DevServer(store_url="memory://", port=0, claim_mapper=mapper(), auth_required=True)
    await srv.start()
    async with httpx.AsyncClient(base_url=f"http://{srv.target}", headers=bearer(ADMIN_KEY)) as admin:
        for ns in ("alpha", "beta"):
            r = await admin.post("/api/v1/namespaces", json={"name": ns})
            assert r.status_code == 201, r.text
    yield srv
    await srv.stop()


@pytest.fixture
async def http(server: DevServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"http://{server.target}", timeout=10) as client:
        yield client


START = {"workflow_id": "secret-order-42", "workflow_type": "Test", "task_queue": "q"}


async def test_token_for_one_namespace_cannot_touch_another(http: httpx.AsyncClient) -> None:
    beta = bearer(token({"permissions": ["beta:writer"]}))
    alpha = bearer(token({"permissions": ["alpha:admin"]}))
    assert (await http.post("/api/v1/namespaces/beta/workflows", json=START, headers=beta)).status_code == 200

    wf = "/api/v1/namespaces/beta/workflows/secret-order-42"
    missing = "/api/v1/namespaces/beta/workflows/no-such-workflow"
    calls = [
        ("GET", wf, None), ("GET", missing, None), ("GET", f"{wf}/history", None), ("GET", f"{wf}/result?wait=0", None),
        ("POST", f"{wf}/signal", {"name": "s"}), ("POST", f"{missing}/signal", {"name": "s"}),
        ("POST", f"{wf}/query", {"name": "q"}), ("POST", f"{wf}/cancel", {}), ("POST", f"{wf}/terminate", {}),
        ("POST", f"{wf}/update", {"name": "u"}), ("GET", "/api/v1/namespaces/beta/workflows", None),
        ("GET", "/api/v1/namespaces/beta/workflow-count", None), ("POST", "/api/v1/namespaces/beta/workflows", START),
        ("GET", "/api/v1/namespaces/beta", None), ("PATCH", "/api/v1/namespaces/beta", {"retention_days": 1}),
        ("POST", "/api/v1/queues/sagas.beta.q.wf/receive", {"wait": 0}),
        ("POST", "/api/v1/queues/sagas.beta.q.act/receive", {"wait": 0}),
        ("POST", "/api/v1/queues/sagas.beta.sticky.w1/receive", {"wait": 0}),
        ("POST", "/api/v1/queues/sagas.beta.q.wf/ack", {"receipt": "1"}),
        ("POST", "/api/v1/queues/sagas.beta.q.wf/nack", {"receipt": "1"}),
        ("POST", "/api/v1/queues/sagas.beta.q.act/publish", {"body": "{}"}),
        ("POST", "/api/v1/codec/decode", {"namespace": "beta", "payloads": []}),
    ]
    bodies = set()
    for method, path, body in calls:
        r = await http.request(method, path, json=body, headers=alpha)
        assert r.status_code == 403, (method, path, r.status_code, r.text)
        err = r.json()
        assert err["code"] == "permission_denied"
        assert "secret-order-42" not in r.text and "no-such-workflow" not in r.text
        bodies.add(err["message"].split(": this request needs ")[1].split(" on ")[1])
    # the refusal of an existing and of a missing workflow are the same words
    assert bodies == {"namespace 'beta'"}

    info = (await http.get("/api/v1/cluster", headers=alpha)).json()
    assert info["namespaces"] == ["alpha"]
    listed = (await http.get("/api/v1/namespaces", headers=alpha)).json()["namespaces"]
    assert [n["name"] for n in listed] == ["alpha"]
    # and their own namespace works
    assert (await http.get("/api/v1/namespaces/alpha/workflows", headers=alpha)).status_code == 200


async def test_no_credentials_is_401_everywhere_but_health(http: httpx.AsyncClient) -> None:
    for method, path in [
        ("GET", "/api/v1/cluster"), ("GET", "/api/v1/namespaces/default/workflows"), ("GET", "/api/v1/dlq"),
        ("POST", "/api/v1/queues/sagas.default.q.wf/receive"), ("GET", "/namespaces/default/workflows"), ("GET", "/"),
    ]:
        r = await http.request(method, path, json={} if method == "POST" else None)
        assert r.status_code == 401, (path, r.text)
        assert r.json()["code"] == "unauthenticated" and r.headers["www-authenticate"].startswith("Bearer")
    assert (await http.get("/healthz")).status_code == 200


@pytest.mark.parametrize(
    "credential, words",
    [
        (token({"permissions": ["alpha:admin"]}, ttl=-120), "expired"),
        (token({"permissions": ["alpha:admin"]}, nbf=int(time.time()) + 30 * 86400), "not valid yet"),  # far enough ahead for any run
        (token({"permissions": ["alpha:admin"]}, secret="another-secret-that-is-also-long-enough"), "does not verify"),
        (unsigned({"permissions": ["alpha:admin"]}), "'none' is not accepted"),
        (jwt.encode({"permissions": ["alpha:admin"]}, SECRET, algorithm="HS256"), "lacks the 'exp' claim"),
        (token({"permissions": ["alpha:admin"]}, secret=SECRET)[:-4] + "AAAA", "does not verify"),
        ("not-a-known-api-key", "not recognised"),
        ("a.b.c", "not a valid JWT"),
    ],
    ids=["expired", "not-yet-valid", "bad-signature", "alg-none", "no-exp", "tampered", "unknown-key", "garbage"],
)
async def test_bad_credentials_are_rejected(http: httpx.AsyncClient, credential: str, words: str) -> None:
    r = await http.get("/api/v1/namespaces/alpha/workflows", headers=bearer(credential))
    assert r.status_code == 401, r.text
    assert r.json()["code"] == "unauthenticated" and words in r.json()["message"]


async def test_basic_auth_scheme_is_rejected(http: httpx.AsyncClient) -> None:
    r = await http.get("/api/v1/namespaces/alpha/workflows", headers={"authorization": "Basic dXNlcjpwYXNz"})
    assert r.status_code == 401 and "Bearer" in r.json()["message"]


async def test_reader_cannot_start_or_terminate(http: httpx.AsyncClient) -> None:
    writer = bearer(token({"namespaces": {"alpha": "writer"}}))
    reader = bearer(token({"namespaces": {"alpha": "reader"}}))
    assert (await http.post("/api/v1/namespaces/alpha/workflows", json=START, headers=writer)).status_code == 200
    wf = "/api/v1/namespaces/alpha/workflows/secret-order-42"
    for method, path, body in [
        ("POST", "/api/v1/namespaces/alpha/workflows", START), ("POST", f"{wf}/terminate", {}),
        ("POST", f"{wf}/signal", {"name": "s"}), ("POST", f"{wf}/cancel", {}),
        ("POST", "/api/v1/queues/sagas.alpha.q.wf/receive", {"wait": 0}), ("PATCH", "/api/v1/namespaces/alpha", {}),
    ]:
        r = await http.request(method, path, json=body, headers=reader)
        assert r.status_code == 403 and r.json()["code"] == "permission_denied", (path, r.text)
    assert (await http.get(wf, headers=reader)).json()["info"]["status"] == "Running"
    assert (await http.get("/api/v1/namespaces/alpha/workflows", headers=reader)).status_code == 200
    assert (await http.post(f"{wf}/terminate", json={"reason": "x"}, headers=writer)).status_code == 200


async def test_api_keys_and_their_digests(http: httpx.AsyncClient) -> None:
    r = await http.post("/api/v1/namespaces/alpha/workflows", json=START, headers=bearer(CI_KEY))
    assert r.status_code == 200
    r = await http.post("/api/v1/namespaces/beta/workflows", json=START, headers=bearer(CI_KEY))
    assert r.status_code == 403 and "(ci)" in r.json()["message"]


async def test_workers_are_authorized_per_namespace(server: DevServer, http: httpx.AsyncClient) -> None:
    writer = token({"permissions": ["beta:writer"]})
    beta_worker = MinimalWorker(f"http://{server.target}", namespace="beta")
    beta_worker.http.headers.update(bearer(token({"permissions": ["beta:worker"]})))
    alpha_worker = MinimalWorker(f"http://{server.target}", namespace="beta")
    alpha_worker.http.headers.update(bearer(token({"permissions": ["alpha:worker"]})))
    try:
        assert (await http.post("/api/v1/namespaces/beta/workflows", json=START, headers=bearer(writer))).status_code == 200
        got = await beta_worker.receive(beta_worker.wf_queue)
        assert got is not None
        task, receipt = got
        reply = {"kind": "workflow_task_completed", "task_token": task["task_token"], "commands": [complete_workflow("ok")]}
        # a worker of another namespace cannot complete (or poll) beta's tasks
        r = await alpha_worker.complete(reply)
        assert r.status_code == 403 and "secret-order-42" not in r.text
        r = await alpha_worker.http.post(f"/api/v1/queues/{beta_worker.wf_queue}/ack", json={"receipt": receipt})
        assert r.status_code == 403
        # the right worker can; a worker cannot start workflows, read the DLQ or consume completions
        assert (await beta_worker.complete(reply)).status_code == 200
        await beta_worker.ack(beta_worker.wf_queue, receipt)
        assert (await beta_worker.http.post("/api/v1/namespaces/beta/workflows", json=START)).status_code == 403
        assert (await beta_worker.http.get("/api/v1/dlq")).status_code == 403
        r = await beta_worker.http.post("/api/v1/queues/sagas.completions/receive", json={"wait": 0})
        assert r.status_code == 403
        r = await beta_worker.http.post("/api/v1/queues/sagas.completions/publish", json={"body": "{}"})
        assert r.status_code == 200  # services reply to the completions queue
        r = await http.get("/api/v1/namespaces/beta/workflows/secret-order-42/result", headers=bearer(writer))
        assert r.json()["status"] == "Completed"
        assert (await http.get("/api/v1/dlq", headers=bearer(ADMIN_KEY))).status_code == 200
    finally:
        await beta_worker.aclose()
        await alpha_worker.aclose()


async def test_ui_pages_are_guarded(http: httpx.AsyncClient) -> None:
    alpha = bearer(token({"permissions": ["alpha:reader"]}))
    assert (await http.get("/namespaces/beta/workflows", headers=alpha)).status_code == 403
    assert (await http.get("/namespaces", headers=alpha)).status_code == 403
    r = await http.get("/namespaces/alpha/workflows", headers=alpha)
    assert r.status_code in (200, 404)  # 404 only while the UI module is not there
    assert (await http.get("/openapi.json")).status_code == 200


# the parts, without a server ----------------------------------------------------------------------
def test_claims_from_both_claim_formats() -> None:
    c = Claims.from_mapping({"sub": "a", "namespaces": {"x": ["reader", "worker"]}, "permissions": ["y:write", "*:read"]})
    assert c.permissions_in("x") == {Permission.READ, Permission.WORKER}
    assert c.permissions_in("y") == {Permission.READ, Permission.WRITE, Permission.WORKER}
    assert c.permissions_in("anything") == {Permission.READ}
    assert c.allows(Target.on_some_namespace(Permission.WORKER))
    assert not c.allows(Target.on_cluster(Permission.ADMIN))
    with pytest.raises(ValueError, match="unknown role 'owner'"):
        Claims.from_mapping({"permissions": ["x:owner"]})


def test_queue_targets() -> None:
    assert queue_target("sagas", "sagas.beta.trips.act", "receive") == Target.on(Permission.WORKER, "beta")
    assert queue_target("sagas", "sagas.beta.a.b.wf", "ack") == Target.on(Permission.WORKER, "beta")
    assert queue_target("sagas", "sagas.beta.sticky.w-1", "receive") == Target.on(Permission.WORKER, "beta")
    assert queue_target("sagas", "sagas.completions", "publish") == Target.on_some_namespace(Permission.WORKER)
    assert queue_target("sagas", "sagas.completions", "receive") == Target.on_cluster(Permission.ADMIN)
    assert queue_target("sagas", "sagas.history", "receive") == Target.on_cluster(Permission.ADMIN)
    assert queue_target("sagas", "other.beta.q.wf", "receive") == Target.on_cluster(Permission.ADMIN)


def _pem(public_key: Any) -> bytes:
    return bytes(public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))


def test_rs256_and_es256_tokens_and_no_algorithm_confusion() -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    m = JWTClaimMapper(public_keys=[_pem(rsa_key.public_key()), _pem(ec_key.public_key())])
    exp = int(time.time()) + 60
    for key, alg in ((rsa_key, "RS256"), (ec_key, "ES256")):
        claims = m.claims_of(Credentials("Bearer " + jwt.encode({"sub": alg, "exp": exp}, key, algorithm=alg)))
        assert claims is not None and claims.subject == alg
    # an HS256 token "signed" with the public key as the secret is refused (no HS256 key is configured)
    forged = jwt.api_jws.PyJWS().encode(
        json.dumps({"sub": "x", "exp": exp}).encode(), b"not-the-pem-but-a-secret-of-32-bytes!", algorithm="HS256"
    )
    with pytest.raises(UnauthenticatedError, match="no configured key verifies HS256"):
        m.claims_of(Credentials("Bearer " + forged))


def test_jwks_file_is_reread_when_keys_rotate(tmp_path: Path) -> None:
    old, new = (ec.generate_private_key(ec.SECP256R1()) for _ in range(2))

    def jwks(*keys: tuple[str, Any]) -> str:
        return json.dumps({"keys": [
            {**json.loads(jwt.algorithms.ECAlgorithm.to_jwk(k.public_key())), "kid": kid, "alg": "ES256", "use": "sig"}
            for kid, k in keys
        ]})

    path = tmp_path / "jwks.json"
    path.write_text(jwks(("old", old)))
    m = JWTClaimMapper(jwks_file=path)
    exp = int(time.time()) + 60

    def sign(key: Any, kid: str) -> Credentials:
        return Credentials("Bearer " + jwt.encode({"sub": kid, "exp": exp}, key, algorithm="ES256", headers={"kid": kid}))

    assert m.claims_of(sign(old, "old")) is not None
    with pytest.raises(UnauthenticatedError, match="kid 'new'"):
        m.claims_of(sign(new, "new"))
    path.write_text(jwks(("old", old), ("new", new)) + " ")  # rotation: both keys for a while
    assert m.claims_of(sign(new, "new")) is not None and m.claims_of(sign(old, "old")) is not None
    path.write_text(jwks(("new", new)))
    with pytest.raises(UnauthenticatedError):
        m.claims_of(sign(old, "old"))


def test_audience_and_issuer_are_checked() -> None:
    m = JWTClaimMapper(hs256_secrets=[SECRET], audience="sagas", issuer="https://login.example")
    good = token({}, aud="sagas", iss="https://login.example")
    assert m.claims_of(Credentials(f"Bearer {good}")) is not None
    with pytest.raises(UnauthenticatedError, match="not for this server"):
        m.claims_of(Credentials(f"Bearer {token({}, aud='other', iss='https://login.example')}"))


def test_gateway_answers_401_for_anonymous_and_403_for_known_callers() -> None:
    gate = FrontendAuth(mapper())
    assert isinstance(gate.authorizer, RoleAuthorizer) and gate.enabled
    with pytest.raises(UnauthenticatedError):
        gate.require(gate.authenticate(None), Target.on(Permission.READ, "alpha"))
    with pytest.raises(PermissionDeniedError):
        gate.require(gate.authenticate(f"Bearer {CI_KEY}"), Target.on(Permission.READ, "beta"))
    assert not FrontendAuth().enabled and isinstance(FrontendAuth().authorizer, AllowAllAuthorizer)


def test_production_config_without_authorizer_refuses_to_start() -> None:
    with pytest.raises(ConfigurationError, match="no claim_mapper or authorizer"):
        Orchestrator(OrchestratorConfig(store_url="memory://", auth_required=True))
    with pytest.raises(ConfigurationError):
        DevServer(store_url="memory://", port=0, auth_required=True)
    # explicitly allowed, or configured: fine
    Orchestrator(OrchestratorConfig(store_url="memory://", auth_required=True, allow_unauthenticated=True))
    Orchestrator(OrchestratorConfig(store_url="memory://", auth_required=True, authorizer=RoleAuthorizer()))
    assert not DevServer(store_url="memory://", port=0).orchestrator.auth.enabled  # start-dev: allow all


def test_claim_mapper_from_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_JWT_SECRET", SECRET)
    m = claim_mapper_from_config({
        "api_keys": {CI_KEY: {"sub": "ci", "permissions": ["alpha:writer"]}},
        "jwt": {"hs256_secrets_env": "TEST_JWT_SECRET"},
    })
    assert m.claims_of(Credentials(f"Bearer {CI_KEY}")) is not None
    jwt_claims = m.claims_of(Credentials(f"Bearer {token({'permissions': ['beta:reader']})}"))
    assert jwt_claims is not None and jwt_claims.permissions_in("beta") == {Permission.READ}
    with pytest.raises(ConfigurationError):
        claim_mapper_from_config({})


async def test_every_api_route_declares_its_permission() -> None:
    """A route added without a permission check would be open to anyone: fail here instead."""
    from fastapi.routing import APIRoute

    from orchestrator.frontend.app import create_app
    from orchestrator.frontend.auth import PERMISSION_CHECKS

    orc = Orchestrator(OrchestratorConfig(store_url="memory://", claim_mapper=mapper()))
    await orc.start()
    try:
        app = create_app(orc)
    finally:
        await orc.stop()
    api = [r for r in app.routes if isinstance(r, APIRoute) and r.path.startswith("/api/")]
    assert len(api) > 20
    open_routes = [
        f"{sorted(r.methods)} {r.path}" for r in api
        if not any(d.call in PERMISSION_CHECKS for d in r.dependant.dependencies)
    ]
    assert open_routes == []
