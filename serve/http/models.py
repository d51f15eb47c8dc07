"""The model routes of SageMaker's multi-model contract, on the serving port.

Always: ``GET /models`` (paged: ``limit``, ``next_page_token``), ``GET /models/{name}`` and
``POST /models/{name}/invoke`` (``/invocations`` for that model, answered by the request pipeline:
serve/http/router.py). With ``manage`` (the server runs
as a SageMaker multi-model endpoint, ``SAGEMAKER_MULTI_MODEL=true``): ``POST /models`` to load and
``DELETE /models/{name}`` to unload, each returning once every worker has done it.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from flask import Flask, Response, g, jsonify, request

from serve.errors import BadRequestError
from serve.http.context import registry, request_body
from serve.observe.logs import log_model
from serve.runtime.shared import ModelSpec

logger = logging.getLogger(__name__)

DEFAULT_PAGE = 100
MAX_PAGE = 1000
MAX_BODY = 64 * 1024


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _number(minimum: float, inclusive: bool) -> Callable[[Any], bool]:
    def check(value: Any) -> bool:
        if not isinstance(value, int | float) or isinstance(value, bool):
            return False
        return value >= minimum if inclusive else value > minimum

    return check


# What a load request may set for its model, and what each value must be.
SETTINGS: Mapping[str, tuple[Callable[[Any], bool], str]] = {
    "batch_size": (_positive_int, "an integer of at least 1"),
    "max_batch_delay": (_number(0, True), "a number of milliseconds, 0 or more"),
    "response_timeout": (_number(0, False), "a number of seconds above 0"),
    "queue_size": (_positive_int, "an integer of at least 1"),
}


def add_routes(app: Flask, manage: bool) -> None:
    app.add_url_rule("/models", "list_models", _list, methods=["GET"])
    app.add_url_rule("/models/<path:name>", "describe_model", _describe, methods=["GET"])
    if manage:
        app.add_url_rule("/models", "load_model", _load, methods=["POST"])
        app.add_url_rule("/models/<path:name>", "unload_model", _unload, methods=["DELETE"])


def _list() -> Response:
    limit = _limit(request.args.get("limit"))
    token = request.args.get("next_page_token") or request.args.get("nextPageToken")
    after = _decode_token(token) if token else None
    specs = [spec for spec in registry().manager.specs() if after is None or spec.name > after]
    page = specs[:limit]
    body: dict[str, Any] = {"models": [_summary(spec) for spec in page]}
    if len(specs) > limit:
        body["nextPageToken"] = _encode_token(page[-1].name)
    return jsonify(body)


def _describe(name: str) -> Response:
    spec, held = registry().manager.describe(name)
    workers = [
        {"pid": pid, "state": model.state, "memoryBytes": model.memory}
        | ({"error": model.error} if model.error else {})
        for pid, model in sorted(held.items())
    ]
    return jsonify({**_summary(spec), "workers": workers})


def _load() -> Response:
    body = _json_object()
    name, url = body.get("model_name"), body.get("url")
    if not isinstance(name, str) or not isinstance(url, str) or not name or not url:
        raise BadRequestError('the body must be a JSON object with "model_name" and "url" strings')
    g.model = name
    log_model(name)
    spec = registry().manager.register(name, url, _settings(body))
    return jsonify({"status": f"model {name!r} loaded", **_summary(spec)})


def _unload(name: str) -> Response:
    g.model = name
    log_model(name)
    registry().manager.unregister(name)
    return jsonify({"status": f"model {name!r} unloaded"})


def _summary(spec: ModelSpec) -> dict[str, Any]:
    return {"modelName": spec.name, "modelUrl": spec.url}


def _json_object() -> dict[str, Any]:
    length = request.content_length
    if length is not None and length > MAX_BODY:
        raise BadRequestError(f"the body is over {MAX_BODY} bytes")
    try:  # read as an invocation's body is: a chunked body's framing errors are the client's
        body = json.loads(request_body(MAX_BODY))
    except (ValueError, RecursionError):
        body = None
    if not isinstance(body, dict):
        raise BadRequestError('the body must be a JSON object with "model_name" and "url"')
    return body


def _settings(body: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(body) - {"model_name", "url", *SETTINGS})
    if unknown:
        accepted = ", ".join(["model_name", "url", *SETTINGS])
        raise BadRequestError(f"unknown fields {', '.join(unknown)}; accepted: {accepted}")
    settings = {}
    for key, (valid, wanted) in SETTINGS.items():
        if key in body:
            if not valid(body[key]):
                raise BadRequestError(f"{key} must be {wanted}, not {body[key]!r}")
            settings[key] = body[key]
    return settings


def _limit(value: str | None) -> int:
    if value is None:
        return DEFAULT_PAGE
    if not value.isdigit() or not 1 <= int(value) <= MAX_PAGE:
        raise BadRequestError(f"limit must be a whole number from 1 to {MAX_PAGE}")
    return int(value)


def _encode_token(name: str) -> str:
    return base64.urlsafe_b64encode(name.encode()).decode()


def _decode_token(token: str) -> str:
    try:
        return base64.urlsafe_b64decode(token.encode()).decode()
    except (binascii.Error, UnicodeError, ValueError) as exc:
        raise BadRequestError("next_page_token is not one this server gave") from exc
