"""The stream metrics and the log line per stream, through GET /metrics of the app in this
process with a one-process Prometheus observer."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from serve.errors import BadRequestError
from serve.http.streaming import StreamAbortedError
from serve.observe.metrics import PrometheusObserver
from tests.fixtures.apps import make_app
from tests.fixtures.streams import pieces, toolkit, wait_for
from tests.unit.test_metrics import metrics, sample


def predict_fn(data: Any, model: Any) -> Iterator[str]:
    """``"ok"``: three pieces; ``"fail"``: one, then a failure; ``"refuse"``: a failure before
    any; anything else: endless."""
    if data == "refuse":
        raise BadRequestError("refused")
    if data == "ok":
        yield from ("ab", "cd", "ef")
        return
    if data == "fail":
        yield "x"
        raise RuntimeError("broke off")
    index = 0
    while True:
        yield f"{data}{index},"
        index += 1


def test_streams_are_counted_by_outcome(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="serve.http.app")
    observer = PrometheusObserver()
    client, model = make_app(toolkit(predict_fn=predict_fn), tmp_path, observer=observer)
    try:
        endless = client.post("/invocations", json="e", buffered=False)
        assert next(pieces(endless)) == b"e0,"
        assert sample(metrics(client), "byoserve_streams_open", model="model") == 1
        assert next(pieces(endless)) == b"e1,"
        endless.close()

        assert client.post("/invocations", json="ok").data == b"abcdef"
        failed = client.post("/invocations", json="fail", buffered=False)
        with pytest.raises(StreamAbortedError):
            list(pieces(failed))
        failed.close()
        assert client.post("/invocations", json="refuse").status_code == 400
        wait_for(lambda: model.runtime.open_streams == 0, "the streams' close")

        text = metrics(client)
        assert sample(text, "byoserve_streams_open", model="model") == 0
        for outcome in ("completed", "failed", "client_gone"):
            assert sample(text, "byoserve_streams_total", model="model", outcome=outcome) == 1
        assert sample(text, "byoserve_streams_total") == 3  # the refusal was no stream
        assert sample(text, "byoserve_stream_first_piece_seconds_count", model="model") == 3
        assert sample(text, "byoserve_stream_duration_seconds_count", model="model") == 3
        assert sample(text, "byoserve_stream_pieces_sum", model="model") == 2 + 3 + 1
        assert sample(text, "byoserve_stream_bytes_sum", model="model") == 6 + 6 + 1
        assert sample(text, "byoserve_requests_total", route="invocations", status="200") == 3
        assert sample(text, "byoserve_requests_total", route="invocations", status="400") == 1
    finally:
        model.stop()
    lines = [record.getMessage() for record in caplog.records if ": stream " in record.getMessage()]
    assert len(lines) == 3, lines
    assert any("stream client gone: 2 pieces, 6 bytes" in line for line in lines)
    assert any("stream completed: 3 pieces, 6 bytes" in line for line in lines)
    assert any("stream failed: 1 pieces, 1 bytes" in line for line in lines)
    assert all("first piece after" in line for line in lines)
