"""TorchServe's management API, on a port of its own (``management_address``, TorchServe's
http://127.0.0.1:8081 with ``serve --start``): register, list, describe, scale, unregister, and
model versions with ``set-default``; every error in TorchServe's shape.

Registrations go through the same manager as SageMaker's ``POST /models`` (serve/runtime/
management.py): every worker loads the model before a synchronous registration answers. What does
not map one to one:

- Workers: every worker of the server serves every model, so a model's workers are the
  server's (``--workers``). ``initial_workers`` and the scale call's ``min_worker``/``max_worker``
  are recorded and shown (``requestedMinWorkers``, ``requestedMaxWorkers``) but change no process
  count; ``minWorkers``/``maxWorkers`` report the workers that actually hold the model.
- ``synchronous=false`` (TorchServe's default) answers 202 at once and loads in the background;
  a load that fails is logged and the model is taken out again.
- With ``enable_model_api=false`` register and unregister answer 405, as in TorchServe 0.12; here
  the default is true (the port is bound to loopback unless configured otherwise).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from flask import Flask, Response, jsonify, request

from serve.config import ServingConfig
from serve.errors import (
    BadRequestError,
    MethodNotAllowedError,
    ModelNotFoundError,
    ModelVersionNotFoundError,
    ServingError,
)
from serve.http.app import base_app
from serve.http.context import config, registry
from serve.http.invocation import BodyRules
from serve.http.management_params import check_scale, register_params
from serve.http.torchserve import add_description_routes
from serve.model.settings import Registration
from serve.model.sources import locate, peek_manifest
from serve.model.store import ModelStore, model_name
from serve.observe.logs import log_model
from serve.observe.observer import Observer
from serve.runtime.devices import gpu_count
from serve.runtime.registry import ModelRegistry
from serve.runtime.shared import ModelSpec

logger = logging.getLogger(__name__)

DEFAULT_VERSION = "1.0"
DEFAULT_LIMIT = 100


def create_management_app(
    config: ServingConfig,
    registry: ModelRegistry,
    observer: Observer | None = None,
    body: BodyRules | None = None,
) -> Flask:
    """The management API's app (served on ``management_address`` by the same workers)."""
    app = base_app(
        "byoserve-management", config, registry, observer, error_shape="torchserve", body=body
    )
    add = app.add_url_rule
    add("/models", "ts_list", _list, methods=["GET"])
    add("/models", "ts_register", _register, methods=["POST"])
    add("/models/<model>", "ts_describe", _describe, methods=["GET"])
    add("/models/<model>/<version>", "ts_describe_version", _describe, methods=["GET"])
    add("/models/<model>", "ts_scale", _scale, methods=["PUT"])
    add("/models/<model>/<version>", "ts_scale_version", _scale, methods=["PUT"])
    add("/models/<model>", "ts_unregister", _unregister, methods=["DELETE"])
    add("/models/<model>/<version>", "ts_unregister_version", _unregister, methods=["DELETE"])
    add("/models/<model>/<version>/set-default", "ts_set_default", _set_default, methods=["PUT"])
    add_description_routes(app)
    return app


def _versions(model: str) -> list[ModelSpec]:
    versions = registry().shared.read().versions(model)
    if not versions:
        raise ModelNotFoundError(f"Model not found: {model}")
    return versions


def _pick(model: str, version: str | None) -> ModelSpec:
    versions = _versions(model)
    if version is None:
        return next(spec for spec in versions if spec.default)
    for spec in versions:
        if _version(spec) == version:
            return spec
    raise ModelVersionNotFoundError(f"Model version: {version} does not exist for model: {model}")


def _version(spec: ModelSpec) -> str:
    return spec.version or DEFAULT_VERSION


def _list() -> Response:
    limit = _int_arg("limit", DEFAULT_LIMIT)
    offset = _int_arg("next_page_token", 0, minimum=0)
    specs = [spec for spec in registry().manager.specs() if spec.default]
    specs.sort(key=lambda spec: spec.model_name)
    page = specs[offset : offset + limit]
    body: dict[str, Any] = {
        "models": [{"modelName": spec.model_name, "modelUrl": _url(spec)} for spec in page]
    }
    if offset + limit < len(specs):
        body["nextPageToken"] = str(offset + limit)
    return jsonify(body)


def _describe(model: str, version: str | None = None) -> Response:
    specs = _versions(model) if version == "all" else [_pick(model, version)]
    return jsonify([_description(spec) for spec in specs])


