"""Large request bodies gathered through a temporary file (serve/http/spool.py), and read_body's
rules on bodies large enough to take that way."""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from serve.errors import BadRequestError, PayloadTooLargeError
from serve.http.invocation import BodyRules, read_body
from serve.http.spool import SPOOL_ABOVE, gather

LARGE = SPOOL_ABOVE + 3 * 1024 * 1024 + 7  # past the threshold, not a whole number of pieces


def _body(size: int) -> bytes:
    return bytes(range(256)) * (size // 256) + bytes(size % 256)


@pytest.fixture
def temp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The temporary directory the spool files go to, so a test can see none is left."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    yield tmp_path


def test_small_bodies_stay_in_memory(temp_dir: Path) -> None:
    assert gather([b"ab", b"c"], spool_above=10) == b"abc"
    assert gather([], spool_above=10) == b""
    assert os.listdir(temp_dir) == []


def test_a_body_past_the_threshold_comes_back_whole_as_bytes(temp_dir: Path) -> None:
    pieces = [b"x" * 7, b"y" * 5, b"z" * 9]
    body = gather(pieces, spool_above=8)
    assert type(body) is bytes and body == b"".join(pieces)
    assert os.listdir(temp_dir) == []  # unlinked from the start, closed at the end


def test_an_error_while_reading_removes_the_file(temp_dir: Path) -> None:
    def pieces() -> Iterator[bytes]:
        yield b"x" * 20
        raise OSError("gone")

    with pytest.raises(OSError, match="gone"):
        gather(pieces(), spool_above=8)
    assert os.listdir(temp_dir) == []


def test_read_body_takes_a_large_body_through_the_spool(temp_dir: Path) -> None:
    data = _body(LARGE)
    environ = {"wsgi.input": io.BytesIO(data)}
    body = read_body(environ, LARGE, LARGE, BodyRules(), "r")
    assert type(body) is bytes and body == data


def test_a_large_body_cut_short_is_a_400(temp_dir: Path) -> None:
    environ = {"wsgi.input": io.BytesIO(_body(LARGE - 10))}
    with pytest.raises(BadRequestError, match="cut short"):
        read_body(environ, LARGE, LARGE, BodyRules(), "r")


def test_a_large_chunked_body_is_read_whole_and_refused_past_the_limit(temp_dir: Path) -> None:
    data = _body(LARGE)
    chunked = {"HTTP_TRANSFER_ENCODING": "chunked", "wsgi.input": io.BytesIO(data)}
    assert read_body(chunked, None, LARGE, BodyRules(), "r") == data
    over = {"HTTP_TRANSFER_ENCODING": "chunked", "wsgi.input": io.BytesIO(data)}
    with pytest.raises(PayloadTooLargeError):
        read_body(over, None, LARGE - 1, BodyRules(), "r")
    assert os.listdir(temp_dir) == []
