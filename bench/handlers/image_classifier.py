"""A TorchServe-style image classifier: decode with Pillow, normalise with numpy, one forward per
batch, softmax, and the top class with its probability.

Copied next to each model's handler file; the bench's in-process limit runs the very same code.
"""

from __future__ import annotations

import io
import os
from typing import Any

import numpy as np
import torch
from PIL import Image


class ImageClassifier:
    """Subclasses set the image mode, size, normalisation, and whether the model ends in
    log-softmax."""

    mode = "L"
    size = (28, 28)
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.5,)
    log_probabilities = False
    model_file = "model.pt"

    def __init__(self) -> None:
        self.model: Any = None
        self.device = torch.device("cpu")
        self._scale = np.float32(1.0)
        self._shift = np.zeros(1, np.float32)

    def initialize(self, context: Any) -> None:
        properties = context.system_properties
        self.load(properties["model_dir"], properties.get("gpu_id"))

    def load(self, model_dir: str, gpu_id: int | None = None) -> None:
        """Load the TorchScript model onto this worker's device (GPU ``gpu_id`` when given)."""
        if gpu_id is not None and torch.cuda.is_available():
            self.device = torch.device("cuda", gpu_id)
        path = os.path.join(model_dir, self.model_file)
        self.model = torch.jit.load(path, map_location=self.device).eval()
        std = np.asarray(self.std, np.float32)
        # (x / 255 - mean) / std as one multiply-add per pixel
        self._scale = (1.0 / (255.0 * std)).astype(np.float32)
        self._shift = (-np.asarray(self.mean, np.float32) / std).astype(np.float32)

    def decode(self, payload: bytes | bytearray) -> np.ndarray:
        image = Image.open(io.BytesIO(payload))
        if image.mode != self.mode:
            image = image.convert(self.mode)
        if image.size != self.size:
            image = image.resize(self.size, Image.Resampling.BILINEAR)
        pixels = np.asarray(image, dtype=np.float32)
        if pixels.ndim == 2:
            pixels = pixels[:, :, None]
        return pixels * self._scale + self._shift

    def preprocess(self, payloads: list[bytes | bytearray]) -> torch.Tensor:
        batch = np.stack([self.decode(payload) for payload in payloads]).transpose(0, 3, 1, 2)
        # one host-to-device copy per batch
        return torch.from_numpy(np.ascontiguousarray(batch)).to(self.device, non_blocking=True)

    def inference(self, batch: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            output: torch.Tensor = self.model(batch)
        return output

    def postprocess(self, output: torch.Tensor) -> list[dict[str, Any]]:
        scores = output.exp() if self.log_probabilities else torch.softmax(output, dim=1)
        top, classes = scores.max(dim=1)
        return [
            {"class": int(c), "probability": float(p)}
            for c, p in zip(classes.tolist(), top.tolist(), strict=True)
        ]

    def classify(self, payloads: list[bytes | bytearray]) -> list[dict[str, Any]]:
        """The whole path without a server: what the bench's in-process limit runs."""
        return self.postprocess(self.inference(self.preprocess(payloads)))

    def handle(self, data: list[dict[str, Any]], context: Any) -> list[dict[str, Any]]:
        return self.classify([row.get("data") or row.get("body") for row in data])
