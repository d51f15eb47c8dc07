"""The HTTP layer through Flask's test client, with small in-process handlers."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from werkzeug.test import Client

from serve.contract import (
    CUSTOM_ATTRIBUTES,
    INFERENCE_ID,
    InferenceRequest,
    InferenceResponse,
    LoadContext,
    Result,
)
from serve.errors import BadRequestError, ModelError
from serve.process.engine import ENGINES
from serve.process.granian_engine import GRANIAN_CHUNKED
from tests.fixtures.apps import AppModel, make_app


class EchoHandler:
    """Decodes the body with the codecs and answers it back, as JSON or what Accept asks."""

    source = "echo"
    max_batch_size = 8
    options: Mapping[str, Any] = {}

    def __init__(self, load_delay: float = 0.0, fail_load: bool = False) -> None:
        self.load_delay = load_delay
        self.fail_load = fail_load
        self.batches: list[int] = []

    def load(self, context: LoadContext) -> None:
        time.sleep(self.load_delay)
        if self.fail_load:
            raise RuntimeError("weights are corrupt")
        self.codecs = context.codecs

    def handle(self, requests: Sequence[InferenceRequest]) -> Sequence[Result]:
        self.batches.append(len(requests))
        return [self._one(request) for request in requests]

    def _one(self, request: InferenceRequest) -> Result:
        try:
            value = self.codecs.decode(request.body, request.content_type)
            if value == "boom":
                raise ValueError("the model cannot digest boom")
            if value == "sleep":
                time.sleep(1.0)
            body, content_type = self.codecs.encode(value, request.accept)
        except BadRequestError as exc:
            return exc
        except ValueError as exc:
            return ModelError(f"ValueError: {exc}")
        except Exception as exc:
            return exc
        headers = {}
        if request.custom_attributes:
            headers[CUSTOM_ATTRIBUTES] = "seen=" + request.custom_attributes
        return InferenceResponse(body, content_type, headers=headers)


class GatedHandler(EchoHandler):
    """Holds each batch in the handler until the test releases it: ``entered`` is set once a
    batch is held, ``done`` once one has been answered."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()
        self.done = threading.Event()

    def handle(self, requests: Sequence[InferenceRequest]) -> Sequence[Result]:
        self.entered.set()
        assert self.release.wait(30), "the test never released the handler"
        try:
            return super().handle(requests)
        finally:
            self.done.set()


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Wait until ``condition()`` holds, against a monotonic deadline."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} not within {timeout} s"
        time.sleep(0.005)


def overload(test_client: Client, handler: GatedHandler) -> list[Any]:
    """With a queue of one: one request held in the handler, then two more at once, one of which
    waits in the queue while the other is refused; the three answers, the refusal first."""
    results: list[Any] = []

    def call() -> None:
        results.append(test_client.post("/invocations", json=[1]))

    first = threading.Thread(target=call)
    first.start()
    assert handler.entered.wait(30), "the first request never reached the handler"
    others = [threading.Thread(target=call) for _ in range(2)]
    for thread in others:
        thread.start()
    wait_for(lambda: len(results) == 1, "the refusal")  # the others wait for the handler
    handler.release.set()
    for thread in [first, *others]:
        thread.join(30)
    return results


def make_client(
    handler: EchoHandler, tmp_path: Path, start: bool = True, **config: Any
) -> tuple[Client, AppModel]:
    return make_app(handler, tmp_path, start=start, **config)


@pytest.fixture
def client(tmp_path: Path) -> Iterator[Client]:
    test_client, runtime = make_client(EchoHandler(), tmp_path)
    yield test_client
    runtime.stop()


def error_of(response: Any) -> dict[str, Any]:
    body: dict[str, Any] = response.get_json()["error"]
    assert "Traceback" not in body["message"]
    return body


def test_ping_is_503_until_the_model_is_loaded(tmp_path: Path) -> None:
    test_client, runtime = make_client(EchoHandler(load_delay=0.5), tmp_path, start=False)
    assert test_client.get("/ping").status_code == 503
    runtime.start()
    assert test_client.get("/ping").status_code == 503
    assert error_of(test_client.post("/invocations", json=[1]))["code"] == "not_ready"
    assert runtime.wait_ready(5)
    assert test_client.get("/ping").status_code == 200
    runtime.stop()


def test_a_model_that_fails_to_load_stays_unready_with_a_clear_error(tmp_path: Path) -> None:
    test_client, runtime = make_client(EchoHandler(fail_load=True), tmp_path, start=False)
    runtime.start()
    deadline = time.monotonic() + 5
    while runtime.load_error is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert test_client.get("/ping").status_code == 503
    response = test_client.post("/invocations", json=[1])
    assert response.status_code == 503
    assert "failed to load" in error_of(response)["message"]


