"""The request pipeline: every invocation, whatever its route (``/invocations`` in each form,
``/endpoints/{name}/invocations``, ``/models/{name}/invoke``, ``/predictions/...`` and
``/explanations/...``), takes these steps, written once, in this order:

1. the request id (serve/http/errors.py), and the clock for the metrics;
2. the Content-Length, refused (413) before anything else when over the limit;
3. the model, picked by the route (404 when there is none by that name);
4. the one readiness check (503 while the model loads), before a byte of the body is read;
5. the Custom-Attributes bound and Accept's default;
6. the body, read by the HTTP engine's rules (:class:`BodyRules`);
7. the hand-off to the model's runtime (serve/runtime/inference.py), which queues, batches and
   waits for the handler's answer;
8. the answer's headers, hop-by-hop ones dropped, or an error mapped to its status and JSON body;
   an answer that streams goes out as a :class:`~serve.http.streaming.StreamBody`, each piece
   as it is made (serve/http/streaming.py);
9. the per-request metrics (for a stream: at its first piece; the stream's own when it ends) and
   the debug log line.

It works on the WSGI environ and returns plain values: the router in front of the Flask app
(serve/http/router.py) calls it without werkzeug's request machinery, which costs as much per
request as a small model's forward.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from serve.config import ServingConfig
from serve.contract import CUSTOM_ATTRIBUTES, INFERENCE_ID, Headers, InferenceRequest
from serve.errors import (
    BadRequestError,
    LengthRequiredError,
    PayloadTooLargeError,
    ServingError,
    brief,
)
from serve.http.errors import REQUEST_ID_HEADER, error_body, public_message, request_id
from serve.http.spool import PIECE, SPOOL_ABOVE, gather
from serve.http.streaming import PLAIN, ClientLeft, Framing, StreamBody, StreamInfo
from serve.observe.logs import log_model
from serve.observe.observer import Observer
from serve.runtime.inference import ModelRuntime
from serve.runtime.registry import ModelRegistry

logger = logging.getLogger("serve.http.app")  # the same logger as the Flask app's request lines

DEFAULT_CONTENT_TYPE = "application/octet-stream"
MAX_CUSTOM_ATTRIBUTES = 1024
HOP_BY_HOP = frozenset({"content-length", "transfer-encoding", "connection", "content-type"})
JSON = "application/json"

INFERENCE_ID_KEY = "HTTP_" + INFERENCE_ID.upper().replace("-", "_")
ATTRIBUTES_KEY = "HTTP_" + CUSTOM_ATTRIBUTES.upper().replace("-", "_")
TARGET_MODEL_KEY = "HTTP_X_AMZN_SAGEMAKER_TARGET_MODEL"  # X-Amzn-SageMaker-Target-Model

Answer = tuple[int, bytes | StreamBody, str, list[tuple[str, str]]]
"""The status, body (whole, or a stream), Content-Type and the other headers to send
(X-Request-Id among them)."""

Pick = Callable[[ModelRegistry], ModelRuntime]
"""How a route finds its model in the worker's registry (raises the route's 404)."""


@dataclass(frozen=True, slots=True)
class BodyRules:
    """How the HTTP engine hands the app a request body (each engine gives its own:
    serve/process/engine.py).

    Attributes:
        reads_chunked: whether a chunked body can be read whole and told from one cut short;
            where it cannot, a chunked body is refused (411) with ``chunked_refusal``.
        malformed: the exceptions the engine raises while the body is read when the client's
            framing is wrong (a bad chunk size): the client's mistake, a 400.
        chunked_refusal: the 411's message.
        client_left: tells from the request's environ that its client closed the connection,
            before a streamed answer's next piece is written (None: the engine finds out when a
            write fails).
        abort_grace: how long a failed stream waits before it ends the body short, for an
            engine that writes pieces asynchronously and would otherwise drop the last one.
    """

    reads_chunked: bool = True
    malformed: tuple[type[BaseException], ...] = ()
    chunked_refusal: str = "send the body with a Content-Length"
    client_left: ClientLeft | None = None
    abort_grace: float = 0.0


def too_large_message(length: int | None, limit: int) -> str:
    size = f"{length} bytes" if length is not None else "the request body"
    return f"{size} is over the {limit}-byte limit (set SAGEMAKER_MAX_REQUEST_SIZE to raise it)"


def checked_length(environ: dict[str, Any], limit: int) -> int | None:
    """The request's Content-Length (None when it has none, or when the body is chunked, which
    overrides it: RFC 9112 section 6.3), refused (413) before anything else when over
    ``limit``."""
    given = environ.get("CONTENT_LENGTH")
    if not given or _chunked(environ):
        return None
    try:
        length = int(given)
    except ValueError as exc:
        raise BadRequestError("Content-Length is not a number") from exc
    if length > limit:
        raise PayloadTooLargeError(too_large_message(length, limit))
    return length


def read_body(
    environ: dict[str, Any], length: int | None, limit: int, rules: BodyRules, rid: str
) -> bytes:
    """The body: ``length`` bytes, or a chunked body up to ``limit`` (past it: 413, never
    truncated), or nothing when the request has neither.

    A large body (an asynchronous endpoint's, up to 1 GB) costs one copy of itself in memory:
    it is read in pieces and gathered through a temporary file (serve/http/spool.py); handlers
    get ``bytes`` either way.

    The client's framing errors (``rules.malformed``) and a body cut short (the connection gone,
    fewer bytes than announced) are the client's mistakes: 400s, logged without a traceback. An
    engine that cannot tell a complete chunked body from one cut short refuses it (411): a
    truncated input is never predicted on.
    """
    if length is None and not _chunked(environ):
        return b""
    if length is None and not rules.reads_chunked:
        logger.info("request %s: a chunked body, refused by this HTTP engine", rid)
        raise LengthRequiredError(rules.chunked_refusal)
    stream = environ["wsgi.input"]
    try:
        if length is not None and length <= SPOOL_ABOVE:
            body = stream.read(length)
        else:
            body = gather(_pieces(stream, length, limit))
    except rules.malformed as exc:
        logger.warning("request %s: malformed request body: %s", rid, brief(exc))
        raise BadRequestError(f"malformed request body: {brief(exc)}") from exc
    except OSError as exc:  # the client left mid-body: the engine's end of input is an OSError
        raise _cut_short(rid, type(exc).__name__) from exc
    if length is not None and len(body) < length:  # an engine may end a short body silently
        raise _cut_short(rid, f"{len(body)} of {length} bytes")
    return bytes(body)


def _chunked(environ: dict[str, Any]) -> bool:
    return "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()


def _pieces(stream: Any, length: int | None, limit: int) -> Iterator[bytes]:
    """The body in pieces: ``length`` bytes (fewer when the input ends early), or all of a
    chunked body, refused (413) once past ``limit``."""
    size = 0
    while length is None or size < length:
        piece = stream.read(PIECE if length is None else min(PIECE, length - size))
        if not piece:
            return
        size += len(piece)
        if size > limit:
            raise PayloadTooLargeError(too_large_message(None, limit))
        yield piece


def _cut_short(rid: str, detail: str) -> BadRequestError:
    logger.info("request %s: request body cut short (%s)", rid, detail)
    return BadRequestError("the request body was cut short")


def header_pairs(environ: dict[str, Any]) -> Iterable[tuple[str, str]]:
    """The request headers from the WSGI environ, named as werkzeug names them; read only when a
    handler looks (Headers reads its source lazily)."""
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            yield key[5:].replace("_", "-").title(), value
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH") and value:
            yield key.replace("_", "-").title(), value


class Invocations:
    """The pipeline of one worker's serving port (see the module's docstring for its steps)."""

    def __init__(
        self,
        registry: ModelRegistry,
        config: ServingConfig,
        observer: Observer,
        body: BodyRules,
    ) -> None:
        self.registry = registry
        self.config = config
        self.observer = observer
        self.body = body

    def __call__(
        self,
        environ: dict[str, Any],
        route: str,
        pick: Pick,
        parameters: tuple[tuple[str, str], ...] = (),
        extra_headers: tuple[tuple[str, str], ...] = (),
        torchserve: bool = False,
        framing: Framing = PLAIN,
    ) -> Answer:
        """Answer one invocation (``route``: its name in the metrics; ``parameters`` and
        ``extra_headers``: TorchServe's query parameters and its ``explain`` header;
        ``torchserve``: errors in TorchServe's shape; ``framing``: how a stream's pieces are
        written)."""
        started = time.monotonic()
        rid = request_id(environ.get(INFERENCE_ID_KEY))
        log_model("")
        model = ""
        error: str | None = None
        try:
            length = checked_length(environ, self.config.max_request_size)
            runtime = pick(self.registry)
            model = runtime.name
            log_model(model)
            status, body, content_type, headers = self._invoke(
                environ, runtime, length, rid, parameters, extra_headers
            )
            if isinstance(body, StreamBody):
                body.start(StreamInfo(model, rid, started), self.observer, framing)
        except ServingError as exc:
            error = exc.code
            status, content_type, headers = exc.status_code, JSON, list(exc.headers.items())
            message = public_message(exc, self.config.error_details)
            body = error_body(status, exc.code, message, rid, torchserve, exc.fields)
        except Exception as exc:
            logger.error("request %s: unexpected error", rid, exc_info=exc)
            error = "internal_error"
            status, content_type, headers = 500, JSON, []
            body = error_body(status, error, "internal server error", rid, torchserve)
        headers.append((REQUEST_ID_HEADER, rid))
        self.done(environ, route, status, started, error, model, rid)
        return status, body, content_type, headers

    def _invoke(
        self,
        environ: dict[str, Any],
        runtime: ModelRuntime,
        length: int | None,
        rid: str,
        parameters: tuple[tuple[str, str], ...],
        extra_headers: tuple[tuple[str, str], ...],
    ) -> Answer:
        runtime.ensure_ready()
        attributes = environ.get(ATTRIBUTES_KEY)
        if attributes is not None and len(attributes) > MAX_CUSTOM_ATTRIBUTES:
            raise BadRequestError(
                f"{CUSTOM_ATTRIBUTES} is longer than {MAX_CUSTOM_ATTRIBUTES} chars"
            )
        accept = environ.get("HTTP_ACCEPT", "").strip()
        pairs = header_pairs(environ)
        request = InferenceRequest(
            body=read_body(environ, length, self.config.max_request_size, self.body, rid),
            content_type=environ.get("CONTENT_TYPE", "").strip() or DEFAULT_CONTENT_TYPE,
            accept=self.config.default_accept if accept in ("", "*/*") else accept,
            headers=Headers([*pairs, *extra_headers] if extra_headers else pairs),
            request_id=rid,
            parameters=parameters,
        )
        result = runtime.submit(request)
        if result.pieces is None:
            # the request and the runtime's record of it (its sink) refer to each other: left
            # to the cycle collector, a large body would outlive its request, many times over
            request.sink = None
        kept = [(k, v) for k, v in result.headers.items() if k.lower() not in HOP_BY_HOP]
        first = result.body_bytes()
        if result.pieces is None:
            return result.status, first, result.content_type, kept
        stream = StreamBody(first, result.pieces, self.body, environ)
        return result.status, stream, result.content_type, kept

    def done(
        self,
        environ: dict[str, Any],
        route: str,
        status: int,
        started: float,
        error: str | None,
        model: str,
        rid: str,
    ) -> None:
        """The request's metrics and its debug log line."""
        seconds = time.monotonic() - started
        self.observer.request_done(route, status, seconds, error, model)
        if logger.isEnabledFor(logging.DEBUG):
            method, path = environ.get("REQUEST_METHOD"), environ.get("PATH_INFO")
            logger.debug(
                "%s %s -> %d in %.1f ms (request %s)", method, path, status, seconds * 1000, rid
            )
