"""The built-in payload codecs (JSON, JSON lines, CSV, npy, npz, text, bytes, images).

Each codec is a small class whose media types are class data. :func:`default_codecs` builds a
new :class:`~serve.codecs.registry.CodecRegistry` holding all of them; the app owns that instance.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import tokenize
import zipfile
import zlib
from collections.abc import Callable, Iterable, Mapping
from typing import IO, Any

import numpy as np
from PIL import Image

from serve.codecs.registry import CodecRegistry
from serve.config import DEFAULT_MAX_IMAGE_PIXELS
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


_NpyHeader = tuple[tuple[int, ...], bool, np.dtype[Any]]

# Version 3.0 is 2.0 with a UTF-8 header; read as Latin-1 its shape and dtype sizes are the same,
# and read_array reads it properly once it has passed the checks.
_NPY_HEADERS: dict[tuple[int, int], Callable[[IO[bytes]], _NpyHeader]] = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
    (3, 0): np.lib.format.read_array_header_2_0,
}
# What numpy's header parsing raises on a malformed header dict, besides ValueError.
_NPY_HEADER_ERRORS = (ValueError, SyntaxError, TypeError, tokenize.TokenError, RecursionError)


def _npy_header(stream: IO[bytes], media_type: str) -> _NpyHeader:
    try:
        version = np.lib.format.read_magic(stream)
        read_header = _NPY_HEADERS.get(version)
        if read_header is None:
            raise _malformed(media_type, f"unsupported .npy version {version[0]}.{version[1]}")
        return read_header(stream)
    except _NPY_HEADER_ERRORS as exc:
        raise _malformed(media_type, f"bad .npy header: {brief(exc)}") from exc


def _read_npy(stream: IO[bytes], size: int, media_type: str) -> np.ndarray[Any, Any]:
    """One ``.npy`` array of ``size`` bytes, its header checked before anything is allocated.

    Raises:
        BadRequestError: a malformed header, an object dtype (never unpickled), or a header that
            declares more data than the ``size`` bytes hold.
    """
    shape, _, dtype = _npy_header(stream, media_type)
    if dtype.hasobject:
        raise BadRequestError("object arrays are not accepted")
    if any(length < 0 for length in shape):
        raise _malformed(media_type, f"negative dimension in shape {shape}")
    held = size - stream.tell()
    # Zero-size items count as one byte: the element count, too, is bounded by the body.
    declared = math.prod(shape) * max(dtype.itemsize, 1)
    if declared > held:
        reason = f"shape {shape} of {dtype} needs {declared} bytes, the payload holds {held}"
        raise _malformed(media_type, reason)
    stream.seek(0)
    try:
        return np.lib.format.read_array(stream, allow_pickle=False)
    except (ValueError, OverflowError) as exc:  # Overflow: an empty shape with a huge dimension
        raise _malformed(media_type, brief(exc)) from exc


class NpyCodec:
    """``application/x-npy``: one array in NumPy's ``.npy`` format; never unpickles.

    The header is read first: a shape larger than the body can hold is refused before the array
    is allocated.
    """

    media_types: tuple[str, ...] = ("application/x-npy",)
    can_decode: bool = True
    can_encode: bool = True

    def decode(self, body: bytes, params: Mapping[str, str]) -> np.ndarray[Any, Any]:
        return _read_npy(io.BytesIO(body), len(body), self.media_types[0])

    def encode(self, value: Any, params: Mapping[str, str]) -> bytes:
        out = io.BytesIO()
        np.save(out, _no_objects(to_numpy(value), self.media_types[0]), allow_pickle=False)
        return out.getvalue()


# What a malformed zip raises while it is read (encrypted or unsupported members: RuntimeError).
_ZIP_ERRORS = (zipfile.BadZipFile, OSError, EOFError, RuntimeError, zlib.error)


class NpzCodec:
    """``application/x-npz``: named arrays; decodes to ``dict[str, ndarray]``, never unpickles.

    Each member's ``.npy`` header is checked, as for ``application/x-npy``, before its array is
    allocated.

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
                members = archive.infolist()
                if sum(info.file_size for info in members) > self.max_bytes:
                    raise PayloadTooLargeError(f"npz arrays exceed {self.max_bytes} bytes")
                return {
                    # named as np.load names them
                    info.filename.removesuffix(".npy"): self._member(archive, info)
                    for info in members
                }
        except _ZIP_ERRORS as exc:
            raise _malformed(self.media_types[0], brief(exc)) from exc

    def _member(self, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray[Any, Any]:
        with archive.open(info) as stream:
            if stream.read(len(np.lib.format.MAGIC_PREFIX)) != np.lib.format.MAGIC_PREFIX:
                reason = f"member {info.filename[:40]!r} is not a .npy array"
                raise _malformed(self.media_types[0], reason)
            stream.seek(0)
            return _read_npy(stream, info.file_size, self.media_types[0])

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
    """Decodes any image Pillow reads to a loaded ``PIL.Image.Image``; encodes nothing.

    The size is read from the image's header and checked before any pixel is decoded: a small
    file may declare a huge image.

    Attributes:
        max_pixels: the largest width x height decoded (413 above it; BYOSERVE_MAX_IMAGE_PIXELS).
    """

    media_types: tuple[str, ...] = (
        "application/x-image",
        "image/webp",
        "image/bmp",
        "image/gif",
        "image/tiff",
    )
    can_decode: bool = True
    can_encode: bool = False

    def __init__(self, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> None:
        self.max_pixels = max_pixels

    def decode(self, body: bytes, params: Mapping[str, str]) -> Image.Image:
        try:
            image = Image.open(io.BytesIO(body))  # reads the header only
            self._check_size(image)
            image.load()
        except Image.DecompressionBombError as exc:  # Pillow's own ceiling, whatever ours is
            raise PayloadTooLargeError(f"image too large: {brief(exc)}") from exc
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise BadRequestError("malformed image payload") from exc
        return image

    def _check_size(self, image: Image.Image) -> None:
        if image.width * image.height > self.max_pixels:
            raise PayloadTooLargeError(
                f"image of {image.width}x{image.height} pixels is over the {self.max_pixels}-pixel"
                " limit (set BYOSERVE_MAX_IMAGE_PIXELS to raise it)"
            )

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
        ]
    )
