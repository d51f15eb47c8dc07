"""Runs TorchServe handler classes and Multi Model Server ``handle`` functions unchanged.

Both get a batch as TorchServe gives it: ``handle(data, context)`` with ``data`` a list holding one
``{"body": payload, "data": payload}`` dict per request, and return a list with one entry per
request. Payloads are decoded, and results serialised, the way TorchServe does it. The context is
TorchServe's (handlers/context.py), or MMS's for a handler written for MMS
(handlers/mmscontext.py).
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

from handlers.context import Context, build_response, user_error
from handlers.intermediate import PieceSocket, frame_piece
from handlers.mmscontext import MMSContext, written_for_mms
from handlers.results import JSON_TYPE, serialize
from serve.codecs import decode_text, parse_media_type
from serve.codecs.forms import form_fields, is_form
from serve.contract import (
    HandlerLoadError,
    InferenceRequest,
    LoadContext,
    Result,
    load_failed,
)
from serve.errors import BadRequestError, ModelError, ServingError

logger = logging.getLogger(__name__)

# These handlers take whatever batch they are given; the batch policy (environment, then the
# archive's batch_size, then 1) decides the size, so the handler does not cap it.
BATCH_CAPACITY = 1024

Entry = Callable[[Any, Context], Any]


def decode_payload(request: InferenceRequest) -> Any:
    """The payload as TorchServe passes it: JSON parsed, ``text/*`` as str, else a bytearray.

    Raises:
        BadRequestError: malformed JSON or text that does not decode.
    """
    return decode_value(request.body, request.content_type)


def decode_value(body: bytes, content_type: str) -> Any:
    """One input as TorchServe's backend decodes it, by its Content-Type."""
    media_type, params = parse_media_type(content_type)
    if media_type == JSON_TYPE:
        text = decode_text(body, params, media_type)
        try:
            return json.loads(text)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise BadRequestError(f"malformed {JSON_TYPE} payload: {exc}") from exc
    if media_type.startswith("text/"):
        return decode_text(body, params, media_type)
    return bytearray(body)


def request_input(request: InferenceRequest) -> dict[str, Any]:
    """One request as TorchServe hands it to handlers: the URL's query parameters (bytes), then
    each form field under its name (decoded by its part's Content-Type; plain fields as bytes),
    or else the body under ``body`` (and under ``data``, which many handlers read first).

    Raises:
        BadRequestError: a body or form field that does not decode.
    """
    row: dict[str, Any] = {name: bytearray(value.encode()) for name, value in request.parameters}
    if is_form(request.content_type):
        for field in form_fields(request.body, request.content_type):
            row[field.name] = decode_value(field.value, field.content_type)
        return row
    payload = decode_payload(request)
    row["body"] = payload
    row.setdefault("data", payload)
    return row


class BatchHandler:
    """What TorchServe classes and MMS functions share: batch decoding, calling, serialising.

    Attributes:
        source: the handler's file, relative to the model directory.
        max_batch_size: how many requests one ``handle`` call may get.
        options: per-model settings from the archive (``batch_size``, ``max_batch_delay``, ...).
    """

    max_batch_size = BATCH_CAPACITY
    function = False  # a handle function (MMS's style), not a class

    def __init__(self, source: str, options: Mapping[str, Any] | None = None) -> None:
        self.source = source
        self.options: Mapping[str, Any] = MappingProxyType(dict(options or {}))
        self._load: LoadContext | None = None
        self._entry: Entry | None = None
        self._context: type[Context] = Context

    def load(self, context: LoadContext) -> None:
        """Initialise the handler in this worker with a load-time context: MMS's for a handler
        written for MMS, else TorchServe's."""
        self._context = MMSContext if written_for_mms(context.manifest, self.function) else Context
        self._entry = self._initialize(self._context(context))
        self._load = context

    def _initialize(self, context: Context) -> Entry:
        raise NotImplementedError

    def handle(self, requests: Sequence[InferenceRequest]) -> list[Result]:
        """Call the handler once for the batch; a request that does not decode fails alone.

        Raises:
            ServingError: the handler failed for the whole batch (so the server may retry the
                requests one at a time).
        """
        if self._load is None or self._entry is None:
            raise HandlerLoadError(f"{self.source}: handle called before load")
        results: list[Result | None] = [None] * len(requests)
        accepted: list[int] = []
        data: list[dict[str, Any]] = []
        for index, request in enumerate(requests):
            try:
                row = request_input(request)
            except ServingError as exc:
                results[index] = exc
                continue
            accepted.append(index)
            data.append(row)
        if accepted:
            batch = [requests[index] for index in accepted]
            context = self._context(self._load, batch)
            context.cl_socket = PieceSocket(context)
            outcomes = self._run(self._entry, context, data)
            for index, outcome in zip(accepted, outcomes, strict=True):
                results[index] = outcome
        return [result for result in results if result is not None]

    def _run(self, entry: Entry, context: Context, data: list[dict[str, Any]]) -> list[Result]:
        try:
            output = entry(data, context)
            _check_output(output, len(data))
        except Exception as exc:
            error = user_error(exc)
            if len(data) == 1:
                return [error]
            raise error from exc
        return [self._respond(context, index, value) for index, value in enumerate(output)]

    @staticmethod
    def _respond(context: Context, index: int, value: Any) -> Result:
        """One request's result; the last piece of its stream when pieces were sent before."""
        try:
            body, content_type = serialize(value, context.get_response_content_type(index))
        except (TypeError, ValueError) as exc:
            error = ModelError(f"result {index} cannot be serialized: {exc}")
            error.__cause__ = exc
            return error
        sink = context.sinks[index]
        if sink is not None and sink.started:
            body = frame_piece(context, index, body)[0]
        return build_response(context, index, body, content_type)


def _check_output(output: Any, expected: int) -> None:
    if not isinstance(output, list | tuple):
        raise ModelError(
            f"handle returned {type(output).__name__}; expected a list with one entry per request"
        )
    if len(output) != expected:
        raise ModelError(f"handle returned {len(output)} results for {expected} requests")


def _accepts(func: Callable[..., Any], count: int) -> bool:
    try:
        inspect.signature(func).bind(*([None] * count))
    except TypeError:
        return False
    except ValueError:  # no signature to inspect: assume it fits
        return True
    return True


class TorchServeHandler(BatchHandler):
    """A TorchServe handler class: instantiated with no arguments and initialised in each worker."""

    def __init__(
        self, service_class: type, source: str, options: Mapping[str, Any] | None = None
    ) -> None:
        """Check the class's contract.

        Raises:
            HandlerLoadError: the class cannot be built without arguments, or its ``handle``
                does not take ``(data, context)``.
        """
        super().__init__(source, options)
        name = service_class.__name__
        if not _accepts(service_class, 0):
            raise HandlerLoadError(f"{source}: {name}() must be callable without arguments")
        handle = getattr(service_class, "handle", None)
        if not callable(handle) or not _accepts(handle, 3):
            raise HandlerLoadError(f"{source}: {name}.handle must take (self, data, context)")
        initialize = getattr(service_class, "initialize", None)
        if initialize is not None and not _accepts(initialize, 2):
            raise HandlerLoadError(f"{source}: {name}.initialize must take (self, context)")
        self._class = service_class

    def _initialize(self, context: Context) -> Entry:
        name = self._class.__name__
        try:
            service = self._class()
            initialize = getattr(service, "initialize", None)
            if initialize is not None:
                initialize(context)
        except Exception as exc:
            raise load_failed(self.source, f"{name}.initialize", exc) from exc
        entry: Entry = service.handle
        return entry


class FunctionHandler(BatchHandler):
    """A Multi Model Server ``handle(data, context)``, or a manifest's ``module:function``.

    As in MMS, it is first called as ``handle(None, context)`` to initialise; that return value
    is ignored.
    """

    function = True

    def __init__(
        self, function: Callable[..., Any], source: str, options: Mapping[str, Any] | None = None
    ) -> None:
        """Check the function's contract.

        Raises:
            HandlerLoadError: the function does not take ``(data, context)``.
        """
        super().__init__(source, options)
        self._name = getattr(function, "__name__", "handle")
        if not _accepts(function, 2):
            raise HandlerLoadError(f"{source}: {self._name} must take (data, context)")
        self._function = function

    def _initialize(self, context: Context) -> Entry:
        try:
            self._function(None, context)
        except Exception as exc:
            raise load_failed(self.source, f"{self._name}(None, context)", exc) from exc
        return self._function
