"""granian, the second HTTP engine (``BYOSERVE_HTTP_ENGINE=granian``): a Rust HTTP server that
runs the same WSGI app and the same model runtime as gunicorn does.

The master prepares the models it starts with, as for gunicorn; granian forks its worker
processes from it (the ``fork`` start method), and each worker, before it serves, claims a slot
(its index for ``registry.start``: its GPU is slot mod GPUs, and a replacement takes over the slot
of the worker it replaces), tunes the GIL switch interval and starts the model registry, which
loads the models. Request threads are granian's blocking threads (``--threads``).

What gunicorn does that is done here another way, or not at all:

- *Readiness.* gunicorn's workers here accept no connection until their models are loaded; a
  granian worker accepts at once, and its ``/ping`` answers 503 until they are.
- *Connection share-out and keep-alive.* granian keeps connections alive itself (HTTP/1.1); on
  Linux each of its workers listens on a ``SO_REUSEPORT`` socket of its own, and the kernel picks
  one per connection (a hash of its addresses), so the share-out between workers of
  serve/process/worker.py is gunicorn's alone.
- *TorchServe's management and metrics addresses.* granian listens on one address; the master
  binds the others, and each worker serves them from a thread (werkzeug's threaded WSGI server
  accepting on the inherited socket), once its models are loaded, as a gunicorn worker does.
- *A worker that dies* is replaced, every time, as gunicorn's master does: granian's own
  crash-loop check (a worker dead within 5.5 s of its start stops the whole server) would let a
  model's code take the server down.
- *A chunked request body* is refused with 411 (serve/http/sagemaker.py): granian's WSGI input
  reads a framing error as the end of the body, so a truncated body would be predicted on.
"""

from __future__ import annotations

import logging
import multiprocessing.util
import os
import socket
import sys
import threading
from contextlib import suppress
from typing import TYPE_CHECKING, Any

from werkzeug.serving import WSGIRequestHandler, make_server

from serve.config import ConfigError, ServingConfig
from serve.process.server import BACKLOG, GIL_SWITCH_INTERVAL, socket_address
from serve.runtime.registry import ModelRegistry

if TYPE_CHECKING:
    from serve.http.listeners import WSGIApp

logger = logging.getLogger(__name__)

SLOT_PREFIX = "slot-"
# granian's own lines go to the root logger, in our format (its default prints to stdout).
LOG_CONFIG: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "loggers": {"_granian": {"propagate": True}, "granian.access": {"propagate": False}},
}


def check_granian(config: ServingConfig) -> None:
    """Refuse at start what granian cannot serve.

    Raises:
        ConfigError: granian is not installed.
    """
    try:
        import granian  # noqa: F401
    except ImportError as exc:
        raise ConfigError(
            "BYOSERVE_HTTP_ENGINE=granian: granian is not installed (pip install granian)"
        ) from exc


def claim_slot(directory: str, workers: int, pid: int) -> int:
    """The lowest slot no live worker holds, taken for ``pid`` (an ``O_EXCL`` file per slot in
    the shared directory; a dead holder's slot is taken over)."""
    for slot in range(workers):
        path = os.path.join(directory, f"{SLOT_PREFIX}{slot}")
        for _ in range(2):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            except FileExistsError:
                if _holder_alive(path):
                    break
                with suppress(FileNotFoundError):
                    os.unlink(path)  # its holder died: the slot is free
                continue
            with os.fdopen(fd, "w") as out:
                out.write(str(pid))
            return slot
    return pid % max(1, workers)  # more workers than slots: never expected


def _holder_alive(path: str) -> bool:
    try:
        with open(path) as held:
            holder = int(held.read() or "0")
        os.kill(holder, 0)
    except (OSError, ValueError):
        return False
    return holder > 0


class _QuietHandler(WSGIRequestHandler):
    """No access log line per request (gunicorn's access log is off too)."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


def _serve_side(sockets: dict[socket.socket, WSGIApp]) -> None:
    """In a worker: serve each side address's app from a thread, on the socket the master bound
    (every worker accepts on it, as gunicorn's workers share theirs)."""
    for sock, app in sockets.items():
        host, port = sock.getsockname()[:2]
        server = make_server(
            host, port, app, threaded=True, request_handler=_QuietHandler, fd=sock.fileno()
        )
        name = f"byoserve-listen-{port}"
        threading.Thread(target=server.serve_forever, name=name, daemon=True).start()


def run_granian(
    app: WSGIApp,
    side: dict[tuple[str, int], WSGIApp],
    registry: ModelRegistry,
    config: ServingConfig,
) -> None:
    """Serve ``app`` with granian until SIGTERM/SIGINT (in the master; granian forks workers),
    and the ``side`` addresses' apps from every worker."""
    from granian import Granian
    from granian.constants import HTTPModes, Interfaces
    from granian.http import HTTP1Settings
    from granian.log import LogLevels

    directory = str(registry.shared.directory)
    sockets = {_listen(host, port): side_app for (host, port), side_app in side.items()}

    def load() -> Any:  # in each worker, after fork
        slot = claim_slot(directory, config.workers, os.getpid())
        sys.setswitchinterval(GIL_SWITCH_INTERVAL)
        registry.start(worker_index=slot)
        multiprocessing.util.Finalize(None, registry.stop, exitpriority=10)
        _serve_side(sockets)
        return app

    class AlwaysRespawn(Granian):  # type: ignore[misc, valid-type]
        """granian that tells the registry when a worker died, and has no crash-loop exit: a
        worker that dies is always replaced."""

        def _respawn_workers(self, workers: Any, *args: Any, **kwargs: Any) -> None:
            for index in workers:  # as gunicorn's child_exit, before the replacement starts
                dead = self.wrks[index]
                if not dead.is_alive():
                    registry.worker_exited(dead.inner.pid)
            super()._respawn_workers(workers, *args, **kwargs)
            self.respawned_wrks.clear()  # what granian's crash-loop check compares with

    level = logging.getLevelName(logging.getLogger().getEffectiveLevel()).lower()
    server = AlwaysRespawn(
        "byoserve",  # not imported: the loader returns the app the master built
        address=config.host.strip("[]"),
        port=config.port,
        interface=Interfaces.WSGI,
        workers=config.workers,
        blocking_threads=config.threads,
        # granian grows its pool as requests come (and can leave a request of a burst waiting
        # while it grows: docs/engines.md); its longest idle time keeps a grown pool.
        blocking_threads_idle_timeout=600,
        backlog=BACKLOG,
        http=HTTPModes.http1,
        http1_settings=HTTP1Settings(keep_alive=True),
        log_level=LogLevels(level) if level in LogLevels.__members__ else LogLevels.info,
        log_dictconfig=LOG_CONFIG,
        respawn_failed_workers=True,
        workers_kill_timeout=max(1, int(config.graceful_timeout)),
    )
    try:
        server.serve(target_loader=load, wrap_loader=False)
    finally:
        for sock in sockets:
            sock.close()


def _listen(host: str, port: int) -> socket.socket:
    family, address = socket_address(host, port)
    return socket.create_server(address, family=family, backlog=BACKLOG)
