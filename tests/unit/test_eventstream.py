"""SageMaker's response stream: the event-stream messages (serve/http/eventstream.py), decoded
with botocore's own decoder, and the response-stream route decoded by boto3's own client, whose
HTTP sending is replaced by the werkzeug test client (botocore's ``before-send`` hook), so the
whole of boto3's parsing runs over the app in this process."""

from __future__ import annotations

import binascii
import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest
from botocore.awsrequest import AWSPreparedRequest, AWSResponse
from botocore.eventstream import (
    ChecksumMismatch,
    EventStreamBuffer,
    EventStreamError,
    EventStreamMessage,
)
from werkzeug.test import Client

from serve.errors import BadRequestError, InferenceTimeoutError, ModelError
from serve.http import eventstream
from tests.fixtures.apps import AppModel, make_app
from tests.fixtures.streams import Steps, pieces, toolkit

STREAM_OPERATION = "before-send.sagemaker-runtime.InvokeEndpointWithResponseStream"


def decode(data: bytes) -> list[EventStreamMessage]:
    buffer = EventStreamBuffer()
    buffer.add_data(data)
    return list(buffer)


def test_payload_part_decodes_with_botocore() -> None:
    data = "piece é\n".encode()
    frame = eventstream.payload_part(data)
    (message,) = decode(frame)
    assert message.headers == {
        ":event-type": "PayloadPart",
        ":content-type": "application/octet-stream",
        ":message-type": "event",
    }
    assert message.payload == data
    assert message.prelude.total_length == len(frame)
    assert message.prelude.headers_length == len(frame) - 12 - len(data) - 4
    assert message.prelude.crc == binascii.crc32(frame[:8])
    assert message.crc == binascii.crc32(frame[:-4])
    assert message.to_response_dict()["status_code"] == 200


def test_model_stream_error_decodes_with_botocore() -> None:
    (message,) = decode(eventstream.model_stream_error("the model broke off", "StreamBroken"))
    assert message.headers == {
        ":exception-type": "ModelStreamError",
        ":content-type": "application/json",
        ":message-type": "exception",
    }
    assert json.loads(message.payload) == {
        "Message": "the model broke off",
        "ErrorCode": "StreamBroken",
    }
    assert message.to_response_dict()["status_code"] == 400


def test_any_headers_and_an_empty_payload() -> None:
    headers = [("name", "välue ✓"), ("other", "")]
    (message,) = decode(eventstream.encode_message(headers, b""))
    assert message.headers == dict(headers)
    assert message.payload == b""


def test_messages_one_after_another_decode_in_order() -> None:
    parts = [b"one", b"", b"\x00\xff" * 1000, b"four"]
    stream = b"".join(eventstream.payload_part(part) for part in parts)
    assert [message.payload for message in decode(stream)] == parts
    buffer = EventStreamBuffer()  # as a client reads it: a few bytes at a time
    found: list[bytes] = []
    for start in range(0, len(stream), 7):
        buffer.add_data(stream[start : start + 7])
        found.extend(message.payload for message in buffer)
    assert found == parts


@pytest.mark.parametrize("where", ["prelude", "payload"])
def test_a_corrupted_byte_fails_the_checksum(where: str) -> None:
    frame = bytearray(eventstream.payload_part(b"payload"))
    frame[4 if where == "prelude" else len(frame) - 6] ^= 0x01
    with pytest.raises(ChecksumMismatch):
        decode(bytes(frame))


def test_lengths_are_big_endian_and_crcs_are_unsigned() -> None:
    frame = eventstream.payload_part(b"x" * 300)
    total, headers = struct.unpack("!II", frame[:8])
    assert total == len(frame) and 0 < headers < total
    (prelude_crc,) = struct.unpack("!I", frame[8:12])
    assert prelude_crc == binascii.crc32(frame[:8]) & 0xFFFFFFFF


