"""Errors the orchestrator returns to callers, each with a stable code.

Every error a user can meet says what happened, why, and what to do. The
frontend turns an :class:`OrchestratorError` into JSON
``{"code", "message", "hint"}`` with :attr:`OrchestratorError.http_status`.

Codes (stable; documented in docs/errors.md):

=========================== ====== ==========================================
code                        status meaning
=========================== ====== ==========================================
invalid_argument            400    a field is missing or has a wrong value
malformed_json              400    the request body is not JSON
payload_too_large           413    a payload is over the namespace's limit
workflow_not_found          404    no run with that workflow id / run id
namespace_not_found         404    no such namespace
namespace_already_exists    409    a namespace of that name is registered
unauthenticated             401    no credentials, or they are invalid/expired
permission_denied           403    the caller's roles do not allow this
workflow_already_started    409    a run with that workflow id is running
workflow_not_running        409    the run is closed (signal, cancel, ...)
stale_task                  409    the task was already completed or timed out
invalid_task_token          400    the task token is forged or malformed
query_failed                400    the query handler raised
query_timeout               504    no worker answered the query in time
update_rejected             400    the update validator rejected it
unsupported_event_version   500    stored history written by a newer server
unavailable                 503    the store or broker is unreachable
rate_limited                429    too many requests for this namespace
workflow_not_archived       404    no archived history of that run (archival)
archival_not_enabled        400    the namespace has no history archival URI
internal                    500    a bug: please report it
=========================== ====== ==========================================
"""

from __future__ import annotations

from typing import Any


class OrchestratorError(Exception):
    """Base of errors returned to API callers."""

    code = "internal"
    http_status = 500
    default_hint = ""

    def __init__(self, message: str, *, hint: str = "", details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint or self.default_hint
        self.details = details or {}


class InvalidArgumentError(OrchestratorError):
    code, http_status = "invalid_argument", 400


class PayloadTooLargeError(OrchestratorError):
    code, http_status = "payload_too_large", 413
    default_hint = "Keep large data outside the workflow (e.g. in object storage) and pass a reference."


class WorkflowNotFoundError(OrchestratorError):
    code, http_status = "workflow_not_found", 404
    default_hint = "Check the workflow id, run id and namespace (`sagas workflow list`)."


class NamespaceNotFoundError(OrchestratorError):
    code, http_status = "namespace_not_found", 404
    default_hint = "Register the namespace first, or use 'default'."


class NamespaceAlreadyExistsError(OrchestratorError):
    code, http_status = "namespace_already_exists", 409
    default_hint = "Update it with PATCH /api/v1/namespaces/{ns}, or choose another name."


class UnauthenticatedError(OrchestratorError):
    """No credentials where they are required, or credentials that do not verify."""

    code, http_status = "unauthenticated", 401
    default_hint = "Send `Authorization: Bearer <token or API key>` (`Client.connect(..., api_key=...)`, `--api-key`)."


class PermissionDeniedError(OrchestratorError):
    """The caller is known but its roles do not allow the request.

    The message names only the permission and the namespace of the request,
    never whether a workflow exists there.
    """

    code, http_status = "permission_denied", 403
    default_hint = "Ask an administrator for a role on this namespace (reader, writer, worker or admin)."


class WorkflowAlreadyStartedError(OrchestratorError):
    code, http_status = "workflow_already_started", 409
    default_hint = "Use another workflow id, or a different id reuse policy."


class WorkflowNotRunningError(OrchestratorError):
    code, http_status = "workflow_not_running", 409


class StaleTaskError(OrchestratorError):
    code, http_status = "stale_task", 409
    default_hint = "Nothing to do: the task was already completed, retried or timed out."


class InvalidTaskTokenError(OrchestratorError):
    code, http_status = "invalid_task_token", 400


class QueryFailedError(OrchestratorError):
    code, http_status = "query_failed", 400


class QueryTimeoutError(OrchestratorError):
    code, http_status = "query_timeout", 504
    default_hint = "Is a worker polling this workflow's task queue?"


class UpdateRejectedError(OrchestratorError):
    code, http_status = "update_rejected", 400


class UnsupportedEventVersionError(OrchestratorError):
    code, http_status = "unsupported_event_version", 500
    default_hint = "This history was written by a newer server version; upgrade this server."


class UnavailableError(OrchestratorError):
    code, http_status = "unavailable", 503
    default_hint = "Retry later; check the store and broker are up."


class ShardNotOwnedError(UnavailableError):
    """This process does not own the workflow's history shard (``details["shard"]``).

    The frontend forwards the request to the owner; a caller that cannot forward retries later.
    """

    default_hint = "Another orchestrator process owns this workflow's shard; retry (shards move within a lease)."

    def __init__(self, shard: int) -> None:
        super().__init__(f"history shard {shard} is not owned by this process", details={"shard": shard})
        self.shard = shard


class WorkflowNotArchivedError(OrchestratorError):
    """No archived history of that run in the namespace's archive (``orchestrator.archival``)."""

    code, http_status = "workflow_not_archived", 404
    default_hint = (
        "A run is archived when its namespace's retention ends; until then read it with "
        "`sagas workflow show` (without --archived). Check the workflow id, run id and namespace."
    )


class ArchivalNotEnabledError(OrchestratorError):
    """The namespace has no ``history_archival_uri``: nothing of it is archived."""

    code, http_status = "archival_not_enabled", 400
    default_hint = (
        "Set the namespace's history_archival_uri (PATCH /api/v1/namespaces/{ns}); runs closed "
        "afterwards are archived when their retention ends."
    )


class ConfigurationError(OrchestratorError):
    """The server's configuration is unsafe or inconsistent; raised at startup, never to API callers."""

    code, http_status = "invalid_configuration", 500


class RateLimitedError(OrchestratorError):
    """The namespace's request rate is over its limit; ``retry_after`` seconds until a token is free."""

    code, http_status = "rate_limited", 429
    default_hint = "Slow down and retry after the number of seconds in the Retry-After header."

    def __init__(self, message: str, *, retry_after: float, hint: str = "") -> None:
        super().__init__(message, hint=hint, details={"retry_after": retry_after})
        self.retry_after = retry_after


ERRORS_BY_CODE: dict[str, type[OrchestratorError]] = {
    cls.code: cls
    for cls in (
        OrchestratorError,
        InvalidArgumentError,
        PayloadTooLargeError,
        WorkflowNotFoundError,
        NamespaceNotFoundError,
        NamespaceAlreadyExistsError,
        UnauthenticatedError,
        PermissionDeniedError,
        WorkflowAlreadyStartedError,
        WorkflowNotRunningError,
        StaleTaskError,
        InvalidTaskTokenError,
        QueryFailedError,
        QueryTimeoutError,
        UpdateRejectedError,
        UnsupportedEventVersionError,
        UnavailableError,
        ConfigurationError,
        RateLimitedError,
        WorkflowNotArchivedError,
        ArchivalNotEnabledError,
    )
}
