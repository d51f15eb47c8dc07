"""A SageMaker toolkit module whose predict_fn or transform_fn returns a generator, served by the
real WSGI app and runtime in this process: each piece leaves as it is made, and the stream's
lifecycle (failures, the client leaving, the per-piece timeout, other streams, the queue bound)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from serve.errors import BadRequestError
from serve.http.invocation import BodyRules
from serve.http.streaming import StreamAbortedError
from serve.runtime.streams import AHEAD
from tests.fixtures.apps import make_app
from tests.fixtures.streams import WAIT, Steps, pieces, toolkit, wait_for


def test_pieces_leave_one_at_a_time(tmp_path: Path) -> None:
    """The generator makes piece n only after the test has read piece n - 1."""
    steps = Steps(3)

    def predict_fn(data: Any, model: Any) -> Iterator[str]:
        for index in range(3):
            if index:
                steps.wait(index)
            yield f"p{index}|"

    client, model = make_app(toolkit(predict_fn=predict_fn), tmp_path)
    try:
        response = client.post("/invocations", json=[1], buffered=False)
        assert response.status_code == 200
        assert "Content-Length" not in response.headers
        assert response.mimetype == "application/json"
        stream = pieces(response)
        for index in range(3):
            assert next(stream) == f"p{index}|".encode()
            if index < 2:
                steps.open(index + 1)
        assert list(stream) == []
        response.close()
        wait_for(lambda: model.runtime.open_streams == 0, "the stream's close")
    finally:
        steps.open_all()
        model.stop()


def test_output_fn_is_called_once_per_item(tmp_path: Path) -> None:
    calls: list[tuple[Any, str]] = []

    def output_fn(prediction: Any, accept: str) -> Any:
        calls.append((prediction, accept))
        return (f"<{prediction}>", accept) if prediction % 2 else f"<{prediction}>"

    def predict_fn(data: Any, model: Any) -> Iterator[int]:
        yield from range(4)

    client, model = make_app(toolkit(predict_fn=predict_fn, output_fn=output_fn), tmp_path)
    try:
        response = client.post("/invocations", json=[1], headers={"Accept": "text/plain"})
        assert response.status_code == 200
        assert response.data == b"<0><1><2><3>"
        assert calls == [(index, "text/plain") for index in range(4)]
    finally:
        model.stop()


def test_a_transform_fn_generator_streams(tmp_path: Path) -> None:
    seen: list[tuple[Any, str, str]] = []

    def transform_fn(model: Any, input_data: Any, content_type: str, accept: str) -> Any:
        seen.append((input_data, content_type, accept))
        return (word.upper() + "\n" for word in input_data.split())

    client, model = make_app(toolkit(transform_fn=transform_fn), tmp_path)
    try:
        response = client.post(
            "/invocations",
            data=b"one two three",
            content_type="text/csv",
            headers={"Accept": "text/plain"},
            buffered=False,
        )
        assert list(pieces(response)) == [b"ONE\n", b"TWO\n", b"THREE\n"]
        assert seen == [("one two three", "text/csv", "text/plain")]
        response.close()
    finally:
        model.stop()


def test_dict_items_follow_accept(tmp_path: Path) -> None:
    def predict_fn(data: Any, model: Any) -> Iterator[dict[str, int]]:
        for index in range(2):
            yield {"token": index}

    client, model = make_app(toolkit(predict_fn=predict_fn), tmp_path)
    try:
        framed = {
            "application/jsonlines": [b'{"token":0}\n', b'{"token":1}\n'],
            "text/event-stream": [b'data: {"token":0}\n\n', b'data: {"token":1}\n\n'],
        }
        for accept, expected in framed.items():
            response = client.post("/invocations", json=[1], headers={"Accept": accept},
                                   buffered=False)  # fmt: skip
            assert response.mimetype == accept
            assert list(pieces(response)) == expected
            response.close()
    finally:
        model.stop()


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (ValueError("no tokens left"), 500, "model_error"),
        (BadRequestError("the prompt is empty"), 400, "bad_request"),
    ],
)
def test_a_failure_before_the_first_piece_is_an_error_answer(
    tmp_path: Path, error: Exception, status: int, code: str
) -> None:
    def predict_fn(data: Any, model: Any) -> Iterator[str]:
        raise error
        yield "never"

    client, model = make_app(toolkit(predict_fn=predict_fn), tmp_path)
    try:
        response = client.post("/invocations", json=[1])
        assert response.status_code == status
        assert response.mimetype == "application/json"
        body = response.get_json()["error"]
        assert body["code"] == code
        assert str(error) in body["message"]
        assert model.runtime.open_streams == 0
    finally:
        model.stop()


def test_a_failure_after_the_first_piece_aborts_the_body(tmp_path: Path) -> None:
    def predict_fn(data: Any, model: Any) -> Iterator[str]:
        yield "a"
        yield "b"
        raise RuntimeError("the model broke off")

    client, model = make_app(toolkit(predict_fn=predict_fn), tmp_path)
    try:
        response = client.post("/invocations", json=[1], buffered=False)
        assert response.status_code == 200
        stream = pieces(response)
        assert next(stream) == b"a"
        assert next(stream) == b"b"
        with pytest.raises(StreamAbortedError):
            next(stream)
        response.close()
        wait_for(lambda: model.runtime.open_streams == 0, "the failed stream's close")
        assert client.post("/invocations", json=[1], buffered=False).status_code == 200
    finally:
        model.stop()


def test_a_generator_that_exits_fails_its_stream_not_the_model(tmp_path: Path) -> None:
    """SystemExit (a BaseException) from user code between pieces ends that stream; the model's
    inference thread lives on and answers the next request."""

    def predict_fn(data: Any, model: Any) -> Iterator[str]:
        yield "a"
        if data == [1]:
            raise SystemExit(3)
        yield "b"

    client, model = make_app(toolkit(predict_fn=predict_fn), tmp_path)
    try:
        response = client.post("/invocations", json=[1], buffered=False)
        stream = pieces(response)
        assert next(stream) == b"a"
        with pytest.raises(StreamAbortedError):
            next(stream)
        response.close()
        after = client.post("/invocations", json=[2])
        assert after.status_code == 200 and after.data == b"ab"
    finally:
        model.stop()


def test_an_empty_generator_is_an_empty_answer(tmp_path: Path) -> None:
    client, model = make_app(toolkit(predict_fn=lambda data, model: iter(())), tmp_path)
    try:
        response = client.post("/invocations", json=[1])
        assert response.status_code == 200
        assert response.data == b""
        assert model.runtime.open_streams == 0
    finally:
        model.stop()


def test_a_client_that_leaves_closes_the_generator(tmp_path: Path) -> None:
    """An endless generator: held back by the client (at most AHEAD pieces ahead of it), and
    closed (GeneratorExit in user code) once the client goes."""
    closed = threading.Event()
    made: list[int] = []

    def predict_fn(data: Any, model: Any) -> Iterator[str]:
        try:
            while True:
                made.append(len(made))
                yield f"{len(made)} "
        except GeneratorExit:
            closed.set()
            raise

    client, model = make_app(toolkit(predict_fn=predict_fn), tmp_path)
    try:
        response = client.post("/invocations", json=[1], buffered=False)
        stream = pieces(response)
        assert [next(stream) for _ in range(3)] == [b"1 ", b"2 ", b"3 "]
        assert model.runtime.open_streams == 1
        response.close()
        assert closed.wait(WAIT), "the generator was not closed after its client left"
        assert len(made) <= 3 + AHEAD + 2, f"{len(made)} pieces made for a client that read 3"
        wait_for(lambda: model.runtime.open_streams == 0, "the stream's close")
        assert client.post("/invocations", json=[1], buffered=False).status_code == 200
    finally:
        model.stop()


def test_the_timeout_bounds_each_piece_not_the_stream(tmp_path: Path) -> None:
    """Six pieces 0.25 s apart under a 1 s timeout: 1.5 s in all, and complete."""
    timeout, gap, count = 1.0, 0.25, 6
    pause = threading.Event()  # never set: its wait is the time between pieces

    def predict_fn(data: Any, model: Any) -> Iterator[str]:
        for index in range(count):
            if index:
                pause.wait(gap)
            yield str(index)

    client, model = make_app(toolkit(predict_fn=predict_fn), tmp_path, timeout=timeout)
    try:
        started = time.monotonic()
        response = client.post("/invocations", json=[1])
        assert response.status_code == 200
        assert response.data == b"012345"
        assert time.monotonic() - started > timeout
    finally:
        model.stop()


def test_a_late_piece_ends_the_stream_and_closes_the_generator(tmp_path: Path) -> None:
    steps = Steps(1)
    closed = threading.Event()

    def predict_fn(data: Any, model: Any) -> Iterator[str]:
        try:
            yield "on time"
            steps.wait(0)
            yield "late"
            yield "never"
        except GeneratorExit:
            closed.set()
            raise

    client, model = make_app(toolkit(predict_fn=predict_fn), tmp_path, timeout=0.3)
    try:
        response = client.post("/invocations", json=[1], buffered=False)
        stream = pieces(response)
        assert next(stream) == b"on time"
        with pytest.raises(StreamAbortedError):
            next(stream)
        response.close()
        steps.open(0)
        assert closed.wait(WAIT), "the generator of a timed-out stream was not closed"
        wait_for(lambda: model.runtime.open_streams == 0, "the stream's close")
    finally:
        steps.open_all()
        model.stop()


def endless(data: Any, model: Any) -> Any:
    """``{"whole": true}``: a whole answer; otherwise an endless stream named by the input."""
    if isinstance(data, dict) and data.get("whole"):
        return {"whole": True}
    return (f"{data}{index}," for index in range(10**9))


def test_two_streams_make_progress_together(tmp_path: Path) -> None:
    client, model = make_app(toolkit(predict_fn=endless), tmp_path)
    try:
        first = client.post("/invocations", json="a", buffered=False)
        a = pieces(first)
        assert next(a) == b"a0,"
        second = client.post("/invocations", json="b", buffered=False)  # a is still open
        b = pieces(second)
        assert next(b) == b"b0,"
        assert model.runtime.open_streams == 2
        for index in range(1, 20):  # turn and turn about
            assert next(a) == f"a{index},".encode()
            assert next(b) == f"b{index},".encode()
        first.close()
        second.close()
        wait_for(lambda: model.runtime.open_streams == 0, "both streams' close")
    finally:
        model.stop()


def test_open_streams_count_against_the_queue_bound(tmp_path: Path) -> None:
    client, model = make_app(toolkit(predict_fn=endless), tmp_path, queue_size=2)
    try:
        streams = [client.post("/invocations", json=name, buffered=False) for name in "ab"]
        assert [response.status_code for response in streams] == [200, 200]
        assert model.runtime.open_streams == 2
        refused = client.post("/invocations", json={"whole": True})
        assert refused.status_code == 503
        assert refused.headers["Retry-After"] == "1"
        assert refused.get_json()["error"]["code"] == "overloaded"
        streams[0].close()
        wait_for(lambda: model.runtime.open_streams == 1, "the first stream's close")
        served = client.post("/invocations", json={"whole": True})
        assert served.status_code == 200 and served.get_json() == {"whole": True}
        streams[1].close()
    finally:
        model.stop()


def test_ping_and_whole_answers_go_on_while_a_stream_is_open(tmp_path: Path) -> None:
    client, model = make_app(toolkit(predict_fn=endless), tmp_path)
    try:
        stream = client.post("/invocations", json="a", buffered=False)
        assert next(pieces(stream)) == b"a0,"
        assert client.get("/ping").status_code == 200
        whole = client.post("/invocations", json={"whole": True})
        assert whole.status_code == 200 and whole.get_json() == {"whole": True}
        assert next(pieces(stream)) == b"a1,"
        stream.close()
    finally:
        model.stop()


def test_the_engines_client_left_check_ends_the_stream(tmp_path: Path) -> None:
    """An engine that can tell the connection closed (BodyRules.client_left) ends the body before
    the next piece is written, and the generator is closed."""
    gone = threading.Event()
    closed = threading.Event()

    def predict_fn(data: Any, model: Any) -> Iterator[str]:
        try:
            yield from (f"{index}," for index in range(10**9))
        except GeneratorExit:
            closed.set()
            raise

    rules = BodyRules(client_left=lambda environ: gone.is_set())
    client, model = make_app(toolkit(predict_fn=predict_fn), tmp_path, body=rules)
    try:
        response = client.post("/invocations", json=[1], buffered=False)
        stream = pieces(response)
        assert next(stream) == b"0,"
        assert next(stream) == b"1,"
        gone.set()
        with pytest.raises(StreamAbortedError):
            next(stream)
        assert closed.wait(WAIT), "the generator was not closed after its client left"
        wait_for(lambda: model.runtime.open_streams == 0, "the stream's close")
        response.close()
    finally:
        model.stop()
