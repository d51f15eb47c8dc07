"""gunicorn embedded from Python: one process per worker, each a pool of request threads
(gunicorn's gthread worker, changed to keep a busy keep-alive connection on its thread and to
share connections out evenly between workers: serve/process/worker.py).

The master prepares the models the server starts with and imports their handlers (so contract
errors stop the start-up); each worker starts its model registry after fork, which loads them. A
worker that cannot load a start-up model exits with gunicorn's boot-error status, which stops the
whole server with that error. The master also keeps the registry's shared directory tidy: it
forgets a worker's report when the worker exits, and removes the directory at exit.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication
from gunicorn.glogging import Logger as GunicornLogger

from serve.config import ServingConfig
from serve.process.worker import ConnectionShares, KeepAliveThreadWorker
from serve.runtime.registry import ModelRegistry

logger = logging.getLogger(__name__)

WORKER_BOOT_ERROR = 3  # gunicorn's arbiter halts the server when a worker exits with this
GIL_SWITCH_INTERVAL = 0.0005  # seconds; measured in bench/: p99 44 -> 28 ms on the digit model
KEEPALIVE_SECONDS = 65  # longer than a load balancer's idle timeout, so it closes first


def exit_worker(exc: BaseException) -> None:
    """A worker whose start-up models cannot load ends at once with the boot-error status."""
    logger.error("worker %d: %s", os.getpid(), exc)
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stderr.flush()
    os._exit(WORKER_BOOT_ERROR)


class PropagatingLogger(GunicornLogger):  # type: ignore[misc]
    """gunicorn's own lines go through the root logger, so they share our format and level."""

    def setup(self, cfg: Any) -> None:
        for log in (self.error_log, self.access_log):
            log.handlers[:] = []
            log.propagate = True
        self.error_log.setLevel(logging.getLogger().level)


class ServeApplication(BaseApplication):  # type: ignore[misc]
    """gunicorn application serving one Flask app with settings from ServingConfig."""

    def __init__(self, app: Flask, registry: ModelRegistry, config: ServingConfig) -> None:
        self.application = app
        self.registry = registry
        self.serving = config
        super().__init__()

    def load_config(self) -> None:
        for name, value in gunicorn_settings(self.serving, self.registry).items():
            self.cfg.set(name, value)

    def load(self) -> Flask:
        return self.application


def gunicorn_settings(config: ServingConfig, registry: ModelRegistry) -> dict[str, Any]:
    """The gunicorn settings for this configuration, one per line."""

    shares = ConnectionShares(config.workers)

    def pre_fork(server: Any, worker: Any) -> None:
        # A slot of its own: its share of connections, and its GPU (slot mod GPUs), which a
        # replacement worker takes over from the worker it replaces.
        worker.shares = shares
        worker.slot = shares.claim(getattr(w, "slot", None) for w in server.WORKERS.values())

    def post_worker_init(worker: Any) -> None:
        # Request threads hand each request to the inference thread and back: with Python's
        # default 5 ms GIL switch interval every hand-off can cost milliseconds of p99.
        sys.setswitchinterval(GIL_SWITCH_INTERVAL)
        worker.is_ready = lambda: registry.ready
        index = worker.slot if worker.slot is not None else worker.age - 1
        registry.start(worker_index=index)

    def worker_exit(server: Any, worker: Any) -> None:
        registry.stop(timeout=1.0)

    def child_exit(server: Any, worker: Any) -> None:
        registry.observer.worker_exited(worker.pid)
        registry.shared.forget(worker.pid)

    def on_exit(server: Any) -> None:
        registry.observer.close()
        registry.shared.remove()

    return {
        "bind": [f"{config.host}:{config.port}"],
        "workers": config.workers,
        "worker_class": KeepAliveThreadWorker,
        "threads": config.threads,
        "timeout": max(120, int(config.timeout) + 30),
        "graceful_timeout": max(1, int(config.graceful_timeout)),
        "keepalive": KEEPALIVE_SECONDS,
        "backlog": 2048,
        "accesslog": None,
        "logger_class": PropagatingLogger,
        "proc_name": "byoserve",
        "pre_fork": pre_fork,
        "post_worker_init": post_worker_init,
        "worker_exit": worker_exit,
        "child_exit": child_exit,
        "on_exit": on_exit,
        "limit_request_field_size": 16384,
        "control_socket_disable": True,  # gunicorn 27's shared ~/.gunicorn socket: not needed
    }


def run_server(app: Flask, registry: ModelRegistry, config: ServingConfig) -> int:
    """Serve until SIGTERM/SIGINT; returns the exit status."""
    names = [spec.name for spec in registry.manager.specs()]
    logger.info(
        "serving %s on %s:%d with %d workers x %d threads",
        ", ".join(names) if names else "no model yet (multi-model endpoint)",
        config.host,
        config.port,
        config.workers,
        config.threads,
    )
    master = os.getpid()
    try:
        ServeApplication(app, registry, config).run()
    finally:
        if os.getpid() == master:  # a worker's exit unwinds through here too after fork
            registry.shared.remove()
    return 0
