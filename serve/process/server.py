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
import signal
import socket
import sys
from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication
from gunicorn.errors import HaltServer
from gunicorn.glogging import Logger as GunicornLogger

from serve.config import ConfigError, ServingConfig
from serve.process.worker import ConnectionShares, KeepAliveThreadWorker
from serve.runtime.registry import ModelRegistry

logger = logging.getLogger(__name__)

GIL_SWITCH_INTERVAL = 0.0005  # seconds; measured in bench/: p99 44 -> 28 ms on the digit model
KEEPALIVE_SECONDS = 65  # longer than a load balancer's idle timeout, so it closes first
BACKLOG = 2048


def socket_address(host: str, port: int) -> tuple[socket.AddressFamily, tuple[str, int]]:
    """The socket family and address to bind for ``host`` as configured (IPv6 with or
    without brackets)."""
    return (socket.AF_INET6 if ":" in host else socket.AF_INET), (host.strip("[]"), port)


def check_listen(
    host: str, port: int, setting: str = "--host/BYOSERVE_HOST, --port/SAGEMAKER_BIND_TO_PORT"
) -> None:
    """Refuse at once an address nothing can listen on (in use, or not this machine's), instead
    of gunicorn's retries and traceback.

    Raises:
        ConfigError: naming the address and why.
    """
    family, address = socket_address(host, port)
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn binds
        try:
            sock.bind(address)
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {host}:{port} ({setting}): {exc.strerror or exc}"
            ) from exc


def listen_addresses(config: ServingConfig) -> list[tuple[str, str, int]]:
    """Every address the server listens on, with the settings that name it: the serving port,
    then TorchServe's management and metrics addresses when configured.

    Raises:
        ConfigError: two of them share a port.
    """
    addresses = [("--host/BYOSERVE_HOST, --port/SAGEMAKER_BIND_TO_PORT", config.host, config.port)]
    if config.management_address is not None:
        addresses.append(("management_address", *config.management_address))
    if config.metrics_address is not None:
        addresses.append(("metrics_address", *config.metrics_address))
    ports: dict[int, str] = {}
    for setting, _, port in addresses:
        if port in ports:
            raise ConfigError(f"{setting} and {ports[port]} both use port {port}")
        ports[port] = setting
    return addresses


def check_addresses(config: ServingConfig) -> None:
    """:func:`check_listen` for every address of :func:`listen_addresses` (and, for granian,
    that it can serve them)."""
    if config.http_engine == "granian":
        from serve.process.granian_engine import check_granian

        check_granian(config)
    for setting, host, port in listen_addresses(config):
        check_listen(host, port, setting)


def _bind(host: str, port: int) -> str:
    return f"[{host.strip('[]')}]:{port}" if ":" in host else f"{host}:{port}"


def recycle_worker() -> None:
    """This worker is stuck (a handler call that does not end): leave as on SIGTERM, letting the
    other requests in flight finish; gunicorn's master starts a new worker in its place."""
    os.kill(os.getpid(), signal.SIGTERM)


def stop_server(exc: BaseException) -> None:
    """A worker could not load the models the server starts with (the registry has recorded
    why): stop the whole server the way SIGTERM does, so that the master says why once
    (:func:`run_server`) instead of every worker and gunicorn's boot-error traceback."""
    os.kill(os.getppid(), signal.SIGTERM)


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

    def load(self) -> Any:
        return listening_app_for(self.application, self.registry, self.serving)


def listening_app_for(app: Flask, registry: ModelRegistry, config: ServingConfig) -> Any:
    """The WSGI application for every address the server listens on (serve/http/listeners.py)."""
    from serve.http.listeners import listening_app

    observer = app.extensions.get("byoserve.observer")
    return listening_app(app, config, registry, observer)


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
        registry.worker_exited(worker.pid)

    return {
        "bind": [_bind(host, port) for _, host, port in listen_addresses(config)],
        "workers": config.workers,
        "worker_class": KeepAliveThreadWorker,
        "threads": config.threads,
        "timeout": max(120, int(config.timeout) + 30),
        "graceful_timeout": max(1, int(config.graceful_timeout)),
        "keepalive": KEEPALIVE_SECONDS,
        "backlog": BACKLOG,
        "accesslog": None,
        "logger_class": PropagatingLogger,
        "proc_name": "byoserve",
        "pre_fork": pre_fork,
        "post_worker_init": post_worker_init,
        "worker_exit": worker_exit,
        "child_exit": child_exit,
        "limit_request_field_size": 16384,
        "control_socket_disable": True,  # gunicorn 27's shared ~/.gunicorn socket: not needed
    }


def run_server(app: Flask, registry: ModelRegistry, config: ServingConfig) -> str | None:
    """Serve until SIGTERM/SIGINT; returns why the server could not start (the models it starts
    with did not load), or None."""
    names = [spec.name for spec in registry.manager.specs()]
    logger.info(
        "serving %s on %s:%d with %d workers x %d threads (%s)",
        ", ".join(names) if names else "no model yet (multi-model endpoint)",
        config.host,
        config.port,
        config.workers,
        config.threads,
        config.http_engine,
    )
    for setting, host, port in listen_addresses(config)[1:]:
        logger.info("%s: http://%s:%d", setting.replace("_address", " API"), host, port)
    master = os.getpid()
    failure = None
    try:
        if config.http_engine == "granian":
            from serve.http.listeners import serving_app, side_apps
            from serve.process.granian_engine import run_granian

            observer = app.extensions.get("byoserve.observer")
            serving = serving_app(app, config, registry, observer)
            sides = side_apps(config, registry, observer, app.extensions["byoserve.body"])
            run_granian(serving, sides, registry, config)
        else:
            ServeApplication(app, registry, config).run()
    except SystemExit:  # gunicorn's arbiter ends with sys.exit, and so do its workers
        if os.getpid() != master:
            raise
    except HaltServer as exc:  # a worker exited with gunicorn's boot-error status
        failure = exc.reason
    finally:
        if os.getpid() == master:
            failure = registry.shared.failure() or failure
            registry.shared.remove()
            registry.observer.close()
    return failure
