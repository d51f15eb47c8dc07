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
- *Connection share-out and keep-alive.* granian keeps connections alive itself (HTTP/1.1); the
  share-out between workers of serve/process/worker.py is gunicorn's.
- *One address.* granian listens on one address: TorchServe's management and metrics addresses
  need the gunicorn engine (a configuration error says so at start).
- *A worker that dies* is replaced (``respawn_failed_workers``), unless it dies again within
  granian's 5.5 s crash-loop window, when granian stops the whole server.
"""

from __future__ import annotations

import logging
import multiprocessing.util
import os
import sys
from contextlib import suppress
from typing import Any

from serve.config import ConfigError, ServingConfig
from serve.runtime.registry import ModelRegistry

logger = logging.getLogger(__name__)

GIL_SWITCH_INTERVAL = 0.0005  # as for gunicorn's workers (serve/process/server.py)
SLOT_PREFIX = "slot-"
# granian's own lines go to the root logger, in our format (its default prints to stdout).
LOG_CONFIG: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "loggers": {"_granian": {"propagate": True}, "granian.access": {"propagate": False}},
}


def check_granian(config: ServingConfig) -> None:
    """Refuse what granian cannot serve, at start.

    Raises:
        ConfigError: a second address (management or metrics), or granian not installed.
    """
    if config.management_address is not None or config.metrics_address is not None:
        raise ConfigError(
            "BYOSERVE_HTTP_ENGINE=granian listens on one address: TorchServe's management and "
            "metrics addresses need BYOSERVE_HTTP_ENGINE=gunicorn"
        )
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


def run_granian(app: Any, registry: ModelRegistry, config: ServingConfig) -> None:
    """Serve ``app`` with granian until SIGTERM/SIGINT (in the master; granian forks workers)."""
    from granian import Granian
    from granian.constants import HTTPModes, Interfaces
    from granian.http import HTTP1Settings
    from granian.log import LogLevels

    directory = str(registry.shared.directory)

    def load() -> Any:  # in each worker, after fork
        slot = claim_slot(directory, config.workers, os.getpid())
        sys.setswitchinterval(GIL_SWITCH_INTERVAL)
        registry.start(worker_index=slot)
        multiprocessing.util.Finalize(None, registry.stop, exitpriority=10)
        return app

    level = logging.getLevelName(logging.getLogger().getEffectiveLevel()).lower()
    server = Granian(
        "byoserve",  # not imported: the loader returns the app the master built
        address=config.host.strip("[]"),
        port=config.port,
        interface=Interfaces.WSGI,
        workers=config.workers,
        blocking_threads=config.threads,
        backlog=2048,
        http=HTTPModes.http1,
        http1_settings=HTTP1Settings(keep_alive=True),
        log_level=LogLevels(level) if level in LogLevels.__members__ else LogLevels.info,
        log_dictconfig=LOG_CONFIG,
        respawn_failed_workers=True,
        workers_kill_timeout=max(1, int(config.graceful_timeout)),
    )
    server.serve(target_loader=load, wrap_loader=False)
