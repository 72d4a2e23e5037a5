"""One exception hierarchy for the whole service.

Every error carries a stable machine-readable ``code`` and ``details`` so that the HTTP layer can
map it once to RFC 9457 problem details and the CLI can print it. Messages never contain personal
data (names, ID numbers): only keys, codes and ids.
"""

from __future__ import annotations

from typing import Any


class RehabflowError(Exception):
    """Base of every error raised on purpose by rehabflow."""

    code = "error"
    status = 500

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, **self.details}


class DomainError(RehabflowError):
    """The request breaks a rule of the process; nothing was changed."""

    code = "domain_error"
    status = 422


class InfrastructureError(RehabflowError):
    """Something outside the domain failed (database, storage, queue)."""

    code = "infrastructure_error"
    status = 503


class DefinitionError(RehabflowError):
    """A case definition file is invalid; ``details['errors']`` lists every problem."""

    code = "invalid_definition"
    status = 500


class UnknownDefinition(DomainError):
    code = "unknown_definition"
    status = 404


class NotFound(DomainError):
    code = "not_found"
    status = 404


class CaseNotFound(NotFound):
    code = "case_not_found"


class DocumentNotFound(NotFound):
    code = "document_not_found"


class OutOfJurisdiction(NotFound):
    """The actor's agency does not cover the case's unit.

    Deliberately a ``NotFound`` (404): a case outside one's jurisdiction must not be revealed.
    """

    code = "case_not_found"


class NotPermitted(DomainError):
    """The actor's agency type or role may not do this (HTTP 403)."""

    code = "not_permitted"
    status = 403


class TransitionNotAvailable(DomainError):
    """The transition does not leave from the case's current state (HTTP 409)."""

    code = "transition_not_available"
    status = 409


class ValidationFailed(DomainError):
    """Form data or subject data is invalid; ``details['errors']`` maps field -> messages."""

    code = "validation_failed"
    status = 422


class MissingDocuments(DomainError):
    """Required documents are not attached (or were revoked)."""

    code = "missing_documents"
    status = 422


class GuardFailed(DomainError):
    """A declarative guard of the definition refuses; ``details['unmet_guards']`` says which."""

    code = "guard_failed"
    status = 422


class TransitionRefused(DomainError):
    """Several reasons at once (documents, fields, guards); each listed in details."""

    code = "transition_refused"
    status = 422


class StaleCase(DomainError):
    """The case changed since the caller read it (optimistic concurrency)."""

    code = "stale_case"
    status = 409


class PreconditionFailed(StaleCase):
    """The caller's expected version (If-Match) is not the current one (HTTP 412)."""

    code = "precondition_failed"
    status = 412


class IdempotencyConflict(DomainError):
    """The idempotency key was used before with a different payload."""

    code = "idempotency_conflict"
    status = 422


class InvalidDocument(DomainError):
    """An uploaded document is refused (type, size, content)."""

    code = "invalid_document"
    status = 422


class AuditChainBroken(RehabflowError):
    code = "audit_chain_broken"
    status = 500
