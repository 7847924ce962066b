"""Authentication and authorization at the frontend (as in Temporal: a ClaimMapper and an Authorizer).

A request's credentials (``Authorization: Bearer <JWT or API key>``) become
:class:`Claims` through a :class:`ClaimMapper`; an :class:`Authorizer` then
decides whether those claims allow the request's :class:`Target` (a
:class:`Permission` on a namespace). Both are pluggable::

    mapper = ClaimMapperChain(
        APIKeyClaimMapper({"ci-key-...": {"sub": "ci", "permissions": ["default:writer"]}}),
        JWTClaimMapper(hs256_secrets=[secret], jwks_file="/etc/sagas/jwks.json", audience="sagas"),
    )
    config = OrchestratorConfig(claim_mapper=mapper, authorizer=RoleAuthorizer(), auth_required=True)

Roles per namespace and what they allow:

========  ================================================================
role      permissions
========  ================================================================
reader    read: describe, list, count, history, result, query, codec decode
worker    read + worker: queues receive/ack/nack/publish, tasks/complete
writer    read + write + worker: start, signal, cancel, terminate, update
admin     everything, including admin: update the namespace
========  ================================================================

Claims name roles either way (both may be used; roles add up):

* ``{"sub": "alice", "namespaces": {"default": "writer", "payments": ["reader"]}}``
* ``{"sub": "alice", "permissions": ["default:writer", "payments:read"]}`` (Temporal's
  default JWT claim mapper: ``read``/``write``/``worker``/``admin`` or the role names).

The namespace ``*`` means every namespace: ``"*:admin"`` is the cluster
administrator (register namespaces, read the dead-letter queue and the
history stream). A refusal (``403 permission_denied``) names only the
permission and the namespace of the request, never whether anything exists
there; missing or invalid credentials are ``401 unauthenticated``.
"""

from __future__ import annotations

import abc
import hashlib
import json
import os
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from orchestrator.errors import ConfigurationError, PermissionDeniedError, UnauthenticatedError

if TYPE_CHECKING:
    from jwt.types import Options
    from starlette.requests import Request

ANY_NAMESPACE = "*"
"""In claims: a role on every namespace."""


class Permission(StrEnum):
    READ = "read"
    WRITE = "write"
    WORKER = "worker"
    ADMIN = "admin"


class Role(StrEnum):
    READER = "reader"
    WRITER = "writer"
    WORKER = "worker"
    ADMIN = "admin"


GRANTS: Mapping[Role, frozenset[Permission]] = {
    Role.READER: frozenset({Permission.READ}),
    Role.WORKER: frozenset({Permission.READ, Permission.WORKER}),
    Role.WRITER: frozenset({Permission.READ, Permission.WRITE, Permission.WORKER}),
    Role.ADMIN: frozenset(Permission),
}

_ROLE_NAMES: Mapping[str, Role] = {
    "read": Role.READER,
    "reader": Role.READER,
    "write": Role.WRITER,
    "writer": Role.WRITER,
    "worker": Role.WORKER,
    "admin": Role.ADMIN,
}


def _role(name: Any, where: str) -> Role:
    role = _ROLE_NAMES.get(str(name).strip().lower())
    if role is None:
        raise ValueError(f"unknown role {name!r} in {where}; use reader, writer, worker or admin")
    return role


