"""TorchServe's access log and its per-request counters, written where TorchServe's frontend
writes both (``NettyUtils.sendHttpResponse``): once the answer to a request is sent.

- ``access_log.log``: ``/127.0.0.1:53680 "POST /predictions/mnist HTTP/1.1" 200 12`` (the
  client's address and port, the request line, the status, the milliseconds taken to the end
  of the answer);
- ``ts_metrics.log``: ``Requests2XX.Count:1.0|#Level:Host|#hostname:h,timestamp:1700000000``
  (``Requests4XX``, ``Requests5XX``).

Only with TorchServe's log files (serve/observe/logfiles.py): otherwise the app is served as is.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from werkzeug.wsgi import ClosingIterator

from serve.observe.logfiles import ACCESS_LOG, log_files_on
from serve.observe.metriclines import MetricLines

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def access_logged(app: WSGIApp) -> WSGIApp:
    """``app`` with TorchServe's access and request-count lines when its log files are written;
    ``app`` itself otherwise."""
    if not log_files_on():
        return app
    return AccessLog(app, logging.getLogger(ACCESS_LOG), MetricLines())


class AccessLog:
    """WSGI middleware writing one access line and one request counter per request."""

    def __init__(self, app: WSGIApp, logger: logging.Logger, metrics: MetricLines) -> None:
        self.app = app
        self.logger = logger
        self.metrics = metrics

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        started = time.monotonic()
        status = [0]

        def start(line: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            status[0] = int(line.split(" ", 1)[0])
            return start_response(line, headers, exc_info)

        def done() -> None:
            millis = int((time.monotonic() - started) * 1000)
            self.logger.info("%s %d %d", request_line(environ), status[0], millis)
            self.metrics.request(status[0])

        try:
            answer = self.app(environ, start)
        except BaseException:
            status[0] = status[0] or 500
            done()
            raise
        return ClosingIterator(answer, done)


def request_line(environ: dict[str, Any]) -> str:
    """``/ADDRESS:PORT "METHOD TARGET PROTOCOL"``, as Netty names the client (a leading /)."""
    address = environ.get("REMOTE_ADDR", "")
    port = environ.get("REMOTE_PORT")
    client = f"/{address}:{port}" if port else f"/{address}"
    target = environ.get("RAW_URI") or _target(environ)
    method = environ.get("REQUEST_METHOD", "")
    return f'{client} "{method} {target} {environ.get("SERVER_PROTOCOL", "HTTP/1.1")}"'


def _target(environ: dict[str, Any]) -> str:
    path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
    query = environ.get("QUERY_STRING", "")
    return f"{path}?{query}" if query else path or "/"
