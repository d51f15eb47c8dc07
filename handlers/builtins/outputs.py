"""Turn a classifier's output into probabilities and labelled answers."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from serve.codecs import to_numpy
from serve.errors import ModelError

logger = logging.getLogger(__name__)


def probabilities(output: Any, activation: str = "softmax") -> np.ndarray[Any, Any]:
    """The model's ``(N, classes)`` output as float64 probabilities on the CPU.

    Args:
        output: logits (``activation="softmax"``) or probabilities (``"none"``).
        activation: ``"softmax"`` or ``"none"``.

    Raises:
        ModelError: the output is not a 2-D batch of class scores.
    """
    if isinstance(output, tuple | list) and output:
        output = output[0]  # (logits, extras...) as some models return
    scores = to_numpy(output).astype(np.float64)
    if scores.ndim == 1:
        scores = scores[:, None]
    if scores.ndim != 2:
        raise ModelError(f"expected (batch, classes) scores from the model; got {scores.shape}")
    if activation == "softmax":
        shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
        return np.asarray(shifted / shifted.sum(axis=1, keepdims=True))
    return scores


def label_of(index: int, labels: Mapping[int, str]) -> str:
    """The class's name, or its index as text when there is no name for it."""
    return labels.get(index, str(index))


def top_classes(
    row: np.ndarray[Any, Any], k: int, labels: Mapping[int, str]
) -> list[dict[str, Any]]:
    """The ``k`` most probable classes, most probable first (ties by lower index)."""
    order = np.argsort(-row, kind="stable")[:k]
    return [{"label": label_of(int(i), labels), "probability": float(row[i])} for i in order]
