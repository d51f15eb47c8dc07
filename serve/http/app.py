"""The Flask application: request ids, per-request metrics and logs, one error handler, and the
routes of each API (serve/http/sagemaker.py, serve/http/models.py, serve/http/torchserve.py) but
the invocations and /ping, which the router in front of it answers (serve/http/router.py)."""

from __future__ import annotations

import logging
import time

from flask import Flask, Response, current_app, g, request
from werkzeug.exceptions import HTTPException

from serve.config import ServingConfig
from serve.contract import INFERENCE_ID
from serve.errors import (
    MethodNotAllowedError,
    NotFoundError,
    PayloadTooLargeError,
    ServingError,
)
from serve.http import models, sagemaker, torchserve
from serve.http.context import config
from serve.http.errors import REQUEST_ID_HEADER, error_body, public_message, request_id
from serve.http.invocation import BodyRules, too_large_message
from serve.observe.logs import log_model
from serve.observe.observer import Observer
from serve.runtime.registry import ModelRegistry

logger = logging.getLogger(__name__)


def create_app(
    config: ServingConfig,
    registry: ModelRegistry,
    observer: Observer | None = None,
    body: BodyRules | None = None,
) -> Flask:
    """Build the app.

    Args:
        config: the serving configuration.
        registry: the worker's models; start it after fork (``registry.start()``).
        observer: receives per-request events (metrics); by default the registry's.
        body: how the HTTP engine hands over request bodies (by default, as werkzeug does).
    """
    app = base_app("byoserve", config, registry, observer, body=body)
    sagemaker.add_routes(app)
    models.add_routes(app, manage=config.multi_model)
    torchserve.add_description_routes(app)
    return app


def base_app(
    name: str,
    config: ServingConfig,
    registry: ModelRegistry,
    observer: Observer | None = None,
    error_shape: str = "",
    body: BodyRules | None = None,
) -> Flask:
    """A Flask app with what every API of the server shares: the registry and settings, request
    ids, per-request metrics and logs, the HTTP engine's body rules, and the error handlers
    (``error_shape="torchserve"``: every error in TorchServe's shape, as on its management
    API)."""
    app = Flask(name)
    app.extensions["byoserve.registry"] = registry
    app.extensions["byoserve.config"] = config
    app.extensions["byoserve.observer"] = observer or registry.observer
    app.extensions["byoserve.error_shape"] = error_shape
    app.extensions["byoserve.body"] = body or BodyRules()

    app.before_request(_assign_request_id)
    app.after_request(_finish_request)
    app.register_error_handler(ServingError, _serving_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected_error)
    return app


def _assign_request_id() -> None:
    g.started = time.monotonic()
    g.request_id = request_id(request.headers.get(INFERENCE_ID))
    g.error_code = None
    g.model = ""
    log_model("")


def _finish_request(response: Response) -> Response:
    response.headers[REQUEST_ID_HEADER] = g.get("request_id", "")
    route = request.url_rule.endpoint if request.url_rule is not None else "unmatched"
    seconds = time.monotonic() - g.get("started", time.monotonic())
    model = g.get("model", "")
    observer: Observer = current_app.extensions["byoserve.observer"]
    observer.request_done(route, response.status_code, seconds, g.get("error_code"), model)
    logger.debug(
        "%s %s -> %d in %.1f ms (request %s)",
        request.method,
        request.path,
        response.status_code,
        seconds * 1000,
        g.get("request_id"),
    )
    return response


def _error_response(status: int, code: str, message: str, headers: dict[str, str]) -> Response:
    g.error_code = code
    shape = torchserve.speaks_torchserve()
    body = error_body(status, code, message, g.get("request_id", ""), shape)
    response = Response(body, status=status, content_type="application/json")
    response.headers.update(headers)
    return response


def _serving_error(exc: ServingError) -> Response:
    message = public_message(exc, config().error_details)  # BYOSERVE_ERROR_DETAILS
    return _error_response(exc.status_code, exc.code, message, exc.headers)


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
        limit = config().max_request_size
        return _serving_error(PayloadTooLargeError(too_large_message(None, limit)))
    return _error_response(status, "http_error", exc.description or exc.name, {})


def _unexpected_error(exc: Exception) -> Response:
    logger.error("request %s: unexpected error", g.get("request_id", "-"), exc_info=exc)
    return _error_response(500, "internal_error", "internal server error", {})
