"""A small CNN for scikit-learn's 8x8 handwritten digits.

Self-contained (imports only torch) because it is copied into the model directory
and the server instantiates ``DigitsCNN()`` with no arguments.

Input: ``(batch, 1, 8, 8)`` float32 in ``[0, 1]``, light strokes (1.0) on a dark
background (0.0), as ``load_digits().images / 16``. Output: logits for 0..9.
"""

from __future__ import annotations

import torch
from torch import nn


class DigitsCNN(nn.Module):
    """Two 3x3 convolutions, one 2x2 max-pool, two linear layers.

    Args:
        num_classes: Output classes (the digits 0..9).
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(0.25),
            nn.Linear(32 * 4 * 4, 64),
            nn.ReLU(),
            nn.Linear(64, num_classes),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Score a batch of images.

        Args:
            images: ``(batch, 1, 8, 8)`` float tensor scaled to ``[0, 1]``.

        Returns:
            Logits of shape ``(batch, num_classes)``.
        """
        logits: torch.Tensor = self.classifier(self.features(images))
        return logits
