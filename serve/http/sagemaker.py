"""The SageMaker container routes: /ping, /invocations (and the runtime API's
/endpoints/{name}/invocations, so boto3 with ``endpoint_url`` works locally), the batch transform
parameters, and /metrics."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, current_app, g, jsonify, request
from gunicorn.http.errors import ParseException
from werkzeug.datastructures import EnvironHeaders
from werkzeug.exceptions import ClientDisconnected

from serve.config import ServingConfig
from serve.contract import CUSTOM_ATTRIBUTES, Headers
from serve.errors import (
    BadRequestError,
    LengthRequiredError,
    NotFoundError,
    PayloadTooLargeError,
    brief,
)
from serve.http.context import config, registry, too_large_message
from serve.http.invocation import admit, answer
from serve.observe.logs import log_model
from serve.observe.observer import Observer
from serve.runtime.inference import ModelRuntime

logger = logging.getLogger(__name__)

READ_CHUNK = 256 * 1024
GRANIAN_CHUNKED = (
    "send the body with a Content-Length: BYOSERVE_HTTP_ENGINE=granian cannot tell a complete "
    "chunked body from one cut short (BYOSERVE_HTTP_ENGINE=gunicorn can)"
)
TARGET_MODEL = "HTTP_X_AMZN_SAGEMAKER_TARGET_MODEL"  # X-Amzn-SageMaker-Target-Model, in the environ


def add_routes(app: Flask) -> None:
    app.add_url_rule("/ping", "ping", _ping, methods=["GET"])
    app.add_url_rule("/invocations", "invocations", _invocations, methods=["POST", "PUT"])
    app.add_url_rule(
        "/endpoints/<endpoint_name>/invocations",
        "endpoint_invocations",
        _invocations,
        methods=["POST", "PUT"],
    )
    app.add_url_rule("/execution-parameters", "execution_parameters", _execution_parameters)
    app.add_url_rule("/metrics", "metrics", metrics_view, methods=["GET"])


HEALTHY = b'{"status": "Healthy"}\n'
UNHEALTHY = b'{"status": "Unhealthy"}\n'


def _ping() -> Response:
    """200 once this worker has loaded the models it started with, 503 before (500 in
    TorchServe's dialect, as TorchServe answers); with TorchServe's body; does no work."""
    if registry().ready:
        return Response(HEALTHY, status=200, content_type="application/json")
    status = 500 if config().dialect == "torchserve" else 503
    return Response(UNHEALTHY, status=status, content_type="application/json")


def _invocations(endpoint_name: str | None = None) -> Response:
    """The model the TargetModel header names (or TorchServe's ``?model_name=``), else the only
    one."""
    settings = config()
    length = checked_length(settings)
    target = request.environ.get(TARGET_MODEL) or None
    if target is None and request.environ.get("QUERY_STRING"):
        named = request.args.get("model_name")
        if named:
            return invoke(registry().version(named), settings, length)
    return invoke(registry().route(target), settings, length)


def checked_length(settings: ServingConfig) -> int | None:
    """The request's Content-Length, refused (413) before anything else when over the limit."""
    length = request.content_length
    if length is not None and length > settings.max_request_size:
        raise PayloadTooLargeError(too_large_message(length, settings.max_request_size))
    return length


def invoke(
    runtime: ModelRuntime,
    settings: ServingConfig,
    length: int | None,
    parameters: tuple[tuple[str, str], ...] = (),
    extra_headers: tuple[tuple[str, str], ...] = (),
) -> Response:
    """Answer the current request with ``runtime``'s model (``length``: see checked_length;
    ``parameters`` and ``extra_headers``: TorchServe's query parameters and its ``explain``)."""
    g.model = runtime.name
    log_model(runtime.name)
    accept = admit(
        runtime, settings, request.headers.get(CUSTOM_ATTRIBUTES), request.headers.get("Accept", "")
    )
    status, body, content_type, headers = answer(
        runtime,
        read_body(length, settings.max_request_size),
        request.headers.get("Content-Type", ""),
        accept,
        # a snapshot, read by the handler only if it looks at a header
        Headers(
            [*EnvironHeaders(dict(request.environ)).items(), *extra_headers]
            if extra_headers
            else EnvironHeaders(dict(request.environ)).items()
        ),
        g.request_id,
        parameters,
    )
    response = Response(body, status=status, content_type=content_type)
    for name, value in headers.items():
        response.headers[name] = value
    return response


def read_body(length: int | None, limit: int) -> bytes:
    """Read at most ``limit`` bytes; a chunked body that runs past it is refused, not truncated.

    gunicorn parses a chunked body while it is read, so its framing errors (a bad chunk size, a
    missing terminator) and a client gone mid-body surface here: both are the client's, a 400.
    granian ends such a body without a word (its WSGI input reads a framing error as the end of
    the body), so there a chunked body is refused (411): a truncated input is never predicted on.
    """
    if length is None and _granian_chunked(request.environ):
        logger.info("request %s: a chunked body, refused on granian", g.request_id)
        raise LengthRequiredError(GRANIAN_CHUNKED)
    try:
        body = _read_stream(length, limit)
    except ParseException as exc:
        logger.warning("request %s: malformed request body: %s", g.request_id, brief(exc))
        raise BadRequestError(f"malformed request body: {brief(exc)}") from exc
    except (OSError, ClientDisconnected) as exc:  # gunicorn's NoMoreData is an OSError
        raise _cut_short(type(exc).__name__) from exc
    if length is not None and len(body) < length:  # gunicorn ends a short body without a word
        raise _cut_short(f"{len(body)} of {length} bytes")
    return body


def _granian_chunked(environ: dict[str, Any]) -> bool:
    chunked = bool(environ.get("HTTP_TRANSFER_ENCODING"))
    return chunked and environ.get("SERVER_SOFTWARE") == "Granian"


def _cut_short(detail: str) -> BadRequestError:
    logger.info("request %s: request body cut short (%s)", g.request_id, detail)
    return BadRequestError("the request body was cut short")


def _read_stream(length: int | None, limit: int) -> bytes:
    stream = request.stream
    if length is not None:  # Content-Length (already checked against the limit) bounds the stream
        return stream.read()
    chunks: list[bytes] = []
    size = 0
    while chunk := stream.read(READ_CHUNK):
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(too_large_message(None, limit))
        chunks.append(chunk)
    return b"".join(chunks)


def _execution_parameters() -> Response:
    settings = config()
    params: dict[str, Any] = {
        "MaxConcurrentTransforms": settings.max_concurrent_transforms or settings.workers,
        "BatchStrategy": settings.batch_strategy,
        "MaxPayloadInMB": settings.max_payload_in_mb,
    }
    only = registry().default
    handler_params = getattr(only.handler, "execution_parameters", None) if only else None
    if callable(handler_params):
        params.update(handler_params())
    return jsonify(params)


def metrics_view() -> Response:
    """Prometheus text format for the whole server; reads files, never waits for a model."""
    observer: Observer = current_app.extensions["byoserve.observer"]
    exposition = observer.exposition()
    if exposition is None:
        raise NotFoundError("metrics are off (BYOSERVE_METRICS=false)")
    body, content_type = exposition
    return Response(body, status=200, content_type=content_type)
