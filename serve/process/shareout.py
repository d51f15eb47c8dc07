"""granian's share-out of client connections between workers, as gunicorn's keep-alive worker
does it (serve/process/worker.py), by other means.

On Linux each granian worker listens on a ``SO_REUSEPORT`` socket of its own and the kernel picks
the worker for each new connection from a hash of its addresses: 16 connections opened at once
split 5/11 as often as 8/8 between 2 workers, and a worker holding fewer connections than the
batch size waits out the batch delay for every batch. granian tells the app nothing about its
connections (its WSGI environ has no ``REMOTE_PORT``), so each worker counts them itself: a thread
(:class:`ShareOut`) looks at the process's sockets every ``PERIOD_S`` (:func:`held_connections`)
and publishes the count in the same :class:`~serve.process.worker.ConnectionShares` gunicorn's
workers use. While a worker holds 2 or more above its least loaded ready sibling, its next whole
answers say ``Connection: close`` (:func:`handing_over`); the client reconnects and the kernel
picks again. Unlike gunicorn, a worker cannot stop accepting, so a new connection lands on the
surplus worker half the time with 2 workers: at most ``excess // 2`` answers close (what an even
split needs), and after one did, none until every sibling has counted again a period later (so
no count from before the client reconnected sends more).
"""

from __future__ import annotations

import logging
import os
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from serve.process.worker import ConnectionShares

logger = logging.getLogger(__name__)

PERIOD_S = 0.2  # a count costs about 0.5 ms of CPU at 256 connections: 0.25% of a core
SURPLUS = 2  # connections above the least loaded sibling's from which one is handed over
FD_DIR = "/proc/self/fd"

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Any]


def held_connections(port: int, known: dict[int, bool] | None = None) -> int:
    """How many TCP connections this process holds whose local port is ``port``, with a peer.

    Reads the process's file descriptors (``/proc/self/fd``) rather than ``/proc/net/tcp``, which
    lists every socket of the network namespace: psutil's ``net_connections``, which reads it,
    took 18 ms of CPU a call with 1,300 sockets in the namespace, this 0.5 ms at 256 connections.
    A socket is looked at once, through a duplicate of its descriptor; ``known`` (socket inode:
    counted or not) remembers the answers between calls and is updated to the sockets open now.
    """
    if known is None:
        known = {}
    seen: dict[int, bool] = {}
    count = 0
    for name in os.listdir(FD_DIR):
        try:
            status = os.fstat(int(name))
        except (OSError, ValueError):  # closed since the listing, or not a descriptor
            continue
        if not stat.S_ISSOCK(status.st_mode):
            continue
        counted = known.get(status.st_ino)
        if counted is None:
            counted = _is_connection(int(name), port)
        seen[status.st_ino] = counted
        count += counted
    known.clear()
    known.update(seen)
    return count


def _is_connection(fd: int, port: int) -> bool:
    try:
        sock = socket.socket(fileno=os.dup(fd))  # the duplicate is closed; ``fd`` is granian's
    except OSError:
        return False
    with sock:
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            return False
        if sock.type != socket.SOCK_STREAM:
            return False
        try:
            return bool(sock.getsockname()[1] == port and sock.getpeername())
        except OSError:  # a listening socket, or closed meanwhile
            return False


class ShareOut:
    """One granian worker's part of the share-out: counts its connections on ``port`` in a
    daemon thread, publishes them in ``shares`` (as not ready while ``ready()`` is false), and
    sets how many of its next answers close their connection.

    Args:
        shares: the slots, created in the master before fork.
        slot: this worker's slot.
        port: the serving port.
        ready: whether this worker's models are loaded.
    """

    def __init__(
        self, shares: ConnectionShares, slot: int, port: int, ready: Callable[[], bool]
    ) -> None:
        self.shares = shares
        self.slot = slot
        self.port = port
        self.ready = ready
        self.to_close = 0  # read by every answer: an int compare while nothing is to move
        self._closed_at: float | None = None  # when an answer last closed its connection
        self._lock = threading.Lock()
        self._known: dict[int, bool] = {}

    def start(self) -> ShareOut:
        """Start counting (in the worker, after fork)."""
        name = f"byoserve-shareout-{self.slot}"
        threading.Thread(target=self._run, name=name, daemon=True).start()
        return self

    def _run(self) -> None:  # until the worker exits; then its slot goes stale (STALE_S)
        while True:
            time.sleep(PERIOD_S)
            try:
                self.count()
            except Exception:  # never let the share-out end a worker
                logger.exception("counting this worker's connections failed")

    def count(self) -> int:
        """Count and publish this worker's connections once; returns the count."""
        held = held_connections(self.port, self._known)
        ready = self.ready()
        self.shares.publish(self.slot, held if ready else None)
        with self._lock:
            closed_at = self._closed_at
            if not ready:
                self.to_close = 0
            elif closed_at is None or self.shares.heard_since(self.slot, closed_at + PERIOD_S):
                excess = self.shares.excess(self.slot)
                self.to_close = excess // 2 if excess >= SURPLUS else 0
                self._closed_at = None
            else:
                self.to_close = 0  # the siblings' counts may not hold the moved ones yet
        return held

    def take_one(self) -> bool:
        """Whether this answer should close its connection (one of ``to_close``)."""
        with self._lock:
            if self.to_close <= 0:
                return False
            self.to_close -= 1
            self._closed_at = time.monotonic()
            return True


def handing_over(app: WsgiApp, shareout: ShareOut) -> WsgiApp:
    """``app``, whose whole answers (with a ``Content-Length``; a stream's connection is never
    cut) say ``Connection: close`` while ``shareout`` has connections to hand over."""

    def serve(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if shareout.to_close <= 0:
            return app(environ, start_response)

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            if _whole(headers) and shareout.take_one():
                headers = [*headers, ("Connection", "close")]
            return start_response(status, headers, exc_info)

        return app(environ, start)

    return serve


def _whole(headers: Iterable[tuple[str, str]]) -> bool:
    names = {name.lower() for name, _ in headers}
    return "content-length" in names and "connection" not in names
