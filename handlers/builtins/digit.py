"""``digit``: handwritten digits in, ``{"digit": d, "probability": p}`` out.

Inputs are brought to what a model trained on scikit-learn's digits expects: light strokes on a
dark background, ``input_size`` x ``input_size`` pixels in [0, 1].

- Images (any size, any mode Pillow reads): grayscale, scaled to [0, 1], inverted when dark on
  light (mean above 0.5), box-resampled to the input size (how the digits were made).
- Arrays (JSON, JSON Lines, npy, CSV): one ``HxW`` image, a batch ``NxHxW`` (or ``Nx1xHxW``), or
  flat rows of 64 or 784 values (8x8, 28x28). Values in [0, 1] are used as they are, up to 16
  are scaled from scikit-learn's 0-16, anything larger (and uint8) from 0-255.

One image answers one object; a batch, a list. Answers are JSON, JSON Lines or CSV
(``digit,probability``). A CSV body of several rows, JSON Lines, or JSON documents one a line are
batch transform's records: one answer line per record, in order (serve/codecs/records.py).

Settings (archive config file):
    input_size: the side the model takes. When it is not set, each worker finds it at load by
        running the model on a blank 8x8 digit, then a 28x28 one (MNIST), and logs which it
        took; a model that takes neither is refused at start, asking for the setting. A size
        that is set is checked the same way.
    invert: ``auto`` (default), ``always`` or ``never``.
    flatten: give the model ``(N, size*size)`` rows instead of ``(N, 1, size, size)`` images.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from handlers.builtins.base import (
    CSV_TYPE,
    JSON_TYPE,
    JSONLINES_TYPE,
    JSONLINES_TYPES,
    BuiltinHandler,
    Inputs,
    Loaded,
    accepted_media_type,
)
from handlers.builtins.images import IMAGE_TYPES, decode_image
from handlers.builtins.outputs import probabilities
from handlers.builtins.settings import Settings
from serve.codecs import CodecRegistry
from serve.contract import HandlerLoadError, InferenceRequest
from serve.errors import UnprocessableError

logger = logging.getLogger(__name__)

ARRAY_TYPES = ("application/json", *JSONLINES_TYPES, "application/x-npy", "text/csv")
FLAT_SIZES = (64, 784)
# what input_size may be when the config file leaves it out, tried in this order:
# scikit-learn's digits, then MNIST's
CANDIDATE_SIZES = (8, 28)


def scale_pixels(array: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Pixel values mapped to [0, 1], guessing their range (see the module docstring)."""
    if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise UnprocessableError(f"digit pixels must be numbers; got {array.dtype}")
    values = array.astype(np.float32)
    if values.size == 0 or not np.isfinite(values).all() or values.min() < 0:
        raise UnprocessableError("digit pixels must be finite, non-negative numbers")
    peak = float(values.max())
    if array.dtype == np.uint8 or peak > 16:
        return values / 255.0
    return values / 16.0 if peak > 1 else values


def split_images(array: np.ndarray[Any, Any]) -> tuple[list[np.ndarray[Any, Any]], bool]:
    """One 2-D image or a batch of them from an array of any accepted shape."""
    if array.ndim == 1 and array.size in FLAT_SIZES:
        side = math.isqrt(array.size)
        return [array.reshape(side, side)], True
    if array.ndim == 2 and array.shape[1] in FLAT_SIZES and array.shape[0] != array.shape[1]:
        side = math.isqrt(array.shape[1])
        return list(array.reshape(-1, side, side)), False
    if array.ndim == 2:
        return [array], True
    if array.ndim == 3:
        return list(array), False
    if array.ndim == 4 and array.shape[1] == 1:
        return list(array[:, 0]), False
    raise UnprocessableError(
        f"expected an HxW digit, NxHxW digits or rows of 64/784 pixels; got shape {array.shape}"
    )


