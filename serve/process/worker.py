"""gunicorn's threaded worker, with two changes for a server whose clients keep connections open.

**A busy keep-alive connection stays on its thread.** After each response, gunicorn's gthread
worker hands a kept-alive connection back to its main thread, which registers it with the poller
again and, when the next request arrives, submits it to the thread pool again: two thread
hand-offs and a handful of system calls per request, a visible share of the work on a model that
answers in a millisecond. This worker first waits briefly on the same thread for the client's
next request and serves it there, as a sync worker would; a connection that stays quiet goes back
to the poller as before. It does not wait while stopping, on HTTP/2 connections, or when the
worker holds more connections than threads (a quiet connection never keeps a thread from a busy
one).

**Connections are shared out evenly between workers.** Workers race to accept, and a client
that opens its connections at once and keeps them (a load balancer, a load generator) can leave
one worker with twice the connections of another: that worker's queue sets everyone's tail
latency while the other idles. Each worker publishes how many connections it holds in memory
shared with its siblings (set up by the master, :class:`ConnectionShares`) and stops accepting
while it holds more than a sibling that is ready to serve; it accepts again as soon as that is
no longer so, checked at least every few milliseconds. Connections made while a sibling was
still loading its model would stay where they landed; so a worker holding two or more above a
sibling answers its next request with ``Connection: close``, and the client's new connection
goes to the sibling.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import select
import time
from collections.abc import Callable, Iterable
from typing import Any

from gunicorn.workers.gthread import ThreadWorker

LINGER_MS = 2  # a client under load sends its next request well within this
RECHECK_S = 0.005  # how often a worker holding back from accepting looks again
STALE_S = 2.0  # a sibling silent for longer (hung, or gone) is not waited for


class ConnectionShares:
    """How many connections each worker holds, in shared memory inherited across fork.

    Args:
        slots: one per worker the server runs.
    """

    NOT_READY = 2**31 - 1  # a worker still loading its model takes no share

    def __init__(self, slots: int) -> None:
        self._counts = multiprocessing.RawArray(ctypes.c_int, max(1, slots))
        self._seen = multiprocessing.RawArray(ctypes.c_double, max(1, slots))  # monotonic

    def claim(self, taken: Iterable[int | None]) -> int | None:
        """A slot none of the live workers holds (master, before fork); None when all are."""
        used = set(taken)
        for slot in range(len(self._counts)):
            if slot not in used:
                self._counts[slot] = self.NOT_READY
                return slot
        return None

    def publish(self, slot: int, connections: int | None) -> None:
        """Record a worker's connections; None while its model is not ready."""
        self._counts[slot] = self.NOT_READY if connections is None else connections
        self._seen[slot] = time.monotonic()

    def excess(self, slot: int) -> int:
        """How many more connections the worker in ``slot`` holds than the least loaded of its
        siblings that are ready and were heard from lately (0 when there is none)."""
        recent = time.monotonic() - STALE_S
        others = [
            count
            for index, count in enumerate(self._counts)
            if index != slot and count != self.NOT_READY and self._seen[index] >= recent
        ]
        return self._counts[slot] - min(others) if others else 0


class KeepAliveThreadWorker(ThreadWorker):  # type: ignore[misc]
    """gthread worker whose threads serve consecutive requests of one connection and which takes
    only its share of new connections.

    The master sets ``shares`` and ``slot`` before fork (see
    :func:`serve.process.server.gunicorn_settings`) and the worker's ``post_worker_init`` sets
    ``is_ready``; without them it balances nothing.
    """

    shares: ConnectionShares | None = None
    slot: int | None = None
    is_ready: Callable[[], bool] = staticmethod(lambda: True)
    _fair = True

    def handle_request(self, req: Any, conn: Any) -> Any:
        if self._overloaded():
            req.must_close = True  # answered with "Connection: close": the client reconnects
        return super().handle_request(req, conn)

    def _overloaded(self) -> bool:
        """Two or more connections above a sibling's: one of them should move there."""
        return (
            self.shares is not None
            and self.slot is not None
            and (self.shares.excess(self.slot) >= 2)
        )

    def handle(self, conn: Any) -> Any:
        result = super().handle(conn)
        while result is True and self._next_request_waiting(conn):
            result = super().handle(conn)
        return result

    def _next_request_waiting(self, conn: Any) -> bool:
        if not self.alive or conn.is_http2 or self.nr_conns > self.cfg.threads:
            return False
        if conn.parser.unreader.buf.getvalue():  # read ahead with the previous request
            return True
        poller = select.poll()
        try:
            poller.register(conn.sock, select.POLLIN)
            return bool(poller.poll(LINGER_MS))
        except (OSError, ValueError):  # closed meanwhile: let the main thread clean up
            return False

    # Balancing runs on the main thread, the only one that accepts and counts connections.

    def accept(self, listener: Any) -> None:
        self._share()
        if not self._fair:  # a sibling has fewer (or this worker is still loading): leave it
            super().set_accept_enabled(False)
            return
        super().accept(listener)
        self._share()

    def set_accept_enabled(self, enabled: bool) -> None:
        super().set_accept_enabled(enabled and self._fair)

    def wait_for_and_dispatch_events(self, timeout: float) -> None:
        if self.shares is not None and self.slot is not None and self.alive:
            self._share()
            wanted = self._fair and self.nr_conns < self.worker_connections
            if wanted != self._accepting:
                super().set_accept_enabled(wanted)
            if not self._fair or not self.is_ready():  # loading: say "ready" as soon as it is
                timeout = min(timeout, RECHECK_S)
        super().wait_for_and_dispatch_events(timeout)

    def _share(self) -> None:
        if self.shares is None or self.slot is None:
            return
        self.shares.publish(self.slot, self.nr_conns if self.is_ready() else None)
        self._fair = self.shares.excess(self.slot) <= 0
