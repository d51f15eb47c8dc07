"""Runs a SageMaker inference toolkit / SDK script-mode module unchanged.

The module defines ``model_fn(model_dir)``, ``input_fn(input_data, content_type)``,
``predict_fn(data, model)`` and ``output_fn(prediction, accept)``, or
``transform_fn(model, input_data, content_type, accept)`` instead of the last three; optionally
``pre_model_fn(model_dir)`` and ``model_warmup_fn(model_dir, model)``. Each may take one more,
trailing ``context`` argument. Whatever is left out has a default: a TorchScript / torch.export /
state_dict model, payloads decoded and encoded with the app's codecs.

With the default ``input_fn`` and ``output_fn``, a request of several records (batch transform's
``MultiRecord``: CSV lines, JSON Lines, JSON documents one a line; serve/codecs/records.py)
answered as JSON, JSON Lines or CSV answers one line per record, in order, each what the record
would be answered alone. CSV and JSON Lines go to ``predict_fn`` once, as one array or list (as
SageMaker's toolkit reads them), when the prediction has one item per record; otherwise each
record is decoded, predicted and encoded alone. A record that fails fails the request, its message
starting ``line K: ``.

A ``predict_fn`` or ``transform_fn`` that returns a generator (or any other iterator) streams:
each item goes through ``output_fn`` when the module has one, else is encoded as the type the
client accepts (serve/codecs/pieces.py), and is sent as soon as it is made.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType, ModuleType
from typing import Any

import numpy as np

from handlers.builtins.base import model_failure
from handlers.context import Context, build_response, user_error
from handlers.torchmodel import device_for, load_model
from serve.codecs import (
    JSONLINES_TYPES,
    LINE_TYPES,
    CodecRegistry,
    Record,
    at_line,
    decode_text,
    encode_piece,
    encode_records,
    parse_accept,
    parse_media_type,
    split_records,
)
from serve.contract import (
    HandlerLoadError,
    InferenceRequest,
    InferenceResponse,
    LoadContext,
    Result,
    load_failed,
)
from serve.errors import ModelError, NotAcceptableError, UnprocessableError

logger = logging.getLogger(__name__)

# the arguments each function takes, before the optional trailing context
SIGNATURES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "pre_model_fn": ("model_dir",),
        "model_fn": ("model_dir",),
        "model_warmup_fn": ("model_dir", "model"),
        "input_fn": ("input_data", "content_type"),
        "predict_fn": ("data", "model"),
        "output_fn": ("prediction", "accept"),
        "transform_fn": ("model", "input_data", "content_type", "accept"),
    }
)
HANDLER_FUNCTIONS = ("model_fn", "input_fn", "predict_fn", "output_fn", "transform_fn")
UTF8_TYPES = ("application/json", "text/csv")  # given to input_fn as str, as the toolkit does
DEFAULT_SOURCE = "default handler"
_MODEL_INPUT_ERRORS = (RuntimeError, ValueError, IndexError, TypeError)
# Request types SageMaker's toolkit reads as one batch (a 2-D array, a list): tried whole first.
BATCHED_RECORD_TYPES = ("text/csv", *JSONLINES_TYPES)
_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


@dataclass(frozen=True, slots=True)
class UserFunction:
    """A user's handler function and whether it takes the trailing ``context``."""

    name: str
    func: Callable[..., Any]
    takes_context: bool

    def __call__(self, context: Context, *args: Any) -> Any:
        return self.func(*args, context) if self.takes_context else self.func(*args)


def inspect_function(module: ModuleType, name: str, source: str) -> UserFunction | None:
    """The module's function ``name`` with its arity checked, or None when it has none.

    Raises:
        HandlerLoadError: it is not callable, or takes neither the documented arguments nor
            those plus a trailing ``context``.
    """
    func = getattr(module, name, None)
    if func is None:
        return None
    if not callable(func):
        raise HandlerLoadError(f"{source}: {name} is not a function")
    expected = SIGNATURES[name]
    try:
        params = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError):  # some C callables have no signature: call them plainly
        return UserFunction(name, func, False)
    count = sum(p.kind in _POSITIONAL for p in params)
    variadic = any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params)
    keyword_only = [
        p.name
        for p in params
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is inspect.Parameter.empty
    ]
    if not keyword_only and count == len(expected) + 1:
        return UserFunction(name, func, True)
    if not keyword_only and (count == len(expected) or (variadic and count < len(expected))):
        return UserFunction(name, func, False)
    wanted = ", ".join(expected)
    raise HandlerLoadError(
        f"{source}: {name} must take ({wanted}) or ({wanted}, context); "
        f"it takes {count} positional arguments"
        + (f" and requires keyword arguments {', '.join(keyword_only)}" if keyword_only else "")
    )


