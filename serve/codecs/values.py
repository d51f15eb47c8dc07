"""What the codecs share: values as numpy arrays (torch tensors too, without importing torch),
and the error a malformed payload gets."""

from __future__ import annotations

from typing import Any

import numpy as np

from serve.errors import BadRequestError, NotAcceptableError


def is_tensor(value: Any) -> bool:
    """A torch tensor, recognised by its methods."""
    return all(hasattr(value, name) for name in ("detach", "cpu", "numpy"))


def to_numpy(value: Any) -> np.ndarray[Any, Any]:
    """Convert numpy arrays and scalars, (nested) lists, Python scalars and torch tensors.

    Torch is never imported: tensors are recognised by their ``detach``/``cpu``/``numpy``
    methods; dtypes numpy lacks (bfloat16) are widened to float32 first.

    Raises:
        ValueError: for ragged nested lists.
    """
    if isinstance(value, np.ndarray):
        return value
    if is_tensor(value):
        tensor = value.detach().cpu()
        try:
            return np.asarray(tensor.numpy())
        except TypeError:
            return np.asarray(tensor.float().numpy())
    return np.asarray(value)


def malformed(media_type: str, reason: str) -> BadRequestError:
    return BadRequestError(f"malformed {media_type} payload: {reason}")


def no_objects(array: np.ndarray[Any, Any], media_type: str) -> np.ndarray[Any, Any]:
    """``array``, unless it holds Python objects (never pickled)."""
    if array.dtype.hasobject:
        raise NotAcceptableError(f"cannot encode an array of Python objects as {media_type}")
    return array
