"""One exception hierarchy for the whole product.

Each error carries the HTTP status and the machine-readable code it maps to at the edge,
so functions never decide status codes themselves. Errors raised while handling an event
(Pub/Sub, fal webhook) are split the same way: `RetryableError` means "raise so the
transport redelivers", anything else means "record the failure and drop the event".
"""

from __future__ import annotations

from typing import Any


class ImageGenError(Exception):
    status = 500
    code = "internal"

    def __init__(self, message: str, *, code: str | None = None, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details

    def to_body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


class BadRequestError(ImageGenError):
    status = 400
    code = "bad_request"


class AuthenticationError(ImageGenError):
    status = 401
    code = "unauthenticated"


class PermissionDeniedError(ImageGenError):
    status = 403
    code = "forbidden"


class NotFoundError(ImageGenError):
    status = 404
    code = "not_found"


class MethodNotAllowedError(ImageGenError):
    status = 405
    code = "method_not_allowed"


class ConflictError(ImageGenError):
    status = 409
    code = "conflict"


class PayloadTooLargeError(ImageGenError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaTypeError(ImageGenError):
    status = 415
    code = "unsupported_media_type"


class ValidationError(ImageGenError):
    status = 422
    code = "validation_error"


class RateLimitedError(ImageGenError):
    """Over a per-user limit; `retry_after` seconds is when trying again can succeed."""

    status = 429
    code = "rate_limited"

    def __init__(
        self, message: str, *, retry_after: int, code: str | None = None, details: Any = None
    ) -> None:
        super().__init__(message, code=code, details=details)
        self.retry_after = max(1, retry_after)


class RetryableError(ImageGenError):
    """A transient failure: the caller (Pub/Sub, fal, Cloud Tasks) should deliver again."""

    status = 503
    code = "unavailable"


class UpstreamRejectedError(ImageGenError):
    """fal.ai refused the request for good (e.g. 422): retrying cannot help."""

    status = 502
    code = "upstream_rejected"