def _check_contract(functions: Mapping[str, UserFunction], source: str) -> None:
    if "transform_fn" in functions:
        mixed = [name for name in ("input_fn", "predict_fn", "output_fn") if name in functions]
        if mixed:
            raise HandlerLoadError(
                f"{source} defines transform_fn and {' and '.join(mixed)}; use one or the other"
            )


def _is_torch_model(model: Any) -> bool:
    torch = sys.modules.get("torch")  # a torch model can only exist once torch is imported
    return torch is not None and isinstance(model, torch.nn.Module)


def _model_device(model: Any) -> Any:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return "cpu"


def _streams(result: Any) -> bool:
    """Whether a prediction is to be streamed: a generator or another iterator."""
    if inspect.isasyncgen(result):
        raise ModelError("an async generator cannot be streamed; return a generator")
    return isinstance(result, Iterator)


def _text_type(media_type: str) -> str:
    """A ``text/*`` type with its charset, as whole answers carry it."""
    if media_type.startswith("text/") and "charset" not in media_type:
        return f"{media_type}; charset=utf-8"
    return media_type


def _close(items: Iterator[Any]) -> None:
    close = getattr(items, "close", None)
    if close is not None:
        close()


def _split_result(result: Any, accept: str, codecs: CodecRegistry) -> tuple[bytes | str, str]:
    """``(body, content_type)`` from what output_fn / transform_fn returned."""
    if isinstance(result, tuple) and len(result) == 2:
        body, content_type = result[0], str(result[1])
    else:
        body, content_type = result, accept
    if isinstance(body, bytes | str):
        return body, content_type
    if isinstance(body, bytearray | memoryview):
        return bytes(body), content_type
    return codecs.encode(body, content_type)  # e.g. an array: encode it as the type named


