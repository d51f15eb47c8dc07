"""TorchServe's streaming call, ``send_intermediate_predict_response(ret, req_id_map, message,
code, context)``: each call sends one piece to every request of the batch named in
``req_id_map``; what ``handle`` then returns is each request's last piece. The first piece fixes
the answer's status and headers (``context.set_response_status``, ``set_response_header``,
``set_response_content_type``), as TorchServe's frontend does.

Handlers import the function from ``ts.handler_utils.utils`` or ``ts.protocol.otf_message_handler``.
With TorchServe's ``ts`` package installed, its function encodes the piece in TorchServe's wire
format and writes it to ``context.cl_socket``; :class:`PieceSocket` stands in for that socket and
reads the message back. Without it, the ``ts`` package in handlers/tsfallback/ (found only when no
other is) holds these two modules, calling :func:`send_intermediate` directly.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from contextlib import suppress
from typing import TYPE_CHECKING, Any

from handlers.results import BYTES_TYPE, JSON_TYPE, TEXT_TYPE, serialize
from serve.codecs import encode_piece
from serve.codecs.pieces import EVENT_STREAM, JSON_LINES
from serve.contract import InferenceResponse
from serve.errors import ModelError, NotAcceptableError

if TYPE_CHECKING:
    from handlers.context import Context
STREAM_NEXT = "ts_stream_next"  # TorchServe's own marker header, never sent to the client


def send_intermediate(
    context: Context, ret: Any, req_id_map: Mapping[int, str], message: str, code: int
) -> None:
    """Send ``ret[idx]`` to each request of ``req_id_map`` (an index -> request id map, as
    ``context.request_ids``), serialized as TorchServe serializes results."""
    for idx in req_id_map:
        value = None if ret is None else ret[idx]
        body, content_type = serialize(value, context.get_response_content_type(idx))
        push(context, idx, body, content_type)


def push(context: Context, idx: int, body: bytes | str, content_type: str) -> None:
    """One piece to request ``idx`` of the batch, with the status and headers the handler set."""
    sink = context.sinks[idx]
    if sink is None:
        raise ModelError("send_intermediate_predict_response: this request cannot stream")
    processor = context.request_processor[idx]
    piece, framed_as = frame_piece(context, idx, body)
    chosen = framed_as or processor.get_response_header("content-type") or content_type
    headers = {
        name: value
        for name, value in processor.get_response_headers().items()
        if name.lower() not in ("content-type", STREAM_NEXT)
    }
    sink.send(
        InferenceResponse(
            piece, chosen, status=processor.get_response_status_code(), headers=headers
        )
    )


def frame_piece(context: Context, idx: int, body: bytes | str) -> tuple[bytes, str | None]:
    """A serialized piece as request ``idx``'s Accept frames it, and the stream's type when the
    framing decides it: one Server-Sent Event, or one JSON line (JSON text, indented or not, is
    made one line; other text passes as the handler wrote it); otherwise as it is."""
    media_type = piece_type(context, idx)
    data = body.encode("utf-8") if isinstance(body, str) else bytes(body)
    if media_type == EVENT_STREAM:
        return encode_piece(data, media_type, context.codecs), f"{EVENT_STREAM}; charset=utf-8"
    if media_type in JSON_LINES:
        if not data.endswith(b"\n"):
            with suppress(ValueError):  # not JSON: the handler's own text, as it is
                data = encode_piece(json.loads(data), media_type, context.codecs)
        return data, media_type
    return data, None


def piece_type(context: Context, idx: int) -> str:
    """The type request ``idx``'s pieces are framed as: the one its Accept negotiates, or none
    (raw) when no codec answers it (the handler serializes its own results)."""
    try:
        return context.codecs.negotiate(context.accepts[idx])
    except NotAcceptableError:
        return ""


class PieceSocket:
    """``context.cl_socket`` for TorchServe's own ``send_intermediate_predict_response``: reads
    the predict response it writes (TorchServe's wire format:
    ts/protocol/otf_message_handler.py ``create_predict_response``) and pushes each request's
    piece."""

    def __init__(self, context: Context) -> None:
        self._context = context

    def sendall(self, message: bytes | bytearray) -> None:
        by_id = {rid: idx for idx, rid in self._context.request_ids.items()}
        for rid, content_type, body in _predictions(bytes(message)):
            idx = by_id.get(rid)
            if idx is not None:
                push(self._context, idx, body, content_type or _guess_type(body))


def _predictions(message: bytes) -> list[tuple[str, str, bytes]]:
    """``(request id, content type, body)`` for each prediction in a predict response."""
    offset = 0

    def integer() -> int:
        nonlocal offset
        (value,) = struct.unpack_from("!i", message, offset)
        offset += 4
        return int(value)

    def blob() -> bytes:
        nonlocal offset
        size = integer()
        data = message[offset : offset + size]
        offset += size
        return data

    integer()  # the message's code
    blob()  # its text
    found: list[tuple[str, str, bytes]] = []
    while True:
        size = integer()
        if size == -1:
            return found
        rid = message[offset : offset + size].decode()
        offset += size
        content_type = blob().decode()
        integer()  # the piece's status: the first piece's comes from the context
        blob()  # its reason phrase
        for _ in range(integer()):  # its headers: the context holds them too
            blob()
            blob()
        found.append((rid, content_type, blob()))


def _guess_type(body: bytes) -> str:
    """The type TorchServe's serialization implies when the handler set none."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return BYTES_TYPE
    try:
        json.loads(text)
    except ValueError:
        return TEXT_TYPE
    return JSON_TYPE