def test_invocations_round_trip_and_alias(client: Client) -> None:
    response = client.post("/invocations", json={"x": [1, 2]})
    assert response.status_code == 200
    assert response.get_json() == {"x": [1, 2]}
    alias = client.post("/endpoints/sentiment/invocations", json=[3])
    assert alias.status_code == 200 and alias.get_json() == [3]


def test_accept_negotiation_and_default(client: Client) -> None:
    body = json.dumps([[1.5, 2.0]])
    headers = {"Content-Type": "application/json", "Accept": "application/json;q=0.2, text/csv"}
    response = client.post("/invocations", data=body, headers=headers)
    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    starred = client.post(
        "/invocations", data=body, headers={"Accept": "*/*"}, content_type="application/json"
    )
    assert starred.mimetype == "application/json"


def test_request_id_is_echoed_and_custom_attributes_reach_the_handler(client: Client) -> None:
    response = client.post(
        "/invocations", json=[1], headers={INFERENCE_ID: "abc-123", CUSTOM_ATTRIBUTES: "k=v"}
    )
    assert response.headers["X-Request-Id"] == "abc-123"
    assert response.headers[CUSTOM_ATTRIBUTES] == "seen=k=v"
    generated = client.post("/invocations", json=[1]).headers["X-Request-Id"]
    assert len(generated) == 32


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({"data": b"{not json", "content_type": "application/json"}, 400, "bad_request"),
        ({"data": b"x", "content_type": "application/x-made-up"}, 415, "unsupported_media_type"),
        ({"json": [1], "headers": {"Accept": "image/x-nothing"}}, 406, "not_acceptable"),
        ({"json": "boom"}, 500, "model_error"),
        ({"json": [1], "headers": {CUSTOM_ATTRIBUTES: "x" * 1025}}, 400, "bad_request"),
    ],
)
def test_bad_requests_get_their_status_and_a_json_error(
    client: Client, kwargs: dict[str, Any], status: int, code: str
) -> None:
    response = client.post("/invocations", **kwargs)
    assert response.status_code == status
    error = error_of(response)
    assert error["code"] == code
    assert error["request_id"] == response.headers["X-Request-Id"]
    assert client.post("/invocations", json=[1]).status_code == 200  # still serving


def test_model_error_message_has_no_traceback(client: Client) -> None:
    response = client.post("/invocations", json="boom")
    assert error_of(response)["message"] == "ValueError: the model cannot digest boom"


def test_unknown_route_and_wrong_method(client: Client) -> None:
    missing = client.get("/nothing")
    assert missing.status_code == 404 and error_of(missing)["code"] == "not_found"
    wrong = client.get("/invocations")
    assert wrong.status_code == 405 and "POST" in wrong.headers["Allow"]


def test_size_limit_is_checked_before_the_body_is_read(tmp_path: Path) -> None:
    test_client, runtime = make_client(EchoHandler(), tmp_path, max_request_size=100)
    response = test_client.post(
        "/invocations", data=b"[" + b"1," * 100 + b"1]", content_type="application/json"
    )
    assert response.status_code == 413
    assert "SAGEMAKER_MAX_REQUEST_SIZE" in error_of(response)["message"]
    assert test_client.post("/invocations", json=[1]).status_code == 200
    runtime.stop()


def test_timeout_answers_504(tmp_path: Path) -> None:
    test_client, runtime = make_client(EchoHandler(), tmp_path, timeout=0.2)
    response = test_client.post("/invocations", json="sleep")
    assert response.status_code == 504
    assert "SAGEMAKER_MODEL_SERVER_TIMEOUT" in error_of(response)["message"]
    runtime.stop()


def test_full_queue_answers_503_with_retry_after(tmp_path: Path) -> None:
    handler = GatedHandler()
    test_client, runtime = make_client(handler, tmp_path, queue_size=1, threads=4)
    refused, *served = overload(test_client, handler)
    assert [response.status_code for response in served] == [200, 200]
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
    assert error_of(refused)["code"] == "overloaded"
    overloaded = Client(test_client.application)
    assert overloaded.post("/invocations", json=[1]).status_code == 200
    runtime.stop()


