"""The pieces of a streamed answer, framed by the type the client accepts (serve/codecs/pieces.py),
and the text/event-stream codec a whole answer goes through."""

from __future__ import annotations

import json
import re

import pytest

from serve.codecs import CodecRegistry, default_codecs, encode_piece
from serve.codecs.pieces import EVENT_STREAM, as_event, is_event

# SSE ends a line at CRLF, LF or CR alone (the WHATWG event-stream grammar)
SSE_LINE_END = re.compile(rb"\r\n|\r|\n")


@pytest.fixture(scope="module")
def codecs() -> CodecRegistry:
    return default_codecs()


def data_lines(event: bytes) -> list[bytes]:
    """The values of an event's ``data:`` fields, as an SSE client splits it; fails on a line
    that is not a data field (a client would read it as another field, and drop it)."""
    assert event.endswith(b"\n\n"), event
    values = []
    for line in SSE_LINE_END.split(event[:-2]):
        assert line.startswith(b"data:"), f"{line!r} of {event!r} is not a data field"
        value = line[len(b"data:") :]
        values.append(value[1:] if value.startswith(b" ") else value)
    return values


def test_one_line_is_one_data_field() -> None:
    assert as_event(b"hello") == b"data: hello\n\n"
    assert data_lines(as_event(b"hello")) == [b"hello"]


def test_multi_line_text_is_one_event_of_several_data_fields() -> None:
    event = as_event(b"one\ntwo\n\nfour")
    assert event == b"data: one\ndata: two\ndata: \ndata: four\n\n"
    assert b"\n".join(data_lines(event)) == b"one\ntwo\n\nfour"


def test_crlf_text_is_split_on_crlf_not_left_with_carriage_returns() -> None:
    event = as_event(b"one\r\ntwo")
    assert event == b"data: one\ndata: two\n\n"


def test_trailing_newline_survives_the_round_trip() -> None:
    assert b"\n".join(data_lines(as_event(b"line\n"))) == b"line\n"


@pytest.mark.parametrize(
    "event",
    [
        b"data: already\n\n",
        b"event: token\ndata: x\n\n",
        b"id: 7\ndata: x\n\n",
        b"retry: 100\n\n",
        b": keep-alive\n\n",
        b"data: one\n\ndata: two\n\n",
    ],
)
def test_an_already_framed_event_passes_as_it_is(event: bytes) -> None:
    assert is_event(event)
    assert as_event(event) == event


@pytest.mark.parametrize(
    "text",
    [b"data: not ended\n", b"plain text\n\n", b"dataset: x\n\n", b"", b"\n\n"],
)
def test_text_that_is_not_a_whole_event_is_not_taken_for_one(text: bytes) -> None:
    assert not is_event(text)
    assert as_event(text).startswith(b"data:")


@pytest.mark.parametrize(
    ("item", "expected"),
    [("héllo", "héllo".encode()), (b"\x00\xff raw", b"\x00\xff raw")],
)
@pytest.mark.parametrize("media_type", ["text/plain", "application/jsonlines", "application/json"])
def test_str_and_bytes_pass_as_made(
    codecs: CodecRegistry, media_type: str, item: str | bytes, expected: bytes
) -> None:
    assert encode_piece(item, media_type, codecs) == expected


def test_str_and_bytes_under_event_stream_are_one_event_each(codecs: CodecRegistry) -> None:
    assert encode_piece("tok en", EVENT_STREAM, codecs) == b"data: tok en\n\n"
    assert encode_piece(b"a\nb", EVENT_STREAM, codecs) == b"data: a\ndata: b\n\n"
    assert encode_piece("data: mine\n\n", EVENT_STREAM, codecs) == b"data: mine\n\n"


def test_a_dict_is_json_text_under_text_plain(codecs: CodecRegistry) -> None:
    piece = encode_piece({"token": "é", "n": 1}, "text/plain", codecs)
    assert json.loads(piece) == {"token": "é", "n": 1}


def test_a_dict_is_one_json_line_under_jsonlines(codecs: CodecRegistry) -> None:
    piece = encode_piece({"token": "a", "ids": [1, 2]}, "application/jsonlines", codecs)
    assert piece.endswith(b"\n") and piece.count(b"\n") == 1
    assert json.loads(piece) == {"token": "a", "ids": [1, 2]}


def test_a_dict_is_one_data_event_under_event_stream(codecs: CodecRegistry) -> None:
    piece = encode_piece({"text": "two\nlines"}, EVENT_STREAM, codecs)
    (value,) = data_lines(piece)
    assert json.loads(value) == {"text": "two\nlines"}


def test_a_dict_is_a_json_document_under_json(codecs: CodecRegistry) -> None:
    assert json.loads(encode_piece({"a": [1, 2]}, "application/json", codecs)) == {"a": [1, 2]}


def test_a_whole_answer_accepted_as_event_stream_is_one_event(codecs: CodecRegistry) -> None:
    body, content_type = codecs.encode({"label": "cat", "p": 0.9}, "text/event-stream")
    assert content_type.startswith("text/event-stream")
    assert body.count(b"\n\n") == 1
    (value,) = data_lines(body)
    assert json.loads(value) == {"label": "cat", "p": 0.9}
    text, _ = codecs.encode("multi\nline", "text/event-stream")
    assert text == b"data: multi\ndata: line\n\n"


def test_event_stream_only_encodes(codecs: CodecRegistry) -> None:
    assert codecs.negotiate("text/event-stream") == "text/event-stream"
    with pytest.raises(Exception) as refused:
        codecs.decode(b"data: x\n\n", "text/event-stream")
    assert getattr(refused.value, "status_code", None) == 415