class DigitClassifier(BuiltinHandler):
    """The ``digit`` built-in (see the module docstring for inputs and settings)."""

    name = "digit"
    response_types = (JSON_TYPE, JSONLINES_TYPE, CSV_TYPE)

    def configure(self, options: Mapping[str, Any]) -> None:
        settings = Settings(self.name, options)
        self.input_size = settings.integer("input_size", CANDIDATE_SIZES[0], minimum=1)
        self.size_given = settings.given("input_size")
        self.invert = settings.choice("invert", "auto", ("auto", "always", "never"))
        self.flatten = settings.boolean("flatten", False)

    def prepare(self, loaded: Loaded) -> None:
        """Check input_size against the model, or find it when the config file leaves it out.

        Raises:
            HandlerLoadError: the model takes no input of the size set, or of any candidate size.
        """
        if self.size_given:
            reason = self._rejection(loaded, self.input_size)
            if reason is not None:
                raise HandlerLoadError(self._misfit(loaded, reason))
            return
        reasons: list[str] = []
        for size in CANDIDATE_SIZES:
            reason = self._rejection(loaded, size)
            if reason is None:
                self.input_size = size
                logger.info(
                    "%s: input_size is not set; the model takes %dx%d digits, so that size is used",
                    self.name,
                    size,
                    size,
                )
                return
            reasons.append(f"{size}x{size}: {reason}")
        tried = " nor ".join(f"{size}x{size}" for size in CANDIDATE_SIZES)
        raise HandlerLoadError(
            f"{self.name}: input_size: the model accepts neither {tried} inputs "
            f"({'; '.join(reasons)}); set input_size in the archive's config file"
            f"{self._flatten_hint()}"
        )

    def _rejection(self, loaded: Loaded, size: int) -> str | None:
        return self.rejection(loaded, np.zeros((size, size), dtype=np.float32))

    def _misfit(self, loaded: Loaded, reason: str) -> str:
        """The refusal of a set input_size, naming a candidate size the model does take."""
        size = self.input_size
        message = (
            f"{self.name}: setting input_size={size}: the model does not accept {size}x{size} "
            f"inputs ({reason})"
        )
        for other in CANDIDATE_SIZES:
            if other != size and self._rejection(loaded, other) is None:
                return f"{message}; it accepts {other}x{other}: set input_size to {other}"
        return f"{message}; set input_size to the side the model takes{self._flatten_hint()}"

    def _flatten_hint(self) -> str:
        return "" if self.flatten else " (and flatten: true if it takes rows of pixels)"

    def prepare_digit(self, pixels: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """A 2-D image in [0, 1] as the model's square input: inverted if need be, resized."""
        if pixels.shape[0] == 0 or pixels.shape[1] == 0:
            raise UnprocessableError("empty digit image")
        if self.invert == "always" or (self.invert == "auto" and float(pixels.mean()) > 0.5):
            pixels = 1.0 - pixels
        size = (self.input_size, self.input_size)
        if pixels.shape != size:
            image = Image.fromarray(np.ascontiguousarray(pixels, dtype=np.float32), mode="F")
            pixels = np.asarray(image.resize(size, Image.Resampling.BOX), dtype=np.float32)
        clipped: np.ndarray[Any, Any] = np.clip(pixels, 0.0, 1.0).astype(np.float32)
        return clipped

    def image_digit(self, image: Image.Image) -> np.ndarray[Any, Any]:
        """An image as the model's input, resampled in 8-bit as the digits example does."""
        gray = image.convert("L")
        if self.invert == "always" or (
            self.invert == "auto" and float(np.asarray(gray).mean()) > 127.5
        ):
            gray = ImageOps.invert(gray)
        size = (self.input_size, self.input_size)
        small = gray if gray.size == size else gray.resize(size, Image.Resampling.BOX)
        return np.asarray(small, dtype=np.float32) / 255.0

    def parse(self, request: InferenceRequest, codecs: CodecRegistry) -> Inputs:
        media_type = accepted_media_type(request, IMAGE_TYPES + ARRAY_TYPES, "digits")
        if media_type in IMAGE_TYPES:
            return Inputs([self.image_digit(decode_image(request.body, codecs))], single=True)
        value = codecs.decode(request.body, request.content_type)
        try:
            array = np.asarray(value)
        except ValueError as exc:
            raise UnprocessableError("digits must be a rectangular array of numbers") from exc
        images, single = split_images(array)
        return Inputs([self.prepare_digit(scale_pixels(image)) for image in images], single)

    def forward(self, loaded: Loaded, items: Sequence[Any]) -> list[Any]:
        import torch

        batch = np.stack(items)
        shaped = batch.reshape(len(items), -1) if self.flatten else batch[:, None]
        probs = probabilities(loaded.model(torch.from_numpy(shaped).to(loaded.device)))
        best = probs.argmax(axis=1)
        return [
            {"digit": int(d), "probability": float(row[d])}
            for d, row in zip(best, probs, strict=True)
        ]
