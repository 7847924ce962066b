"""Implementation of :mod:`sagas.converter` (see there)."""

from __future__ import annotations

import base64
import dataclasses
import inspect
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any, get_type_hints

import pydantic_core
from pydantic import TypeAdapter, ValidationError

from sagas.exceptions import ApplicationError, PayloadSizeError

DEFAULT_MAX_PAYLOAD_BYTES = 2 * 1024 * 1024
"""Default limit on one encoded payload (2 MiB).

>>> from sagas.converter import DEFAULT_MAX_PAYLOAD_BYTES, DataConverter
>>> DEFAULT_MAX_PAYLOAD_BYTES
2097152
>>> big = DataConverter(max_payload_bytes=4 * DEFAULT_MAX_PAYLOAD_BYTES)
"""

CODEC_KEY = "__sagas_codec__"


class PayloadCodec(ABC):
    """Transforms encoded payloads, e.g. to encrypt or compress them.

    Each payload reaches :meth:`encode` as its UTF-8 JSON bytes; the bytes it
    returns travel as ``{"__sagas_codec__": name, "data": "<base64>"}``.
    :meth:`decode` reverses it. Both are synchronous because workflow code
    converts values synchronously.

    >>> import zlib
    >>> class Zlib(PayloadCodec):
    ...     name = "zlib"
    ...     def encode(self, payloads): return [zlib.compress(p) for p in payloads]
    ...     def decode(self, payloads): return [zlib.decompress(p) for p in payloads]
    >>> conv = DataConverter(payload_codec=Zlib())
    >>> conv.from_payload(conv.to_payload({"a": 1}))
    {'a': 1}
    """

    name: str = "codec"
    """Written into encoded payloads; decoding refuses a payload of another codec."""

    @abstractmethod
    def encode(self, payloads: Sequence[bytes]) -> list[bytes]:
        """Encode each payload's JSON bytes."""

    @abstractmethod
    def decode(self, payloads: Sequence[bytes]) -> list[bytes]:
        """Reverse :meth:`encode`."""


@lru_cache(maxsize=512)
def _adapter(hint: Any) -> TypeAdapter[Any]:
    return TypeAdapter(hint)


def _adapter_for(hint: Any) -> TypeAdapter[Any]:
    try:
        return _adapter(hint)
    except TypeError:  # unhashable hint (rare): build it uncached
        return TypeAdapter(hint)


def _is_raw(hint: Any) -> bool:
    return hint is None or hint is Any or hint is inspect.Parameter.empty


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or repr(hint)


