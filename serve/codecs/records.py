"""Batch transform's records: a request body holding many records, one a line, and the answer
that gives each its own line.

With ``SplitType=Line`` and ``BatchStrategy=MultiRecord``, SageMaker's batch transform packs as
many lines of an input file as fit in ``MaxPayloadInMB`` into one ``POST /invocations``, and
writes what comes back to ``<file>.out``. The handlers keep one rule for such a request: its
answer is, line by line and in order, what each record would be answered alone (what
``SingleRecord`` sends), so that a job's output does not depend on how its records were packed.

A body holds several records when its type is ``text/csv``, JSON Lines, or ``application/json``
whose body is several JSON documents one per line (a body that parses as one JSON document,
pretty-printed or not, is one request as ever), and it has at least two lines that are not blank.
Blank lines are not records. Each record keeps its 1-based line number within the body (blank
lines counted), and an error that one record causes says it first: ``line K: ...``.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from serve.codecs.media import parse_media_type
from serve.codecs.registry import CodecRegistry
from serve.codecs.values import decode_text
from serve.errors import NotAcceptableError, ServingError

logger = logging.getLogger(__name__)

JSON_TYPE = "application/json"
JSONLINES_TYPES = ("application/jsonlines", "application/jsonl", "application/x-jsonlines")
CSV_TYPE = "text/csv"
RECORD_TYPES = (JSON_TYPE, *JSONLINES_TYPES, CSV_TYPE)
"""The request types whose body may hold several records."""
LINE_TYPES = RECORD_TYPES
"""The answer types a record's answer can be written in as one line."""


@dataclass(frozen=True, slots=True)
class Record:
    """One record of a request body.

    Attributes:
        line: its 1-based line number in the body, blank lines counted.
        body: the line in UTF-8, without its line break.
        content_type: the type it is read as alone: the request's, in UTF-8.
    """

    line: int
    body: bytes
    content_type: str


def _is_document(text: str) -> bool:
    try:
        json.loads(text)
    except (ValueError, RecursionError):
        return False
    return True


_NON_BLANK = re.compile(rb"\S")


def _numbered(text: str) -> list[tuple[int, str]]:
    """The lines of ``text`` that are not blank, with their 1-based numbers."""
    return [
        (number, line.removesuffix("\r"))
        for number, line in enumerate(text.split("\n"), 1)
        if line.strip()
    ]


def _head(body: bytes, count: int) -> bytes:
    """``body`` up to the end of its ``count``-th line that is not blank (ASCII whitespace)."""
    start = found = 0
    while (end := body.find(b"\n", start)) >= 0:
        if _NON_BLANK.search(body, start, end):
            found += 1
            if found == count:
                return body[:end]
        start = end + 1
    return body


def _first_lines(body: bytes, params: dict[str, str]) -> list[str]:
    """The first two lines of an ``application/json`` body that are not blank.

    Where the charset writes a line break as the byte ``\\n`` (UTF-8 and the other
    ASCII-compatible ones), only the head of the body that holds them is decoded: a large
    pretty-printed document is not copied line by line to find out that it is one.
    """
    try:
        ascii_breaks = "\n".encode(params.get("charset") or "utf-8") == b"\n"
    except (LookupError, ValueError, UnicodeError):  # decode_text below says why
        ascii_breaks = False
    head = _head(body, 2) if ascii_breaks else body
    lines = _numbered(decode_text(head, params, JSON_TYPE))[:2]
    if len(lines) < 2 and len(head) < len(body):  # a line blank only beyond ASCII
        lines = _numbered(decode_text(body, params, JSON_TYPE))[:2]
    return [line for _, line in lines]


def _json_lines(body: bytes, params: dict[str, str]) -> bool:
    """Whether an ``application/json`` body of several lines is JSON documents one a line.

    A document that spans lines never has a whole document on its first line (what followed
    would make it invalid), so a first line that parses alone settles it. A first line that does
    not parse is a bad first record when the second parses alone and the body is no document.
    """
    lines = _first_lines(body, params)
    if len(lines) < 2:
        return False
    if _is_document(lines[0]):
        return True
    return _is_document(lines[1]) and not _is_document(decode_text(body, params, JSON_TYPE))


def split_records(body: bytes, content_type: str) -> list[Record] | None:
    """The records of ``body`` when it holds several; None when it is one request as ever.

    Args:
        body: the request body.
        content_type: its Content-Type, parameters (``charset``) included.

    Raises:
        BadRequestError: the body is not text in its charset.
    """
    media_type, params = parse_media_type(content_type)
    if media_type not in RECORD_TYPES:
        return None
    first_break = body.find(b"\n")
    if first_break < 0 or not _NON_BLANK.search(body, first_break):
        return None  # one line (and blank ones after it): one record at most
    if media_type == JSON_TYPE and not _json_lines(body, params):
        return None
    numbered = _numbered(decode_text(body, params, media_type))
    if len(numbered) < 2:
        return None
    record_type = f"{media_type}; charset=utf-8"
    return [Record(number, line.encode("utf-8"), record_type) for number, line in numbered]


def at_line(error: ServingError, line: int) -> ServingError:
    """``error`` (its class, status and headers) with its message starting ``line K: ``.

    The prefix is a contract: ``deploy transform --local`` reads ``^line (\\d+): `` to name the
    record that failed.
    """
    message = f"line {line}: {error.message}"
    located = error.__class__.__new__(error.__class__)
    located.__dict__.update(error.__dict__)
    located.args = (message,)
    located.message = message
    located.__cause__ = error
    return located


def encode_line(value: Any, media_type: str, codecs: CodecRegistry) -> bytes:
    """One record's answer as one line (without its line break), in ``media_type``.

    The line is what ``codecs`` encode the answer as alone; an answer that would take several
    JSON Lines is written as one JSON document instead, and one of several CSV rows is refused.

    Raises:
        NotAcceptableError: the answer cannot be one line of that type.
    """
    body, _ = codecs.encode(value, media_type)
    line = body.removesuffix(b"\n")
    if b"\n" not in line:
        return line
    if media_type in JSONLINES_TYPES:
        return codecs.encode(value, JSON_TYPE)[0]
    rows = line.count(b"\n") + 1
    raise NotAcceptableError(
        f"the answer to this record is {rows} {media_type} rows, and a record's answer must be "
        "one line; ask for application/json or application/jsonlines"
    )


def encode_records(
    answers: Iterable[tuple[int, Any]], media_type: str, codecs: CodecRegistry
) -> tuple[bytes, str]:
    """The answer to a request of several records: one line per record, in order.

    Args:
        answers: each record's line number and its answer (the value its handler answered).
        media_type: the negotiated answer type, one of :data:`LINE_TYPES`.
        codecs: the app's codecs.

    Returns:
        The body and its Content-Type (``text/*`` with ``; charset=utf-8``).

    Raises:
        ServingError: a record's answer cannot be encoded; the message starts ``line K: ``.
    """
    lines: list[bytes] = []
    for line, value in answers:
        try:
            lines.append(encode_line(value, media_type, codecs))
        except ServingError as exc:
            raise at_line(exc, line) from exc
    lines.append(b"")
    content_type = f"{media_type}; charset=utf-8" if media_type.startswith("text/") else media_type
    return b"\n".join(lines), content_type
