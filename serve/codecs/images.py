"""Image codecs: any image Pillow reads, its size checked from its header before any pixel is
decoded (a small file may declare a huge image); PNG and JPEG answers.

A caller that uses only the pixels (the built-in handlers) marks the body :class:`PixelsOnly`.
Then a plain 8-bit PNG (grayscale, RGB or RGBA) is decoded by libspng (imagecodecs) to the same
pixels as Pillow's, in 60% of the time for a small one and 75% for a 640x480 one (bench/decode.py).
Any other image, any image over the budget, and any PNG libspng refuses goes through Pillow as
before, so every refusal and its message stay Pillow's.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Mapping
from typing import Any

import imagecodecs
import numpy as np
from PIL import Image

from serve.codecs.values import is_tensor, to_numpy
from serve.errors import BadRequestError, NotAcceptableError, PayloadTooLargeError, brief


def _encode_image(value: Any, image_format: str, media_type: str) -> bytes:
    if isinstance(value, np.ndarray) or is_tensor(value):
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


DEFAULT_MAX_IMAGE_PIXELS = 25_000_000  # 5000 x 5000; Pillow only warns at 89 M
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# The PNG colour types libspng decodes here, 8 bits a sample: grayscale, RGB, RGBA (which Pillow
# reads as L, RGB, RGBA). Palettes, gray with alpha and other depths go through Pillow.
FAST_PNG_COLOR_TYPES = (0, 2, 6)
# The chunks such a PNG may hold: the image's own, and small uncompressed ones that change no
# pixel. Any other (iCCP, zTXt and iTXt, which Pillow decompresses within limits; tRNS; acTL, an
# animation) sends the image to Pillow.
FAST_PNG_CHUNKS = frozenset({b"IHDR", b"IDAT", b"IEND", b"sRGB", b"gAMA", b"cHRM", b"pHYs"})


class PixelsOnly(bytes):
    """An image body whose reader uses only its pixels, not its format, metadata or frames.

    The image codecs decode such a body to the same pixels and mode as any other, with the same
    errors, but faster when they can (see the module docstring).
    """


def _png_chunks_fit(body: bytes) -> bool:
    """Whether the chunks are whole, up to IEND, all in FAST_PNG_CHUNKS, and have the right CRC.

    IDAT's CRC is left to libspng; the others are checked here because Pillow refuses an image
    with a bad one where libspng drops the chunk and decodes.
    """
    pos = 8
    while pos + 12 <= len(body):
        (length,) = struct.unpack_from(">I", body, pos)
        end = pos + 12 + length
        kind = body[pos + 4 : pos + 8]
        if end > len(body) or kind not in FAST_PNG_CHUNKS:
            return False
        if kind != b"IDAT" and zlib.crc32(body[pos + 4 : end - 4]) != int.from_bytes(
            body[end - 4 : end]
        ):
            return False
        if kind == b"IEND":
            return True
        pos = end
    return False


def _png_size(body: bytes) -> tuple[int, int] | None:
    """Width and height of a PNG that libspng decodes to Pillow's pixels, else None."""
    if len(body) < 33 or not body.startswith(PNG_SIGNATURE) or body[8:16] != b"\0\0\0\rIHDR":
        return None
    width, height, depth, color, compression, filtering, interlace = struct.unpack_from(
        ">IIBBBBB", body, 16
    )
    if (
        depth != 8
        or color not in FAST_PNG_COLOR_TYPES
        or (compression, filtering) != (0, 0)
        or interlace > 1
        or not _png_chunks_fit(body)
    ):
        return None
    return width, height


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
        """A loaded image; for a :class:`PixelsOnly` body, possibly one that holds only pixels.

        Raises:
            BadRequestError: the body is no image that can be read.
            PayloadTooLargeError: its header declares more pixels than the budget.
        """
        if isinstance(body, PixelsOnly):
            pixels = self._fast_pixels(body)
            if pixels is not None:
                return Image.fromarray(pixels)
        try:
            image = Image.open(io.BytesIO(body))  # reads the header only
            self._check_size(image)
            image.load()
        except Image.DecompressionBombError as exc:  # Pillow's own ceiling, whatever ours is
            raise PayloadTooLargeError(f"image too large: {brief(exc)}") from exc
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise BadRequestError("malformed image payload") from exc
        return image

    def _fast_pixels(self, body: bytes) -> np.ndarray[Any, Any] | None:
        """The pixels of a plain PNG by libspng, or None: then Pillow decodes the body.

        Only images within the budget and Pillow's own ceiling qualify, so refusals come from
        Pillow, as does the answer to anything libspng refuses.
        """
        size = _png_size(body)
        if size is None or not self._fits(*size):
            return None
        try:
            pixels: np.ndarray[Any, Any] = imagecodecs.spng_decode(body)
        except RuntimeError:  # imagecodecs.SpngError
            return None
        return pixels

    def _fits(self, width: int, height: int) -> bool:
        pixels = width * height
        ceiling = Image.MAX_IMAGE_PIXELS
        return 0 < pixels <= self.max_pixels and (ceiling is None or pixels <= ceiling)

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
