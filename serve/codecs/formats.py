"""The built-in payload codecs (JSON, JSON lines, CSV, npy, npz, text, bytes, images).

Each codec is a small class whose media types are class data. :func:`default_codecs` builds a
new :class:`~serve.codecs.registry.CodecRegistry` holding all of them; the app owns that instance.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import zipfile
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from PIL import Image

from serve.codecs.registry import CodecRegistry
from serve.errors import BadRequestError, NotAcceptableError, PayloadTooLargeError, brief

logger = logging.getLogger(__name__)


def _is_tensor(value: Any) -> bool:
    return all(hasattr(value, name) for name in ("detach", "cpu", "numpy"))


def to_numpy(value: Any) -> np.ndarray[Any, Any]:
    """Convert numpy arrays and scalars, (nested) lists, Python scalars and torch tensors.

    Torch is never imported: tensors are recognised by their ``detach``/``cpu``/``numpy``
    methods; dtypes numpy lacks (bfloat16) are widened to float32 first.

    Raises:
        ValueError: for ragged nested lists.
    """
    if isinstance(value, np.ndarray):
        return value
    if _is_tensor(value):
        tensor = value.detach().cpu()
        try:
            return np.asarray(tensor.numpy())
        except TypeError:
            return np.asarray(tensor.float().numpy())
    return np.asarray(value)


def _malformed(media_type: str, reason: str) -> BadRequestError:
    return BadRequestError(f"malformed {media_type} payload: {reason}")


def _text(body: bytes, params: Mapping[str, str], media_type: str) -> str:
    charset = params.get("charset", "utf-8") or "utf-8"
    try:
        return body.decode(charset)
    except LookupError as exc:
        raise BadRequestError(f"unsupported charset {charset[:40]!r} for {media_type}") from exc
    except UnicodeDecodeError as exc:
        reason = f"not valid {charset} at byte {exc.start}"
        raise _malformed(media_type, reason) from exc


def _json_default(value: Any) -> Any:
    if isinstance(value, np.ndarray | np.generic) or _is_tensor(value):
        return to_numpy(value).tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=_json_default)


def _loads(text: str, media_type: str, line: int = 0) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        where = f"line {line or exc.lineno} column {exc.colno}"
        reason = f"{exc.msg} at {where}" if text.strip() else "empty body"
        raise _malformed(media_type, reason) from exc
    except RecursionError as exc:
        raise _malformed(media_type, "nested too deeply") from exc


def _no_objects(array: np.ndarray[Any, Any], media_type: str) -> np.ndarray[Any, Any]:
    if array.dtype.hasobject:
        raise NotAcceptableError(f"cannot encode an array of Python objects as {media_type}")
    return array


class JSONCodec:
    """``application/json``: any JSON value; numpy arrays and tensors encode as lists."""

    media_types: tuple[str, ...] = ("application/json",)
    can_decode: bool = True
    can_encode: bool = True

    def decode(self, body: bytes, params: Mapping[str, str]) -> Any:
        return _loads(_text(body, params, self.media_types[0]), self.media_types[0])

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
        lines = _text(body, params, kind).split("\n")
        return [_loads(line, kind, number) for number, line in enumerate(lines, 1) if line.strip()]

    def encode(self, value: Any, params: Mapping[str, str]) -> bytes:
        if isinstance(value, np.ndarray | np.generic) or _is_tensor(value):
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
            rows = [row for row in csv.reader(io.StringIO(_text(body, params, kind))) if row]
        except csv.Error as exc:
            raise _malformed(kind, brief(exc)) from exc
        if not rows:
            return np.empty((0, 0), dtype=np.float32)
        for number, row in enumerate(rows, 1):
            if len(row) != len(rows[0]):
                reason = f"row {number} has {len(row)} fields, row 1 has {len(rows[0])}"
                raise _malformed(kind, reason)
        try:
            return np.array([[float(field) for field in row] for row in rows], dtype=np.float32)
        except ValueError:
            return np.array(rows, dtype=str)

    def encode(self, value: Any, params: Mapping[str, str]) -> bytes:
        array = _no_objects(to_numpy(value), self.media_types[0])
        if array.ndim > 2:
            raise NotAcceptableError(f"cannot encode a {array.ndim}-D array as text/csv")
        rows = array.reshape(-1, 1) if array.ndim < 2 else array
        out = io.StringIO()
        # str() of numpy scalars gives the shortest text for the dtype ("0.1", not float32 noise)
        csv.writer(out, lineterminator="\n").writerows([str(x) for x in row] for row in rows)
        return out.getvalue().encode("utf-8")


class NpyCodec:
    """``application/x-npy``: one array in NumPy's ``.npy`` format; never unpickles."""

    media_types: tuple[str, ...] = ("application/x-npy",)
    can_decode: bool = True
    can_encode: bool = True

    def decode(self, body: bytes, params: Mapping[str, str]) -> np.ndarray[Any, Any]:
        try:
            return np.lib.format.read_array(io.BytesIO(body), allow_pickle=False)
        except ValueError as exc:
            if "allow_pickle" in str(exc):
                raise BadRequestError("object arrays are not accepted") from exc
            raise _malformed(self.media_types[0], brief(exc)) from exc

    def encode(self, value: Any, params: Mapping[str, str]) -> bytes:
        out = io.BytesIO()
        np.save(out, _no_objects(to_numpy(value), self.media_types[0]), allow_pickle=False)
        return out.getvalue()