@dataclass(frozen=True)
class Claims:
    """Who the caller is and which roles it holds per namespace (``*``: every namespace)."""

    subject: str = ""
    roles: Mapping[str, frozenset[Role]] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)
    """All claims as presented (a custom :class:`Authorizer` may look at them)."""

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Claims:
        """Read ``sub``, ``namespaces`` ({ns: role or [roles]}) and ``permissions`` (["ns:role"]).

        Raises ``ValueError`` for a malformed role entry.
        """
        roles: dict[str, set[Role]] = {}
        namespaces = data.get("namespaces") or {}
        if not isinstance(namespaces, Mapping):
            raise ValueError("claim 'namespaces' must be an object {namespace: role or [roles]}")
        for ns, value in namespaces.items():
            for name in [value] if isinstance(value, str) else list(value):
                roles.setdefault(str(ns), set()).add(_role(name, f"namespaces.{ns}"))
        permissions = data.get("permissions") or []
        if isinstance(permissions, str) or not isinstance(permissions, Sequence):
            raise ValueError("claim 'permissions' must be a list of 'namespace:role' strings")
        for entry in permissions:
            ns, sep, name = str(entry).rpartition(":")
            if not sep or not ns:
                raise ValueError(f"permission {entry!r} is not 'namespace:role'")
            roles.setdefault(ns, set()).add(_role(name, f"permission {entry!r}"))
        return cls(
            subject=str(data.get("sub", "")),
            roles={ns: frozenset(r) for ns, r in roles.items()},
            extra=dict(data),
        )

    def permissions_in(self, namespace: str) -> frozenset[Permission]:
        held = self.roles.get(namespace, frozenset()) | self.roles.get(ANY_NAMESPACE, frozenset())
        return frozenset().union(*(GRANTS[r] for r in held)) if held else frozenset()

    def allows(self, target: Target) -> bool:
        if target.namespace is not None:
            return target.permission in self.permissions_in(target.namespace)
        if target.any_namespace:
            return any(target.permission in self.permissions_in(ns) for ns in self.roles)
        return target.permission in self.permissions_in(ANY_NAMESPACE)


@dataclass(frozen=True)
class Target:
    """What a request needs: ``permission`` on ``namespace``; with ``namespace=None``, on some
    namespace (``any_namespace``) or on the whole cluster (``*``)."""

    permission: Permission
    namespace: str | None = None
    any_namespace: bool = False

    @classmethod
    def on(cls, permission: Permission, namespace: str) -> Target:
        return cls(permission, namespace)

    @classmethod
    def on_some_namespace(cls, permission: Permission) -> Target:
        return cls(permission, None, any_namespace=True)

    @classmethod
    def on_cluster(cls, permission: Permission) -> Target:
        return cls(permission, None)

    def __str__(self) -> str:
        if self.namespace is not None:
            return f"{self.permission.value!r} on namespace {self.namespace!r}"
        if self.any_namespace:
            return f"{self.permission.value!r} on some namespace"
        return f"{self.permission.value!r} on every namespace ('*:{self.permission.value}')"


@dataclass(frozen=True)
class Credentials:
    """What the caller presented."""

    authorization: str | None = None
    """The ``Authorization`` header, e.g. ``Bearer eyJ...``."""

    @property
    def bearer(self) -> str | None:
        """The bearer token or API key; raises :class:`UnauthenticatedError` for another scheme."""
        if not self.authorization:
            return None
        scheme, _, value = self.authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise UnauthenticatedError("the Authorization header must be 'Bearer <token or API key>'")
        return value.strip()


# claim mappers -------------------------------------------------------------------------------
class ClaimMapper(abc.ABC):
    """Turns credentials into :class:`Claims`."""

    @abc.abstractmethod
    def claims_of(self, credentials: Credentials) -> Claims | None:
        """The caller's claims; ``None`` when the credentials are not of this mapper's kind
        (or absent). Raise :class:`UnauthenticatedError` when they are but do not verify."""


class APIKeyClaimMapper(ClaimMapper):
    """API keys from configuration, each mapped to claims.

    Keys may be given in clear or as ``"sha256:<hex digest>"`` so that the
    configuration does not hold the secret itself::

        APIKeyClaimMapper({"sha256:5e88...": {"sub": "ci", "permissions": ["default:writer"]}})
    """

    def __init__(self, keys: Mapping[str, Mapping[str, Any] | Claims]) -> None:
        self._by_digest: dict[str, Claims] = {}
        for key, claims in keys.items():
            digest = key[len("sha256:") :].lower() if key.startswith("sha256:") else _sha256(key)
            self._by_digest[digest] = claims if isinstance(claims, Claims) else Claims.from_mapping(claims)

    def claims_of(self, credentials: Credentials) -> Claims | None:
        token = credentials.bearer
        if token is None:
            return None
        # A dict lookup by the digest: the comparison never touches the key itself.
        return self._by_digest.get(_sha256(token))


_ALGORITHMS = ("HS256", "RS256", "ES256")


@dataclass(frozen=True)
class _Key:
    algorithm: str
    key: Any
    kid: str | None = None