def test_a_late_piece_is_model_invocation_time_exceeded() -> None:
    framing = eventstream.EventStreamFraming()
    failure = framing.failure(InferenceTimeoutError("no piece within 1 s"))
    assert failure is not None
    (message,) = decode(failure)
    assert json.loads(message.payload) == {
        "Message": "no piece within 1 s",
        "ErrorCode": "ModelInvocationTimeExceeded",
    }


def test_a_model_failure_is_stream_broken_told_or_masked() -> None:
    told = eventstream.EventStreamFraming(error_details=True).failure(ModelError("OOM at 7"))
    masked = eventstream.EventStreamFraming(error_details=False).failure(ModelError("OOM at 7"))
    other = eventstream.EventStreamFraming().failure(RuntimeError("secret path /x"))
    assert told is not None and masked is not None and other is not None
    assert json.loads(decode(told)[0].payload) == {
        "Message": "OOM at 7",
        "ErrorCode": "StreamBroken",
    }
    assert "OOM" not in decode(masked)[0].payload.decode()
    assert json.loads(decode(other)[0].payload)["ErrorCode"] == "StreamBroken"
    assert "secret" not in decode(other)[0].payload.decode()


def test_pieces_pass_as_payload_parts() -> None:
    framing = eventstream.EventStreamFraming()
    assert decode(framing.piece(b"abc"))[0].payload == b"abc"
    assert decode(framing.piece(b"abc"))[0].headers[":event-type"] == "PayloadPart"


# boto3's invoke_endpoint_with_response_stream over the app in this process


class Body:
    """The raw HTTP body botocore reads an event stream from (``stream()``), over an unbuffered
    test response: each chunk the app yields reaches boto3 as it is yielded."""

    def __init__(self, response: Any) -> None:
        self._response = response

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield from self._response.response

    def close(self) -> None:
        self._response.close()


def sagemaker_runtime(client: Client) -> Any:
    """A real boto3 SageMaker runtime client whose requests the test client answers."""
    runtime = boto3.client(
        "sagemaker-runtime",
        region_name="us-east-1",
        endpoint_url="http://in-process",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )

    def send(request: AWSPreparedRequest, **_: Any) -> AWSResponse:
        url = urlsplit(request.url)
        headers = {
            name: value.decode() if isinstance(value, bytes) else value
            for name, value in request.headers.items()
        }
        response = client.open(
            url.path, method=request.method, data=request.body, headers=headers, buffered=False
        )
        return AWSResponse(
            request.url, response.status_code, dict(response.headers), Body(response)
        )

    runtime.meta.events.register(STREAM_OPERATION, send)
    return runtime


@pytest.fixture
def streaming(tmp_path: Path) -> Iterator[tuple[Any, Steps, AppModel]]:
    """boto3 over a model whose generator yields a piece per gate the test opens; a prompt of
    ``"fail"`` breaks off after the second piece, ``"refuse"`` before the first."""
    steps = Steps(4)

    def predict_fn(data: Any, model: Any) -> Iterator[Any]:
        if data == "refuse":
            raise BadRequestError("this prompt is refused")
        for index in range(4):
            if index:
                steps.wait(index)
            if data == "fail" and index == 2:
                raise RuntimeError("the model broke off")
            yield {"token": index} if data == "dicts" else f"tok{index} "

    client, model = make_app(toolkit(predict_fn=predict_fn), tmp_path)
    yield sagemaker_runtime(client), steps, model
    steps.open_all()
    model.stop()


def invoke(runtime: Any, prompt: str, accept: str = "text/plain") -> Any:
    return runtime.invoke_endpoint_with_response_stream(
        EndpointName="local", Body=json.dumps(prompt), ContentType="application/json", Accept=accept
    )