def _description(spec: ModelSpec) -> dict[str, Any]:
    _, held = registry().manager.describe(spec.name)
    runtime = next((r for r in registry().runtimes() if r.name == spec.name), None)
    settings = runtime.settings if runtime is not None else None
    gpu = gpu_count() > 0
    workers = [
        {
            "id": str(pid),
            "pid": pid,
            "status": {"loaded": "READY", "loading": "LOADING", "failed": "FAILED"}.get(
                model.state, "UNLOADING"
            ),
            "memoryUsage": model.memory,
            "gpu": gpu,
            "gpuUsage": "N/A",
        }
        for pid, model in sorted(held.items())
    ]
    described: dict[str, Any] = {
        "modelName": spec.model_name,
        "modelVersion": _version(spec),
        "modelUrl": _url(spec),
        "runtime": "python",
        "minWorkers": len(held),
        "maxWorkers": len(held),
        "batchSize": settings.max_batch_size if settings else None,
        "maxBatchDelay": round(settings.max_batch_delay * 1000) if settings else None,
        "responseTimeout": settings.timeout if settings else None,
        "startupTimeout": config().startup_timeout,
        "loadedAtStartup": spec.startup,
        "isDefault": spec.default,
        "workers": workers,
    }
    for value, field in (
        (spec.registered.min_workers, "requestedMinWorkers"),
        (spec.registered.max_workers, "requestedMaxWorkers"),
    ):
        if value is not None:
            described[field] = value
    return described


def _url(spec: ModelSpec) -> str:
    """The url as it was given: a registration's, or the model store path it was started from."""
    return spec.registered.url or (spec.aliases[0] if spec.aliases else spec.url)


def _register() -> Response:
    settings = config()
    if not settings.enable_model_api:
        raise _model_api_off()
    params = register_params(request)
    store = ModelStore(settings.model_store) if settings.model_store else None
    path = locate(params.url, store, settings.allowed_urls)
    manifest = peek_manifest(path)
    named, versioned, handler = manifest.model_name, manifest.model_version, manifest.handler
    name = params.model_name or named or model_name(path.name)
    version = versioned or DEFAULT_VERSION
    if params.handler and handler and params.handler != handler:
        raise BadRequestError(
            f"handler {params.handler!r}: the archive's manifest names {handler!r}; "
            "archive the handler with the model instead of overriding it"
        )
    log_model(name)
    registered = Registration(overrides=params.overrides, url=params.url, handler=params.handler)
    if not params.synchronous:
        _register_later(name, str(path), registered, version)
        return _status(f'Model "{name}" Version: {version} registration is in progress', 202)
    spec = registry().manager.register(name, str(path), registered, version=version)
    workers = len(registry().manager.describe(spec.name)[1])
    return _status(f'Model "{name}" Version: {version} registered with {workers} initial workers')


def _register_later(name: str, url: str, registered: Registration, version: str) -> None:
    manager = registry().manager

    def run() -> None:
        try:
            manager.register(name, url, registered, version=version)
        except ServingError as exc:
            logger.error("model %s version %s: registration failed: %s", name, version, exc)

    threading.Thread(target=run, name="byoserve-register", daemon=True).start()


def _scale(model: str, version: str | None = None) -> Response:
    spec = _pick(model, version)
    low, high = check_scale(request.args)
    workers = len(registry().manager.describe(spec.name)[1])
    registry().manager.record_scale(spec.name, low, high)
    return _status(
        f"Workers scaled to {workers} for model: {model}, version: {_version(spec)} "
        f"(every one of the server's {workers} workers serves every model; "
        f"min_worker={low} max_worker={high} recorded)"
    )


def _unregister(model: str, version: str | None = None) -> Response:
    if not config().enable_model_api:
        raise _model_api_off()
    spec = _pick(model, version)
    if spec.default and len(_versions(model)) > 1:
        raise BadRequestError(f"Can't remove default version: {_version(spec)}")
    registry().manager.unregister(spec.name)
    return _status(f'Model "{model}" unregistered')


def _set_default(model: str, version: str) -> Response:
    spec = _pick(model, version)
    registry().manager.set_default(model, spec.version)
    return _status(f'Default version successfully updated for model "{model}" to "{version}"')


def _status(message: str, status: int = 200) -> Response:
    response = jsonify({"status": message})
    response.status_code = status
    return response


def _model_api_off() -> MethodNotAllowedError:
    return MethodNotAllowedError(
        "registering and unregistering models is off (enable_model_api=false)"
    )


def _int_arg(name: str, default: int, minimum: int = 1) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or int(raw) < minimum:
        raise BadRequestError(f"{name} must be a whole number of at least {minimum}")
    return int(raw)
