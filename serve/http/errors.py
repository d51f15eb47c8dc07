"""What every answer of the HTTP layer shares, written once: the request id a client gets back,
and the JSON body of an error, in SageMaker's shape or in TorchServe's.

The request pipeline (serve/http/invocation.py), the Flask app's error handlers (serve/http/app.py)
and the HTTP engine's own refusals of what never reaches the app (serve/process/worker.py) all
answer with these, so an error reads the same byte for byte wherever it was met.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

from serve.errors import ModelError, ServingError

REQUEST_ID_HEADER = "X-Request-Id"
MAX_INFERENCE_ID = 64
MASKED_MODEL_ERROR = "the model failed on this request; the server log has the details"

# Our error codes as TorchServe names its exceptions; others are InternalServerException (5xx)
# or BadRequestException.
TORCHSERVE_TYPES = {
    "bad_request": "BadRequestException",
    "model_not_found": "ModelNotFoundException",
    "model_version_not_found": "ModelVersionNotFoundException",
    "not_found": "ResourceNotFoundException",
    "method_not_allowed": "MethodNotAllowedException",
    "forbidden": "ForbiddenException",
    "conflict": "ConflictStatusException",
    "payload_too_large": "RequestEntityTooLargeException",
    "unsupported_media_type": "BadRequestException",
    "overloaded": "ServiceUnavailableException",
    "not_ready": "ServiceUnavailableException",
    "timeout": "RequestTimeoutException",
    "insufficient_storage": "InsufficientStorageException",
}


def request_id(given: str | None) -> str:
    """The client's ``X-Amzn-SageMaker-Inference-Id`` when it can go back in a header as it is
    (1 to 64 printable ASCII characters), else a new random id."""
    given = (given or "").strip()
    if 0 < len(given) <= MAX_INFERENCE_ID and given.isascii() and given.isprintable():
        return given
    return os.urandom(16).hex()


def public_message(exc: ServingError, error_details: bool) -> str:
    """What the client is told of ``exc``: its message, or for a failure of the model's own code
    with ``BYOSERVE_ERROR_DETAILS=false``, only that it failed."""
    if exc.code == ModelError.code and not error_details:
        return MASKED_MODEL_ERROR
    return exc.message


def error_body(
    status: int,
    code: str,
    message: str,
    request_id: str,
    torchserve: bool = False,
    fields: Mapping[str, object] | None = None,
) -> bytes:
    """The JSON body of an error: ``{"error": {"code", "message", "request_id"}}``, or with
    ``torchserve`` as TorchServe answers (``{"code": 404, "type": "ModelNotFoundException",
    "message": ...}``); ``fields`` (an error's own, e.g. ``retry_after_ms``) go beside them."""
    body: dict[str, object]
    if torchserve:
        kind = TORCHSERVE_TYPES.get(code) or (
            "InternalServerException" if status >= 500 else "BadRequestException"
        )
        body = {"code": status, "type": kind, "message": message, **(fields or {})}
    else:
        body = {"error": {"code": code, "message": message, "request_id": request_id,
                          **(fields or {})}}  # fmt: skip
    return (json.dumps(body, separators=(",", ":"), sort_keys=True) + "\n").encode()
