"""The ``context`` object handler code written for TorchServe, MMS and the SageMaker toolkit uses.

Adapters build one at load time (no requests) and a fresh one for every batch, so per-request data
(headers in, status and headers out) never lives on shared state. Also here: how an exception from
user code becomes the error a caller sees.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from functools import cache
from importlib import metadata
from typing import Any

from serve.contract import Headers, InferenceRequest, InferenceResponse, LoadContext, Sink
from serve.errors import ModelError, ServingError

logger = logging.getLogger(__name__)

SERVER_NAME = "MMS"  # what TorchServe reports too; some handlers compare against it
CONTENT_TYPE = "content-type"
MAX_USER_MESSAGE = 1000  # characters of a user exception's message sent to the caller


class HandlerStatusError(ServingError):
    """User code failed with an explicit HTTP status (TorchServe's ``PredictionException``)."""

    code = "model_error"

    def __init__(self, message: str, status_code: int) -> None:
        super().__init__(message)
        # per instance: the status comes from the user's exception, not from a class
        self.__dict__["status_code"] = status_code


def user_error(exc: BaseException) -> ServingError:
    """The error a caller sees for an exception raised by user code, chained to it.

    A ``ServingError`` passes through; an exception with an integer ``error_code`` between 400
    and 599 keeps that status; anything else becomes a 500 ``ModelError`` whose message is the
    exception's type and text (the traceback stays in the log, via ``__cause__``); the text a
    caller gets is cut to ``MAX_USER_MESSAGE`` characters.
    """
    if isinstance(exc, ServingError):
        return exc
    status = getattr(exc, "error_code", None)
    if isinstance(status, int) and not isinstance(status, bool) and 400 <= status <= 599:
        message = getattr(exc, "message", None)
        text = message if isinstance(message, str) else str(exc)
        error: ServingError = HandlerStatusError(_bounded(text), status)
    else:
        error = ModelError(_bounded(f"{type(exc).__name__}: {exc}"))
    error.__cause__ = exc
    return error


def _bounded(message: str) -> str:
    """A user exception's message as a caller may see it: at most MAX_USER_MESSAGE characters."""
    if len(message) <= MAX_USER_MESSAGE:
        return message
    return f"{message[:MAX_USER_MESSAGE]}... ({len(message)} characters; the rest is in the log)"


def _ignore(*args: Any, **kwargs: Any) -> None:
    return None


class _NullMetric:
    """Stands in for a TorchServe metric object: every method accepts anything."""

    def __getattr__(self, name: str) -> Callable[..., None]:
        if name.startswith("__"):
            raise AttributeError(name)
        return _ignore


_NULL_METRIC = _NullMetric()


class Metrics:
    """Accepts TorchServe's metric calls (``add_time``, ``add_counter``, ...) and drops them.

    The server keeps its own request metrics; handler-defined metrics are not exported.
    """

    def __getattr__(self, name: str) -> Callable[..., _NullMetric]:
        if name.startswith("__"):
            raise AttributeError(name)

        def record(*args: Any, **kwargs: Any) -> _NullMetric:
            return _NULL_METRIC

        return record


class RequestProcessor:
    """One request's headers, and the status and headers its response will carry."""

    def __init__(self, headers: Mapping[str, str] | None = None) -> None:
        self._request = headers if isinstance(headers, Headers) else Headers(headers or {})
        self._status_code = 200
        self._reason_phrase = ""
        self._response_headers: dict[str, str] = {}

    def get_request_property(self, key: str) -> str | None:
        """A request header, looked up case-insensitively; None when absent."""
        return self._request.get(key)

    def get_request_properties(self) -> dict[str, str]:
        """Every request header."""
        return dict(self._request)

    def report_status(self, code: int, reason_phrase: str | None = None) -> None:
        """Set the response status."""
        self._status_code = int(code)
        self._reason_phrase = reason_phrase or ""

    def get_response_status_code(self) -> int:
        return self._status_code

    def get_response_status_phrase(self) -> str:
        return self._reason_phrase

    def add_response_property(self, key: str, value: str) -> None:
        """Set a response header, replacing any earlier value under any capitalisation."""
        for name in [n for n in self._response_headers if n.lower() == key.lower()]:
            del self._response_headers[name]
        self._response_headers[key] = str(value)

    def get_response_header(self, key: str) -> str | None:
        for name, value in self._response_headers.items():
            if name.lower() == key.lower():
                return value
        return None

    def get_response_headers(self) -> dict[str, str]:
        return self._response_headers


@cache
def _server_version() -> str:
    try:
        return metadata.version("byoserve")
    except metadata.PackageNotFoundError:
        return "0"


class Context:
    """TorchServe's and MMS's ``Context``, as handler code uses it.

    Request-scoped methods take the request's index in the batch (``idx``), as in TorchServe.

    Attributes:
        model_name: the model's name (manifest ``model.modelName``, else the directory name).
        manifest: the archive manifest (TorchServe layout), empty when there is none.
        request_processor: one :class:`RequestProcessor` per request in the batch.
        metrics: accepts TorchServe metric calls.
        model_yaml_config: the model's options (TorchServe's ``model-config.yaml``).
        stopping_criteria: TorchServe's per-request stop checks for continuous batching (None:
            the handler's final return ends each stream).
        cl_socket: where TorchServe's own ``send_intermediate_predict_response`` writes a
            piece (set by the adapter, handlers/intermediate.py); None at load time.
        sinks: where each request's pieces go (handlers/intermediate.py).
        accepts: each request's Accept, which picks the pieces' format.
        codecs: the app's codecs, which encode the pieces.
    """

    def __init__(self, load: LoadContext, requests: Sequence[InferenceRequest] = ()) -> None:
        self.model_name = load.model_name
        self.manifest: Mapping[str, Any] = load.manifest
        self.metrics = Metrics()
        self.model_yaml_config: dict[str, Any] = dict(load.options)
        self._system_properties: dict[str, Any] = {
            "model_dir": str(load.model_dir),
            "gpu_id": load.gpu_id,
            "batch_size": load.batch_size,
            "server_name": SERVER_NAME,
            "server_version": _server_version(),
            "limit_max_image_pixels": True,
        }
        self._request_ids = {idx: request.request_id for idx, request in enumerate(requests)}
        self.request_processor = [RequestProcessor(request.headers) for request in requests]
        self.stopping_criteria: dict[int, Callable[..., Any]] | None = None
        self.cl_socket: Any = None
        self.sinks: list[Sink | None] = [request.sink for request in requests]
        self.accepts = [request.accept for request in requests]
        self.codecs = load.codecs

    @property
    def system_properties(self) -> dict[str, Any]:
        """``model_dir``, ``gpu_id``, ``batch_size``, ``server_name``, ``server_version``, ..."""
        return self._system_properties

    @property
    def request_ids(self) -> dict[int, str]:
        """Request ids by index in the batch."""
        return self._request_ids

    def get_request_id(self, idx: int = 0) -> str | None:
        return self._request_ids.get(idx)

    def get_request_header(self, idx: int, key: str) -> str | None:
        """A header of request ``idx`` (case-insensitive), or None."""
        return self.request_processor[idx].get_request_property(key)

    def get_all_request_header(self, idx: int) -> dict[str, str]:
        return self.request_processor[idx].get_request_properties()

    def set_response_content_type(self, idx: int, value: str) -> None:
        self.set_response_header(idx, CONTENT_TYPE, value)

    def get_response_content_type(self, idx: int) -> str | None:
        return self.request_processor[idx].get_response_header(CONTENT_TYPE)

    def get_response_status(self, idx: int) -> tuple[int, str]:
        processor = self.request_processor[idx]
        return processor.get_response_status_code(), processor.get_response_status_phrase()

    def set_response_status(self, code: int = 200, phrase: str = "", idx: int = 0) -> None:
        self.request_processor[idx].report_status(code, phrase)

    def set_all_response_status(self, code: int = 200, phrase: str = "") -> None:
        for processor in self.request_processor:
            processor.report_status(code, phrase)

    def get_response_headers(self, idx: int) -> dict[str, str]:
        return self.request_processor[idx].get_response_headers()

    def set_response_header(self, idx: int, key: str, value: str) -> None:
        self.request_processor[idx].add_response_property(key, value)


def build_response(
    context: Context, idx: int, body: bytes | str, content_type: str
) -> InferenceResponse:
    """Request ``idx``'s response: ``body`` as ``content_type``, unless the handler set a content
    type through ``context``; status and extra headers come from ``context`` too."""
    processor = context.request_processor[idx]
    chosen = processor.get_response_header(CONTENT_TYPE) or content_type
    headers = {
        name: value
        for name, value in processor.get_response_headers().items()
        if name.lower() != CONTENT_TYPE
    }
    status = processor.get_response_status_code()
    return InferenceResponse(body, chosen, status=status, headers=headers)
