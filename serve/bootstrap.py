"""Assemble the server for one model: model directory, handler, codecs, runtime, app."""

from __future__ import annotations

import logging

from flask import Flask

from handlers.builtins import builtin_handlers
from handlers.loader import load_handler
from serve.codecs import default_codecs
from serve.config import ServingConfig
from serve.http.app import create_app
from serve.model.directory import activate_code_paths, prepare_model_dir
from serve.observe.observer import Observer
from serve.runtime.inference import ModelRuntime

logger = logging.getLogger(__name__)


def build_server(
    config: ServingConfig, observer: Observer | None = None, exit_on_load_failure: bool = True
) -> tuple[Flask, ModelRuntime]:
    """Build the app and its (not yet started) runtime; runs in the master, before fork.

    Raises:
        ModelDirError: the model directory or archive is unusable.
        HandlerLoadError: the handler cannot be found or imported, or breaks its contract.
    """
    from serve.process.server import exit_worker

    created = observer is None and config.metrics
    if created:
        # Before the user's code is imported: prometheus_client picks its mode at import.
        from serve.observe.metrics import PrometheusObserver

        observer = PrometheusObserver.create(config.metrics_dir)
    try:
        model = prepare_model_dir(
            config.model_dir,
            unpack_dir=config.unpack_dir,
            install_requirements=config.install_requirements,
        )
        activate_code_paths(model)
        handler = load_handler(model, program=config.program, builtins=builtin_handlers())
    except BaseException:
        if created and observer is not None:
            observer.close()
        raise
    logger.info("handler: %s", handler.source)
    runtime = ModelRuntime(
        handler,
        model,
        config,
        default_codecs(),
        observer=observer,
        on_load_failure=exit_worker if exit_on_load_failure else None,
    )
    return create_app(config, runtime), runtime
