"""The digits data and its fixed train/held-out split, shared by training and demos."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

HELDOUT_FRACTION = 0.2
SPLIT_SEED = 0
MAX_PIXEL = 16.0  # load_digits pixels are integers 0..16

Split = tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.int64], NDArray[np.int64]]


def load_split() -> Split:
    """Stratified 80/20 split of ``load_digits``, images scaled to ``[0, 1]``.

    Returns:
        ``(train_images, heldout_images, train_labels, heldout_labels)``; images
        have shape ``(n, 8, 8)``, light strokes on a dark background.
    """
    digits = load_digits()
    images = (digits.images / MAX_PIXEL).astype(np.float32)
    labels = digits.target.astype(np.int64)
    train_x, held_x, train_y, held_y = train_test_split(
        images, labels, test_size=HELDOUT_FRACTION, stratify=labels, random_state=SPLIT_SEED
    )
    return train_x, held_x, train_y, held_y
