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
goes to the sibling. A worker whose handler call has overrun its timeout (serve/runtime/health.py)
is not ready in this sense: it stops accepting at once while a sibling is ready, and answers
every request on the connections it holds with ``Connection: close``, so they move to the
sibling; with no ready sibling (one worker) it goes on accepting, and answers ``/ping`` and the
stuck model's requests with 503 at once.

**What gunicorn refuses itself is answered like the app's errors.** A request line or header it
cannot parse, an unknown transfer coding, headers over the limits never reach the app; gunicorn
answers them with an HTML page. This worker answers them with the app's JSON error body and the
same status (501 for a transfer coding it does not implement, RFC 9112 section 6.1), with
``Connection: close``, and logs the client's mistake as a warning, without a traceback.

**A stopping worker drains.** After SIGTERM it closes its listening sockets (a new connection is
refused, rather than left in the backlog to be reset at exit), finishes the requests in flight, and
keeps its idle connections open while any request is still in flight and for ``STOP_LINGER_S``
after: a request a client sends on one meanwhile is answered, with ``Connection: close``, instead
of meeting a reset. Every response sent while stopping, and every response to a request whose body
could not be read, says ``Connection: close``.
"""

from __future__ import annotations

import ctypes
import http
import logging
import multiprocessing
import select
import ssl
import time
from collections import deque
from collections.abc import Callable, Iterable
from contextlib import suppress
from typing import Any

from gunicorn import util
from gunicorn.http import errors as parse_errors
from gunicorn.workers.gthread import ThreadWorker

from serve.contract import INFERENCE_ID
from serve.errors import (
    BadRequestError,
    ExpectationFailedError,
    ForbiddenError,
    HeaderFieldsTooLargeError,
    ServingError,
    UnsupportedTransferCodingError,
    UriTooLongError,
    brief,
)
from serve.http import errors as answers
from serve.http.errors import REQUEST_ID_HEADER, error_body

logger = logging.getLogger(__name__)

LINGER_MS = 2  # a client under load sends its next request well within this
RECHECK_S = 0.005  # how often a worker holding back from accepting looks again
STALE_S = 2.0  # a sibling silent for longer (hung, or gone) is not waited for
STOP_LINGER_S = 2.0  # a stopping worker keeps idle connections this long after its last request

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Any]

# The errors gunicorn meets outside the app, by the status it gives each (workers/base.py), first
# match wins. A header the app tried to send, or gunicorn's own configuration, is the server's.
_SERVER_FAULTS = (
    parse_errors.InvalidResponseHeader,
    parse_errors.InvalidResponseHeaderName,
    parse_errors.ConfigurationProblem,
)
_CLIENT_FAULTS: tuple[tuple[type[BaseException], type[ServingError]], ...] = (
    (parse_errors.UnsupportedTransferCoding, UnsupportedTransferCodingError),
    (parse_errors.LimitRequestLine, UriTooLongError),
    (parse_errors.LimitRequestHeaders, HeaderFieldsTooLargeError),
    (parse_errors.ExpectationFailed, ExpectationFailedError),
    (parse_errors.ForbiddenProxyRequest, ForbiddenError),
    (ssl.SSLError, ForbiddenError),
    (parse_errors.ParseException, BadRequestError),
)


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

    def heard_since(self, slot: int, since: float) -> bool:
        """Whether every sibling of ``slot`` that is ready and was heard from lately has
        published since ``since`` (``time.monotonic()``)."""
        recent = time.monotonic() - STALE_S
        return all(
            self._seen[index] >= since
            for index, count in enumerate(self._counts)
            if index != slot and count != self.NOT_READY and self._seen[index] >= recent
        )

    def held(self) -> list[tuple[int, int]]:
        """(slot, connections) of each worker that is ready and was heard from lately: what
        ``byoserve_worker_connections`` shows."""
        recent = time.monotonic() - STALE_S
        return [
            (slot, count)
            for slot, count in enumerate(self._counts)
            if count != self.NOT_READY and self._seen[slot] >= recent
        ]


def refusal(exc: BaseException) -> ServingError | None:
    """The answer to a client's request gunicorn could not take (its status on the class), or
    None when the error is the server's own (a 500)."""
    if isinstance(exc, _SERVER_FAULTS):
        return None
    for kind, error in _CLIENT_FAULTS:
        if isinstance(exc, kind):
            return error(brief(exc))
    return None


def error_response(error: ServingError, rid: str) -> bytes:
    """A whole HTTP/1.1 response carrying the app's JSON error body; it closes the connection."""
    payload = error_body(error.status_code, error.code, error.message, rid)
    status = http.HTTPStatus(error.status_code)
    headers = {
        "Connection": "close",
        "Content-Type": "application/json",
        "Content-Length": str(len(payload)),
        REQUEST_ID_HEADER: rid,
        **error.headers,
    }
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return f"HTTP/1.1 {status.value} {status.phrase}\r\n{head}\r\n".encode("latin-1") + payload