class JWTClaimMapper(ClaimMapper):
    """JWT bearer tokens verified against configured keys.

    * ``hs256_secrets``: shared secrets (HS256);
    * ``public_keys``: PEM public keys, RSA (RS256) or EC P-256 (ES256);
    * ``jwks_file``: a JSON Web Key Set file, re-read when it changes (rotate keys by
      adding the new key, switching the issuer, then removing the old one).

    A key is only ever used with its own algorithm, so ``alg=none`` and
    algorithm-confusion tokens are refused; ``exp`` is required (unless
    ``require_exp=False``) and ``nbf`` honoured, with ``leeway`` seconds of
    clock skew. ``audience`` and ``issuer`` are checked when set.
    """

    def __init__(
        self,
        *,
        hs256_secrets: Iterable[str | bytes] = (),
        public_keys: Iterable[str | bytes] = (),
        jwks_file: str | os.PathLike[str] | None = None,
        audience: str | None = None,
        issuer: str | None = None,
        leeway: float = 30.0,
        require_exp: bool = True,
    ) -> None:
        self._static: list[_Key] = [
            _Key("HS256", s.encode() if isinstance(s, str) else s) for s in hs256_secrets
        ]
        for pem in public_keys:
            self._static.append(_public_key(pem))
        self._jwks_file = Path(jwks_file) if jwks_file is not None else None
        self._jwks_stamp: tuple[int, int] | None = None
        self._jwks: list[_Key] = []
        if not self._static and self._jwks_file is None:
            raise ConfigurationError("JWTClaimMapper needs at least one key: hs256_secrets, public_keys or jwks_file")
        if self._jwks_file is not None:
            self._load_jwks()
        self.audience = audience
        self.issuer = issuer
        self.leeway = leeway
        self.require_exp = require_exp

    def claims_of(self, credentials: Credentials) -> Claims | None:
        token = credentials.bearer
        if token is None or token.count(".") != 2:
            return None  # not a JWT (an API key, perhaps)
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise UnauthenticatedError(f"the bearer token is not a valid JWT ({exc})") from None
        alg = header.get("alg")
        if alg not in _ALGORITHMS:
            raise UnauthenticatedError(
                f"JWT algorithm {alg!r} is not accepted; sign with one of {', '.join(_ALGORITHMS)}"
            )
        kid = header.get("kid")
        keys = [k for k in self._keys() if k.algorithm == alg and (kid is None or k.kid in (None, kid))]
        if not keys:
            raise UnauthenticatedError(f"no configured key verifies {alg} tokens" + (f" with kid {kid!r}" if kid else ""))
        options: Options = {"require": ["exp"] if self.require_exp else []}
        for key in keys:
            try:
                payload = jwt.decode(
                    token,
                    key.key,
                    algorithms=[alg],
                    audience=self.audience,
                    issuer=self.issuer,
                    leeway=self.leeway,
                    options=options,
                )
            except jwt.InvalidSignatureError:
                continue
            except jwt.ExpiredSignatureError:
                raise UnauthenticatedError("the JWT has expired", hint="Get a fresh token from your issuer.") from None
            except jwt.ImmatureSignatureError:
                raise UnauthenticatedError("the JWT is not valid yet (nbf/iat in the future)") from None
            except jwt.MissingRequiredClaimError as exc:
                raise UnauthenticatedError(f"the JWT lacks the {exc.claim!r} claim") from None
            except (jwt.InvalidAudienceError, jwt.InvalidIssuerError) as exc:
                raise UnauthenticatedError(f"the JWT is not for this server ({exc})") from None
            except jwt.PyJWTError as exc:
                raise UnauthenticatedError(f"the JWT is invalid ({exc})") from None
            try:
                return Claims.from_mapping(payload)
            except ValueError as exc:
                raise UnauthenticatedError(f"the JWT's claims are malformed: {exc}") from None
        raise UnauthenticatedError("the JWT's signature does not verify against any configured key")

    def _keys(self) -> list[_Key]:
        if self._jwks_file is not None:
            self._load_jwks()
        return self._static + self._jwks

    def _load_jwks(self) -> None:
        assert self._jwks_file is not None
        try:
            st = self._jwks_file.stat()
        except OSError as exc:
            if self._jwks_stamp is None:
                raise ConfigurationError(f"cannot read the JWKS file {self._jwks_file}: {exc}") from exc
            return  # keep the keys we have while the file is being replaced
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._jwks_stamp:
            return
        try:
            jwk_set = jwt.PyJWKSet.from_json(self._jwks_file.read_text())
        except (OSError, jwt.PyJWTError, json.JSONDecodeError) as exc:
            if self._jwks_stamp is None:
                raise ConfigurationError(f"the JWKS file {self._jwks_file} is not a valid key set: {exc}") from exc
            return
        keys = []
        for jwk in jwk_set.keys:
            alg = jwk.algorithm_name
            if alg in _ALGORITHMS:
                keys.append(_Key(alg, jwk.key, jwk.key_id))
        self._jwks, self._jwks_stamp = keys, stamp


