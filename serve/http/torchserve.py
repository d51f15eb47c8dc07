"""TorchServe's inference API on the serving port: ``/predictions/{model}[/{version}]`` and
``/explanations/...`` with any method and any (or no) Content-Type (``curl -T file`` sends PUT),
``GET /api-description`` and ``OPTIONS /``, and TorchServe's error shape on these routes
(``{"code": 404, "type": "ModelNotFoundException", "message": "Model not found: x"}``).

A prediction is the same call as ``/invocations`` (codecs, batching, metrics); TorchServe's handlers
also get the URL's query parameters, and multipart or urlencoded form fields each as a key of their
request dict (handlers/torchserve.py). An explanation sets the ``explain`` request header to
``True``, which TorchServe's ``BaseHandler`` reads to call ``explain_handle``.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, current_app, jsonify, request

from serve.http.context import config, registry
from serve.http.openapi import api_description
from serve.http.sagemaker import checked_length, invoke

METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH"]
PREFIXES = ("/predictions/", "/explanations/")

# Our error codes as TorchServe names its exceptions; others are InternalServerException (5xx)
# or BadRequestException.
TYPES = {
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


def add_routes(app: Flask) -> None:
    for prefix, explain in (("/predictions", False), ("/explanations", True)):
        endpoint = prefix.strip("/")
        view = _explain if explain else _predict
        app.add_url_rule(f"{prefix}/<model>", endpoint, view, methods=METHODS)
        app.add_url_rule(
            f"{prefix}/<model>/<version>", f"{endpoint}_version", view, methods=METHODS
        )
    add_description_routes(app)


def add_description_routes(app: Flask) -> None:
    """``GET /api-description`` and ``OPTIONS /``: the API this port serves, as OpenAPI."""
    app.add_url_rule("/api-description", "api_description", _describe, methods=["GET"])
    app.add_url_rule("/", "api_options", _describe, methods=["OPTIONS"])


def _predict(model: str, version: str | None = None) -> Response:
    return _answer(model, version, explain=False)


def _explain(model: str, version: str | None = None) -> Response:
    return _answer(model, version, explain=True)


def _answer(model: str, version: str | None, explain: bool) -> Response:
    settings = config()
    length = checked_length(settings)
    runtime = registry().version(model, version)
    parameters = tuple(request.args.items(multi=True)) if request.query_string else ()
    headers = (("explain", "True"),) if explain else ()
    return invoke(runtime, settings, length, parameters, headers)


def _describe() -> Response:
    management = current_app.extensions["byoserve.error_shape"] == "torchserve"
    return jsonify(api_description("management" if management else "inference"))


def speaks_torchserve() -> bool:
    """Whether the current request's errors take TorchServe's shape: on its routes, and on the
    management API."""
    return bool(current_app.extensions.get("byoserve.error_shape")) or request.path.startswith(
        PREFIXES
    )


def error_body(status: int, code: str, message: str) -> dict[str, Any]:
    """An error as TorchServe answers it."""
    kind = TYPES.get(code) or (
        "InternalServerException" if status >= 500 else "BadRequestException"
    )
    return {"code": status, "type": kind, "message": message}