def request_id(req: Any) -> str:
    """The request id (serve/http/errors.py) of a request gunicorn parsed as far as its headers,
    or of one it could not parse (a new id)."""
    name = INFERENCE_ID.upper()
    headers = getattr(req, "headers", None) or ()
    return answers.request_id(next((value for key, value in headers if key == name), None))


def closing(app: WsgiApp, stopping: Callable[[], bool]) -> WsgiApp:
    """``app``, answering with ``Connection: close`` while ``stopping()`` or when the request's
    body could not be read (gunicorn closes then: where a next request would start is unknown)."""

    def serve(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            if stopping() or getattr(environ.get("wsgi.input"), "failed", False) is True:
                response = getattr(start_response, "__self__", None)  # gunicorn's Response
                getattr(response, "force_close", lambda: None)()
            return start_response(status, headers, exc_info)

        return app(environ, start)

    return serve


def _nothing() -> None:
    """What :meth:`KeepAliveThreadWorker.wake` has the main thread run: waking is the point."""


def _postpone(conns: deque[Any]) -> None:
    """Give the connections whose time is up ``STOP_LINGER_S`` more; the deque stays sorted."""
    now = time.monotonic()
    while conns and conns[0].timeout <= now:
        conn = conns.popleft()
        conn.timeout = now + STOP_LINGER_S
        conns.append(conn)


class KeepAliveThreadWorker(ThreadWorker):  # type: ignore[misc]
    """gthread worker whose threads serve consecutive requests of one connection and which takes
    only its share of new connections.

    The master sets ``shares`` and ``slot`` before fork (see
    :func:`serve.process.gunicorn_engine.gunicorn_settings`) and the worker's
    ``post_worker_init`` sets ``is_ready``; without them it balances nothing.
    """

    shares: ConnectionShares | None = None
    slot: int | None = None
    is_ready: Callable[[], bool] = staticmethod(lambda: True)
    on_exit: Callable[[], None] = staticmethod(lambda: None)
    wsgi: WsgiApp
    _fair = True

    def handle_exit(self, sig: int, frame: Any) -> None:
        """SIGTERM: stop taking requests (gunicorn), and ``on_exit`` (streams in flight get
        the graceful timeout, then end as failures)."""
        super().handle_exit(sig, frame)
        self.on_exit()

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
        super().set_accept_enabled(enabled and self._fair and self.alive)
        if not self.alive:  # stopping: refuse new connections now, not reset them at exit
            for listener in self.sockets:
                listener.close()

    def wait_for_and_dispatch_events(self, timeout: float) -> None:
        if self.shares is not None and self.slot is not None and self.alive:
            self._share()
            wanted = self._fair and self.nr_conns < self.worker_connections
            if wanted != self._accepting:
                super().set_accept_enabled(wanted)
            if not self._fair or not self.is_ready():  # loading: say "ready" as soon as it is
                timeout = min(timeout, RECHECK_S)
        super().wait_for_and_dispatch_events(timeout)

    def wake(self) -> None:
        """Have the main thread look again at once whether this worker is ready (from any
        thread: a model became stuck, or serves again)."""
        with suppress(OSError, TypeError):  # stopped meanwhile: its queue is closed
            self.method_queue.defer(_nothing)

    def _share(self) -> None:
        if self.shares is None or self.slot is None:
            return
        self.shares.publish(self.slot, self.nr_conns if self.is_ready() else None)
        self._fair = self.shares.excess(self.slot) <= 0

    # Errors gunicorn answers itself, in the app's JSON shape.

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        """Answer an error met outside the app (gunicorn's handle_error writes an HTML page)."""
        rid = request_id(req or getattr(exc, "req", None))
        error = refusal(exc)
        if error is None:
            logger.error("request %s: unexpected error", rid, exc_info=exc)
            error = ServingError("internal server error")
        else:
            peer = addr[0] if addr else "-"
            status = error.status_code
            logger.warning("request %s from %s: %d %s", rid, peer, status, error.message)
        try:
            util.write_nonblock(client, error_response(error, rid))
        except OSError as failure:
            logger.debug("request %s: the error answer was not sent: %s", rid, failure)

    # Stopping: answer on the connections already open while requests are in flight.

    def load_wsgi(self) -> None:
        super().load_wsgi()
        self.wsgi = closing(self.wsgi, lambda: not self.alive)

    def _cap_keepalive(self, deadline: float) -> None:
        # gunicorn calls this once, as the worker stops; connections that never sent a request
        # are as idle as kept-alive ones
        super()._cap_keepalive(deadline)
        for conn in self.pending_conns:
            conn.timeout = min(conn.timeout, deadline)

    def murder_keepalived(self, force: bool = False) -> None:
        if not force and self._draining():
            _postpone(self.keepalived_conns)
        super().murder_keepalived(force)

    def murder_pending(self) -> None:
        if self._draining():
            _postpone(self.pending_conns)
        super().murder_pending()

    def _draining(self) -> bool:
        """Stopping with requests still in flight: a client of an idle connection may be sending
        one too."""
        idle = len(self.keepalived_conns) + len(self.pending_conns)
        return not self.alive and self.nr_conns > idle
