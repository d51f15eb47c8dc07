"""gunicorn embedded from Python, the default HTTP engine: one process per worker, each a pool of
request threads (gunicorn's gthread worker, changed to keep a busy keep-alive connection on its
thread and to share connections out evenly between workers: serve/process/worker.py).

The master prepares the models the server starts with and imports their handlers (so contract
errors stop the start-up); each worker starts its model registry after fork, which loads them. A
worker that cannot load a start-up model exits with gunicorn's boot-error status, which stops the
whole server with that error.

gunicorn listens on every address itself (the serving port, and TorchServe's management and
metrics ports when configured) and every worker accepts on all of them, so one WSGI app sends each
request to the app of the local port it arrived on (:class:`PortDispatch`).
"""

from __future__ import annotations

import logging
import socket
import sys
from collections.abc import Callable
from contextlib import suppress
from typing import Any, Literal

from flask import Flask
from gunicorn.app.base import BaseApplication
from gunicorn.errors import HaltServer
from gunicorn.glogging import Logger as GunicornLogger
from gunicorn.http.errors import ParseException

from serve.config import ServingConfig
from serve.http.invocation import BodyRules
from serve.http.listeners import WSGIApp, serving_app, side_apps
from serve.observe.access import access_logged
from serve.observe.observer import Observer
from serve.process.sockets import (
    BACKLOG,
    GIL_SWITCH_INTERVAL,
    STREAM_END_MARGIN,
    bind_address,
    check_addresses,
    listen_addresses,
)
from serve.process.worker import ConnectionShares, KeepAliveThreadWorker
from serve.runtime.registry import ModelRegistry

KEEPALIVE_SECONDS = 65  # longer than a load balancer's idle timeout, so it closes first


class GunicornEngine:
    """The gunicorn :class:`~serve.process.engine.Engine`: it parses a chunked body while the app
    reads it, so its framing errors (a bad chunk size, a missing terminator) surface as its
    ``ParseException`` during the read: the client's, a 400."""

    name: Literal["gunicorn"] = "gunicorn"
    reads_chunked = True
    malformed_body: tuple[type[BaseException], ...] = (ParseException,)

    @property
    def body_rules(self) -> BodyRules:
        """How gunicorn hands request bodies to the app."""
        return BodyRules(
            reads_chunked=self.reads_chunked,
            malformed=self.malformed_body,
            client_left=client_left,
        )

    def check(self, config: ServingConfig) -> None:
        """Refuse at start an address gunicorn would retry and then fail to listen on.

        Raises:
            ConfigError: an address is shared, in use, or not this machine's.
        """
        check_addresses(config)

    def run(self, app: Flask, registry: ModelRegistry, config: ServingConfig) -> str | None:
        """Serve until SIGTERM/SIGINT; returns why a worker could not start (gunicorn's
        boot-error status: the models the server starts with did not load), or None."""
        try:
            ServeApplication(app, registry, config).run()
        except HaltServer as exc:
            return str(exc.reason)
        return None


class PortDispatch:
    """Sends each request to the app of the local port its connection arrived on."""

    def __init__(self, default: WSGIApp, by_port: dict[int, WSGIApp]) -> None:
        self.default = default
        self.by_port = by_port

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        sock = environ.get("gunicorn.socket")
        app = self.default
        if sock is not None:
            with suppress(OSError, IndexError, TypeError):
                app = self.by_port.get(sock.getsockname()[1], self.default)
        return app(environ, start_response)


def listening_app(
    serving: Flask, config: ServingConfig, registry: ModelRegistry, observer: Observer | None
) -> WSGIApp:
    """The WSGI application for all the server's addresses: the serving port's app alone when
    there is one address (nothing is added per request), else a :class:`PortDispatch`."""
    front = serving_app(serving, config, registry, observer)
    sides = side_apps(config, registry, observer, serving.extensions["byoserve.body"])
    by_port = {port: app for (_, port), app in sides.items()}
    if not by_port:
        return front
    return PortDispatch(front, by_port)


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
        observer = self.application.extensions.get("byoserve.observer")
        app = listening_app(self.application, self.serving, self.registry, observer)
        return access_logged(app)


def gunicorn_settings(config: ServingConfig, registry: ModelRegistry) -> dict[str, Any]:
    """The gunicorn settings for this configuration, one per line."""

    shares = ConnectionShares(config.workers)
    if config.share_connections:
        registry.observer.track_connections(shares.held)
    graceful = max(1, int(config.graceful_timeout))

    def pre_fork(server: Any, worker: Any) -> None:
        # A slot of its own: its share of connections, and its GPU (slot mod GPUs), which a
        # replacement worker takes over from the worker it replaces.
        worker.shares = shares if config.share_connections else None
        worker.slot = shares.claim(getattr(w, "slot", None) for w in server.WORKERS.values())

    def post_worker_init(worker: Any) -> None:
        # Request threads hand each request to the inference thread and back: with Python's
        # default 5 ms GIL switch interval every hand-off can cost milliseconds of p99.
        sys.setswitchinterval(GIL_SWITCH_INTERVAL)
        # A worker stuck in a handler call takes no new connections while a sibling can
        # (serve/runtime/health.py); its main thread is told at once, not at its next poll.
        worker.is_ready = lambda: registry.accepting
        registry.health.on_change(worker.wake)
        worker.on_exit = lambda: registry.end_streams_after(graceful - STREAM_END_MARGIN)
        index = worker.slot if worker.slot is not None else worker.age - 1
        registry.start(worker_index=index)

    def worker_exit(server: Any, worker: Any) -> None:
        registry.stop(timeout=1.0)

    def child_exit(server: Any, worker: Any) -> None:
        registry.worker_exited(worker.pid)

    return {
        "bind": [bind_address(host, port) for _, host, port in listen_addresses(config)],
        "workers": config.workers,
        "worker_class": KeepAliveThreadWorker,
        "threads": config.threads,
        "timeout": max(120, int(config.timeout) + 30),
        "graceful_timeout": graceful,
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


def client_left(environ: dict[str, Any]) -> bool:
    """Whether the client of a streamed answer has closed its connection (its end of input
    reached), looked at without reading or waiting: so the stream stops before its next piece,
    not one write later when the kernel reports the reset."""
    sock = environ.get("gunicorn.socket")
    if sock is None:
        return False
    try:
        return bool(sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b"")
    except (BlockingIOError, InterruptedError):
        return False  # nothing to read: still there
    except OSError:
        return True  # reset
