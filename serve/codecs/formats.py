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
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        where = f"line {line or exc.lineno} column {exc.colno}"
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
        lines = decode_text(body, params, kind).split("\n")
        return [_loads(line, kind, number) for number, line in enumerate(lines, 1) if line.strip()]

    def encode(self, value: Any, params: Mapping[str, str]) -> bytes:
        if isinstance(value, np.ndarray | np.generic) or is_tensor(value):
            value = to_numpy(value).tolist()
        if isinstance(value, Mapping | str | bytes) or not isinstance(value, Iterable):
            value = [value]
        return "".join(_dumps(record) + "\n" for record in value).encode("utf-8")


class CSVCodec:
    """``text/csv``: decodes to a 2-D float32 array when every field is numeric, else to str."""

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
        array = no_objects(to_numpy(value), self.media_types[0])
        if array.ndim > 2:
            raise NotAcceptableError(f"cannot encode a {array.ndim}-D array as text/csv")
        rows = array.reshape(-1, 1) if array.ndim < 2 else array
        out = io.StringIO()
        # str() of numpy scalars gives the shortest text for the dtype ("0.1", not float32 noise)
        csv.writer(out, lineterminator="\n").writerows([str(x) for x in row] for row in rows)
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
