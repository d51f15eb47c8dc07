"""Results as TorchServe's backend serializes them (a handler's return values, and the pieces
it sends before them)."""

from __future__ import annotations

import json
from typing import Any

from serve.codecs import json_default

JSON_TYPE = "application/json"
TEXT_TYPE = "text/plain; charset=utf-8"
BYTES_TYPE = "application/octet-stream"


def _dumps(value: Any) -> str:
    return json.dumps(value, default=json_default)


def serialize(value: Any, content_type: str | None) -> tuple[bytes | str, str]:
    """One result as TorchServe sends it: ``(body, content_type)``.

    With a content type set by the handler: bytes as they are, str as text, anything else as
    JSON. Without one: str is JSON when it parses as JSON, else plain text; bytes are
    octet-stream; anything else is dumped as JSON (arrays and tensors as nested lists).
    """
    if content_type:
        if isinstance(value, bytes | bytearray | memoryview):
            return bytes(value), content_type
        return (value if isinstance(value, str) else _dumps(value)), content_type
    if isinstance(value, str):
        try:
            json.loads(value)
        except ValueError:
            return value, TEXT_TYPE
        return value, JSON_TYPE
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value), BYTES_TYPE
    return _dumps(value), JSON_TYPE
