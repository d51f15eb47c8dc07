"""SageMaker's response stream (``InvokeEndpointWithResponseStream``): the pieces of an answer
framed as AWS event-stream messages, as the SageMaker runtime sends them to boto3.

Each message: a 12-byte prelude (total length, headers length, the prelude's CRC32), the
headers (here all strings: name length, name, type 7, value length, value), the payload, and a
CRC32 of everything before it (the format: botocore/eventstream.py, which decodes it). A piece is
a ``PayloadPart`` event; a failure after the first piece is a ``ModelStreamError`` exception
message, after which the body ends.

Written here, in a few lines: botocore only decodes these messages, and the libraries that
encode them (awscrt's event-stream RPC, smithy's Python event-stream package) either do not
expose a message encoder or need Python 3.12.
"""

from __future__ import annotations

import binascii
import json
import struct
from dataclasses import dataclass

from serve.errors import InferenceTimeoutError, ServingError
from serve.http.errors import public_message

CONTENT_TYPE = "application/vnd.amazon.eventstream"
_STRING = 7


def _crc(data: bytes, start: int = 0) -> int:
    return binascii.crc32(data, start) & 0xFFFFFFFF


def encode_message(headers: list[tuple[str, str]], payload: bytes) -> bytes:
    """One event-stream message with string ``headers`` and ``payload``."""
    encoded = b"".join(
        struct.pack("!B", len(name.encode()))
        + name.encode()
        + struct.pack("!BH", _STRING, len(value.encode()))
        + value.encode()
        for name, value in headers
    )
    total = 12 + len(encoded) + len(payload) + 4
    prelude = struct.pack("!II", total, len(encoded))
    head = prelude + struct.pack("!I", _crc(prelude)) + encoded + payload
    return head + struct.pack("!I", _crc(head))


def payload_part(data: bytes) -> bytes:
    """A ``PayloadPart`` event carrying ``data``."""
    headers = [
        (":event-type", "PayloadPart"),
        (":content-type", "application/octet-stream"),
        (":message-type", "event"),
    ]
    return encode_message(headers, data)


def model_stream_error(message: str, code: str) -> bytes:
    """A ``ModelStreamError`` exception message (boto3 raises it as an EventStreamError)."""
    headers = [
        (":exception-type", "ModelStreamError"),
        (":content-type", "application/json"),
        (":message-type", "exception"),
    ]
    return encode_message(headers, json.dumps({"Message": message, "ErrorCode": code}).encode())


@dataclass(frozen=True, slots=True)
class EventStreamFraming:
    """The :class:`~serve.http.streaming.Framing` of the response-stream route
    (``error_details``: BYOSERVE_ERROR_DETAILS, whether a model's failure is told)."""

    error_details: bool = True

    def piece(self, data: bytes) -> bytes:
        return payload_part(data)

    def failure(self, error: BaseException) -> bytes | None:
        """SageMaker's codes: ``ModelInvocationTimeExceeded`` for a piece that did not come in
        time, ``StreamBroken`` for a stream the model broke off."""
        if isinstance(error, InferenceTimeoutError):
            return model_stream_error(error.message, "ModelInvocationTimeExceeded")
        if isinstance(error, ServingError):
            message = public_message(error, self.error_details)
        else:
            message = "the stream failed"
        return model_stream_error(message, "StreamBroken")
