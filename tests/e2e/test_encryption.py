"""End-to-end payload encryption: ciphertext in the store, clear text only through the codec server."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import jwt
import pytest

from orchestrator.frontend.auth import FrontendAuth, JWTClaimMapper
from orchestrator.frontend.codec import create_codec_app
from orchestrator.server import DevServer
from sagas import activity, workflow
from sagas.client import Client
from sagas.contrib.encryption import AESGCMCodec
from sagas.converter import DataConverter
from sagas.exceptions import ApplicationError
from sagas.worker import Worker

SECRET = "codec-test-secret-long-enough-for-hs256"
KEY = AESGCMCodec.generate_key()
CARD = "card 4111-1111-1111-1111"


def bearer(*permissions: str) -> dict[str, str]:
    claims = {"sub": "t", "exp": int(time.time()) + 300, "permissions": list(permissions)}
    return {"authorization": "Bearer " + jwt.encode(claims, SECRET, "HS256")}


@activity.defn
async def charge(card: str) -> str:
    return f"charged {card}"


@workflow.defn
class Charge:
    @workflow.run
    async def run(self, card: str) -> str:
        return await workflow.execute_activity(charge, card, start_to_close_timeout=timedelta(seconds=10))


@pytest.fixture
async def server() -> AsyncIterator[DevServer]:
    srv = DevServer(
        store_url="memory://", port=0, payload_codecs={"*": AESGCMCodec({"k1": KEY})},
        claim_mapper=JWTClaimMapper(hs256_secrets=[SECRET]), auth_required=True,
    )
    await srv.start()
    yield srv
    await srv.stop()


async def test_payloads_are_encrypted_in_the_store_and_decoded_for_authorized_users(server: DevServer) -> None:
    conv = DataConverter(payload_codec=AESGCMCodec({"k1": KEY}))
    key = bearer("default:writer")["authorization"].removeprefix("Bearer ")
    async with await Client.connect(server.target, api_key=key, data_converter=conv) as client:
        queue = f"enc-{uuid.uuid4().hex[:6]}"
        async with Worker(client, task_queue=queue, workflows=[Charge], activities=[charge]):
            handle = await client.start_workflow(Charge.run, CARD, id=f"wf-{queue}", task_queue=queue)
            assert await handle.result() == f"charged {CARD}"

    events = await server.orchestrator.store.read_events("default", handle.id, handle.result_run_id or "")
    stored = json.dumps([e.model_dump(mode="json") for e in events])
    assert "4111" not in stored and '"__sagas_codec__": "aes-gcm"' in stored
    started_input = events[0].model_dump(mode="json")["input"]

    async with httpx.AsyncClient(base_url=f"http://{server.target}/api/v1") as http:
        body = {"namespace": "default", "payloads": started_input + ["plain"]}
        r = await http.post("/codec/decode", json=body, headers=bearer("default:reader"))
        assert r.status_code == 200 and r.json()["payloads"] == [CARD, "plain"]
        # others get nothing: another namespace's token, or none
        r = await http.post("/codec/decode", json=body, headers=bearer("other:admin"))
        assert r.status_code == 403 and "4111" not in r.text
        assert (await http.post("/codec/decode", json=body)).status_code == 401
        # encoding needs write
        assert (await http.post("/codec/encode", json=body, headers=bearer("default:reader"))).status_code == 403
        r = await http.post("/codec/encode", json={"payloads": ["x"]}, headers=bearer("default:writer"))
        assert r.status_code == 200 and r.json()["payloads"][0]["__sagas_codec__"] == "aes-gcm"
        # a tampered payload is refused with a clear error
        blob = bytearray(base64.b64decode(started_input[0]["data"]))
        blob[-1] ^= 1
        tampered = {**started_input[0], "data": base64.b64encode(bytes(blob)).decode()}
        r = await http.post("/codec/decode", json={"payloads": [tampered]}, headers=bearer("default:reader"))
        assert r.status_code == 400 and "does not decrypt" in r.json()["message"]


def test_key_rotation() -> None:
    old = DataConverter(payload_codec=AESGCMCodec({"k1": KEY}))
    new_key = AESGCMCodec.generate_key()
    rotated = DataConverter(payload_codec=AESGCMCodec({"k1": KEY, "k2": new_key}, current="k2"))
    written_before = old.to_payloads([{"a": 1}])
    assert rotated.from_payloads(written_before) == [{"a": 1}]
    written_after = rotated.to_payloads(["b"])
    assert base64.b64decode(written_after[0]["data"])[2:4] == b"k2"
    with pytest.raises(ApplicationError, match="key 'k2', which this codec does not have"):
        old.from_payloads(written_after)
    with pytest.raises(ValueError, match="16, 24 or 32 bytes"):
        AESGCMCodec({"k": b"short"})


def test_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_CODEC_KEYS", f"new:{base64.b64encode(KEY).decode()},old:{base64.b64encode(bytes(32)).decode()}")
    codec = AESGCMCodec.from_env("TEST_CODEC_KEYS")
    assert codec.current == "new"


async def test_stand_alone_codec_server() -> None:
    app = create_codec_app({"payments": AESGCMCodec({"k1": KEY})}, FrontendAuth(JWTClaimMapper(hs256_secrets=[SECRET])))
    payloads = DataConverter(payload_codec=AESGCMCodec({"k1": KEY})).to_payloads([CARD])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://codec") as http:
        body = {"namespace": "payments", "payloads": payloads}
        r = await http.post("/api/v1/codec/decode", json=body, headers=bearer("payments:reader"))
        assert r.json()["payloads"] == [CARD]
        r = await http.post("/api/v1/codec/decode", json={**body, "namespace": "default"}, headers=bearer("default:reader"))
        assert r.status_code == 400 and "no payload codec" in r.json()["message"]
