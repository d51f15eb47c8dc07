"""The SageMaker container's routes beside the invocations and /ping (which the router answers:
serve/http/router.py): the batch transform parameters, and /metrics."""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, current_app, jsonify

from serve.config import MAX_TRANSFORM_PAYLOAD_MB
from serve.errors import NotFoundError
from serve.http.context import config, registry
from serve.observe.observer import Observer


def add_routes(app: Flask) -> None:
    app.add_url_rule("/execution-parameters", "execution_parameters", _execution_parameters)
    app.add_url_rule("/metrics", "metrics", metrics_view, methods=["GET"])


def _execution_parameters() -> Response:
    """What a batch transform job may send this server, asked before its first invocation.

    SageMaker uses each value its CreateTransformJob call left unset: ``MaxPayloadInMB`` (the
    request size limit, at most SageMaker's 100), ``BatchStrategy`` (``MULTI_RECORD``: every
    handler answers a request of several records line by line) and ``MaxConcurrentTransforms``
    (the workers, at most what keeps ``MaxConcurrentTransforms x MaxPayloadInMB`` within the
    100 MB SageMaker allows). ``BatchStrategy`` is spelled as SageMaker's developer guide and
    AWS's own containers spell it; see docs/batch-transform.md for the SageMaker SDK's local
    mode, which reads only ``MultiRecord``.
    """
    settings = config()
    payload = settings.max_payload_in_mb
    transforms = settings.max_concurrent_transforms or min(
        max(1, settings.workers), max(1, MAX_TRANSFORM_PAYLOAD_MB // payload)
    )
    params: dict[str, Any] = {
        "MaxConcurrentTransforms": transforms,
        "BatchStrategy": settings.batch_strategy,
        "MaxPayloadInMB": payload,
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
