"""``image_classifier``: images in, the top-k classes with their probabilities out.

Preprocessing is torchvision's usual ``Resize(image_size)``, ``CenterCrop(crop_size)``,
``ToTensor()``, ``Normalize(mean, std)``, done with Pillow and numpy (no torchvision needed).
Labels come from ``index_to_name.json``. One image answers
``[{"label": "tabby", "probability": 0.91}, ...]``; a list of images, a list of those.

Settings (archive config file):
    image_size: resize the shorter side to this many pixels (default 256; 0: no resize).
    crop_size: then center-crop a square of this side (default 224; 0: no crop). Each worker
        runs the model on a blank image of that size (and of color_mode's channels) at load, and
        refuses to start, naming these settings, when the model cannot take it.
    mean, std: per-channel normalisation after scaling to [0, 1] (ImageNet's by default).
    color_mode: ``RGB`` (default) or ``L`` (grayscale, one channel).
    topk: how many classes to answer (default 5).
    activation: ``softmax`` (default) over the model's logits, or ``none`` when the model already
        outputs probabilities.
    output_format: ``labels`` (``[{"label": ..., "probability": ...}, ...]``), ``torchserve``
        (``{label: probability, ...}``, as TorchServe's own ``image_classifier`` answers) or
        ``auto`` (default: ``torchserve`` for archives made by ``torch-model-archiver``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image

from handlers.builtins.base import (
    BuiltinHandler,
    Inputs,
    Loaded,
    made_by_torchserve,
    read_labels,
)
from handlers.builtins.images import request_images
from handlers.builtins.outputs import probabilities, top_classes
from handlers.builtins.settings import Settings
from serve.codecs import CodecRegistry
from serve.contract import HandlerLoadError, InferenceRequest
from serve.errors import UnprocessableError

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def resize_shorter(image: Image.Image, size: int) -> Image.Image:
    """Scale so the shorter side is ``size`` (torchvision ``Resize(int)``, bilinear)."""
    width, height = image.size
    short, long = (width, height) if width <= height else (height, width)
    if short == size:
        return image
    new_long = int(size * long / short)
    new_size = (size, new_long) if width <= height else (new_long, size)
    return image.resize(new_size, Image.Resampling.BILINEAR)


def center_crop(image: Image.Image, size: int) -> Image.Image:
    """The centered ``size`` x ``size`` square (torchvision ``CenterCrop``; pads when smaller)."""
    width, height = image.size
    if width < size or height < size:
        padded = Image.new(image.mode, (max(width, size), max(height, size)))
        padded.paste(image, ((padded.width - width) // 2, (padded.height - height) // 2))
        image, (width, height) = padded, padded.size
    top = round((height - size) / 2.0)
    left = round((width - size) / 2.0)
    return image.crop((left, top, left + size, top + size))


class ImageClassifier(BuiltinHandler):
    """The ``image_classifier`` built-in (see the module docstring for its settings)."""

    name = "image_classifier"

    def configure(self, options: Mapping[str, Any]) -> None:
        settings = Settings(self.name, options)
        self.image_size = settings.integer("image_size", 256)
        self.crop_size = settings.integer("crop_size", 224)
        self.color_mode = settings.choice("color_mode", "RGB", ("RGB", "L"))
        channels = 3 if self.color_mode == "RGB" else 1
        mean_default = IMAGENET_MEAN if channels == 3 else (0.5,)
        std_default = IMAGENET_STD if channels == 3 else (0.5,)
        self.mean = settings.floats("mean", mean_default, (1, channels))
        self.std = settings.floats("std", std_default, (1, channels))
        if any(s == 0 for s in self.std):
            raise HandlerLoadError(f"{self.name}: setting std={list(self.std)!r}: zero divisor")
        self.topk = settings.integer("topk", 5, minimum=1)
        self.activation = settings.choice("activation", "softmax", ("softmax", "none"))
        formats = ("auto", "labels", "torchserve")
        self.output_format = settings.choice("output_format", "auto", formats)
        self.labels: dict[int, str] = {}

    def prepare(self, loaded: Loaded) -> None:
        self.labels = read_labels(loaded.model_dir)
        if self.output_format == "auto":
            torchserve = made_by_torchserve(loaded.manifest)
            self.output_format = "torchserve" if torchserve else "labels"
        self.check_input(loaded)

    def check_input(self, loaded: Loaded) -> None:
        """Run the model on a blank image of the size the settings give it.

        Without a crop the size depends on each image, so nothing is checked.

        Raises:
            HandlerLoadError: the model cannot take that image.
        """
        side = self.crop_size
        if not side:
            return
        channels = len(self.color_mode)  # "RGB" or "L"
        reason = self.rejection(loaded, np.zeros((channels, side, side), dtype=np.float32))
        if reason is not None:
            raise HandlerLoadError(
                f"{self.name}: settings crop_size={side}, color_mode={self.color_mode!r}: the "
                f"model does not accept the {channels}x{side}x{side} inputs they give ({reason}); "
                "set crop_size (and image_size) and color_mode in the archive's config file to "
                "the size and channels the model takes"
            )

    def preprocess(self, image: Image.Image) -> np.ndarray[Any, Any]:
        """One image as the model's ``CxHxW`` float32 input."""
        image = image.convert(self.color_mode)
        if self.image_size:
            image = resize_shorter(image, self.image_size)
        if self.crop_size:
            image = center_crop(image, self.crop_size)
        pixels = np.asarray(image, dtype=np.float32) / 255.0
        if pixels.ndim == 2:
            pixels = pixels[:, :, None]
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        normalised = (pixels - mean) / std
        return np.ascontiguousarray(normalised.transpose(2, 0, 1), dtype=np.float32)

    def parse(self, request: InferenceRequest, codecs: CodecRegistry) -> Inputs:
        images, single = request_images(request, codecs)
        arrays = [self.preprocess(image) for image in images]
        # without crop_size, only images of one size can share a batch
        shapes = {array.shape for array in arrays}
        if len(shapes) > 1:
            raise UnprocessableError(
                f"the images of one request differ in size after preprocessing ({len(shapes)} "
                "sizes); send them separately, or set crop_size"
            )
        return Inputs(arrays, single, key=shapes.pop() if shapes else None)

    def forward(self, loaded: Loaded, items: Sequence[Any]) -> list[Any]:
        import torch

        batch = torch.from_numpy(np.stack(items)).to(loaded.device)
        probs = probabilities(loaded.model(batch), self.activation)
        answers = [top_classes(row, self.topk, self.labels) for row in probs]
        if self.output_format == "torchserve":
            return [{c["label"]: c["probability"] for c in classes} for classes in answers]
        return answers
