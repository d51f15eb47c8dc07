"""The two routes every request of a busy endpoint takes, ``POST /invocations`` and ``GET /ping``,
answered in plain WSGI; everything else goes to the Flask app.

Flask's per-request machinery (the request and app contexts, routing, the ``request``/``g`` proxies,
``before``/``after`` hooks, the response object) cost about 150 us of a core per request here, as
much as a small model's forward. This path does what those routes do, in the same order and with
the same answers: the request id (``X-Amzn-SageMaker-Inference-Id``, else a random one, returned
as ``X-Request-Id``), the size check before the body is read, the TargetModel, the custom
attributes bound, Accept's default, the hand-off to the model's runtime, errors as the same JSON
with the same statuses and headers, the per-request metrics and the debug log line. Requests it
does not take (a query string, a chunked body, any other route or method) go to the Flask app
unchanged, and so does every error of the HTTP layer itself.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any

from serve.config import ServingConfig
from serve.contract import CUSTOM_ATTRIBUTES, INFERENCE_ID, Headers
from serve.errors import BadRequestError, ModelError, PayloadTooLargeError, ServingError, brief
from serve.http.app import MAX_INFERENCE_ID
from serve.http.context import too_large_message
from serve.http.invocation import Answer, admit, answer
from serve.http.sagemaker import HEALTHY, UNHEALTHY
from serve.observe.logs import log_model
from serve.observe.observer import Observer
from serve.runtime.inference import ModelRuntime
from serve.runtime.registry import ModelRegistry

logger = logging.getLogger("serve.http.app")  # the same logger as the Flask path's lines

JSON = "application/json"
_INFERENCE_ID_KEY = "HTTP_" + INFERENCE_ID.upper().replace("-", "_")
_ATTRIBUTES_KEY = "HTTP_" + CUSTOM_ATTRIBUTES.upper().replace("-", "_")
_TARGET_KEY = "HTTP_X_AMZN_SAGEMAKER_TARGET_MODEL"
_STATUS = {status.value: f"{status.value} {status.phrase}" for status in HTTPStatus}

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
StartResponse = Callable[..., Any]


def _header_pairs(environ: dict[str, Any]) -> Iterable[tuple[str, str]]:
    """The request headers from the WSGI environ, as werkzeug names them; read only when a
    handler looks (Headers reads its source lazily)."""
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            yield key[5:].replace("_", "-").title(), value
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH") and value:
            yield key.replace("_", "-").title(), value


class FastPath:
    """WSGI middleware in front of the Flask app for ``POST /invocations`` and ``GET /ping``."""

    def __init__(
        self, app: WSGIApp, registry: ModelRegistry, config: ServingConfig, observer: Observer
    ) -> None:
        self.app = app
        self.registry = registry
        self.config = config
        self.observer = observer
        self.unhealthy = 500 if config.dialect == "torchserve" else 503

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO")
        method = environ.get("REQUEST_METHOD")
        if path == "/invocations" and method in ("POST", "PUT") and self._plain(environ):
            return self._invocations(environ, start_response)
        if path == "/ping" and method == "GET" and not environ.get("QUERY_STRING"):
            return self._ping(start_response)
        return self.app(environ, start_response)

    @staticmethod
    def _plain(environ: dict[str, Any]) -> bool:
        """A request with a Content-Length and no query string (else: the Flask path)."""
        return bool(environ.get("CONTENT_LENGTH")) and not environ.get("QUERY_STRING")

    def _ping(self, start_response: StartResponse) -> Iterable[bytes]:
        started = time.monotonic()
        ready = self.registry.ready
        status = 200 if ready else self.unhealthy
        body = HEALTHY if ready else UNHEALTHY
        request_id = os.urandom(16).hex()
        self._respond(start_response, status, body, JSON, request_id, {})
        self.observer.request_done("ping", status, time.monotonic() - started, None, "")
        return [body]

    def _invocations(
        self, environ: dict[str, Any], start_response: StartResponse
    ) -> Iterable[bytes]:
        started = time.monotonic()
        given = environ.get(_INFERENCE_ID_KEY, "").strip()
        request_id = given if 0 < len(given) <= MAX_INFERENCE_ID else os.urandom(16).hex()
        log_model("")
        model = ""
        error: str | None = None
        try:
            length = self._length(environ)
            runtime = self.registry.route(environ.get(_TARGET_KEY) or None)
            model = runtime.name
            log_model(model)
            status, body, content_type, headers = self._invoke(environ, runtime, length, request_id)
        except ServingError as exc:
            status, body, content_type, headers = self._error(exc, request_id)
            error = exc.code
        except Exception as exc:
            logger.error("request %s: unexpected error", request_id, exc_info=exc)
            error = "internal_error"
            body = _error_body(error, "internal server error", request_id)
            status, content_type, headers = 500, JSON, {}
        self._respond(start_response, status, body, content_type, request_id, headers)
        seconds = time.monotonic() - started
        self.observer.request_done("invocations", status, seconds, error, model)
        if logger.isEnabledFor(logging.DEBUG):
            method, path = environ.get("REQUEST_METHOD"), environ.get("PATH_INFO")
            elapsed_ms = seconds * 1000
            logger.debug("%s %s -> %d in %.1f ms (request %s)", method, path, status, elapsed_ms,
                         request_id)  # fmt: skip
        return [body]

    def _length(self, environ: dict[str, Any]) -> int:
        """The Content-Length, refused (413) before anything else when over the limit."""
        limit = self.config.max_request_size
        try:
            length = int(environ["CONTENT_LENGTH"])
        except ValueError as exc:
            raise BadRequestError("Content-Length is not a number") from exc
        if length > limit:
            raise PayloadTooLargeError(too_large_message(length, limit))
        return length

    def _invoke(
        self, environ: dict[str, Any], runtime: ModelRuntime, length: int, request_id: str
    ) -> Answer:
        attributes = environ.get(_ATTRIBUTES_KEY)
        accept = admit(runtime, self.config, attributes, environ.get("HTTP_ACCEPT", ""))
        return answer(
            runtime,
            _read(environ, length, request_id),
            environ.get("CONTENT_TYPE", ""),
            accept,
            Headers(_header_pairs(environ)),
            request_id,
        )

    def _error(self, exc: ServingError, request_id: str) -> Answer:
        message = exc.message
        if exc.code == ModelError.code and not self.config.error_details:
            message = "the model failed on this request; the server log has the details"
        return exc.status_code, _error_body(exc.code, message, request_id), JSON, exc.headers

    @staticmethod
    def _respond(
        start_response: StartResponse,
        status: int,
        body: bytes,
        content_type: str,
        request_id: str,
        headers: dict[str, str],
    ) -> None:
        pairs = [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            *headers.items(),
            ("X-Request-Id", request_id),
        ]
        start_response(_STATUS.get(status) or f"{status} Unknown", pairs)


def _read(environ: dict[str, Any], length: int, request_id: str) -> bytes:
    """The body, ``length`` bytes; the client's framing errors and a body cut short are 400s,
    logged as the client's mistake (as serve/http/sagemaker.py's read_body does)."""
    from gunicorn.http.errors import ParseException

    try:
        body: bytes = environ["wsgi.input"].read(length)
    except ParseException as exc:
        logger.warning("request %s: malformed request body: %s", request_id, brief(exc))
        raise BadRequestError(f"malformed request body: {brief(exc)}") from exc
    except OSError as exc:
        logger.info("request %s: request body cut short (%s)", request_id, type(exc).__name__)
        raise BadRequestError("the request body was cut short") from exc
    if len(body) < length:
        detail = f"{len(body)} of {length} bytes"
        logger.info("request %s: request body cut short (%s)", request_id, detail)
        raise BadRequestError("the request body was cut short")
    return body


def _error_body(code: str, message: str, request_id: str) -> bytes:
    error = {"error": {"code": code, "message": message, "request_id": request_id}}
    return (json.dumps(error, separators=(",", ":"), sort_keys=True) + "\n").encode()