def test_boto3_gets_each_piece_as_it_is_made(streaming: tuple[Any, Steps, AppModel]) -> None:
    runtime, steps, _ = streaming
    answer = invoke(runtime, "go")
    assert answer["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert answer["ContentType"].startswith("text/plain")
    events = iter(answer["Body"])
    for index in range(4):
        assert next(events) == {"PayloadPart": {"Bytes": f"tok{index} ".encode()}}
        if index < 3:
            steps.open(index + 1)
    assert list(events) == []


def test_boto3_pieces_follow_the_sagemaker_accept(streaming: tuple[Any, Steps, AppModel]) -> None:
    runtime, steps, _ = streaming
    steps.open_all()
    answer = invoke(runtime, "dicts", accept="application/jsonlines")
    assert answer["ContentType"] == "application/jsonlines"
    parts = [event["PayloadPart"]["Bytes"] for event in answer["Body"]]
    assert [json.loads(part) for part in parts] == [{"token": index} for index in range(4)]
    assert all(part.endswith(b"\n") for part in parts)


def test_boto3_gets_model_stream_error_mid_stream(streaming: tuple[Any, Steps, AppModel]) -> None:
    runtime, steps, _ = streaming
    steps.open_all()
    events = iter(invoke(runtime, "fail")["Body"])
    assert next(events) == {"PayloadPart": {"Bytes": b"tok0 "}}
    assert next(events) == {"PayloadPart": {"Bytes": b"tok1 "}}
    with pytest.raises(EventStreamError) as failed:
        next(events)
    error = failed.value.response["Error"]
    assert error["Code"] == "ModelStreamError"
    assert "the model broke off" in error["Message"]


def test_the_route_ends_a_broken_stream_with_one_model_stream_error(
    tmp_path: Path,
) -> None:
    """Read raw: the pieces made, then the exception message with its code, then the end."""
    release = Steps(1)

    def predict_fn(data: Any, model: Any) -> Iterator[str]:
        yield "made"
        if data == "late":
            release.wait(0)
        else:
            raise RuntimeError("the model broke off")
        yield "never"

    client, model = make_app(toolkit(predict_fn=predict_fn), tmp_path, timeout=0.5)
    try:
        for prompt, code in [("fail", "StreamBroken"), ("late", "ModelInvocationTimeExceeded")]:
            response = client.post(
                "/endpoints/local/invocations-response-stream", json=prompt, buffered=False
            )
            assert response.status_code == 200
            assert response.mimetype == eventstream.CONTENT_TYPE
            messages = decode(b"".join(pieces(response)))
            assert [m.headers[":message-type"] for m in messages] == ["event", "exception"]
            assert messages[0].payload == b"made"
            assert messages[1].headers[":exception-type"] == "ModelStreamError"
            assert json.loads(messages[1].payload)["ErrorCode"] == code
        release.open_all()
    finally:
        model.stop()


def test_boto3_gets_model_error_before_the_first_piece(
    streaming: tuple[Any, Steps, AppModel],
) -> None:
    runtime, _, _ = streaming
    with pytest.raises(runtime.exceptions.ModelError) as failed:
        invoke(runtime, "refuse")
    error = failed.value.response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 424
    assert error["OriginalStatusCode"] == 400
    assert "this prompt is refused" in error["OriginalMessage"]


def test_boto3_gets_a_whole_answer_as_one_payload_part(tmp_path: Path) -> None:
    client, model = make_app(toolkit(predict_fn=lambda data, model: {"sum": sum(data)}), tmp_path)
    try:
        answer = sagemaker_runtime(client).invoke_endpoint_with_response_stream(
            EndpointName="local", Body=b"[1, 2, 3]", ContentType="application/json"
        )
        events = list(answer["Body"])
        assert len(events) == 1
        assert json.loads(events[0]["PayloadPart"]["Bytes"]) == {"sum": 6}
        assert answer["ContentType"].startswith("application/json")
    finally:
        model.stop()


def test_the_route_answers_post_only(tmp_path: Path) -> None:
    client, model = make_app(toolkit(predict_fn=lambda data, model: data), tmp_path)
    try:
        refused = client.get("/endpoints/local/invocations-response-stream")
        assert refused.status_code == 405
        assert "POST" in refused.headers.get("Allow", "")
    finally:
        model.stop()
