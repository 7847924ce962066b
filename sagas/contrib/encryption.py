"""End-to-end payload encryption: an AES-256-GCM :class:`~sagas.converter.PayloadCodec`.

Give the same codec to the client and to the workers; the orchestrator, the
store and the brokers then only ever see ciphertext::

    codec = AESGCMCodec({"2026-01": key_2026_01}, current="2026-01")
    conv = DataConverter(payload_codec=codec)
    client = await Client.connect("localhost:7233", data_converter=conv)
    worker = Worker(client, ...)          # workers use the client's converter

Each payload is ``version (1 byte) | key id length (1 byte) | key id | nonce (12 bytes) |
ciphertext + tag``; the header is authenticated with the payload, so a payload
cannot be moved to another key id. Rotate keys by adding a new key and making
it ``current``: old payloads still decrypt with the old key, new ones use the
new key; remove an old key only when no history that needs it is retained
(see ``docs/security.md``).

Keys from the environment: ``AESGCMCodec.from_env("SAGAS_CODEC_KEYS")`` reads
``id1:base64key1,id2:base64key2`` (the first is current).
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping, Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from sagas.converter import PayloadCodec
from sagas.exceptions import ApplicationError

_VERSION = 1
_NONCE_BYTES = 12


class AESGCMCodec(PayloadCodec):
    """Encrypts each payload with AES-GCM under the ``current`` key; decrypts with any known key.

    >>> from sagas.contrib.encryption import AESGCMCodec
    >>> from sagas.converter import DataConverter
    >>> codec = AESGCMCodec({"2026-01": AESGCMCodec.generate_key()})
    >>> conv = DataConverter(payload_codec=codec)
    >>> payload = conv.to_payload({"card": "4111 1111 1111 1111"})
    >>> "4111" in str(payload)
    False
    >>> conv.from_payload(payload)
    {'card': '4111 1111 1111 1111'}
    """

    name = "aes-gcm"

    def __init__(self, keys: Mapping[str, bytes], *, current: str | None = None) -> None:
        if not keys:
            raise ValueError("AESGCMCodec needs at least one key")
        for key_id, key in keys.items():
            if not 0 < len(key_id.encode()) < 256:
                raise ValueError(f"key id {key_id!r} must be 1-255 bytes")
            if len(key) not in (16, 24, 32):
                raise ValueError(f"key {key_id!r} is {len(key)} bytes; AES-GCM keys are 16, 24 or 32 bytes")
        self._ciphers = {key_id: AESGCM(key) for key_id, key in keys.items()}
        self.current = current if current is not None else next(iter(keys))
        if self.current not in self._ciphers:
            raise ValueError(f"current key {self.current!r} is not among the keys {sorted(keys)}")

    @staticmethod
    def generate_key() -> bytes:
        """A new random 256-bit key."""
        return AESGCM.generate_key(bit_length=256)

    @classmethod
    def from_env(cls, variable: str = "SAGAS_CODEC_KEYS") -> AESGCMCodec:
        """Keys from ``id1:base64key1,id2:base64key2`` in an environment variable (the first is current)."""
        text = os.environ.get(variable, "")
        keys: dict[str, bytes] = {}
        for item in filter(None, (part.strip() for part in text.split(","))):
            key_id, sep, b64 = item.partition(":")
            if not sep:
                raise ValueError(f"{variable}: entry {key_id!r} is not 'id:base64key'")
            keys[key_id] = base64.b64decode(b64)
        if not keys:
            raise ValueError(f"environment variable {variable} holds no keys ('id:base64key,...')")
        return cls(keys, current=next(iter(keys)))

    def encode(self, payloads: Sequence[bytes]) -> list[bytes]:
        key_id = self.current.encode()
        header = bytes([_VERSION, len(key_id)]) + key_id
        cipher = self._ciphers[self.current]
        out = []
        for data in payloads:
            nonce = os.urandom(_NONCE_BYTES)
            out.append(header + nonce + cipher.encrypt(nonce, data, header))
        return out

    def decode(self, payloads: Sequence[bytes]) -> list[bytes]:
        return [self._decrypt(blob) for blob in payloads]

    def _decrypt(self, blob: bytes) -> bytes:
        if len(blob) < 2 or blob[0] != _VERSION:
            raise _codec_error("the payload is not an aes-gcm payload of a known version")
        end = 2 + blob[1]
        key_id = blob[2:end].decode(errors="replace")
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise _codec_error(
                f"the payload was encrypted with key {key_id!r}, which this codec does not have "
                f"(it has {sorted(self._ciphers)}); add that key to decrypt it"
            )
        nonce = blob[end : end + _NONCE_BYTES]
        try:
            return cipher.decrypt(nonce, blob[end + _NONCE_BYTES :], blob[:end])
        except InvalidTag:
            raise _codec_error(f"the payload does not decrypt with key {key_id!r}: altered, or a different key") from None


def _codec_error(message: str) -> ApplicationError:
    return ApplicationError(message, type="PayloadCodecError", non_retryable=True)


__all__ = ["AESGCMCodec"]
