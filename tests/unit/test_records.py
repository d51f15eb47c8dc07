"""Batch transform's records (serve/codecs/records.py): which bodies hold several, their line
numbers, the ``line K: `` errors, and each record's answer as one line."""

from __future__ import annotations

import json

import numpy as np
import pytest

from serve.codecs import CodecRegistry, default_codecs
from serve.codecs.records import at_line, encode_line, encode_records, split_records
from serve.errors import BadRequestError, NotAcceptableError, ServingError, UnprocessableError


@pytest.fixture
def codecs() -> CodecRegistry:
    return default_codecs()


def lines_of(body: bytes, content_type: str) -> list[tuple[int, bytes]] | None:
    records = split_records(body, content_type)
    return None if records is None else [(r.line, r.body) for r in records]


def test_csv_lines_are_records_numbered_with_blank_lines_counted() -> None:
    body = b'1,2\n\n"a, b",3\r\n  \n4,5\n'
    assert lines_of(body, "text/csv") == [(1, b"1,2"), (3, b'"a, b",3'), (5, b"4,5")]
    (first, *_) = split_records(body, "text/csv") or []
    assert first.content_type == "text/csv; charset=utf-8"


@pytest.mark.parametrize(
    "content_type", ["application/jsonlines", "application/jsonl", "application/x-jsonlines"]
)
def test_json_lines_are_records(content_type: str) -> None:
    assert lines_of(b'"a"\n{"text": "b"}\n', content_type) == [(1, b'"a"'), (2, b'{"text": "b"}')]


@pytest.mark.parametrize(
    "body",
    [
        b"1,2,3",  # one line
        b"1,2,3\n",
        b"1,2,3\n\n  \n",  # one record and blank lines
        b"",
    ],
)
def test_one_record_is_no_records(body: bytes) -> None:
    assert split_records(body, "text/csv") is None
    assert split_records(body, "application/jsonlines") is None


def test_other_types_are_never_split() -> None:
    assert split_records(b"a\nb\n", "text/plain") is None
    assert split_records(b"a\nb\n", "application/octet-stream") is None


def test_json_documents_one_a_line_are_records_and_one_document_is_not() -> None:
    assert lines_of(b'{"a": 1}\n[2]\n"x"\n', "application/json") == [
        (1, b'{"a": 1}'),
        (2, b"[2]"),
        (3, b'"x"'),
    ]
    pretty = json.dumps({"instances": [[1, 2], [3, 4]]}, indent=2).encode()
    assert split_records(pretty, "application/json") is None
    # a document whose inner lines parse alone is still one document
    assert split_records(b'[\n  "x"\n]\n', "application/json") is None
    assert split_records(b"[1, 2]\n", "application/json") is None


def test_json_lines_with_a_bad_first_line_are_still_records() -> None:
    assert lines_of(b'{"a": \n{"b": 2}\n', "application/json") == [(1, b'{"a": '), (2, b'{"b": 2}')]


def test_json_is_told_apart_from_its_first_lines_in_any_charset() -> None:
    lines = '{"a": "\u00e9"}\n\n{"a": 2}\n'
    document = '{\n  "a": [\n' + ",\n".join(["    1"] * 1000) + "\n  ]\n}\n"
    for charset in ("utf-8", "latin-1", "utf-16", "utf-16-be", "utf-32"):
        content_type = f"application/json; charset={charset}"
        records = split_records(lines.encode(charset), content_type) or []
        assert [(r.line, json.loads(r.body)) for r in records] == [(1, {"a": "é"}), (3, {"a": 2})]
        assert split_records(document.encode(charset), content_type) is None
    # a line blank only beyond ASCII (a no-break space) is blank: the next one is the second
    spaced = '{"a": 1}\n\u00a0\n{"a": 2}\n'.encode()
    assert [r.line for r in split_records(spaced, "application/json") or []] == [1, 3]
    nbsp_first = '\u00a0\n{"a": 1}\n{"a": 2}\n'.encode()
    assert [r.line for r in split_records(nbsp_first, "application/json") or []] == [2, 3]


def test_records_are_read_in_the_bodys_charset_and_passed_on_in_utf8() -> None:
    body = "é,1\nü,2\n".encode("latin-1")
    records = split_records(body, "text/csv; charset=latin-1") or []
    assert [r.body.decode("utf-8") for r in records] == ["é,1", "ü,2"]
    with pytest.raises(BadRequestError):
        split_records(b"\xff\n\xfe\n", "text/csv")


def test_at_line_keeps_the_class_status_and_headers() -> None:
    error = UnprocessableError("the model cannot use this input", headers={"X-A": "1"})
    located = at_line(error, 7)
    assert isinstance(located, UnprocessableError)
    assert (located.status_code, located.headers) == (422, {"X-A": "1"})
    assert located.message == str(located) == "line 7: the model cannot use this input"
    assert located.__cause__ is error
    assert error.message == "the model cannot use this input"  # the original is untouched


def test_a_record_answer_is_one_line_in_each_type(codecs: CodecRegistry) -> None:
    answer = {"label": "positive", "score": 0.5}
    assert encode_line(answer, "application/json", codecs) == b'{"label":"positive","score":0.5}'
    assert (
        encode_line(answer, "application/jsonlines", codecs) == b'{"label":"positive","score":0.5}'
    )
    assert encode_line(answer, "text/csv", codecs) == b"positive,0.5"
    assert encode_line([answer], "text/csv", codecs) == b"positive,0.5"
    assert encode_line(np.array([[1.5, 2.0]]), "text/csv", codecs) == b"1.5,2.0"
    # an answer JSON Lines would write on two lines is one JSON document
    assert encode_line([answer, answer], "application/jsonlines", codecs).count(b"\n") == 0
    assert encode_line("a\nb", "application/json", codecs) == b'"a\\nb"'


def test_an_answer_of_several_csv_rows_is_refused(codecs: CodecRegistry) -> None:
    with pytest.raises(NotAcceptableError, match="is 2 text/csv rows"):
        encode_line(np.eye(2), "text/csv", codecs)


def test_encode_records_writes_one_line_per_record_in_order(codecs: CodecRegistry) -> None:
    body, content_type = encode_records([(1, [1]), (3, [2]), (4, [3])], "text/csv", codecs)
    assert (body, content_type) == (b"1\n2\n3\n", "text/csv; charset=utf-8")
    body, content_type = encode_records([(2, {"a": 1})], "application/json", codecs)
    assert (body, content_type) == (b'{"a":1}\n', "application/json")


def test_encode_records_names_the_line_of_an_answer_it_cannot_write(
    codecs: CodecRegistry,
) -> None:
    with pytest.raises(ServingError, match=r"^line 4: the answer to this record is 2") as info:
        encode_records([(1, [1]), (4, np.eye(2))], "text/csv", codecs)
    assert info.value.status_code == 406


def test_csv_codec_writes_objects_as_rows_of_their_values(codecs: CodecRegistry) -> None:
    rows = [{"digit": 3, "probability": 0.25}, {"digit": 1, "probability": None}]
    assert codecs.encode(rows, "text/csv")[0] == b"3,0.25\n1,\n"
    with pytest.raises(NotAcceptableError, match="an object's values must be numbers or text"):
        codecs.encode({"top": [1, 2]}, "text/csv")


def test_a_one_line_json_error_names_its_column_only(codecs: CodecRegistry) -> None:
    with pytest.raises(BadRequestError, match=r"Expecting value at column 7$"):
        codecs.decode(b'{"a": }', "application/json")
    with pytest.raises(BadRequestError, match=r"Expecting value at column 7$"):
        codecs.decode(b'{"a": }\n', "application/jsonlines")
