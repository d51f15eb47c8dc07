"""TorchServe's API on the serving port, beside its inference routes (``/predictions/...`` and
``/explanations/...``, which the router sends to the request pipeline: serve/http/router.py):
``GET /api-description`` and ``OPTIONS /``, and TorchServe's error shape on its routes
(``{"code": 404, "type": "ModelNotFoundException", "message": "Model not found: x"}``).

A prediction is the same call as ``/invocations`` (codecs, batching, metrics); TorchServe's handlers
also get the URL's query parameters, and multipart or urlencoded form fields each as a key of their
request dict (handlers/torchserve.py). An explanation sets the ``explain`` request header to
``True``, which TorchServe's ``BaseHandler`` reads to call ``explain_handle``.
"""

from __future__ import annotations

from flask import Flask, Response, current_app, jsonify, request

from serve.http.openapi import api_description

PREFIXES = ("/predictions/", "/explanations/")


def add_description_routes(app: Flask) -> None:
    """``GET /api-description`` and ``OPTIONS /``: the API this port serves, as OpenAPI."""
    app.add_url_rule("/api-description", "api_description", _describe, methods=["GET"])
    app.add_url_rule("/", "api_options", _describe, methods=["OPTIONS"])


def _describe() -> Response:
    management = current_app.extensions["byoserve.error_shape"] == "torchserve"
    return jsonify(api_description("management" if management else "inference"))


def speaks_torchserve() -> bool:
    """Whether the current request's errors take TorchServe's shape: on its routes, and on the
    management API."""
    return bool(current_app.extensions.get("byoserve.error_shape")) or request.path.startswith(
        PREFIXES
    )
