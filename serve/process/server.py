"""Serving, whichever the HTTP engine (serve/process/engine.py): say what is served and where,
have the engine serve until stopped, and clean up in the master.

The master keeps the registry's shared directory tidy while the engine serves (it forgets a
worker's report when the worker exits) and removes it at exit; a failure the workers recorded
(the models the server starts with did not load) is what the server stopped for.
"""

from __future__ import annotations

import logging
import os

from flask import Flask

from serve.config import ServingConfig
from serve.process.engine import Engine
from serve.process.sockets import listen_addresses
from serve.runtime.registry import ModelRegistry

logger = logging.getLogger(__name__)


def run_server(
    engine: Engine, app: Flask, registry: ModelRegistry, config: ServingConfig
) -> str | None:
    """Serve with ``engine`` until SIGTERM/SIGINT; returns why the server could not start (the
    models it starts with did not load), or None."""
    names = [spec.name for spec in registry.manager.specs()]
    logger.info(
        "serving %s on %s:%d with %d workers x %d threads (%s)",
        ", ".join(names) if names else "no model yet (multi-model endpoint)",
        config.host,
        config.port,
        config.workers,
        config.threads,
        engine.name,
    )
    for setting, host, port in listen_addresses(config)[1:]:
        logger.info("%s: http://%s:%d", setting.replace("_address", " API"), host, port)
    master = os.getpid()
    failure = None
    try:
        failure = engine.run(app, registry, config)
    except SystemExit:  # an engine's master may end with sys.exit, and so do its workers
        if os.getpid() != master:
            raise
    finally:
        if os.getpid() == master:
            failure = registry.shared.failure() or failure
            registry.shared.remove()
            registry.observer.close()
    return failure
