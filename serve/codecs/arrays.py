"""``application/x-npy`` and ``application/x-npz``: arrays in NumPy's formats, never unpickled,
each ``.npy`` header read and checked before its array is allocated (a small body may declare a
huge shape)."""

from __future__ import annotations

import io
import math
import tokenize
import zipfile
import zlib
from collections.abc import Callable, Mapping
from typing import IO, Any

import numpy as np

from serve.codecs.values import malformed, no_objects, to_numpy
from serve.errors import BadRequestError, PayloadTooLargeError, brief

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
            raise malformed(media_type, f"unsupported .npy version {version[0]}.{version[1]}")
        return read_header(stream)
    except _NPY_HEADER_ERRORS as exc:
        raise malformed(media_type, f"bad .npy header: {brief(exc)}") from exc


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
        raise malformed(media_type, f"negative dimension in shape {shape}")
    held = size - stream.tell()
    # Zero-size items count as one byte: the element count, too, is bounded by the body.
    declared = math.prod(shape) * max(dtype.itemsize, 1)
    if declared > held:
        reason = f"shape {shape} of {dtype} needs {declared} bytes, the payload holds {held}"
        raise malformed(media_type, reason)
    stream.seek(0)
    try:
        return np.lib.format.read_array(stream, allow_pickle=False)
    except (ValueError, OverflowError) as exc:  # Overflow: an empty shape with a huge dimension
        raise malformed(media_type, brief(exc)) from exc


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
        np.save(out, no_objects(to_numpy(value), self.media_types[0]), allow_pickle=False)
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
            raise malformed(self.media_types[0], brief(exc)) from exc

    def _member(self, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray[Any, Any]:
        with archive.open(info) as stream:
            if stream.read(len(np.lib.format.MAGIC_PREFIX)) != np.lib.format.MAGIC_PREFIX:
                reason = f"member {info.filename[:40]!r} is not a .npy array"
                raise malformed(self.media_types[0], reason)
            stream.seek(0)
            return _read_npy(stream, info.file_size, self.media_types[0])

    def encode(self, value: Any, params: Mapping[str, str]) -> bytes:
        arrays = value if isinstance(value, Mapping) else {"arr_0": value}
        kind = self.media_types[0]
        named = {str(name): no_objects(to_numpy(a), kind) for name, a in arrays.items()}
        out = io.BytesIO()
        np.savez(out, allow_pickle=False, **named)
        return out.getvalue()
