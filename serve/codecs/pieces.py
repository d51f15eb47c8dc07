"""The pieces of a streamed answer, each encoded by the type the client accepts.

- ``text/event-stream`` (Server-Sent Events): every piece is one event, ``data: ...`` lines and
  a blank line; a piece that is already an event (a handler that writes SSE itself, as
  TorchServe's vLLM handler does) passes as it is;
- ``application/jsonlines`` (and its other names): a value, a list too, is one JSON document and
  a newline;
- any other type: a value is encoded by that type's codec.

``bytes`` and ``str`` pieces are the handler's own formatting and pass as they are (SSE aside).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from serve.codecs.registry import CodecRegistry
from serve.codecs.values import json_default

EVENT_STREAM = "text/event-stream"
JSON_LINES = frozenset({"application/jsonlines", "application/jsonl", "application/x-jsonlines"})
_FIELDS = (b"data:", b"event:", b"id:", b"retry:", b":")
_EVENT_ENDS = (b"\n\n", b"\r\n\r\n", b"\r\r")


def is_event(data: bytes) -> bool:
    """Whether ``data`` is already one or more complete Server-Sent Events (lines ended by LF,
    CRLF or CR, as the SSE format allows)."""
    return data.startswith(_FIELDS) and data.endswith(_EVENT_ENDS)


def as_event(data: bytes) -> bytes:
    """``data`` as one Server-Sent Event (each of its lines, whatever ends them, a ``data:``
    field), unless it is one already."""
    if is_event(data):
        return data
    lines = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
    return b"".join(b"data: " + line + b"\n" for line in lines) + b"\n"


class EventStreamCodec:
    """``text/event-stream``: a value as one Server-Sent Event (str as its text, anything else
    as JSON). Encode only: a whole answer is one event, a streamed one an event per piece."""

    media_types: tuple[str, ...] = (EVENT_STREAM,)
    can_decode: bool = False
    can_encode: bool = True

    def decode(self, body: bytes, params: Mapping[str, str]) -> Any:
        raise NotImplementedError(EVENT_STREAM)

    def encode(self, value: Any, params: Mapping[str, str]) -> bytes:
        if isinstance(value, bytes | bytearray | memoryview):
            return as_event(bytes(value))
        text = value if isinstance(value, str) else _dumps(value)
        return as_event(text.encode("utf-8"))


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=json_default)


def encode_piece(item: Any, media_type: str, codecs: CodecRegistry) -> bytes:
    """One piece of a stream answered as ``media_type`` (see the module's docstring).

    Raises:
        NotAcceptableError: the type's codec cannot encode the value.
    """
    if isinstance(item, str):
        data = item.encode("utf-8")
    elif isinstance(item, bytes | bytearray | memoryview):
        data = bytes(item)
    elif media_type in JSON_LINES:
        return (_dumps(item) + "\n").encode("utf-8")  # one piece, one line, whatever it holds
    else:
        return codecs.encode(item, media_type)[0]
    return as_event(data) if media_type == EVENT_STREAM else data
