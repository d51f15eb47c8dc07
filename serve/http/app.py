"""The Flask application: the SageMaker routes, request ids, size limits, and one error handler."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from flask import Flask, Response, current_app, g, jsonify, request
from werkzeug.datastructures import EnvironHeaders
from werkzeug.exceptions import HTTPException

from handlers.contract import CUSTOM_ATTRIBUTES, INFERENCE_ID, Headers, InferenceRequest
from serve.config import ServingConfig
from serve.errors import (
    BadRequestError,
    MethodNotAllowedError,
    NotFoundError,
    PayloadTooLargeError,
    ServingError,
)
from serve.runtime.inference import ModelRuntime

logger = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-Id"
DEFAULT_CONTENT_TYPE = "application/octet-stream"
MAX_CUSTOM_ATTRIBUTES = 1024
MAX_INFERENCE_ID = 64
READ_CHUNK = 256 * 1024
_HOP_BY_HOP = frozenset({"content-length", "transfer-encoding", "connection", "content-type"})


def create_app(config: ServingConfig, runtime: ModelRuntime) -> Flask:
    """Build the app for one model.

    Args:
        config: the serving configuration.
        runtime: the worker's model runtime; start it after fork (``runtime.start()``).
    """
    app = Flask("byoserve")
    app.extensions["byoserve.runtime"] = runtime
    app.extensions["byoserve.config"] = config

    app.before_request(_assign_request_id)
    app.after_request(_finish_request)
    app.register_error_handler(ServingError, _serving_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected_error)

    app.add_url_rule("/ping", "ping", _ping, methods=["GET"])
    app.add_url_rule("/invocations", "invocations", _invoke, methods=["POST"])
    app.add_url_rule(
        "/endpoints/<endpoint_name>/invocations", "endpoint_invocations", _invoke, methods=["POST"]
    )
    app.add_url_rule("/execution-parameters", "execution_parameters", _execution_parameters)
    app.add_url_rule("/metrics", "metrics", _metrics, methods=["GET"])
    return app


def _runtime() -> ModelRuntime:
    runtime: ModelRuntime = current_app.extensions["byoserve.runtime"]
    return runtime


def _config() -> ServingConfig:
    config: ServingConfig = current_app.extensions["byoserve.config"]
    return config


def _assign_request_id() -> None:
    g.started = time.monotonic()
    given = request.headers.get(INFERENCE_ID, "").strip()
    g.request_id = given if 0 < len(given) <= MAX_INFERENCE_ID else os.urandom(16).hex()
    g.error_code = None


def _finish_request(response: Response) -> Response:
    response.headers[REQUEST_ID_HEADER] = g.get("request_id", "")
    route = request.url_rule.endpoint if request.url_rule is not None else "unmatched"
    seconds = time.monotonic() - g.get("started", time.monotonic())
    _runtime().observer.request_done(route, response.status_code, seconds, g.get("error_code"))
    logger.debug(
        "%s %s -> %d in %.1f ms (request %s)",
        request.method,
        request.path,
        response.status_code,
        seconds * 1000,
        g.get("request_id"),
    )
    return response


def _ping() -> Response:
    """200 once this worker's model is loaded, 503 before; never does any work."""
    if _runtime().ready:
        return Response(status=200)
    return Response(status=503)


def _invoke(endpoint_name: str | None = None) -> Response:
    config = _config()
    runtime = _runtime()
    length = request.content_length
    if length is not None and length > config.max_request_size:
        raise PayloadTooLargeError(_too_large_message(length, config.max_request_size))
    runtime.ensure_ready()
    attributes = request.headers.get(CUSTOM_ATTRIBUTES)
    if attributes is not None and len(attributes) > MAX_CUSTOM_ATTRIBUTES:
        raise BadRequestError(f"{CUSTOM_ATTRIBUTES} is longer than {MAX_CUSTOM_ATTRIBUTES} chars")
    accept = request.headers.get("Accept", "").strip()
    if accept in ("", "*/*"):
        accept = config.default_accept
    inference = InferenceRequest(
        body=_read_body(length, config.max_request_size),
        content_type=request.headers.get("Content-Type", "").strip() or DEFAULT_CONTENT_TYPE,
        accept=accept,
        # a snapshot, read by the handler only if it looks at a header
        headers=Headers(EnvironHeaders(dict(request.environ)).items()),
        request_id=g.request_id,
    )
    answer = runtime.submit(inference)
    response = Response(answer.body_bytes(), status=answer.status, content_type=answer.content_type)
    for name, value in answer.headers.items():
        if name.lower() not in _HOP_BY_HOP:
            response.headers[name] = value
    return response


def _read_body(length: int | None, limit: int) -> bytes:
    """Read at most ``limit`` bytes; a chunked body that runs past it is refused, not truncated."""
    stream = request.stream
    if length is not None:  # Content-Length (already checked against the limit) bounds the stream
        return stream.read()
    chunks: list[bytes] = []
    size = 0
    while chunk := stream.read(READ_CHUNK):
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(_too_large_message(None, limit))
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large_message(length: int | None, limit: int) -> str:
    size = f"{length} bytes" if length is not None else "the request body"
    return f"{size} is over the {limit}-byte limit (set SAGEMAKER_MAX_REQUEST_SIZE to raise it)"


def _execution_parameters() -> Response:
    config = _config()
    params: dict[str, Any] = {
        "MaxConcurrentTransforms": config.max_concurrent_transforms or config.workers,
        "BatchStrategy": config.batch_strategy,
        "MaxPayloadInMB": config.max_payload_in_mb,
    }
    handler_params = getattr(_runtime().handler, "execution_parameters", None)
    if callable(handler_params):
        params.update(handler_params())
    return jsonify(params)


def _metrics() -> Response:
    """Prometheus text format for the whole server; reads files, never waits for the model."""
    exposition = _runtime().observer.exposition()
    if exposition is None:
        raise NotFoundError("metrics are off (BYOSERVE_METRICS=false)")
    body, content_type = exposition
    return Response(body, status=200, content_type=content_type)


def _error_response(status: int, code: str, message: str, headers: dict[str, str]) -> Response:
    g.error_code = code
    body = {"error": {"code": code, "message": message, "request_id": g.get("request_id", "")}}
    response = jsonify(body)
    response.status_code = status
    response.headers.update(headers)
    return response


def _serving_error(exc: ServingError) -> Response:
    return _error_response(exc.status_code, exc.code, exc.message, exc.headers)


def _http_error(exc: HTTPException) -> Response:
    status = exc.code or 500
    if status == 404:
        return _serving_error(NotFoundError(f"no route for {request.method} {request.path}"))
    if status == 405:
        allowed = exc.get_headers()
        error = MethodNotAllowedError(f"{request.method} is not allowed on {request.path}")
        response = _serving_error(error)
        response.headers.update({k: v for k, v in allowed if k.lower() == "allow"})
        return response
    if status == 413:
        return _serving_error(
            PayloadTooLargeError(_too_large_message(None, _config().max_request_size))
        )
    return _error_response(status, "http_error", exc.description or exc.name, {})


def _unexpected_error(exc: Exception) -> Response:
    logger.error("request %s: unexpected error", g.get("request_id", "-"), exc_info=exc)
    return _error_response(500, "internal_error", "internal server error", {})
