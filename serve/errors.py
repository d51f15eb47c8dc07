"""The error hierarchy: each class carries what it is answered with.

Two roots: :class:`ServingError` for a request (its HTTP status and code), :class:`StartupError`
for what stops the server, or a command, before it serves (its exit status and the words its
one line starts with).
"""

from __future__ import annotations

import math
from typing import ClassVar

MAX_REASON = 200  # longest exception text repeated back to a client


def brief(exc: BaseException) -> str:
    """The first line of an exception's text, cut to a length that is safe to send to a client."""
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return text if len(text) <= MAX_REASON else text[:MAX_REASON] + "..."


class StartupError(Exception):
    """Base of every error that stops a start: a setting, the model directory or archive, the
    handler, an archive being built. The message names the file, flag or variable at fault and
    why, so that the command says it without a traceback.

    ``exit_code`` and ``reason`` live on the class, so that each command has a single handler: it
    prints ``<prog>: <reason>: <message>`` (:meth:`line`) and exits ``exit_code``. Subclasses
    change them (ConfigError: ``configuration error``, 2). Once ``serve`` has read its settings,
    whatever stops it is said with this class's reason and status, a ConfigError too: an address
    in use is found only then.
    """

    exit_code: ClassVar[int] = 1
    reason: ClassVar[str] = "cannot start"

    def line(self) -> str:
        """``<reason>: <message>``, the words a command prints after its name."""
        return f"{self.reason}: {self}"


class ServingError(Exception):
    """Base of every error the server answers on purpose.

    The message is sent to the caller, so it must be short and safe: never a traceback.
    """

    status_code: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}
        self.fields: dict[str, object] = {}  # more members of the JSON error object


class BadRequestError(ServingError):
    """The payload could not be decoded (malformed JSON, CSV, image, array...)."""

    status_code = 400
    code = "bad_request"


class ForbiddenError(ServingError):
    """The connection is refused by policy (a proxy header or TLS handshake gunicorn rejects)."""

    status_code = 403
    code = "forbidden"


class NotFoundError(ServingError):
    status_code = 404
    code = "not_found"


class ModelNotFoundError(NotFoundError):
    """No model of that name is loaded (or, for a load, its url does not exist)."""

    code = "model_not_found"


class ModelVersionNotFoundError(ModelNotFoundError):
    """The model is loaded, but not at the version asked for."""

    code = "model_version_not_found"


class MethodNotAllowedError(ServingError):
    status_code = 405
    code = "method_not_allowed"


class NotAcceptableError(ServingError):
    """No response type the server can produce matches the Accept header."""

    status_code = 406
    code = "not_acceptable"


class ConflictError(ServingError):
    """A model of that name is already loaded or being loaded."""

    status_code = 409
    code = "conflict"


class LengthRequiredError(ServingError):
    """A body without a Content-Length where the server cannot tell a complete one (411)."""

    status_code = 411
    code = "length_required"


class PayloadTooLargeError(ServingError):
    status_code = 413
    code = "payload_too_large"


class UriTooLongError(ServingError):
    """The request line is longer than the server reads."""

    status_code = 414
    code = "uri_too_long"


class UnsupportedMediaTypeError(ServingError):
    """The request's Content-Type has no decoder."""

    status_code = 415
    code = "unsupported_media_type"


class ExpectationFailedError(ServingError):
    """An ``Expect`` header other than ``100-continue``."""

    status_code = 417
    code = "expectation_failed"


class UnprocessableError(ServingError):
    """The payload decoded but the model cannot use it (wrong shape, wrong fields)."""

    status_code = 422
    code = "unprocessable"


class HeaderFieldsTooLargeError(ServingError):
    """Too many request headers, or one longer than the server reads."""

    status_code = 431
    code = "header_fields_too_large"


class ModelError(ServingError):
    """User code raised: the caller sees the exception's message, the log its traceback."""

    status_code = 500
    code = "model_error"


class ModelLoadError(ServingError):
    """A model failed to load; the message says why (the traceback goes to the log)."""

    status_code = 500
    code = "model_load_failed"


class UnsupportedTransferCodingError(ServingError):
    """A ``Transfer-Encoding`` the server does not implement (RFC 9112 section 6.1: 501)."""

    status_code = 501
    code = "not_implemented"


class NotReadyError(ServingError):
    status_code = 503
    code = "not_ready"


class OverloadedError(ServingError):
    """The model's queue in this worker cannot take the request: the wait ahead of it does not
    fit its timeout, or the queue's hard bound is reached. ``retry_after`` (seconds) is when it
    would be taken, the load being as now: sent as ``Retry-After`` (HTTP's whole seconds, rounded
    up, at least 1), ``Retry-After-Ms`` and the JSON error's ``retry_after_ms`` (milliseconds,
    rounded up, at least 1)."""

    status_code = 503
    code = "overloaded"

    def __init__(self, message: str, retry_after: float) -> None:
        milliseconds = max(1, math.ceil(retry_after * 1000))
        seconds = max(1, math.ceil(milliseconds / 1000))
        headers = {"Retry-After": str(seconds), "Retry-After-Ms": str(milliseconds)}
        super().__init__(message, headers=headers)
        self.retry_after = retry_after
        self.fields = {"retry_after_ms": milliseconds}


class InferenceTimeoutError(ServingError):
    status_code = 504
    code = "timeout"


class ShuttingDownError(ServingError):
    """The server is stopping: what a stream still open at the end of the graceful timeout
    ends with."""

    status_code = 503
    code = "shutting_down"


class InsufficientStorageError(ServingError):
    """A model does not fit: memory (or disk) is short, or a configured budget is reached.
    SageMaker answers it by unloading models it has not used lately and loading again."""

    status_code = 507
    code = "insufficient_storage"
