"""Turn any grayscale digit image into the model's input, as the server does.

The model was trained on ``load_digits`` images: 8x8, light strokes on a dark
background, scaled to ``[0, 1]``. Any image is converted to grayscale, resized to
8x8 with box (area) resampling and divided by 255. Images with dark digits on a
light background must be inverted first (``PIL.ImageOps.invert``).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

SIZE = 8


def to_tensor(image: Image.Image) -> torch.Tensor:
    """One image as a ``(1, 8, 8)`` float32 tensor in ``[0, 1]``.

    Args:
        image: Any size or mode; 8x8 and 28x28 grayscale PNGs are the usual cases.

    Returns:
        The model input for this image (stack several for a batch).
    """
    small = image.convert("L").resize((SIZE, SIZE), Image.Resampling.BOX)
    pixels = np.asarray(small, dtype=np.float32) / 255.0
    return torch.from_numpy(pixels).unsqueeze(0)
