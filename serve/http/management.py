"""TorchServe's management API, on a port of its own (``management_address``, TorchServe's
http://127.0.0.1:8081 with ``serve --start``): register, list, describe, scale, unregister, and
model versions with ``set-default``; each answer with TorchServe 0.12's status, text and shape,
every error in its shape.

Registrations go through the same manager as SageMaker's ``POST /models`` (serve/runtime/
management.py). Every worker of the server serves every model, so (docs/torchserve.md,
"Management API answers"):

- A registration loads the model in every worker. Without ``initial_workers`` (or with 0 or less)
  it answers 200 once they have, as TorchServe answers 200 for its zero workers; with
  ``initial_workers`` and ``synchronous=false`` 202 "Processing worker updates..." at once, the
  load going on in the background (a load that fails is logged and the model taken out again).
  The 200 says how many workers hold the model.
- A scale call records ``min_worker``/``max_worker`` (describe shows them as
  ``requestedMinWorkers``, ``requestedMaxWorkers``) and changes no process count: 202 when
  asynchronous (TorchServe's default), 200 with the number of workers that hold the model when
  synchronous.
- With ``enable_model_api=false`` register and unregister answer 405, as in TorchServe 0.12; here
  the default is true (the port is bound to loopback unless configured otherwise).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
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
from serve.http.management_params import int_param, register_params, scale_params
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

    def add(rule: str, endpoint: str, view: Any, method: str) -> None:
        # TorchServe splits the path on "/" and drops a trailing empty part: /models/x/ is x
        app.add_url_rule(rule, endpoint, view, methods=[method], strict_slashes=False)

    add("/models", "ts_list", _list, "GET")
    add("/models", "ts_register", _register, "POST")
    add("/models/<model>", "ts_describe", _describe, "GET")
    add("/models/<model>/<version>", "ts_describe_version", _describe, "GET")
    add("/models/<model>", "ts_scale", _scale, "PUT")
    add("/models/<model>/<version>", "ts_scale_version", _scale, "PUT")
    add("/models/<model>", "ts_unregister", _unregister, "DELETE")
    add("/models/<model>/<version>", "ts_unregister_version", _unregister, "DELETE")
    add("/models/<model>/<version>/set-default", "ts_set_default", _set_default, "PUT")
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
    """TorchServe's paging (ApiUtils.getModelList): a limit outside 0..100 is 100, a negative
    token 0; a next token whenever the page reaches its limit, even at the very end."""
    limit = int_param(request.args, "limit", DEFAULT_LIMIT)
    limit = limit if 0 <= limit <= DEFAULT_LIMIT else DEFAULT_LIMIT
    offset = max(int_param(request.args, "next_page_token", 0), 0)
    specs = [spec for spec in registry().manager.specs() if spec.default]
    specs.sort(key=lambda spec: spec.model_name)
    page = specs[offset : offset + limit]
    body: dict[str, Any] = {
        "models": [{"modelName": spec.model_name, "modelUrl": _url(spec)} for spec in page]
    }
    if offset + limit <= len(specs):
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
    path = locate(_in_store(params.url, store), store, settings.allowed_urls)
    manifest = peek_manifest(path)
    name = params.model_name or manifest.model_name or model_name(path.name)
    version = manifest.model_version or DEFAULT_VERSION
    log_model(name)
    registered = Registration(overrides=params.overrides, url=params.url, handler=params.handler)
    if params.initial_workers > 0 and not params.synchronous:
        _register_later(name, str(path), registered, version)
        return _status("Processing worker updates...", 202)
    spec = registry().manager.register(name, str(path), registered, version=version)
    workers = len(registry().manager.describe(spec.name)[1])
    return _status(f'Model "{name}" Version: {version} registered with {workers} initial workers')


def _in_store(url: str, store: ModelStore | None) -> str:
    """An absolute path inside the model store as the store path it names (TorchServe's
    stateful examples register ``$PWD/model_store/x.mar``); anything else as given, for
    :func:`locate` to take or refuse."""
    if store is None or not url.startswith("/") or ".." in url:
        return url
    root = store.root.resolve()
    try:
        relative = Path(url).resolve().relative_to(root).as_posix()
    except (ValueError, OSError, RuntimeError):  # outside, a NUL, a symlink loop: locate refuses
        return url
    return url if relative == "." else relative  # the store itself is no model


def _register_later(name: str, url: str, registered: Registration, version: str) -> None:
    manager = registry().manager

    def run() -> None:
        try:
            manager.register(name, url, registered, version=version)
        except ServingError as exc:
            logger.error("model %s version %s: registration failed: %s", name, version, exc)

    threading.Thread(target=run, name="byoserve-register", daemon=True).start()


def _scale(model: str, version: str | None = None) -> Response:
    params = scale_params(request.args)
    version = version or request.args.get("model_version") or None
    spec = _pick(model, version)
    registry().manager.record_scale(spec.name, params.min_worker, params.max_worker)
    if not params.synchronous:
        return _status("Processing worker updates...", 202)
    workers = len(registry().manager.describe(spec.name)[1])
    message = f"Workers scaled to {workers} for model: {model}"
    if version is not None:
        message += f", version: {version}"
    if workers != params.min_worker:
        message += (
            f" (every worker serves every model; min_worker={params.min_worker} "
            f"max_worker={params.max_worker} recorded)"
        )
    return _status(message)


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
