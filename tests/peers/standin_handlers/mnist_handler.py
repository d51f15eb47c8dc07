"""Stand-in for TorchServe's examples/image_classifier/mnist/mnist_handler.py in the peer tests'
mnist.mar: the same preprocessing (grey 28x28, normalised as MNIST) and answer (the class index),
with PIL and numpy instead of torchvision, which the main venv does not have."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import torch
from PIL import Image
from ts.torch_handler.base_handler import BaseHandler

MEAN, STD = 0.1307, 0.3081


class MNISTDigitClassifier(BaseHandler):  # type: ignore[misc]
    """An image per request, as the file's bytes (a body or a multipart ``data`` field)."""

    def preprocess(self, data: list[dict[str, Any]]) -> torch.Tensor:
        images = []
        for row in data:
            image = bytes(row.get("data") or row.get("body") or b"")
            grey = Image.open(io.BytesIO(image)).convert("L").resize((28, 28))
            pixels = np.asarray(grey, dtype=np.float32) / 255.0
            images.append(torch.from_numpy((pixels - MEAN) / STD).unsqueeze(0))
        return torch.stack(images).to(self.device)

    def postprocess(self, data: torch.Tensor) -> list[int]:
        return [int(index) for index in data.argmax(1).tolist()]
