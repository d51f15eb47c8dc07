"""Streaming defects found while the streaming core was written, one test each: the test's name
is the rule, its docstring how the code broke it before the fix (so a regression reads as the
same defect)."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from handlers.torchserve import TorchServeHandler
from serve.codecs import default_codecs, encode_piece
from serve.codecs.pieces import as_event, is_event
from serve.contract import InferenceRequest
from serve.runtime.batching import BatchQueue
from tests.fixtures.apps import make_app
from tests.fixtures.streams import WAIT, Steps, pieces, toolkit, wait_for

SSE_LINE_END = re.compile(rb"\r\n|\r|\n")


def test_a_lone_carriage_return_starts_a_data_field_too() -> None:
    """SSE ends a line at CR alone as at LF and CRLF; ``as_event`` splits only on LF (after
    CRLF -> LF), so the text after a lone CR is sent as a line without ``data:``, which a client
    reads as a field of another name and drops: ``b"one\\rtwo"`` reaches the client as
    ``"one"``."""
    event = as_event(b"one\rtwo")
    lines = SSE_LINE_END.split(event[:-2])
    assert all(line.startswith(b"data:") for line in lines), event


def test_an_event_framed_with_crlf_passes_as_it_is() -> None:
    """A handler that writes its own events with CRLF line ends (valid SSE) is framed a second
    time: ``is_event`` wants the piece to end with ``\\n\\n``, and ``\\r\\n\\r\\n`` does not."""
    event = b"data: already\r\n\r\n"
    assert is_event(event)
    assert as_event(event) == event


@pytest.mark.parametrize("value", [[1, 2, 3], [{"a": 1}, {"b": 2}], ["x", "y"]])
def test_a_list_piece_is_one_json_line_under_jsonlines(value: Any) -> None:
    """One piece is one JSON document and a newline; ``encode_piece`` hands a list to the JSON
    Lines codec, which writes a whole answer's list as a record per line, so a list piece comes
    apart (``[1, 2, 3]`` -> ``1\\n2\\n3\\n``) and the client cannot tell where pieces end."""
    piece = encode_piece(value, "application/jsonlines", default_codecs())
    assert piece.count(b"\n") == 1 and piece.endswith(b"\n"), piece
    assert json.loads(piece) == value


def test_a_wake_takes_no_place_in_the_queue_bound() -> None:
    """``BatchQueue.wake`` puts a marker on the same queue as requests, and ``put`` counts the
    queue's size against the capacity: a client that takes a piece from a full channel
    (``on_room``) makes a request for the same model refused with 503 until the inference thread
    next gathers."""
    queue = BatchQueue(1)
    queue.wake()
    queue.put(InferenceRequest(b"[1]", "application/json", "application/json"))


def test_a_stream_whose_first_piece_was_too_late_is_closed(tmp_path: Path) -> None:
    """The request gets its 504 when the first piece does not come within the timeout, but the
    runtime keeps the stream: when the piece comes, a channel nobody reads is opened (counted in
    ``open_streams`` for good, so the queue bound shrinks), the generator is pulled until the
    channel is full and is never closed, and the inference thread polls it for ever."""
    steps = Steps(1)
    closed = threading.Event()

    def predict_fn(data: Any, model: Any) -> Iterator[str]:
        try:
            steps.wait(0)
            while True:
                yield "late "
        except GeneratorExit:
            closed.set()
            raise

    client, model = make_app(toolkit(predict_fn=predict_fn), tmp_path, timeout=0.3)
    try:
        assert client.post("/invocations", json=[1]).status_code == 504
        steps.open(0)
        assert closed.wait(WAIT), "the generator of a request that timed out was never closed"
        wait_for(lambda: model.runtime.open_streams == 0, "the stream's close")
    finally:
        steps.open_all()
        model.stop()


def test_a_tuple_item_without_output_fn_is_encoded_whole(tmp_path: Path) -> None:
    """Without an output_fn an item goes through the codec of the negotiated type; ToolkitHandler
    ._pieces takes any 2-tuple for output_fn's ``(body, content_type)`` even when there is no
    output_fn, so ``yield (token, score)`` sends only ``token``."""

    def predict_fn(data: Any, model: Any) -> Iterator[tuple[str, float]]:
        yield ("hello", 0.5)

    client, model = make_app(toolkit(predict_fn=predict_fn), tmp_path)
    try:
        response = client.post("/invocations", json=[1], headers={"Accept": "application/json"})
        assert response.status_code == 200
        assert json.loads(response.data) == ["hello", 0.5]
    finally:
        model.stop()


def test_a_pushed_stream_whose_first_piece_was_too_late_is_closed(tmp_path: Path) -> None:
    """As for a generator: a TorchServe handler whose first piece comes after the request's 504
    opens a channel nobody reads (``Pending.stream`` opens it although the request thread has
    given up), which is never closed, so ``open_streams`` stays one higher for good."""
    from ts.handler_utils.utils import send_intermediate_predict_response

    steps = Steps(1)
    handled = threading.Event()

    class Late:
        def handle(self, data: list[Any], context: Any) -> list[str]:
            steps.wait(0)
            send_intermediate_predict_response(["late"], context.request_ids, "", 200, context)
            handled.set()
            return ["end"]

    client, model = make_app(TorchServeHandler(Late, "h.py"), tmp_path, timeout=0.3)
    try:
        assert client.post("/invocations", json=[1]).status_code == 504
        steps.open(0)
        assert handled.wait(WAIT)
        wait_for(lambda: model.runtime.open_streams == 0, "the unread stream's close")
    finally:
        steps.open_all()
        model.stop()


class PushedDicts:
    """A TorchServe handler that sends two dict pieces, then returns a third."""

    def handle(self, data: list[Any], context: Any) -> list[dict[str, int]]:
        from ts.handler_utils.utils import send_intermediate_predict_response as send

        send([{"t": 0}], context.request_ids, "", 200, context)
        send([{"t": 1}], context.request_ids, "", 200, context)
        return [{"t": 2}]


def test_pushed_dict_pieces_are_json_lines_under_jsonlines(tmp_path: Path) -> None:
    """``handlers/intermediate.push`` (and ``BatchHandler._respond``) hand ``encode_piece`` the
    text TorchServe's serialization made of the value (with the real ``ts``, JSON indented over
    several lines), and text passes as made: with ``Accept: application/jsonlines`` the pieces
    come as ``b'{\\n  "t": 0\\n}'`` with no line end, under ``Content-Type:
    application/json``."""
    client, model = make_app(TorchServeHandler(PushedDicts, "h.py"), tmp_path)
    try:
        response = client.post(
            "/invocations",
            json=[1],
            headers={"Accept": "application/jsonlines"},
            buffered=False,
        )
        got: list[bytes] = list(pieces(response))
        response.close()
        for index, piece in enumerate(got):
            assert piece.count(b"\n") == 1 and piece.endswith(b"\n"), piece
            assert json.loads(piece) == {"t": index}
        assert response.mimetype == "application/jsonlines"
    finally:
        model.stop()


def test_pushed_event_stream_is_labelled_event_stream(tmp_path: Path) -> None:
    """With ``Accept: text/event-stream`` the pushed pieces are framed as events but the answer's
    Content-Type is the one TorchServe's serialization chose (``application/json`` for a dict),
    which an EventSource client refuses."""
    client, model = make_app(TorchServeHandler(PushedDicts, "h.py"), tmp_path)
    try:
        response = client.post(
            "/invocations", json=[1], headers={"Accept": "text/event-stream"}, buffered=False
        )
        got: list[bytes] = list(pieces(response))
        response.close()
        assert all(piece.startswith(b"data: ") for piece in got)
        assert response.mimetype == "text/event-stream"
    finally:
        model.stop()
