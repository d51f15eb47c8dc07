"""Read the images of one request, whatever form they came in, as Pillow images.

Accepted: any image Pillow reads (``image/*``, ``application/x-image``, or raw bytes as
``application/octet-stream``); ``application/x-npy`` (``HxW`` or ``HxWxC`` for one image, ``NxHxW``
or ``NxHxWxC`` for several; uint8 pixels, or floats in [0, 1]); ``application/x-npz`` (one image
per array); ``application/json`` (a base64 string, or a list of them, or a nested list of pixels);
JSON Lines (a base64 string a line).
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
from PIL import Image

from handlers.builtins.base import JSONLINES_TYPES, accepted_media_type
from serve.codecs import CodecRegistry
from serve.codecs.images import ImageCodec, PixelsOnly
from serve.contract import InferenceRequest
from serve.errors import BadRequestError, UnprocessableError

logger = logging.getLogger(__name__)

IMAGE_TYPES = (
    "image/png",
    "image/jpeg",
    "image/webp",
    "image/bmp",
    "image/gif",
    "image/tiff",
    "application/x-image",
    "application/octet-stream",
)
ARRAY_TYPES = ("application/x-npy", "application/x-npz", "application/json", *JSONLINES_TYPES)
_CHANNELS = (1, 3, 4)


def decode_image(data: bytes, codecs: CodecRegistry | None = None) -> Image.Image:
    """A loaded Pillow image from encoded bytes, read by the ``application/x-image`` codec of
    ``codecs`` (the app's, so its pixel budget applies), or by a default one when None.

    Only its pixels and mode are kept (no format, metadata or other frames): what the built-ins
    use, and what lets the codec decode plain PNGs faster than Pillow does.

    Raises:
        BadRequestError: Pillow cannot read the bytes.
        PayloadTooLargeError: the image's header declares more pixels than the budget.
    """
    if codecs is None:
        codecs = CodecRegistry([ImageCodec()])
    image: Image.Image = codecs.decode(PixelsOnly(data), "application/x-image")
    return image


def array_image(array: np.ndarray[Any, Any]) -> Image.Image:
    """A Pillow image from ``HxW`` or ``HxWxC`` pixels: uint8, or floats in [0, 1].

    Raises:
        UnprocessableError: another shape, or values outside the range for the dtype.
    """
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))):
        raise UnprocessableError(f"expected an HxW, HxWx3 or HxWx4 image; got shape {array.shape}")
    if array.size == 0:
        raise UnprocessableError("empty image")
    if array.dtype != np.uint8:
        if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
            raise UnprocessableError(f"image pixels must be numbers; got {array.dtype}")
        values = array.astype(np.float64)
        if not np.isfinite(values).all() or values.min() < 0 or values.max() > 1:
            raise UnprocessableError("non-uint8 image pixels must lie in [0, 1]")
        array = (values * 255).round().astype(np.uint8)
    return Image.fromarray(array)


def _array_images(array: np.ndarray[Any, Any]) -> tuple[list[Image.Image], bool]:
    if array.ndim == 2 or (array.ndim == 3 and array.shape[2] in _CHANNELS):
        return [array_image(array)], True
    if array.ndim in (3, 4):
        return [array_image(item) for item in array], False
    raise UnprocessableError(f"expected one image or a batch of images; got shape {array.shape}")


def _base64_image(text: str, codecs: CodecRegistry) -> Image.Image:
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadRequestError("a JSON string must hold a base64-encoded image") from exc
    return decode_image(data, codecs)


def _json_images(value: Any, codecs: CodecRegistry) -> tuple[list[Image.Image], bool]:
    if isinstance(value, str):
        return [_base64_image(value, codecs)], True
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return [_base64_image(v, codecs) for v in value], False
    if isinstance(value, list):
        try:
            array = np.asarray(value, dtype=np.float64)
        except (ValueError, TypeError) as exc:
            raise UnprocessableError("a JSON image must be a rectangular list of numbers") from exc
        return _array_images(array)
    raise UnprocessableError("expected a base64 string, a list of them, or a list of pixels")


def request_images(request: InferenceRequest, codecs: CodecRegistry) -> tuple[list[Any], bool]:
    """The request's images (Pillow images) and whether it sent one bare image.

    Raises:
        UnsupportedMediaTypeError: a Content-Type that holds no image.
        BadRequestError: the payload does not decode.
        UnprocessableError: it decodes but holds no image of a usable shape.
    """
    media_type = accepted_media_type(request, IMAGE_TYPES + ARRAY_TYPES, "images")
    if media_type == "application/octet-stream":
        return [decode_image(request.body, codecs)], True
    # the image codecs may decode a body marked PixelsOnly faster: only its pixels are used here
    body = PixelsOnly(request.body) if media_type in IMAGE_TYPES else request.body
    value = codecs.decode(body, request.content_type)
    if isinstance(value, Image.Image):
        return [value], True
    if isinstance(value, np.ndarray):
        return _array_images(value)
    if isinstance(value, Mapping):
        images: list[Any] = []
        for array in value.values():
            images.extend(_array_images(array)[0])
        return images, False
    return _json_images(value, codecs)
