"""The serving port's front door: every invocation route goes to the request pipeline
(serve/http/invocation.py), ``/ping`` is answered here, and everything else goes to the Flask app
(the model list, the management routes, ``/metrics``, ``/execution-parameters``, the API
description).

Invocations and health checks are nearly all of a busy endpoint's requests. Flask's per-request
machinery (the request and app contexts, routing, the ``request``/``g`` proxies, the hooks, the
response object) cost about 150 us of a core per request here, as much as a small model's
forward, so these routes are matched by hand, in plain WSGI: a path compared with a few prefixes.

The routes it takes, and how each picks its model:

- ``/invocations`` and ``/endpoints/{name}/invocations`` (POST, PUT): the
  ``X-Amzn-SageMaker-Target-Model`` header's, else TorchServe's ``?model_name=``, else the only one;
- ``/endpoints/{name}/invocations-response-stream`` (POST): as ``/invocations``, answered as the
  SageMaker runtime answers boto3's ``invoke_endpoint_with_response_stream`` (an event stream,
  serve/http/eventstream.py; errors as its ``ModelError``);
- ``/models/{name}/invoke`` (POST): ``name``;
- ``/predictions/{model}[/{version}[/{more...}]]`` and ``/explanations/...`` (GET, HEAD, POST,
  PUT, DELETE, PATCH): ``model`` at ``version``, with errors in TorchServe's shape; the handler
  gets TorchServe's ``url_path`` header (the path after the version, ``v1/chat/completions``;
  its vLLM handler routes on it) and ``explain`` (``True`` or ``False``);
- ``/ping`` (GET, HEAD).

Another method on these paths is a 405 that names the methods allowed (OPTIONS lists them, as
Flask does).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any

from werkzeug.wrappers import Request

from serve.errors import MethodNotAllowedError
from serve.http import eventstream
from serve.http.errors import REQUEST_ID_HEADER, error_body, request_id
from serve.http.invocation import (
    INFERENCE_ID_KEY,
    JSON,
    TARGET_MODEL_KEY,
    Answer,
    Invocations,
    Pick,
)
from serve.http.streaming import StreamBody
from serve.runtime.inference import ModelRuntime
from serve.runtime.registry import ModelRegistry

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
StartResponse = Callable[..., Any]

HEALTHY = b'{"status": "Healthy"}\n'
UNHEALTHY = b'{"status": "Unhealthy"}\n'
INVOKE = ("POST", "PUT")
STREAM_INVOKE = ("POST",)
RESPONSE_STREAM = "/invocations-response-stream"
SAGEMAKER_ACCEPT_KEY = "HTTP_X_AMZN_SAGEMAKER_ACCEPT"  # X-Amzn-SageMaker-Accept
PREDICT = ("DELETE", "GET", "HEAD", "PATCH", "POST", "PUT")
PING = ("GET", "HEAD")
_STATUS = {status.value: f"{status.value} {status.phrase}" for status in HTTPStatus}


class Router:
    """WSGI middleware in front of the Flask app (see the module's docstring)."""

    def __init__(self, app: WSGIApp, invocations: Invocations, unhealthy: int) -> None:
        """``unhealthy``: /ping's status while this worker's models load (503; TorchServe's
        dialect answers 500)."""
        self.app = app
        self.invocations = invocations
        self.registry = invocations.registry
        self.unhealthy = unhealthy
        self.event_stream = eventstream.EventStreamFraming(invocations.config.error_details)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path: str = environ.get("PATH_INFO", "")
        if path == "/invocations":
            return self._invoke(environ, start_response, "invocations")
        if path == "/ping":
            return self._ping(environ, start_response)
        if path.startswith(("/predictions/", "/explanations/")):
            return self._predict(environ, start_response, path)
        if path.startswith("/endpoints/") and path.endswith("/invocations"):
            name = path[len("/endpoints/") : -len("/invocations")]
            if name and "/" not in name:
                return self._invoke(environ, start_response, "endpoint_invocations")
        elif path.startswith("/endpoints/") and path.endswith(RESPONSE_STREAM):
            name = path[len("/endpoints/") : -len(RESPONSE_STREAM)]
            if name and "/" not in name:
                return self._response_stream(environ, start_response)
        elif path.startswith("/models/") and path.endswith("/invoke"):
            name = _decoded(path[len("/models/") : -len("/invoke")])
            if name and environ.get("REQUEST_METHOD") == "POST":
                pick: Pick = lambda registry: registry.get(name)  # noqa: E731
                return self._reply(start_response, self.invocations(environ, "invoke_model", pick))
        return self.app(environ, start_response)

    def _invoke(
        self, environ: dict[str, Any], start_response: StartResponse, route: str
    ) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") not in INVOKE:
            return self._not_allowed(environ, start_response, INVOKE)
        answer = self.invocations(environ, route, _invocation_model(environ))
        return self._reply(start_response, answer)

    def _response_stream(
        self, environ: dict[str, Any], start_response: StartResponse
    ) -> Iterable[bytes]:
        """boto3's ``invoke_endpoint_with_response_stream``: its Accept comes as
        ``X-Amzn-SageMaker-Accept``; each piece is a ``PayloadPart`` event (a whole answer is
        one), a failure after the first piece a ``ModelStreamError``; an error before it is the
        runtime's ``ModelError`` (424, with the container's status and message)."""
        if environ.get("REQUEST_METHOD") not in STREAM_INVOKE:
            return self._not_allowed(environ, start_response, STREAM_INVOKE)
        environ["HTTP_ACCEPT"] = environ.get(SAGEMAKER_ACCEPT_KEY, "")
        status, body, content_type, headers = self.invocations(
            environ, "invocations_response_stream", _invocation_model(environ),
            framing=self.event_stream,
        )  # fmt: skip
        if status >= 300:
            assert isinstance(body, bytes)
            return self._reply(start_response, _model_error(status, body, headers))
        headers.append(("X-Amzn-SageMaker-Content-Type", content_type))
        if not isinstance(body, StreamBody):
            body = eventstream.payload_part(body)
        return self._reply(start_response, (status, body, eventstream.CONTENT_TYPE, headers))

    def _predict(
        self, environ: dict[str, Any], start_response: StartResponse, path: str
    ) -> Iterable[bytes]:
        kind, _, rest = path[1:].partition("/")
        if not rest.strip("/"):
            return self.app(environ, start_response)  # no such route: the Flask app's 404
        model, version, url_path = torchserve_path(_decoded(rest))
        if version == "":  # no model has an empty version (TorchServe: a 404 too)
            return self.app(environ, start_response)
        if environ.get("REQUEST_METHOD") not in PREDICT:
            return self._not_allowed(environ, start_response, PREDICT, torchserve=True)
        route = f"{kind}_version" if version is not None else kind
        pick: Pick = lambda registry: registry.version(model, version)  # noqa: E731
        parameters = _query(environ)
        explain = "True" if kind == "explanations" else "False"
        extra = (("url_path", url_path), ("explain", explain))
        answer = self.invocations(environ, route, pick, parameters, extra, torchserve=True)
        return self._reply(start_response, answer)

    def _ping(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        """200 once this worker has loaded the models it started with and while it can answer
        (:attr:`ModelRegistry.ready`), ``unhealthy`` otherwise; with TorchServe's body (and a
        ``message`` saying why when a handler call is stuck); does no work."""
        if environ.get("REQUEST_METHOD") not in PING:
            return self._not_allowed(environ, start_response, PING)
        started = time.monotonic()
        status, body = (200, HEALTHY) if self.registry.ready else self._unhealthy()
        rid = request_id(environ.get(INFERENCE_ID_KEY))
        self._reply(start_response, (status, body, JSON, [(REQUEST_ID_HEADER, rid)]))
        self.invocations.done(environ, "ping", status, started, None, "", rid)
        return [body]

    def _unhealthy(self) -> tuple[int, bytes]:
        """/ping's answer when this worker cannot serve: TorchServe's body while it loads; with
        why when a handler call has overrun its timeout (serve/runtime/health.py)."""
        why = self.registry.health.describe()
        if why is None:
            return self.unhealthy, UNHEALTHY
        return self.unhealthy, json.dumps({"status": "Unhealthy", "message": why}).encode() + b"\n"

    def _not_allowed(
        self,
        environ: dict[str, Any],
        start_response: StartResponse,
        methods: tuple[str, ...],
        torchserve: bool = False,
    ) -> Iterable[bytes]:
        """405, with the methods the route takes (OPTIONS answers them, as Flask does)."""
        started = time.monotonic()
        method, path = environ.get("REQUEST_METHOD", ""), environ.get("PATH_INFO", "")
        allow = ("Allow", ", ".join(sorted({*methods, "OPTIONS"})))
        rid = request_id(environ.get(INFERENCE_ID_KEY))
        if method == "OPTIONS":
            answer: Answer = (200, b"", "text/html; charset=utf-8", [allow])
        else:
            error = MethodNotAllowedError(f"{method} is not allowed on {_decoded(path)}")
            body = error_body(error.status_code, error.code, error.message, rid, torchserve)
            answer = (error.status_code, body, JSON, [allow])
        answer[3].append((REQUEST_ID_HEADER, rid))
        code = None if method == "OPTIONS" else MethodNotAllowedError.code
        self.invocations.done(environ, "unmatched", answer[0], started, code, "", rid)
        return self._reply(start_response, answer)

    @staticmethod
    def _reply(start_response: StartResponse, answer: Answer) -> Iterable[bytes]:
        """Start the response; a whole body with its length, a stream without one (the engine
        sends it chunked)."""
        status, body, content_type, headers = answer
        line = _STATUS.get(status) or f"{status} Unknown"
        if isinstance(body, StreamBody):
            start_response(line, [("Content-Type", content_type), *headers])
            return body
        pairs = [("Content-Type", content_type), ("Content-Length", str(len(body))), *headers]
        start_response(line, pairs)
        return [body]


def _invocation_model(environ: dict[str, Any]) -> Pick:
    """/invocations' model: the TargetModel header's, else TorchServe's ``?model_name=``, else
    the only one."""

    def pick(registry: ModelRegistry) -> ModelRuntime:
        target = environ.get(TARGET_MODEL_KEY) or None
        if target is None and environ.get("QUERY_STRING"):
            named = Request(environ).args.get("model_name")
            if named:
                return registry.version(named)
        return registry.route(target)

    return pick


def _model_error(status: int, body: bytes, headers: list[tuple[str, str]]) -> Answer:
    """The SageMaker runtime's ``ModelError`` for a container's error answer: 424, with the
    container's status and body (boto3 raises ``client.exceptions.ModelError``)."""
    original = body.decode("utf-8", errors="replace")
    kind = "client" if status < 500 else "server"
    quoted = original.strip()
    document = {
        "Message": f'Received {kind} error ({status}) from primary with message "{quoted}"',
        "OriginalStatusCode": status,
        "OriginalMessage": original,
    }
    kept = [(name, value) for name, value in headers if name.lower() != "retry-after"]
    kept.append(("x-amzn-ErrorType", "ModelError"))
    return 424, json.dumps(document).encode(), JSON, kept


def torchserve_path(rest: str) -> tuple[str, str | None, str]:
    """The model, version and ``url_path`` of ``/predictions/{rest}``, as TorchServe's frontend
    reads them (InferenceRequestHandler.handlePredictions): the segment after the model is
    always the version, whatever it looks like (``m/v1/chat`` asks for version ``v1``); the
    segments after it, joined by ``/`` with no leading one, are the ``url_path``, empty when
    there are none. Empty segments at the end are dropped, as Java's ``String.split`` drops
    them (``m/`` is ``m``); an empty one inside is kept."""
    segments = rest.rstrip("/").split("/")
    version = segments[1] if len(segments) > 1 else None
    return segments[0], version, "/".join(segments[2:])


def _decoded(path: str) -> str:
    """A WSGI path (bytes as latin-1, PEP 3333) as the UTF-8 text the client sent."""
    return path.encode("latin-1").decode(errors="replace")


def _query(environ: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """The query string's parameters in order, parsed as Flask's ``request.args`` are."""
    if not environ.get("QUERY_STRING"):
        return ()
    return tuple(Request(environ).args.items(multi=True))