def _public_key(pem: str | bytes) -> _Key:
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        key = load_pem_public_key(data)
    except ValueError as exc:
        raise ConfigurationError(f"not a PEM public key: {exc}") from exc
    if isinstance(key, rsa.RSAPublicKey):
        return _Key("RS256", key)
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return _Key("ES256", key)
    raise ConfigurationError(f"unsupported public key type {type(key).__name__}; use RSA (RS256) or EC P-256 (ES256)")


class ClaimMapperChain(ClaimMapper):
    """Asks each mapper in turn; the first that recognises the credentials decides."""

    def __init__(self, *mappers: ClaimMapper) -> None:
        self.mappers = mappers

    def claims_of(self, credentials: Credentials) -> Claims | None:
        for mapper in self.mappers:
            claims = mapper.claims_of(credentials)
            if claims is not None:
                return claims
        return None


# authorizers -----------------------------------------------------------------------------------
class Authorizer(abc.ABC):
    """Decides whether claims (``None``: an anonymous caller) allow a target."""

    @abc.abstractmethod
    def authorize(self, claims: Claims | None, target: Target) -> bool: ...


class AllowAllAuthorizer(Authorizer):
    """Everything is allowed: the dev server's default (``sagas server start-dev``)."""

    def authorize(self, claims: Claims | None, target: Target) -> bool:
        return True


class RoleAuthorizer(Authorizer):
    """Allows what the caller's roles grant (see the module docstring); nothing to anonymous callers."""

    def authorize(self, claims: Claims | None, target: Target) -> bool:
        return claims is not None and claims.allows(target)


# the gateway -------------------------------------------------------------------------------------
class FrontendAuth:
    """What the frontend asks on every request: who is this, and may they do that?"""

    def __init__(self, claim_mapper: ClaimMapper | None = None, authorizer: Authorizer | None = None) -> None:
        self.claim_mapper = claim_mapper
        self.authorizer = authorizer or (RoleAuthorizer() if claim_mapper is not None else AllowAllAuthorizer())

    @classmethod
    def from_config(
        cls,
        *,
        claim_mapper: ClaimMapper | None,
        authorizer: Authorizer | None,
        auth_required: bool,
        allow_unauthenticated: bool,
    ) -> FrontendAuth:
        """The gateway for a server's configuration; refuses a production configuration
        (``auth_required``) with nothing to authorize requests unless ``allow_unauthenticated``."""
        if auth_required and claim_mapper is None and authorizer is None and not allow_unauthenticated:
            raise ConfigurationError(
                "auth_required is set but no claim_mapper or authorizer is configured: "
                "anyone who reaches the port could read and change every workflow",
                hint="Configure a claim mapper (JWT keys or API keys), or set allow_unauthenticated=True "
                "if the network in front of the server does the authorization.",
            )
        return cls(claim_mapper, authorizer)

    @property
    def enabled(self) -> bool:
        """False when every request is allowed (the dev server's default)."""
        return not isinstance(self.authorizer, AllowAllAuthorizer)

    def caller(self, request: Request) -> Claims | None:
        """The claims of a request's caller, authenticated once per request."""
        state = request.state
        if not hasattr(state, "sagas_claims"):
            state.sagas_claims = self.authenticate(request.headers.get("authorization"))
        claims: Claims | None = state.sagas_claims
        return claims

    def authenticate(self, authorization: str | None) -> Claims | None:
        """Claims of the caller from its ``Authorization`` header (``None``: anonymous)."""
        if self.claim_mapper is None:
            return None
        credentials = Credentials(authorization)
        claims = self.claim_mapper.claims_of(credentials)
        if claims is None and credentials.authorization:
            raise UnauthenticatedError("the API key or token is not recognised")
        return claims

    def allows(self, claims: Claims | None, target: Target) -> bool:
        return self.authorizer.authorize(claims, target)

    def require(self, claims: Claims | None, target: Target) -> None:
        """Raise 401 (anonymous) or 403 unless ``claims`` allow ``target``."""
        if self.authorizer.authorize(claims, target):
            return
        if claims is None:
            raise UnauthenticatedError(f"this request needs credentials with {target}")
        who = f" ({claims.subject})" if claims.subject else ""
        raise PermissionDeniedError(f"permission denied{who}: this request needs {target}")


