"""The built-in payload codecs: JSON, JSON lines, CSV, text and bytes here; arrays
(serve/codecs/arrays.py) and images (serve/codecs/images.py) beside them.

Each codec is a small class whose media types are class data. :func:`default_codecs` builds a
new :class:`~serve.codecs.registry.CodecRegistry` holding all of them; the app owns that instance.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from serve.codecs.arrays import NpyCodec, NpzCodec
from serve.codecs.images import DEFAULT_MAX_IMAGE_PIXELS, ImageCodec, JPEGCodec, PNGCodec
from serve.codecs.pieces import EventStreamCodec
from serve.codecs.registry import CodecRegistry
from serve.codecs.values import (
    decode_text,
    is_tensor,
    json_default,
    malformed,
    no_objects,
    to_numpy,
)
from serve.errors import NotAcceptableError, brief

logger = logging.getLogger(__name__)


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=json_default)


def _loads(text: str, media_type: str, line: int = 0) -> Any:
    """``text`` as JSON; ``line``: its line number in a body of several (a body of one line is
    said by column alone: a batch transform record's errors already name its line)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        several = line or "\n" in text.strip()
        where = (
            f"line {line or exc.lineno} column {exc.colno}" if several else f"column {exc.colno}"
        )
        reason = f"{exc.msg} at {where}" if text.strip() else "empty body"
        raise malformed(media_type, reason) from exc
    except RecursionError as exc:
        raise malformed(media_type, "nested too deeply") from exc


class JSONCodec:
    """``application/json``: any JSON value; numpy arrays and tensors encode as lists."""

    media_types: tuple[str, ...] = ("application/json",)
    can_decode: bool = True
    can_encode: bool = True

    def decode(self, body: bytes, params: Mapping[str, str]) -> Any:
        return _loads(decode_text(body, params, self.media_types[0]), self.media_types[0])

    def encode(self, value: Any, params: Mapping[str, str]) -> bytes:
        return _dumps(value).encode("utf-8")


class JSONLinesCodec:
    """JSON Lines: one record a line; decodes to a list, blank lines skipped."""

    media_types: tuple[str, ...] = (
        "application/jsonlines",
        "application/jsonl",
        "application/x-jsonlines",
    )
    can_decode: bool = True
    can_encode: bool = True

    def decode(self, body: bytes, params: Mapping[str, str]) -> list[Any]:
        kind = self.media_types[0]
        # split on "\n" only: str.splitlines would also split on U+2028 inside JSON strings
        text = decode_text(body, params, kind)
        several = "\n" in text.strip()  # one line has no line number worth giving
        lines = enumerate(text.split("\n"), 1)
        return [
            _loads(line, kind, number if several else 0) for number, line in lines if line.strip()
        ]

    def encode(self, value: Any, params: Mapping[str, str]) -> bytes:
        if isinstance(value, np.ndarray | np.generic) or is_tensor(value):
            value = to_numpy(value).tolist()
        if isinstance(value, Mapping | str | bytes) or not isinstance(value, Iterable):
            value = [value]
        return "".join(_dumps(record) + "\n" for record in value).encode("utf-8")


def _fields(record: Mapping[Any, Any], media_type: str) -> list[Any]:
    fields = list(record.values())
    for value in fields:
        if not isinstance(value, str | int | float | bool | np.generic) and value is not None:
            raise NotAcceptableError(
                f"cannot encode a {type(value).__name__} field as {media_type}: an object's "
                "values must be numbers or text"
            )
    return fields


def _object_rows(value: Any, media_type: str) -> list[list[Any]] | None:
    """An object as one row of its values, a list of objects as one row each; else None."""
    if isinstance(value, Mapping):
        return [_fields(value, media_type)]
    if isinstance(value, list | tuple) and value and all(isinstance(v, Mapping) for v in value):
        return [_fields(v, media_type) for v in value]
    return None


class CSVCodec:
    """``text/csv``: decodes to a 2-D float32 array when every field is numeric, else to str.

    Encodes arrays (2-D at most) as rows, and an object (``{"label": "positive", "score": 0.9}``)
    as one row of its values in order, a list of objects as one row each.
    """

    media_types: tuple[str, ...] = ("text/csv",)
    can_decode: bool = True
    can_encode: bool = True

    def decode(self, body: bytes, params: Mapping[str, str]) -> np.ndarray[Any, Any]:
        kind = self.media_types[0]
        try:
            rows = [row for row in csv.reader(io.StringIO(decode_text(body, params, kind))) if row]
        except csv.Error as exc:
            raise malformed(kind, brief(exc)) from exc
        if not rows:
            return np.empty((0, 0), dtype=np.float32)
        for number, row in enumerate(rows, 1):
            if len(row) != len(rows[0]):
                reason = f"row {number} has {len(row)} fields, row 1 has {len(rows[0])}"
                raise malformed(kind, reason)
        try:
            return np.array([[float(field) for field in row] for row in rows], dtype=np.float32)
        except ValueError:
            return np.array(rows, dtype=str)

    def encode(self, value: Any, params: Mapping[str, str]) -> bytes:
        rows: Any = _object_rows(value, self.media_types[0])
        if rows is None:
            array = no_objects(to_numpy(value), self.media_types[0])
            if array.ndim > 2:
                raise NotAcceptableError(f"cannot encode a {array.ndim}-D array as text/csv")
            rows = array.reshape(-1, 1) if array.ndim < 2 else array
        out = io.StringIO()
        # str() of numpy scalars gives the shortest text for the dtype ("0.1", not float32 noise)
        csv.writer(out, lineterminator="\n").writerows(
            ["" if x is None else str(x) for x in row] for row in rows
        )
        return out.getvalue().encode("utf-8")


class TextCodec:
    """``text/plain``: decodes to str; encodes str as is and other values as JSON text."""

    media_types: tuple[str, ...] = ("text/plain",)
    can_decode: bool = True
    can_encode: bool = True

    def decode(self, body: bytes, params: Mapping[str, str]) -> str:
        return decode_text(body, params, self.media_types[0])

    def encode(self, value: Any, params: Mapping[str, str]) -> bytes:
        return (value if isinstance(value, str) else _dumps(value)).encode("utf-8")


class BytesCodec:
    """``application/octet-stream``: raw bytes; arrays and tensors encode as their buffer."""

    media_types: tuple[str, ...] = ("application/octet-stream",)
    can_decode: bool = True
    can_encode: bool = True

    def decode(self, body: bytes, params: Mapping[str, str]) -> bytes:
        return bytes(body)

    def encode(self, value: Any, params: Mapping[str, str]) -> bytes:
        if isinstance(value, bytes | bytearray | memoryview):
            return bytes(value)
        if isinstance(value, str):
            return value.encode("utf-8")
        if isinstance(value, np.ndarray | np.generic) or is_tensor(value):
            return no_objects(to_numpy(value), self.media_types[0]).tobytes()
        raise NotAcceptableError(f"cannot encode a {type(value).__name__} as raw bytes")


def default_codecs(*, max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> CodecRegistry:
    """A new registry with every built-in codec (JSON first: the usual default).

    Args:
        max_image_pixels: the largest image the image codecs decode (``max_image_pixels`` of
            :class:`~serve.config.ServingConfig`).
    """
    return CodecRegistry(
        [
            JSONCodec(),
            JSONLinesCodec(),
            CSVCodec(),
            NpyCodec(),
            NpzCodec(),
            TextCodec(),
            BytesCodec(),
            PNGCodec(max_image_pixels),
            JPEGCodec(max_image_pixels),
            ImageCodec(max_image_pixels),
            EventStreamCodec(),
        ]
    )
