"""``tensor``: arrays in, the model's output arrays back, as the Accept header asks.

Each request holds a batch along its first axis: ``application/x-npy``; ``application/x-npz``
(one array, or several given to the model as positional arguments in their stored order);
``application/json`` (a nested list, or ``{"instances": ...}`` / ``{"inputs": ...}``);
JSON Lines (one row a line); ``text/csv`` (rows of numbers). Requests whose arrays agree in
every axis but the first (and in dtype) run through the model together; the output rows go back
to the request they came from.

Answers: ``application/json`` (nested lists), ``application/x-npy``, ``text/csv`` (2-D at most),
``application/jsonlines`` (one row a line) or ``application/x-npz``. A model returning several
tensors answers ``{"output_0": ..., "output_1": ...}`` (JSON or npz).

A CSV body of several rows, JSON Lines of several lines, or JSON documents one a line are batch
transform's records when the answer is JSON, JSON Lines or CSV: each record is read as if sent
alone (a CSV or JSON Lines record is one row; a JSON record is a batch, as ever) and answered on
its own line, in order (serve/codecs/records.py). npy and npz answers take the body whole.

Settings (archive config file):
    dtype: what floating-point inputs become (default ``float32``; or ``float64``, ``float16``,
        ``bfloat16``). JSON and CSV numbers are floating-point; npy/npz integers go in as int64,
        booleans as they are.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from handlers.builtins.base import (
    JSON_TYPE,
    JSONLINES_TYPE,
    JSONLINES_TYPES,
    BuiltinHandler,
    Inputs,
    Loaded,
    accepted_media_type,
)
from handlers.builtins.settings import Settings
from serve.codecs import CodecRegistry, to_numpy
from serve.contract import InferenceRequest
from serve.errors import ModelError, UnprocessableError

logger = logging.getLogger(__name__)

INPUT_TYPES = (
    "application/x-npy",
    "application/x-npz",
    "application/json",
    *JSONLINES_TYPES,
    "text/csv",
)
FLOAT_TYPES = ("float32", "float64", "float16", "bfloat16")
_WRAPPERS = ("instances", "inputs")


def _as_array(value: Any) -> np.ndarray[Any, Any]:
    if isinstance(value, Mapping):
        value = next((value[k] for k in _WRAPPERS if k in value), value)
        if isinstance(value, Mapping):
            raise UnprocessableError('expected an array, or {"instances": array}')
    try:
        array = np.asarray(value)
    except ValueError as exc:
        raise UnprocessableError("expected a rectangular array of numbers") from exc
    if array.dtype.kind not in "biuf":
        raise UnprocessableError(f"expected numbers; got an array of {array.dtype}")
    if array.ndim == 0:
        raise UnprocessableError("expected a batch (an array of at least one dimension)")
    return array


class TensorHandler(BuiltinHandler):
    """The ``tensor`` built-in (see the module docstring for inputs, outputs and settings)."""

    name = "tensor"
    response_types = (
        JSON_TYPE,
        "application/x-npy",
        "text/csv",
        JSONLINES_TYPE,
        "application/x-npz",
    )

    def configure(self, options: Mapping[str, Any]) -> None:
        self.dtype = Settings(self.name, options).choice("dtype", "float32", FLOAT_TYPES)

    def parse(self, request: InferenceRequest, codecs: CodecRegistry) -> Inputs:
        media_type = accepted_media_type(request, INPUT_TYPES, "tensors")
        value = codecs.decode(request.body, request.content_type)
        if isinstance(value, np.ndarray) and value.dtype.kind in "US":
            raise UnprocessableError("CSV fields must all be numbers")
        named = media_type == "application/x-npz" and isinstance(value, Mapping)
        arrays = tuple(_as_array(a) for a in value.values()) if named else (_as_array(value),)
        if not arrays:
            raise UnprocessableError("the npz holds no arrays")
        if media_type == JSON_TYPE or media_type in JSONLINES_TYPES:
            # JSON numbers carry no dtype: take them as floats
            arrays = tuple(a.astype(np.float64) if a.dtype.kind in "iu" else a for a in arrays)
        rows = {len(a) for a in arrays}
        if len(rows) > 1:
            raise UnprocessableError(f"the arrays differ in their first axis: {sorted(rows)}")
        key = tuple((a.shape[1:], a.dtype.kind) for a in arrays)
        return Inputs([arrays], key=key)

    def _tensor(self, array: np.ndarray[Any, Any], device: str) -> Any:
        import torch

        if array.dtype.kind == "f":
            tensor = torch.from_numpy(np.ascontiguousarray(array))
            return tensor.to(device=device, dtype=getattr(torch, self.dtype))
        if array.dtype.kind in "iu":
            return torch.from_numpy(array.astype(np.int64)).to(device)
        return torch.from_numpy(np.ascontiguousarray(array)).to(device)

    def forward(self, loaded: Loaded, items: Sequence[Any]) -> list[Any]:
        count = len(items[0])
        inputs = [
            self._tensor(np.concatenate([item[i] for item in items]), loaded.device)
            for i in range(count)
        ]
        output = loaded.model(*inputs)
        outputs = list(output) if isinstance(output, tuple | list) else [output]
        arrays = [to_numpy(o) for o in outputs]
        total = sum(len(item[0]) for item in items)
        for array in arrays:
            if array.ndim == 0 or len(array) != total:
                raise ModelError(f"the model answered {array.shape} for a batch of {total} rows")
        answers: list[Any] = []
        start = 0
        for item in items:
            end = start + len(item[0])
            parts = [array[start:end] for array in arrays]
            single = len(parts) == 1
            answers.append(parts[0] if single else {f"output_{i}": p for i, p in enumerate(parts)})
            start = end
        return answers

    def render(self, outputs: list[Any], single: bool) -> Any:
        return outputs[0]  # one array (or set of named arrays) per request
