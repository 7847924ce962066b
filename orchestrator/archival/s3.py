"""``s3://bucket/prefix``: one object per key in an S3 bucket, or any S3-compatible store.

::

    s3://sagas-archive/prod                                    # AWS, region from $AWS_REGION
    s3://sagas-archive/prod?region=eu-west-1
    s3://archive?endpoint_url=http://127.0.0.1:9000           # MinIO, moto, Ceph...

Credentials come from boto's usual chain (``$AWS_ACCESS_KEY_ID``, profiles, instance roles);
with ``endpoint_url`` and no credentials anywhere, dummy ones are used (local test servers accept
any). The bucket must exist: the server never creates it. A ``PutObject`` is atomic, so an
archived document is always whole. Needs ``aioboto3`` (``pip install 'saga-orchestrator[s3]'``).
"""

from __future__ import annotations

import os
from contextlib import AsyncExitStack
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from orchestrator.archival.base import ArchivalError, Archiver
from orchestrator.errors import InvalidArgumentError

_OPTIONS = ("endpoint_url", "region")


class S3Archiver(Archiver):
    """Documents as objects ``{prefix}/{key}`` in ``bucket``."""

    def __init__(
        self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None, region: str | None = None, uri: str = ""
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        self.region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        self.uri = uri or f"s3://{bucket}/{self.prefix}"
        self._stack: AsyncExitStack | None = None
        self._s3: Any = None

    @classmethod
    def from_uri(cls, uri: str) -> S3Archiver:
        parts = urlsplit(uri)
        if not parts.hostname or parts.username or parts.password:
            raise InvalidArgumentError(
                f"archival URI {uri!r} names no bucket" if not parts.hostname
                else f"archival URI {uri!r}: put no credentials in the URI",
                hint="Write s3://bucket/prefix; credentials come from the environment (AWS_ACCESS_KEY_ID, "
                "AWS_SECRET_ACCESS_KEY) or an instance role.",
            )
        options = dict(parse_qsl(parts.query))
        unknown = sorted(set(options) - set(_OPTIONS))
        if unknown:
            raise InvalidArgumentError(
                f"archival URI {uri!r}: unknown option(s) {', '.join(unknown)}",
                hint="s3:// takes endpoint_url and region.",
            )
        endpoint = options.get("endpoint_url")
        if endpoint is not None and not endpoint.startswith(("http://", "https://")):
            raise InvalidArgumentError(
                f"archival URI {uri!r}: endpoint_url must be an http:// or https:// URL",
                hint="e.g. s3://bucket/prefix?endpoint_url=http://127.0.0.1:9000 for a local S3-compatible store.",
            )
        try:
            import aioboto3  # noqa: F401
        except ImportError as exc:
            raise InvalidArgumentError(
                f"archival URI {uri!r} needs aioboto3, which is not installed ({exc})",
                hint="Install it on the server: pip install 'saga-orchestrator[s3]'.",
            ) from exc
        return cls(parts.hostname, parts.path, endpoint_url=endpoint, region=options.get("region"), uri=uri)

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    async def _client(self) -> Any:
        if self._s3 is not None:
            return self._s3
        import aioboto3
        from aiobotocore.config import AioConfig

        kwargs: dict[str, Any] = {
            "region_name": self.region,
            # fail fast: the caller retries later (the timer is re-armed), never hang a timer slot
            "config": AioConfig(connect_timeout=5, read_timeout=30, retries={"mode": "standard", "total_max_attempts": 2}),
        }
        if self.endpoint_url:
            kwargs["endpoint_url"] = self.endpoint_url
            if not os.environ.get("AWS_ACCESS_KEY_ID") and not os.environ.get("AWS_PROFILE"):
                kwargs["aws_access_key_id"] = kwargs["aws_secret_access_key"] = "sagas-dummy"
        stack = AsyncExitStack()
        self._s3 = await stack.enter_async_context(aioboto3.Session().client("s3", **kwargs))
        self._stack = stack
        return self._s3

    async def _call(self, what: str, operation: str, **params: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            s3 = await self._client()
            return await getattr(s3, operation)(Bucket=self.bucket, **params)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("NoSuchKey", "404") and operation == "get_object":
                return None
            raise ArchivalError(f"cannot {what} in the archive {self.uri}: {code or exc}: {exc}") from exc
        except (BotoCoreError, OSError, TimeoutError) as exc:
            where = self.endpoint_url or f"AWS S3 in {self.region}"
            raise ArchivalError(
                f"cannot {what} in the archive {self.uri}: {where} is unreachable ({type(exc).__name__}: {exc})"
            ) from exc

    async def put(self, key: str, data: bytes) -> None:
        await self._call(f"write {key}", "put_object", Key=self._key(key), Body=data)

    async def get(self, key: str) -> bytes | None:
        response = await self._call(f"read {key}", "get_object", Key=self._key(key))
        if response is None:
            return None
        async with response["Body"] as body:
            data: bytes = await body.read()
        return data

    async def list_keys(self, prefix: str) -> list[str]:
        full = self._key(prefix)
        strip = len(self._key(""))
        keys: list[str] = []
        token: str | None = None
        while True:
            params: dict[str, Any] = {"Prefix": full}
            if token:
                params["ContinuationToken"] = token
            page = await self._call(f"list {prefix}", "list_objects_v2", **params)
            keys.extend(str(item["Key"])[strip:] for item in page.get("Contents", []))
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return sorted(keys)

    async def check(self) -> None:
        await self._call(f"reach the bucket {self.bucket!r}", "head_bucket")

    async def aclose(self) -> None:
        stack, self._stack, self._s3 = self._stack, None, None
        if stack is not None:
            await stack.aclose()
