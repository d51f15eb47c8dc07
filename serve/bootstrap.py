"""The composition root: configuration -> model store and start-up models -> registry -> app.

Runs in the master, before fork: models the server starts with are unpacked, their requirements
installed and their handlers imported here, so that a broken model stops the start with its name
and reason; each worker then loads them (serve/runtime/registry.py).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from flask import Flask

from handlers.builtins import builtin_handlers
from handlers.loader import load_handler, model_namespace
from serve.codecs import default_codecs
from serve.config import ServingConfig
from serve.contract import HandlerLoadError
from serve.dialect.modelconfig import startup_settings
from serve.errors import ServingError
from serve.http.app import create_app
from serve.http.invocation import BodyRules
from serve.model.directory import ModelDirError, activate_code_paths, prepare_model_dir
from serve.model.store import ModelStore, parse_models
from serve.observe.observer import Observer
from serve.process.sockets import recycle_worker, stop_server
from serve.runtime.inference import OpenedModel
from serve.runtime.registry import ModelRegistry
from serve.runtime.shared import ModelSpec, SharedModels

logger = logging.getLogger(__name__)

SINGLE_MODEL_NAME = "model"


class StartupError(Exception):
    """The server cannot start: the message names each model that failed and why."""


def open_model(
    config: ServingConfig,
    path: Path,
    name: str,
    *,
    install_requirements: bool,
    exclusive: bool = False,
    handler: str | None = None,
) -> OpenedModel:
    """Unpack a model (once), install its requirements if asked, import its handler in a
    namespace of its own.

    Raises:
        ModelDirError: the directory or archive is unusable.
        HandlerLoadError: the handler cannot be found or imported, or breaks its contract.
    """
    directory = prepare_model_dir(
        path, unpack_dir=config.unpack_dir, install_requirements=install_requirements
    )
    if handler:  # a registration's handler (TorchServe's register parameter) over the manifest's
        section = directory.manifest.get("model")
        model = {**(section if isinstance(section, dict) else {}), "handler": handler}
        directory = replace(directory, manifest={**directory.manifest, "model": model})
    if exclusive:  # the one model of the process: its directories on sys.path, as always
        activate_code_paths(directory)
    namespace = model_namespace(directory, name, exclusive=exclusive)
    loaded = load_handler(
        directory, program=config.program, builtins=builtin_handlers(), namespace=namespace
    )
    return OpenedModel(directory, loaded, namespace)


def _open_registered(config: ServingConfig, spec: ModelSpec) -> OpenedModel:
    """In a worker: a model registered after start (its requirements are installed already)."""
    handler = spec.registered.get("handler")
    return open_model(
        config,
        Path(spec.url),
        spec.name,
        install_requirements=False,
        handler=handler if isinstance(handler, str) else None,
    )


def build_server(
    config: ServingConfig, body: BodyRules, observer: Observer | None = None
) -> tuple[Flask, ModelRegistry]:
    """Build the app and its registry, with the models the server starts with (not loaded yet);
    ``body``: how the HTTP engine hands request bodies to the app.

    Raises:
        ModelDirError, HandlerLoadError: the single model is unusable.
        StartupError: one or more start-up models are unusable (each named).
    """
    created = observer is None and config.metrics
    if created:
        # Before the user's code is imported: prometheus_client picks its mode at import.
        from serve.observe.metrics import PrometheusObserver

        observer = PrometheusObserver.create(config.metrics_dir)
    shared = SharedModels.create()
    store = ModelStore(config.model_store) if config.model_store is not None else None
    registry = ModelRegistry(
        config,
        shared,
        partial(_open_registered, config),
        default_codecs(max_image_pixels=config.max_image_pixels),
        observer,
        store,
        on_startup_failure=stop_server,
        on_hung=recycle_worker,
    )
    try:
        _add_startup_models(config, registry, store)
    except BaseException:
        shared.remove()
        if created and observer is not None:
            observer.close()
        raise
    return create_app(config, registry, observer, body), registry


def _add_startup_models(
    config: ServingConfig, registry: ModelRegistry, store: ModelStore | None
) -> None:
    if config.single_model:
        opened = open_model(
            config,
            config.model_dir,
            SINGLE_MODEL_NAME,
            install_requirements=config.install_requirements,
            exclusive=True,
        )
        name = _single_name(opened)
        registry.add_startup(name, config.model_dir, opened)
        logger.info("model %s: handler %s", name, opened.handler.source)
        return
    try:
        models = parse_models(config.models, store)
    except ValueError as exc:
        raise StartupError(str(exc)) from exc
    failures = []
    for model in models:
        try:
            opened = open_model(
                config, model.path, model.name, install_requirements=config.install_requirements
            )
            aliases = (model.alias,) if model.alias and model.alias != model.name else ()
            registered = _startup_settings(config, model.name, opened)
            registry.add_startup(model.name, model.path, opened, aliases, registered)
            logger.info("model %s: handler %s", model.name, opened.handler.source)
        except (ModelDirError, HandlerLoadError, ServingError) as exc:
            failures.append(f"model {model.name} ({model.path}): {exc}")
    if failures:
        raise StartupError("; ".join(failures))


def _startup_settings(config: ServingConfig, name: str, opened: OpenedModel) -> dict[str, Any]:
    """The settings TorchServe's ``models`` JSON (``model_config``) gives this start-up model, by
    its name and its archive's ``modelVersion``."""
    if config.model_config is None:
        return {}
    section = opened.directory.manifest.get("model")
    version = section.get("modelVersion") if isinstance(section, dict) else None
    registered = startup_settings(
        config.model_config,
        name,
        str(version) if version is not None else None,
        opened.handler.options,
    )
    if registered:
        logger.info("model %s: settings from models: %s", name, registered)
    return registered


def _single_name(opened: OpenedModel) -> str:
    section = opened.directory.manifest.get("model")
    name = section.get("modelName") if isinstance(section, dict) else None
    return str(name) if name else SINGLE_MODEL_NAME
