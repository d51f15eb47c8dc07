"""A handler call past its model's timeout (serve/runtime/health.py), through the WSGI app the
engines serve: /ping and the model's requests say so at once, the other models serve on, and the
worker is healthy again when the call returns."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from werkzeug.test import Client

from serve.codecs import default_codecs
from serve.config import ServingConfig
from serve.contract import InferenceRequest, Result
from serve.errors import NotReadyError
from serve.http.app import create_app
from serve.http.listeners import serving_app
from serve.model.directory import ModelDirectory
from serve.model.manifest import Manifest
from serve.model.namespace import ModelNamespace
from serve.process.cpus import resolved
from serve.runtime.batching import BatchQueue
from serve.runtime.inference import OpenedModel
from serve.runtime.registry import ModelRegistry
from serve.runtime.shared import ModelSpec, SharedModels
from tests.unit.test_app import EchoHandler, make_client

TIMEOUT = 0.3
TARGET = "X-Amzn-SageMaker-Target-Model"


class BlockingHandler(EchoHandler):
    """Holds a request whose body is ``"block"`` until the test releases it."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def handle(self, requests: Sequence[InferenceRequest]) -> Sequence[Result]:
        if requests[0].body == b'"block"':
            self.entered.set()
            assert self.release.wait(30), "the test never released the handler"
        return super().handle(requests)


def until(condition: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} not within {timeout} s"
        time.sleep(0.01)


def blocked(test_client: Client, handler: BlockingHandler, **headers: str) -> threading.Thread:
    """A request held in the handler past its timeout (answered 504 meanwhile)."""
    answers: list[int] = []

    def call() -> None:
        answers.append(test_client.post("/invocations", json="block", headers=headers).status_code)

    thread = threading.Thread(target=call)
    thread.start()
    assert handler.entered.wait(10)
    until(lambda: answers == [504], "the held request's 504")
    return thread


def assert_stuck(answer: Any) -> None:
    assert answer.status_code == 503
    assert answer.headers["Retry-After"] == "1"
    error = answer.get_json()["error"]
    assert error["code"] == "not_ready" and "is stuck" in error["message"]


def test_a_stuck_model_fails_fast_and_serves_again_when_the_call_returns(tmp_path: Path) -> None:
    handler = BlockingHandler()
    test_client, model = make_client(handler, tmp_path, timeout=TIMEOUT, hung_grace=30)
    try:
        thread = blocked(test_client, handler)
        until(lambda: test_client.get("/ping").status_code == 503, "/ping 503")
        ping = test_client.get("/ping").get_json()
        assert ping["status"] == "Unhealthy"
        assert "past its 0.3 s timeout" in ping["message"], ping
        assert "BYOSERVE_HUNG_GRACE" in ping["message"]
        assert not model.registry.accepting
        started = time.monotonic()
        assert_stuck(test_client.post("/invocations", json=[1]))
        assert time.monotonic() - started < TIMEOUT  # not a wait behind the call
        handler.release.set()
        thread.join(10)
        until(lambda: test_client.get("/ping").status_code == 200, "/ping 200 again")
        assert test_client.post("/invocations", json=[1]).json == [1]
        assert model.registry.accepting
    finally:
        handler.release.set()
        model.stop()


def two_models(tmp_path: Path, stuck: BlockingHandler) -> tuple[Client, ModelRegistry]:
    """A test client for a worker holding two models: ``stuck``'s and an echo."""
    config = ServingConfig.from_env(
        {}, model_dir=tmp_path, workers=1, timeout=TIMEOUT, hung_grace=30
    )
    settings = resolved(config)
    shared = SharedModels(tmp_path / "shared")
    shared.directory.mkdir()

    def refuse(spec: ModelSpec) -> OpenedModel:
        raise AssertionError(spec.name)

    registry = ModelRegistry(settings, shared, refuse, default_codecs())
    for name, handler in (("stuck", stuck), ("free", EchoHandler())):
        root = tmp_path / name
        root.mkdir()
        directory = ModelDirectory(root, code_dir=None, manifest=Manifest(), manifest_path=None)
        opened = OpenedModel(directory, handler, ModelNamespace(name, [root]))
        registry.add_startup(name, root, opened)
    registry.start()
    assert registry.wait_ready(10)
    app = create_app(settings, registry)
    return Client(serving_app(app, settings, registry, None)), registry


def test_with_several_models_a_stuck_one_leaves_ping_and_the_others_serving(
    tmp_path: Path,
) -> None:
    # /ping failing would have SageMaker replace the instance and every model on it; the worker
    # cures the stuck call itself (it returns, or the worker is recycled after the grace).
    handler = BlockingHandler()
    test_client, registry = two_models(tmp_path, handler)
    try:
        blocked(test_client, handler, **{TARGET: "stuck"})
        until(lambda: not registry.accepting, "the worker to stop taking connections")
        assert_stuck(test_client.post("/invocations", json=[1], headers={TARGET: "stuck"}))
        assert test_client.post("/invocations", json=[2], headers={TARGET: "free"}).json == [2]
        assert test_client.get("/ping").status_code == 200
        handler.release.set()
        until(lambda: registry.accepting, "the worker to take connections again")
        assert test_client.post("/invocations", json=[3], headers={TARGET: "stuck"}).json == [3]
    finally:
        handler.release.set()
        registry.stop()
        registry.shared.remove()


def test_shedding_answers_every_waiting_request_and_keeps_the_wake() -> None:
    queue = BatchQueue(8)
    waiting = [
        queue.put(InferenceRequest(b"[1]", "application/json", "application/json"))[0]
        for _ in range(3)
    ]
    queue.wake()
    assert queue.shed(lambda: NotReadyError("stuck")) == 3
    for pending in waiting:
        assert pending.done.acquire(timeout=0)
        assert isinstance(pending.error, NotReadyError)
    assert queue.gather(8, 0.0, wait=5.0) == []  # the wake is still there: no 5 s wait
    assert queue.shed(lambda: NotReadyError("stuck")) == 0