def test_execution_parameters(client: Client) -> None:
    params = client.get("/execution-parameters").get_json()
    assert params == {
        "MaxConcurrentTransforms": 1,
        "BatchStrategy": "MULTI_RECORD",
        "MaxPayloadInMB": 6,
    }


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        # a transform job's own values are reported as set, the strategy in SageMaker's spelling
        (
            {"max_concurrent_transforms": 3, "batch_strategy": "SINGLE_RECORD"},
            {"MaxConcurrentTransforms": 3, "BatchStrategy": "SINGLE_RECORD", "MaxPayloadInMB": 6},
        ),
        # unset: the workers (one here), the request size limit in MiB
        (
            {"max_request_size": 30 * 1024 * 1024},
            {"MaxConcurrentTransforms": 1, "BatchStrategy": "MULTI_RECORD", "MaxPayloadInMB": 30},
        ),
        # a body limit past SageMaker's 100 MB is reported as 100
        (
            {"max_request_size": 1024 * 1024 * 1024},
            {"MaxConcurrentTransforms": 1, "BatchStrategy": "MULTI_RECORD", "MaxPayloadInMB": 100},
        ),
    ],
)
def test_execution_parameters_follow_the_settings(
    tmp_path: Path, config: dict[str, Any], expected: dict[str, Any]
) -> None:
    test_client, runtime = make_client(EchoHandler(), tmp_path, **config)
    assert test_client.get("/execution-parameters").get_json() == expected
    runtime.stop()


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(tmp_path: Path) -> None:
    handler = EchoHandler()
    test_client, runtime = make_client(
        handler, tmp_path, max_batch_size=8, max_batch_delay_ms=200.0
    )
    answers: dict[int, Any] = {}

    def call(i: int) -> None:
        answers[i] = test_client.post("/invocations", json={"i": i}).get_json()

    threads = [threading.Thread(target=call, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == {i: {"i": i} for i in range(6)}
    assert max(handler.batches) > 1
    runtime.stop()


def test_a_model_slower_than_the_startup_timeout_counts_as_failed(tmp_path: Path) -> None:
    test_client, runtime = make_client(
        EchoHandler(load_delay=1.0), tmp_path, start=False, startup_timeout=0.2
    )
    runtime.start()
    deadline = time.monotonic() + 5
    while runtime.load_error is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert test_client.get("/ping").status_code == 503
    assert "SAGEMAKER_STARTUP_TIMEOUT" in str(runtime.load_error)


def test_request_ids_are_logged_at_debug(client: Client, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("DEBUG", logger="serve.http.app"):
        client.post("/invocations", json=[1], headers={INFERENCE_ID: "trace-me-42"})
    assert any("trace-me-42" in record.getMessage() for record in caplog.records)


class LoudHandler(EchoHandler):
    """Fails every request with an exception whose message is 200 kB, as user code may."""

    def handle(self, requests: Sequence[InferenceRequest]) -> Sequence[Result]:
        from handlers.context import user_error

        return [user_error(ValueError("x" * 200_000)) for _ in requests]


def test_a_user_exception_message_is_bounded(tmp_path: Path) -> None:
    test_client, model = make_client(LoudHandler(), tmp_path)
    body = error_of(test_client.post("/invocations", json=[1]))
    assert body["code"] == "model_error"
    assert body["message"].startswith("ValueError: xxx")
    assert len(body["message"]) < 1100 and "200012 characters" in body["message"]
    model.stop()


def test_error_details_can_be_kept_from_callers(tmp_path: Path) -> None:
    test_client, model = make_client(LoudHandler(), tmp_path, error_details=False)
    body = error_of(test_client.post("/invocations", json=[1]))
    assert body["message"] == "the model failed on this request; the server log has the details"
    model.stop()


class StuckHandler(EchoHandler):
    """Never comes back from a request asking it to hang (until the test lets it go)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def handle(self, requests: Sequence[InferenceRequest]) -> Sequence[Result]:
        if requests[0].body == b'"hang"':
            self.release.wait(30)
        return super().handle(requests)


def test_a_worker_whose_handler_hangs_says_it_is_not_ready(tmp_path: Path) -> None:
    handler = StuckHandler()
    test_client, model = make_client(handler, tmp_path, timeout=0.2, hung_grace=0.2)
    assert test_client.post("/invocations", json="hang").status_code == 504
    deadline = time.monotonic() + 5  # the registry looks every second
    while test_client.get("/ping").status_code == 200:
        assert time.monotonic() < deadline, "/ping still 200 with a hung inference thread"
        time.sleep(0.05)
    handler.release.set()
    model.stop()


def test_a_chunked_body_is_refused_with_411_on_granian_only(tmp_path: Path) -> None:
    # granian's WSGI input ends a chunked body at a framing error without a word, so a
    # truncated body could be predicted on; gunicorn raises, and there it is read.
    body = {"data": b"[1]", "content_type": "application/json"}
    chunked = {"Transfer-Encoding": "chunked"}
    dechunked = {"wsgi.input_terminated": True}  # as both servers say of the body they decode
    for engine, status in (("granian", 411), ("gunicorn", 200)):
        rules = ENGINES[engine].body_rules
        (tmp_path / engine).mkdir()
        test_client, model = make_app(EchoHandler(), tmp_path / engine, body=rules)
        answer = test_client.post(
            "/invocations", **body, headers=chunked, environ_overrides=dechunked
        )
        assert answer.status_code == status
        if status == 411:
            assert error_of(answer)["message"] == GRANIAN_CHUNKED
        else:
            assert answer.json == [1]
        assert test_client.post("/invocations", **body).json == [1]
        model.stop()
