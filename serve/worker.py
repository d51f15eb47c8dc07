"""gunicorn's threaded worker, keeping a busy keep-alive connection on the thread that served it.

After each response, gunicorn's gthread worker hands a kept-alive connection back to its main
thread, which registers it with the poller again and, when the next request arrives, submits it
to the thread pool again: two thread hand-offs and a handful of system calls per request. On a
model that answers in a millisecond that is a visible share of the work. This worker first waits
briefly on the same thread for the client's next request and serves it there, as a sync worker
would; a connection that stays quiet goes back to the poller as before.

It does not wait while the worker is stopping, on HTTP/2 connections, or when the worker holds
more connections than it has threads (a quiet connection then never keeps a thread from a busy
one).
"""

from __future__ import annotations

import select
from typing import Any

from gunicorn.workers.gthread import ThreadWorker

LINGER_MS = 2  # a client under load sends its next request well within this


class KeepAliveThreadWorker(ThreadWorker):  # type: ignore[misc]
    """gthread worker whose threads serve consecutive requests of one connection."""

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