class ToolkitHandler:
    """A SageMaker toolkit module adapted to the handler protocol; one request at a time.

    Attributes:
        source: the module's file, relative to the model directory.
        max_batch_size: always 1: the toolkit's functions see one request each.
        options: per-model settings from the archive.
    """

    max_batch_size = 1

    def __init__(
        self, module: ModuleType | None, source: str, options: Mapping[str, Any] | None = None
    ) -> None:
        """Check the module's functions; nothing is loaded yet.

        Args:
            module: the imported user module, or None for all defaults.
            source: the module's file, for messages.
            options: per-model settings.

        Raises:
            HandlerLoadError: a function has the wrong arity, or transform_fn is mixed with
                input_fn / predict_fn / output_fn.
        """
        self.source = source
        self.options: Mapping[str, Any] = MappingProxyType(dict(options or {}))
        found = (
            {name: inspect_function(module, name, source) for name in SIGNATURES}
            if module is not None
            else {}
        )
        self._functions = {name: fn for name, fn in found.items() if fn is not None}
        _check_contract(self._functions, source)
        self._user_output = bool({"output_fn", "transform_fn"} & self._functions.keys())
        self._load: LoadContext | None = None
        self._model: Any = None
        self._torch = False

    def load(self, context: LoadContext) -> None:
        """Run pre_model_fn, model_fn (or the default loader) and model_warmup_fn."""
        ctx = Context(context)
        model_dir = str(context.model_dir)
        self._call_at_load("pre_model_fn", ctx, model_dir)
        if "model_fn" in self._functions:
            self._model = self._call_at_load("model_fn", ctx, model_dir)
        else:
            self._model = load_model(
                context.model_dir,
                context.manifest,
                device=device_for(context.gpu_id),
                allow_pickled=context.allow_pickled_models,
            )
        self._call_at_load("model_warmup_fn", ctx, model_dir, self._model)
        self._torch = _is_torch_model(self._model)
        self._load = context

    def _call_at_load(self, name: str, ctx: Context, *args: Any) -> Any:
        function = self._functions.get(name)
        if function is None:
            return None
        try:
            return function(ctx, *args)
        except Exception as exc:
            raise load_failed(self.source, name, exc) from exc

    def handle(self, requests: Sequence[InferenceRequest]) -> list[Result]:
        """Answer each request on its own; a failure fails only its request."""
        if self._load is None:
            raise HandlerLoadError(f"{self.source}: handle called before load")
        results: list[Result] = []
        for request in requests:
            try:
                results.append(self._handle_one(self._load, request))
            except Exception as exc:
                results.append(user_error(exc))
        return results

    def _handle_one(self, load: LoadContext, request: InferenceRequest) -> InferenceResponse:
        ctx = Context(load, [request])
        media_type, params = parse_media_type(request.content_type)
        accept = self._response_type(load.codecs, request.accept)
        records = (
            split_records(request.body, request.content_type)
            if self._splits_records(accept)
            else None
        )
        if records is not None:
            return self._handle_records(ctx, load.codecs, request, records, accept)
        transform = self._functions.get("transform_fn")
        if transform is not None:
            data = self._input_data(request, media_type, params)
            result = transform(ctx, self._model, data, media_type, accept)
            if _streams(result):  # its items are what transform_fn answers: (body, type) too
                return self._stream(ctx, load.codecs, result, accept, None, split=True)
        else:
            prediction = self._predict(ctx, self._input(ctx, load.codecs, request))
            if _streams(prediction):
                output_fn = self._functions.get("output_fn")
                return self._stream(ctx, load.codecs, prediction, accept, output_fn)
            result = self._output(ctx, load.codecs, prediction, accept)
        body, content_type = _split_result(result, accept, load.codecs)
        return build_response(ctx, 0, body, content_type)

    def _splits_records(self, accept: str) -> bool:
        """Whether a request of several records is answered record by record: with the default
        input_fn and output_fn (the user's own read and write the body whole) and an answer of
        one line per record."""
        defaults = not {"input_fn", "output_fn", "transform_fn"} & self._functions.keys()
        return defaults and parse_media_type(accept)[0] in LINE_TYPES

    def _handle_records(
        self,
        ctx: Context,
        codecs: CodecRegistry,
        request: InferenceRequest,
        records: Sequence[Record],
        accept: str,
    ) -> InferenceResponse:
        """Each record decoded, predicted and encoded as if it came alone (as batch transform's
        SingleRecord would send it), one answer line each, in order.

        CSV and JSON Lines are first tried as one batch, as SageMaker's toolkit reads them (one
        array or list, one ``predict_fn`` call): when the prediction has one item per record,
        item ``i`` (kept as a batch of one, ``prediction[i:i+1]``) is record ``i``'s answer,
        the same as it would be alone. Otherwise (another length, a failure, a stream) each
        record is run alone, which also names the line a failure comes from.
        """
        batched = self._batched(ctx, codecs, request, records)
        if batched is not None:
            body, content_type = encode_records(
                zip((record.line for record in records), batched, strict=True),
                parse_media_type(accept)[0],
                codecs,
            )
            return build_response(ctx, 0, body, content_type)
        answers: list[tuple[int, Any]] = []
        for record in records:
            alone = dataclasses.replace(request, body=record.body, content_type=record.content_type)
            try:
                prediction = self._predict(ctx, self._input(ctx, codecs, alone))
                if _streams(prediction):
                    _close(prediction)
                    raise UnprocessableError("a prediction that streams cannot answer a record")
            except _MODEL_INPUT_ERRORS as exc:
                # the default predict_fn ran the model: the record is what it cannot use
                error = user_error(exc)
                if "predict_fn" not in self._functions:
                    error = UnprocessableError(
                        f"the model cannot use this input: {model_failure(exc)}"
                    )
                raise at_line(error, record.line) from exc
            except Exception as exc:
                raise at_line(user_error(exc), record.line) from exc
            answers.append((record.line, prediction))
        body, content_type = encode_records(answers, parse_media_type(accept)[0], codecs)
        return build_response(ctx, 0, body, content_type)

    def _batched(
        self,
        ctx: Context,
        codecs: CodecRegistry,
        request: InferenceRequest,
        records: Sequence[Record],
    ) -> list[Any] | None:
        """Each record's answer from one prediction over all of them, or None when that cannot
        be had (see :meth:`_handle_records`)."""
        if parse_media_type(request.content_type)[0] not in BATCHED_RECORD_TYPES:
            return None
        try:
            prediction = self._predict(ctx, self._input(ctx, codecs, request))
        except Exception as exc:  # run alone, each record says what is wrong with it
            logger.debug("%s: the records as one batch failed (%s): one by one", self.source, exc)
            return None
        if _streams(prediction):
            _close(prediction)
            return None
        try:
            if len(prediction) != len(records) or isinstance(prediction, str | bytes | Mapping):
                return None
            return [prediction[index : index + 1] for index in range(len(records))]
        except TypeError:  # no length, or no slices: not one item per record
            return None

    def _stream(
        self,
        ctx: Context,
        codecs: CodecRegistry,
        items: Iterator[Any],
        accept: str,
        output_fn: UserFunction | None,
        split: bool = False,
    ) -> InferenceResponse:
        """The answer that streams ``items`` (the server pulls its pieces one at a time;
        ``split``: items may be ``(body, content type)``, as output_fn's results may)."""
        response = build_response(ctx, 0, b"", _text_type(accept))
        pieces = self._pieces(ctx, codecs, items, accept, output_fn, split or output_fn is not None)
        response.pieces = pieces
        return response

    @staticmethod
    def _pieces(
        ctx: Context,
        codecs: CodecRegistry,
        items: Iterator[Any],
        accept: str,
        output_fn: UserFunction | None,
        split: bool,
    ) -> Iterator[bytes]:
        """Each item, through ``output_fn`` (when given), encoded as ``accept``; the items'
        iterator is closed when this one is (the client left), so a generator sees
        GeneratorExit."""
        media_type = parse_media_type(accept)[0]
        try:
            for item in items:
                value = item if output_fn is None else output_fn(ctx, item, accept)
                if split and isinstance(value, tuple) and len(value) == 2:
                    value = value[0]  # (body, content type): the stream's type is fixed
                yield encode_piece(value, media_type, codecs)
        except Exception as exc:
            raise user_error(exc) from exc
        finally:
            _close(items)

    def _response_type(self, codecs: CodecRegistry, accept: str) -> str:
        """The concrete type to answer with; negotiated up front so a bad Accept fails fast."""
        if not self._user_output:
            return codecs.negotiate(accept)
        try:
            return codecs.negotiate(accept)
        except NotAcceptableError:
            # the user's output_fn may produce a type no codec knows: pass on what was asked
            for media_range, _, q in parse_accept(accept):
                if q > 0 and "*" not in media_range:
                    return media_range
            raise

    @staticmethod
    def _input_data(request: InferenceRequest, media_type: str, params: Mapping[str, str]) -> Any:
        if media_type in UTF8_TYPES:
            return decode_text(request.body, params, media_type)
        return bytes(request.body)

    def _input(self, ctx: Context, codecs: CodecRegistry, request: InferenceRequest) -> Any:
        input_fn = self._functions.get("input_fn")
        if input_fn is not None:
            media_type, params = parse_media_type(request.content_type)
            return input_fn(ctx, self._input_data(request, media_type, params), media_type)
        value = codecs.decode(request.body, request.content_type)
        return self._to_tensor(value) if self._torch else value

    def _to_tensor(self, value: Any) -> Any:
        """Numbers (an array or nested lists) as a float32 tensor on the model's device."""
        import torch

        if isinstance(value, list):
            try:
                value = np.asarray(value, dtype=np.float32)
            except (TypeError, ValueError) as exc:
                raise UnprocessableError(f"input is not a numeric array: {exc}") from exc
        if not isinstance(value, np.ndarray) or value.dtype.kind not in "biuf":
            return value
        return torch.as_tensor(value, dtype=torch.float32, device=_model_device(self._model))

    def _predict(self, ctx: Context, data: Any) -> Any:
        predict_fn = self._functions.get("predict_fn")
        if predict_fn is not None:
            return predict_fn(ctx, data, self._model)
        if self._torch:
            import torch

            with torch.inference_mode():
                return self._model(data)
        if not callable(self._model):
            raise TypeError(
                f"the model ({type(self._model).__name__}) is not callable; define predict_fn"
            )
        return self._model(data)

    def _output(self, ctx: Context, codecs: CodecRegistry, prediction: Any, accept: str) -> Any:
        output_fn = self._functions.get("output_fn")
        if output_fn is not None:
            return output_fn(ctx, prediction, accept)
        return codecs.encode(prediction, accept)
