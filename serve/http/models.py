"""The model routes of SageMaker's multi-model contract, on the serving port.

Always: ``GET /models`` (paged: ``limit``, ``next_page_token``), ``GET /models/{name}`` and
``POST /models/{name}/invoke`` (``/invocations`` for that model, answered by the request pipeline:
serve/http/router.py). With ``manage`` (the server runs
as a SageMaker multi-model endpoint, ``SAGEMAKER_MULTI_MODEL=true``): ``POST /models`` to load and
``DELETE /models/{name}`` to unload, each returning once every worker has done it, answered as
the SageMaker inference toolkit's container answers (``Model "x" Version: 1.0 registered with 1
initial workers``, the number being the workers that hold it; ``Model "x" unregistered``); a name
already loaded is 409 before its url is looked at.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Mapping
from typing import Any

from flask import Flask, Response, g, jsonify, request

from serve.errors import BadRequestError
from serve.http.context import registry, request_body
from serve.model.settings import ModelOverrides, Registration, SettingError, spellings
from serve.observe.logs import log_model
from serve.runtime.shared import ModelSpec

logger = logging.getLogger(__name__)

DEFAULT_PAGE = 100
DEFAULT_VERSION = "1.0"  # what TorchServe's archiver writes when no version is given
MAX_PAGE = 1000
MAX_BODY = 64 * 1024


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
    workers = len(registry().manager.describe(spec.name)[1])
    version = spec.version or DEFAULT_VERSION
    return jsonify(
        {"status": f'Model "{name}" Version: {version} registered with {workers} initial workers'}
    )


def _unload(name: str) -> Response:
    g.model = name
    log_model(name)
    registry().manager.unregister(name)
    return jsonify({"status": f'Model "{name}" unregistered'})


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


def _settings(body: Mapping[str, Any]) -> Registration:
    accepted = ("model_name", "url", *spellings("sagemaker"))
    unknown = sorted(set(body) - set(accepted))
    if unknown:
        raise BadRequestError(
            f"unknown fields {', '.join(unknown)}; accepted: {', '.join(accepted)}"
        )
    try:
        return Registration(overrides=ModelOverrides.from_fields(body, "sagemaker"))
    except SettingError as exc:
        raise BadRequestError(str(exc)) from exc


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
