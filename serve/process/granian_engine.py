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
  one per connection (a hash of its addresses), so the split is uneven. Each worker counts its
  connections from a thread and hands surplus ones over with ``Connection: close``
  (serve/process/shareout.py), in the slots gunicorn's workers share theirs in.
- *A stuck worker* (a handler call past its timeout: serve/runtime/health.py) cannot stop
  accepting: its listener lives in granian's Rust server, which has no way to pause one worker.
  It answers ``/ping`` and its stuck model's requests 503 at once, as gunicorn's does, and, with
  siblings, every answer with ``Connection: close`` (:func:`closing_while_stuck`), so that a
  client's next connection is hashed afresh and may reach a sibling.
- *TorchServe's management and metrics addresses.* granian listens on one address; the master
  binds the others, and each worker serves them from a thread (werkzeug's threaded WSGI server
  accepting on the inherited socket), once its models are loaded, as a gunicorn worker does.
- *A worker that dies* is replaced, every time, as gunicorn's master does: granian's own
  crash-loop check (a worker dead within 5.5 s of its start stops the whole server) would let a
  model's code take the server down.
- *A chunked request body* is refused with 411 (:class:`GranianEngine`'s body rules, applied by
  serve/http/invocation.py): granian's WSGI input reads a framing error as the end of the body,
  so a truncated body would be predicted on.
"""

from __future__ import annotations

import logging
import multiprocessing.util
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable
from contextlib import suppress
from typing import Any, Literal

from flask import Flask
from werkzeug.serving import WSGIRequestHandler, make_server

from serve.config import ConfigError, ServingConfig
from serve.http.invocation import BodyRules
from serve.http.listeners import WSGIApp, serving_app, side_apps
from serve.http.streaming import StreamAbortedError
from serve.observe.access import access_logged
from serve.process.probe import pid_alive
from serve.process.shareout import ShareOut, handing_over
from serve.process.sockets import (
    BACKLOG,
    GIL_SWITCH_INTERVAL,
    STREAM_END_MARGIN,
    check_addresses,
    socket_address,
)
from serve.process.worker import ConnectionShares
from serve.runtime.registry import ModelRegistry

logger = logging.getLogger(__name__)

SLOT_PREFIX = "slot-"
# granian's own lines go to the root logger, in our format (its default prints to stdout).
LOG_CONFIG: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"aborted_streams": {"()": "serve.process.granian_engine.AbortedStreams"}},
    "loggers": {
        "_granian": {"propagate": True},
        "_granian.utils": {"propagate": True, "filters": ["aborted_streams"]},
        "granian.access": {"propagate": False},
    },
}


class AbortedStreams(logging.Filter):
    """Drops granian's error line for a stream the app ended on purpose
    (serve/http/streaming.py ``StreamAbortedError``): its failure was logged already."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, StreamAbortedError):
            return False
        # granian's Rust side may hand the traceback over as text
        return f"{StreamAbortedError.__name__}:" not in str(record.msg)


GRANIAN_CHUNKED = (
    "send the body with a Content-Length: BYOSERVE_HTTP_ENGINE=granian cannot tell a complete "
    "chunked body from one cut short (BYOSERVE_HTTP_ENGINE=gunicorn can)"
)


# granian writes a piece after the app hands it over; a stream that fails right after a piece
# is ended by an exception, which (measured: 5 of 8 times) dropped that piece unwritten. 1 ms
# was enough in 20 of 20; 10 ms leaves room.
ABORT_GRACE = 0.01


class GranianEngine:
    """The granian :class:`~serve.process.engine.Engine`: its WSGI input reads a chunked body's
    framing error as the end of the body, so a chunked body is refused (411) rather than a
    truncated one predicted on."""

    name: Literal["granian"] = "granian"
    reads_chunked = False
    malformed_body: tuple[type[BaseException], ...] = ()

    @property
    def body_rules(self) -> BodyRules:
        """How granian hands request bodies to the app."""
        return BodyRules(
            self.reads_chunked, self.malformed_body, GRANIAN_CHUNKED, abort_grace=ABORT_GRACE
        )

    def check(self, config: ServingConfig) -> None:
        """Refuse at start what granian cannot serve.

        Raises:
            ConfigError: granian is not installed; an address is shared, in use, or not this
                machine's.
        """
        try:
            import granian  # noqa: F401
        except ImportError as exc:
            raise ConfigError(
                "BYOSERVE_HTTP_ENGINE=granian: granian is not installed (pip install granian)"
            ) from exc
        check_addresses(config)

    def run(self, app: Flask, registry: ModelRegistry, config: ServingConfig) -> str | None:
        """Serve until SIGTERM/SIGINT: the serving port with granian, the side addresses from
        every worker; a failure to start is what the registry records, so None."""
        observer = app.extensions.get("byoserve.observer")
        serving = access_logged(serving_app(app, config, registry, observer))
        if config.workers > 1:
            serving = closing_while_stuck(serving, registry)
        sides = side_apps(config, registry, observer, app.extensions["byoserve.body"])
        sides = {address: access_logged(side) for address, side in sides.items()}
        run_granian(serving, sides, registry, config)
        return None


def closing_while_stuck(app: WSGIApp, registry: ModelRegistry) -> WSGIApp:
    """``app``, answering with ``Connection: close`` while a model of this worker is stuck in a
    handler call (granian honours the header): the client reconnects, and the kernel may give
    the new connection to a sibling (gunicorn's workers hand connections over themselves)."""
    health = registry.health

    def serve(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if not health.reported:
            return app(environ, start_response)

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            return start_response(status, [*headers, ("Connection", "close")], exc_info)

        return app(environ, start)

    return serve


def on_sigterm(callback: Callable[[], None]) -> None:
    """In a worker, before granian serves: ``callback`` runs when the worker gets SIGTERM, then
    granian's own handler (which starts its graceful stop). granian installs that handler with
    ``granian._signals.set_sync_signals`` once the app is loaded, which is after this; the
    wrapper installed here chains the two. (A private function of granian 2.8: the engine's pin,
    ``granian>=2.8,<3``, and the SIGTERM stream test keep it honest.)"""
    try:
        from granian import _signals

        original: Callable[[], Any] = _signals.set_sync_signals
    except (ImportError, AttributeError):  # another granian: streams are cut at the kill
        logger.warning("granian without _signals.set_sync_signals: SIGTERM ends no streams")
        return

    def set_sync_signals() -> Any:
        event = original()
        granians = signal.getsignal(signal.SIGTERM)

        def handler(signum: int, frame: Any) -> None:
            callback()
            if callable(granians):
                granians(signum, frame)

        signal.signal(signal.SIGTERM, handler)
        return event

    _signals.set_sync_signals = set_sync_signals


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
    except (OSError, ValueError):
        return False
    return pid_alive(holder)


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
    shares = ConnectionShares(config.workers) if config.share_connections else None
    if shares is not None:
        registry.observer.track_connections(shares.held)

    def load() -> Any:  # in each worker, after fork
        slot = claim_slot(directory, config.workers, os.getpid())
        sys.setswitchinterval(GIL_SWITCH_INTERVAL)
        registry.start(worker_index=slot)
        multiprocessing.util.Finalize(None, registry.stop, exitpriority=10)
        graceful = max(1, int(config.graceful_timeout))
        on_sigterm(lambda: registry.end_streams_after(graceful - STREAM_END_MARGIN))
        _serve_side(sockets)
        if shares is None:
            return app
        shareout = ShareOut(shares, slot, config.port, lambda: registry.ready).start()
        return handing_over(app, shareout)

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
