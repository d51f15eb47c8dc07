"""The WSGI applications of the addresses the server listens on: the serving port's app, and,
when configured, TorchServe's management API (``management_address``) and a metrics-only port
(``metrics_address``). Every worker serves all of them; how a request reaches the app of the port
it arrived on is the HTTP engine's to arrange (serve/process/).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask

from serve.config import ServingConfig
from serve.http.app import base_app
from serve.http.auth import protect
from serve.http.invocation import BodyRules, Invocations
from serve.http.management import create_management_app
from serve.http.router import Router
from serve.http.sagemaker import metrics_view
from serve.observe.observer import Observer
from serve.runtime.registry import ModelRegistry

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def metrics_app(config: ServingConfig, registry: ModelRegistry, observer: Observer | None) -> Flask:
    """TorchServe's metrics port: ``GET /metrics`` only (it reads no body)."""
    app = base_app("byoserve-metrics", config, registry, observer)
    app.add_url_rule("/metrics", "metrics", metrics_view, methods=["GET"])
    return app


def side_apps(
    config: ServingConfig, registry: ModelRegistry, observer: Observer | None, body: BodyRules
) -> dict[tuple[str, int], WSGIApp]:
    """The apps of TorchServe's management and metrics addresses, when configured, by address
    (``body``: the HTTP engine's rules for reading request bodies)."""
    apps: dict[tuple[str, int], WSGIApp] = {}
    if config.management_address is not None:
        management = create_management_app(config, registry, observer, body)
        watcher = observer or registry.observer
        apps[config.management_address] = protect(management, config, "management", watcher)
    if config.metrics_address is not None:
        apps[config.metrics_address] = metrics_app(config, registry, observer)
    return apps


def serving_app(
    serving: Flask, config: ServingConfig, registry: ModelRegistry, observer: Observer | None
) -> WSGIApp:
    """The serving port's app: the Flask app behind the router, which sends every invocation
    to the request pipeline and answers /ping (serve/http/router.py)."""
    body: BodyRules = serving.extensions["byoserve.body"]
    invocations = Invocations(registry, config, observer or registry.observer, body)
    router = Router(serving, invocations, unhealthy=500 if config.dialect == "torchserve" else 503)
    return protect(router, config, "inference", invocations.observer)
