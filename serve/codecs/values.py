"""What the codecs, and the handler styles that decode for themselves, share: values as numpy
arrays (torch tensors too, without importing torch), text in its charset, arrays and tensors in
JSON, and the error a malformed payload gets."""

from __future__ import annotations

import codecs
from collections.abc import Mapping
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


def decode_text(body: bytes, params: Mapping[str, str], media_type: str) -> str:
    """A text payload in its declared charset (UTF-8 when none); 400 when it does not decode.

    Args:
        body: the payload.
        params: the Content-Type's parameters (``charset``).
        media_type: the Content-Type without them, for the message.
    """
    charset = params.get("charset") or "utf-8"
    unsupported = BadRequestError(f"unsupported charset {charset[:40]!r} for {media_type}")
    try:
        # "undefined" is a codec that refuses everything; a name with a NUL is a ValueError
        if codecs.lookup(charset).name == "undefined":
            raise unsupported
        return body.decode(charset)
    except UnicodeDecodeError as exc:
        raise malformed(media_type, f"not valid {charset} at byte {exc.start}") from exc
    except UnicodeError as exc:  # idna, punycode: text they cannot read, said otherwise
        raise malformed(media_type, f"not valid {charset}: {exc}") from exc
    except (LookupError, ValueError) as exc:  # unknown, or bytes-to-bytes (base64, zip, rot13)
        raise unsupported from exc


def json_default(value: Any) -> Any:
    """``json.dumps``'s ``default``: numpy arrays and scalars, torch tensors (anything with a
    ``tolist``) as lists or numbers."""
    if callable(getattr(value, "tolist", None)):
        return to_numpy(value).tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
