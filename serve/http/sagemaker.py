"""The SageMaker container's routes beside the invocations and /ping (which the router answers:
serve/http/router.py): the batch transform parameters, and /metrics."""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, current_app, jsonify

from serve.errors import NotFoundError
from serve.http.context import config, registry
from serve.observe.observer import Observer


def add_routes(app: Flask) -> None:
    app.add_url_rule("/execution-parameters", "execution_parameters", _execution_parameters)
    app.add_url_rule("/metrics", "metrics", metrics_view, methods=["GET"])


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
