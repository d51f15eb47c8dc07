"""Image codecs: any image Pillow reads, its size checked from its header before any pixel is
decoded (a small file may declare a huge image); PNG and JPEG answers."""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import numpy as np
from PIL import Image

from serve.codecs.values import is_tensor, to_numpy
from serve.config import DEFAULT_MAX_IMAGE_PIXELS
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