_F = TypeVar("_F", bound=Callable[..., Any])

PERMISSION_CHECKS: weakref.WeakSet[Callable[..., Any]] = weakref.WeakSet()
"""The route dependencies that authorize; every ``/api/`` route must have one (a test checks)."""


def permission_check(fn: _F) -> _F:
    """Mark a route dependency as the one that authorizes its route."""
    PERMISSION_CHECKS.add(fn)
    return fn


def queue_target(prefix: str, queue: str, operation: str) -> Target:
    """What a built-in broker call on ``queue`` needs (``operation``: receive, ack, nack, publish).

    Task queues ``{prefix}.{ns}.{task_queue}.wf|act`` and sticky queues
    ``{prefix}.{ns}.sticky.{worker}``: worker on ``ns``. Publishing a reply to
    ``{prefix}.completions``: worker on some namespace (the reply's signed task
    token names its namespace). Anything else (consuming completions, the
    history stream, unknown queues): cluster admin.
    """
    if queue == f"{prefix}.completions":
        return Target.on_some_namespace(Permission.WORKER) if operation == "publish" else Target.on_cluster(Permission.ADMIN)
    if queue.startswith(prefix + "."):
        ns, _, rest = queue[len(prefix) + 1 :].partition(".")
        if ns and (rest.endswith((".wf", ".act")) or rest.startswith("sticky.")):
            return Target.on(Permission.WORKER, ns)
    return Target.on_cluster(Permission.ADMIN)


def claim_mapper_from_config(data: Mapping[str, Any]) -> ClaimMapper:
    """A claim mapper from a configuration mapping (e.g. a YAML file)::

        api_keys:
          "sha256:5e884898...": {sub: ci, permissions: ["default:writer"]}
        jwt:
          hs256_secrets_env: SAGAS_JWT_SECRET      # or hs256_secrets: [...] (not recommended)
          public_key_files: [/etc/sagas/issuer.pem]
          jwks_file: /etc/sagas/jwks.json
          audience: sagas
          issuer: https://login.example.com/
    """
    mappers: list[ClaimMapper] = []
    if api_keys := data.get("api_keys"):
        mappers.append(APIKeyClaimMapper(api_keys))
    if (cfg := data.get("jwt")) is not None:
        secrets = list(cfg.get("hs256_secrets", []))
        if env := cfg.get("hs256_secrets_env"):
            value = os.environ.get(env, "")
            if not value:
                raise ConfigurationError(f"environment variable {env} (jwt.hs256_secrets_env) is not set")
            secrets.append(value)
        mappers.append(
            JWTClaimMapper(
                hs256_secrets=secrets,
                public_keys=[Path(p).read_bytes() for p in cfg.get("public_key_files", [])],
                jwks_file=cfg.get("jwks_file"),
                audience=cfg.get("audience"),
                issuer=cfg.get("issuer"),
                leeway=float(cfg.get("leeway", 30.0)),
                require_exp=bool(cfg.get("require_exp", True)),
            )
        )
    if not mappers:
        raise ConfigurationError("the auth configuration has neither 'api_keys' nor 'jwt'")
    return mappers[0] if len(mappers) == 1 else ClaimMapperChain(*mappers)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


__all__ = [
    "ANY_NAMESPACE",
    "APIKeyClaimMapper",
    "AllowAllAuthorizer",
    "Authorizer",
    "ClaimMapper",
    "ClaimMapperChain",
    "Claims",
    "Credentials",
    "FrontendAuth",
    "GRANTS",
    "JWTClaimMapper",
    "Permission",
    "Role",
    "RoleAuthorizer",
    "Target",
    "PERMISSION_CHECKS",
    "claim_mapper_from_config",
    "permission_check",
    "queue_target",
]
