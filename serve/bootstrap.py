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

from flask import Flask

from handlers.builtins import builtin_handlers
from handlers.loader import load_handler, model_namespace
from serve.codecs import default_codecs
from serve.config import ConfigError, ServingConfig
from serve.errors import ServingError, StartupError
from serve.http.app import create_app
from serve.http.invocation import BodyRules
from serve.model.directory import activate_code_paths, prepare_model_dir
from serve.model.settings import ModelOverrides, ModelsJson, Registration, SettingError
from serve.model.store import ModelStore, parse_models
from serve.observe.logfiles import log_files_on
from serve.observe.logs import log_model
from serve.observe.metriclines import with_metric_lines
from serve.observe.observer import Observer
from serve.process.sockets import recycle_worker, stop_server
from serve.runtime.inference import OpenedModel
from serve.runtime.registry import ModelRegistry
from serve.runtime.shared import ModelSpec, SharedModels

logger = logging.getLogger(__name__)

SINGLE_MODEL_NAME = "model"


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
        path,
        unpack_dir=config.unpack_dir,
        install_requirements=install_requirements,
        requirements_target=config.requirements_target,
    )
    if handler:  # a registration's handler (TorchServe's register parameter) over the manifest's
        directory = replace(directory, manifest=directory.manifest.with_handler(handler))
    if exclusive:  # the one model of the process: its directories on sys.path, as always
        activate_code_paths(directory)
    namespace = model_namespace(directory, name, exclusive=exclusive)
    loaded = load_handler(
        directory, program=config.program, builtins=builtin_handlers(), namespace=namespace
    )
    return OpenedModel(directory, loaded, namespace)


def _open_registered(config: ServingConfig, spec: ModelSpec) -> OpenedModel:
    """In a worker: a model registered after start (its requirements are installed already)."""
    return open_model(
        config,
        Path(spec.url),
        spec.name,
        install_requirements=False,
        handler=spec.registered.handler or None,
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
    observer = with_metric_lines(observer)  # serve --start: TorchServe's metric lines too
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
    models_json = _models_json(config)
    failures = []
    for model in models:
        try:
            opened = open_model(
                config, model.path, model.name, install_requirements=config.install_requirements
            )
            aliases = (model.alias,) if model.alias and model.alias != model.name else ()
            registered = _startup_settings(models_json, model.name, opened)
            registry.add_startup(model.name, model.path, opened, aliases, registered)
            logger.info("model %s: handler %s", model.name, opened.handler.source)
        except (StartupError, ServingError) as exc:
            failures.append(f"model {model.name} ({model.path}): {exc}")
            if log_files_on():  # TorchServe's model log holds a failed load's traceback
                log_model(model.name)
                logger.error("model %s failed to load", model.name, exc_info=exc)
                log_model("")
    if failures:
        raise StartupError("; ".join(failures))


def _models_json(config: ServingConfig) -> ModelsJson | None:
    """TorchServe's ``models`` JSON (``model_config``), checked.

    Raises:
        ConfigError: naming BYOSERVE_MODEL_CONFIG (config.properties' ``models`` was checked as
            the file was read).
    """
    if config.model_config is None:
        return None
    try:
        return ModelsJson.parse(config.model_config)
    except SettingError as exc:
        raise ConfigError(f"BYOSERVE_MODEL_CONFIG: {exc}") from exc


def _startup_settings(
    models_json: ModelsJson | None, name: str, opened: OpenedModel
) -> Registration | None:
    """What TorchServe's ``models`` JSON gives this start-up model, by its name and its
    archive's ``modelVersion``."""
    if models_json is None:
        return None
    entry = models_json.overrides_for(name, opened.directory.manifest.model_version or None)
    applied = entry.without(ModelOverrides.from_archive_options(opened.handler.options))
    if applied.given():
        logger.info("model %s: settings from models: %s", name, applied.given())
    return Registration(models_json=entry)


def _single_name(opened: OpenedModel) -> str:
    return opened.directory.manifest.model_name or SINGLE_MODEL_NAME