class NpzCodec:
    """``application/x-npz``: named arrays; decodes to ``dict[str, ndarray]``, never unpickles.

    Attributes:
        max_bytes: the largest total uncompressed size accepted (413 above it).
    """

    media_types: tuple[str, ...] = ("application/x-npz",)
    can_decode: bool = True
    can_encode: bool = True

    def __init__(self, max_bytes: int = 1 << 30) -> None:
        self.max_bytes = max_bytes

    def decode(self, body: bytes, params: Mapping[str, str]) -> dict[str, np.ndarray[Any, Any]]:
        try:
            with zipfile.ZipFile(io.BytesIO(body)) as archive:
                if sum(info.file_size for info in archive.infolist()) > self.max_bytes:
                    raise PayloadTooLargeError(f"npz arrays exceed {self.max_bytes} bytes")
                with np.load(io.BytesIO(body), allow_pickle=False) as npz:
                    arrays = {name: npz[name] for name in npz.files}
        except ValueError as exc:
            if "allow_pickle" in str(exc):
                raise BadRequestError("object arrays are not accepted") from exc
            raise _malformed(self.media_types[0], brief(exc)) from exc
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise _malformed(self.media_types[0], brief(exc)) from exc
        for name, array in arrays.items():
            if not isinstance(array, np.ndarray):  # np.load hands back non-.npy members as bytes
                raise _malformed(self.media_types[0], f"member {name[:40]!r} is not a .npy array")
        return arrays

    def encode(self, value: Any, params: Mapping[str, str]) -> bytes:
        arrays = value if isinstance(value, Mapping) else {"arr_0": value}
        kind = self.media_types[0]
        named = {str(name): _no_objects(to_numpy(a), kind) for name, a in arrays.items()}
        out = io.BytesIO()
        np.savez(out, allow_pickle=False, **named)
        return out.getvalue()


class TextCodec:
    """``text/plain``: decodes to str; encodes str as is and other values as JSON text."""

    media_types: tuple[str, ...] = ("text/plain",)
    can_decode: bool = True
    can_encode: bool = True

    def decode(self, body: bytes, params: Mapping[str, str]) -> str:
        return _text(body, params, self.media_types[0])

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
        if isinstance(value, np.ndarray | np.generic) or _is_tensor(value):
            return _no_objects(to_numpy(value), self.media_types[0]).tobytes()
        raise NotAcceptableError(f"cannot encode a {type(value).__name__} as raw bytes")


def _encode_image(value: Any, image_format: str, media_type: str) -> bytes:
    if isinstance(value, np.ndarray) or _is_tensor(value):
        array = to_numpy(value)
        shape_ok = array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))
        if array.dtype != np.uint8 or not shape_ok:
            raise NotAcceptableError(
                f"only uint8 HxW, HxWx3 or HxWx4 arrays encode as {media_type}; "
                f"got {array.dtype} {array.shape}"
            )
        value = Image.fromarray(array)
    if not isinstance(value, Image.Image):
        raise NotAcceptableError(f"cannot encode a {type(value).__name__} as {media_type}")
    if image_format == "JPEG" and value.mode not in ("L", "RGB", "CMYK"):
        value = value.convert("RGB")  # JPEG has no alpha channel
    out = io.BytesIO()
    try:
        value.save(out, format=image_format)
    except (OSError, ValueError) as exc:
        raise NotAcceptableError(f"cannot encode a {value.mode} image as {media_type}") from exc
    return out.getvalue()


class ImageCodec:
    """Decodes any image Pillow reads to a loaded ``PIL.Image.Image``; encodes nothing."""

    media_types: tuple[str, ...] = (
        "application/x-image",
        "image/webp",
        "image/bmp",
        "image/gif",
        "image/tiff",
    )
    can_decode: bool = True
    can_encode: bool = False

    def decode(self, body: bytes, params: Mapping[str, str]) -> Image.Image:
        try:
            image = Image.open(io.BytesIO(body))
            # Pillow only warns between MAX_IMAGE_PIXELS and twice that; refuse the whole range
            limit = Image.MAX_IMAGE_PIXELS
            if limit is not None and image.width * image.height > limit:
                size = f"{image.width}x{image.height}"
                raise BadRequestError(f"image too large: {size} exceeds {limit} pixels")
            image.load()
        except Image.DecompressionBombError as exc:
            raise BadRequestError(f"image too large: {brief(exc)}") from exc
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise BadRequestError("malformed image payload") from exc
        return image

    def encode(self, value: Any, params: Mapping[str, str]) -> bytes:
        raise NotAcceptableError(f"{self.media_types[0]} is a request type only")


class PNGCodec(ImageCodec):
    """``image/png``: decodes any image; encodes a PIL image or a uint8 array as PNG."""

    media_types: tuple[str, ...] = ("image/png",)
    can_encode: bool = True

    def encode(self, value: Any, params: Mapping[str, str]) -> bytes:
        return _encode_image(value, "PNG", self.media_types[0])


class JPEGCodec(ImageCodec):
    """``image/jpeg``: decodes any image; encodes a PIL image or a uint8 array as JPEG."""

    media_types: tuple[str, ...] = ("image/jpeg",)
    can_encode: bool = True

    def encode(self, value: Any, params: Mapping[str, str]) -> bytes:
        return _encode_image(value, "JPEG", self.media_types[0])


def default_codecs() -> CodecRegistry:
    """A new registry with every built-in codec (JSON first: the usual default)."""
    return CodecRegistry(
        [
            JSONCodec(),
            JSONLinesCodec(),
            CSVCodec(),
            NpyCodec(),
            NpzCodec(),
            TextCodec(),
            BytesCodec(),
            PNGCodec(),
            JPEGCodec(),
            ImageCodec(),
        ]
    )
