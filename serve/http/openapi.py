"""The OpenAPI description of each port (``GET /api-description``, ``OPTIONS /``), as TorchServe
answers those: the serving port's routes, or the management API's."""

from __future__ import annotations

from importlib import metadata
from typing import Any

from serve.http.management_params import ACCEPTED

JSON = {"application/json": {"schema": {"type": "object"}}}
ANY_BODY = {"content": {"*/*": {"schema": {"type": "string", "format": "binary"}}}}
MODEL = {"name": "model_name", "in": "path", "required": True, "schema": {"type": "string"}}
VERSION = {"name": "model_version", "in": "path", "required": True, "schema": {"type": "string"}}


def _query(*names: str) -> list[dict[str, Any]]:
    return [{"name": name, "in": "query", "schema": {"type": "string"}} for name in names]


def _op(summary: str, *, body: bool = False, params: list[dict[str, Any]] | None = None) -> Any:
    operation: dict[str, Any] = {
        "summary": summary,
        "parameters": params or [],
        "responses": {"200": {"description": "OK", "content": JSON}},
    }
    if body:
        operation["requestBody"] = ANY_BODY
    return operation


def _inference_paths() -> dict[str, Any]:
    predict = _op("Predict with the model's default version", body=True, params=[MODEL])
    predict_version = _op("Predict with one version", body=True, params=[MODEL, VERSION])
    explain = _op("Explain a prediction (the handler's explain_handle)", body=True, params=[MODEL])
    return {
        "/ping": {"get": _op("Health: 200 once this worker has loaded its models")},
        "/invocations": {
            "post": _op("SageMaker: the model X-Amzn-SageMaker-Target-Model names", body=True)
        },
        "/models/{model_name}/invoke": {"post": _op("SageMaker MME: one model", body=True)},
        "/predictions/{model_name}": {"post": predict, "put": predict},
        "/predictions/{model_name}/{model_version}": {
            "post": predict_version,
            "put": predict_version,
        },
        "/explanations/{model_name}": {"post": explain, "put": explain},
        "/metrics": {"get": _op("Prometheus metrics of the whole server")},
        "/api-description": {"get": _op("This description")},
    }


def _management_paths() -> dict[str, Any]:
    register = _query(*ACCEPTED)  # the parameters the register call checks
    scale = _query("min_worker", "max_worker", "synchronous")
    return {
        "/models": {
            "get": _op("List models", params=_query("limit", "next_page_token")),
            "post": _op(
                "Register a model from the model store (or an allowed URL)", params=register
            ),
        },
        "/models/{model_name}": {
            "get": _op("Describe the default version", params=[MODEL]),
            "put": _op("Scale workers (recorded: every worker serves every model)", params=scale),
            "delete": _op("Unregister the default version", params=[MODEL]),
        },
        "/models/{model_name}/{model_version}": {
            "get": _op("Describe one version (or all)", params=[MODEL, VERSION]),
            "put": _op("Scale one version", params=[MODEL, VERSION, *scale]),
            "delete": _op("Unregister one version", params=[MODEL, VERSION]),
        },
        "/models/{model_name}/{model_version}/set-default": {
            "put": _op("Make this version the default", params=[MODEL, VERSION])
        },
        "/api-description": {"get": _op("This description")},
    }


def api_description(kind: str) -> dict[str, Any]:
    """The OpenAPI 3 document of the ``inference`` or ``management`` port."""
    try:
        version = metadata.version("byoserve")
    except metadata.PackageNotFoundError:
        version = "0"
    paths = _management_paths() if kind == "management" else _inference_paths()
    return {
        "openapi": "3.0.1",
        "info": {
            "title": f"byoserve {kind} API (TorchServe and SageMaker compatible)",
            "version": version,
        },
        "paths": paths,
    }