@dataclasses.dataclass(frozen=True)
class DataConverter:
    """Turns Python values into JSON-ready payloads and back, guided by type hints.

    Dataclasses, pydantic models, ``datetime``, ``UUID``, ``Enum`` and plain
    JSON types round-trip when the receiving side has a type hint:

    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Car:
    ...     city: str
    >>> conv = DataConverter()
    >>> conv.to_payloads([Car("Lisbon"), 3])
    [{'city': 'Lisbon'}, 3]
    >>> conv.from_payloads([{"city": "Lisbon"}, 3], [Car, None])
    [Car(city='Lisbon'), 3]

    A payload larger than ``max_payload_bytes`` raises
    :class:`~sagas.exceptions.PayloadSizeError`; a payload that does not fit
    its type hint raises a non-retryable ``ApplicationError`` of type
    ``PayloadConversionError``.
    """

    payload_codec: PayloadCodec | None = None
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES

    def to_payload(self, value: Any) -> Any:
        """Convert one value to its JSON-ready payload."""
        return self.to_payloads([value])[0]

    def to_payloads(self, values: Sequence[Any]) -> list[Any]:
        """Convert values to JSON-ready payloads (one per value)."""
        out: list[Any] = []
        encoded: list[bytes] = []
        for value in values:
            try:
                data = pydantic_core.to_jsonable_python(value)
            except pydantic_core.PydanticSerializationError as exc:
                raise ApplicationError(
                    f"cannot convert a value of type {type(value).__name__} to JSON: {exc}; "
                    "use a dataclass, a pydantic model or plain JSON types",
                    type="PayloadConversionError",
                    non_retryable=True,
                ) from None
            raw = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
            self._check_size(len(raw))
            out.append(data)
            encoded.append(raw)
        if self.payload_codec is None:
            return out
        wrapped = []
        for blob in self.payload_codec.encode(encoded):
            item = {CODEC_KEY: self.payload_codec.name, "data": base64.b64encode(blob).decode()}
            self._check_size(len(item["data"]))
            wrapped.append(item)
        return wrapped

    def from_payload(self, payload: Any, type_hint: Any = None) -> Any:
        """Convert one payload back; ``type_hint`` ``None``/``Any`` returns the JSON value."""
        return self.from_payloads([payload], [type_hint])[0]

    def from_payloads(self, payloads: Sequence[Any], type_hints: Sequence[Any] | None = None) -> list[Any]:
        """Convert payloads back to values, validating each by its type hint.

        Missing hints (a shorter ``type_hints``) and ``None``/``Any`` hints
        give the JSON value unchanged.
        """
        hints = list(type_hints or [])
        values = self._decode(payloads)
        out = []
        for i, value in enumerate(values):
            hint = hints[i] if i < len(hints) else None
            if _is_raw(hint):
                out.append(value)
                continue
            try:
                out.append(_adapter_for(hint).validate_python(value))
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"]) or "<value>"
                raise ApplicationError(
                    f"payload {i} cannot be converted to {_type_name(hint)}: {where}: {first['msg']} "
                    f"(got {json.dumps(value, default=str)[:200]}); check that the sender and the "
                    "receiver agree on the type",
                    type="PayloadConversionError",
                    non_retryable=True,
                ) from None
        return out

    def _decode(self, payloads: Sequence[Any]) -> list[Any]:
        coded = [isinstance(p, dict) and CODEC_KEY in p for p in payloads]
        if not any(coded):
            return list(payloads)
        codec = self.payload_codec
        blobs = []
        for p in payloads:
            if not (isinstance(p, dict) and CODEC_KEY in p):
                continue
            if codec is None or p[CODEC_KEY] != codec.name:
                raise ApplicationError(
                    f"payload was encoded by codec {p[CODEC_KEY]!r} but this converter has "
                    f"{codec.name if codec else 'no codec'!r}; configure the same payload_codec on both sides",
                    type="PayloadConversionError",
                    non_retryable=True,
                )
            blobs.append(base64.b64decode(p["data"]))
        assert codec is not None
        decoded = iter(codec.decode(blobs))
        return [json.loads(next(decoded)) if c else p for p, c in zip(payloads, coded, strict=True)]

    def _check_size(self, size: int) -> None:
        if size > self.max_payload_bytes:
            raise PayloadSizeError(
                f"payload of {size} bytes is over the limit of {self.max_payload_bytes} bytes "
                "(DataConverter.max_payload_bytes); keep large data outside the workflow "
                "and pass a reference instead",
                size=size,
                limit=self.max_payload_bytes,
            )


_DEFAULT = DataConverter()


def default() -> DataConverter:
    """The shared default converter (no codec, 2 MiB limit).

    >>> from sagas.converter import default
    >>> default().to_payloads([1, "a", None])
    [1, 'a', None]
    """
    return _DEFAULT


def parameter_hints(fn: Callable[..., Any], *, skip_self: bool = False) -> list[Any]:
    """Type hints of ``fn``'s positional parameters (``None`` where absent), for :meth:`DataConverter.from_payloads`.

    >>> from sagas.converter import parameter_hints
    >>> def book(city: str, nights: int, note=None) -> str: ...
    >>> parameter_hints(book)
    [<class 'str'>, <class 'int'>, None]
    """
    try:
        hints = get_type_hints(fn)
    except Exception:  # unresolvable forward references: fall back to raw JSON
        hints = {}
    params = list(inspect.signature(fn).parameters.values())
    if skip_self and params:
        params = params[1:]
    out: list[Any] = []
    for p in params:
        if p.kind in (
            inspect.Parameter.VAR_POSITIONAL,
            inspect.Parameter.VAR_KEYWORD,
            inspect.Parameter.KEYWORD_ONLY,
        ):
            continue
        out.append(hints.get(p.name))
    return out


def return_hint(fn: Callable[..., Any]) -> Any:
    """``fn``'s return annotation, or ``None`` when it has none.

    >>> from sagas.converter import return_hint
    >>> def book(city: str) -> list[str]: ...
    >>> return_hint(book)
    list[str]
    """
    try:
        return get_type_hints(fn).get("return")
    except Exception:
        return None
