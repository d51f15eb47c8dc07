"""A handler call that overruns its timeout: its worker says so on /ping at once, answers that
model's requests 503 at once instead of letting them wait behind the call, hands new connections
to a sibling where the engine can (gunicorn), is healthy again when the call returns within
BYOSERVE_HUNG_GRACE, and is replaced when it does not (serve/runtime/health.py).

The handler blocks on a FIFO the test holds: it returns when the test closes the write end."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.fixtures.server import ServerProcess, start_server

pytestmark = pytest.mark.slow

TIMEOUT_S = 1
GRACE_S = 10  # room to look at the stuck worker and release its call before it is replaced
SHORT_GRACE_S = 3  # where it is to be replaced: /ping says 503 from 1 s, the worker goes at 4 s
SEEN_WITHIN_S = 5.0  # generous: the worker says so the moment the timeout passes

GATED = """
import json
import os


def model_fn(model_dir):
    return open(os.path.join(model_dir, "gate_path")).read()


def transform_fn(gate, body, content_type, accept):
    if json.loads(body).get("block"):
        with open(gate) as fifo:  # until the test has opened and closed the write end
            fifo.read()
    return json.dumps({"pid": os.getpid()}), "application/json"
"""


def gated_model(root: Path) -> tuple[Path, Path]:
    """A toolkit model whose ``{"block": true}`` requests wait on a FIFO; the model and FIFO."""
    model = root / "model"
    (model / "code").mkdir(parents=True)
    (model / "code" / "inference.py").write_text(GATED)
    gate = root / "gate"
    os.mkfifo(gate)
    (model / "gate_path").write_text(str(gate))
    return model, gate


@contextmanager
def serving(
    tmp_path: Path, workers: int, grace: float = GRACE_S
) -> Iterator[tuple[ServerProcess, Path]]:
    model, gate = gated_model(tmp_path)
    env = {"SAGEMAKER_MODEL_SERVER_TIMEOUT": str(TIMEOUT_S), "BYOSERVE_HUNG_GRACE": str(grace)}
    server = start_server(model, tmp_path / "logs", workers=workers, env=env)
    try:
        yield server, gate
    finally:
        assert server.stop(30) == 0


def blocked(gate: Path, deadline: float) -> int:
    """Wait until a handler call waits on ``gate``; the write end, held open (closing it lets
    the call return)."""
    while True:
        try:
            return os.open(gate, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:  # ENXIO: no reader yet
            assert time.monotonic() < deadline, "the handler call never started"
            time.sleep(0.01)


def block(session: requests.Session, url: str, gate: Path) -> tuple[int, int]:
    """Send a request that blocks its worker's handler call, on ``session``'s connection; its
    answer is a 504 after the timeout. Returns the worker's pid and the gate's write end."""
    pid = session.post(f"{url}/invocations", json={}, timeout=30).json()["pid"]
    answer = session.post(f"{url}/invocations", json={"block": True}, timeout=30)
    assert answer.status_code == 504, answer.text
    return pid, blocked(gate, time.monotonic() + 30)


def until_ping(session: requests.Session, url: str, status: int) -> requests.Response:
    """Poll /ping on ``session`` until it answers ``status``, within SEEN_WITHIN_S."""
    deadline = time.monotonic() + SEEN_WITHIN_S
    while True:
        answer = session.get(f"{url}/ping", timeout=10)
        if answer.status_code == status:
            return answer
        assert time.monotonic() < deadline, f"/ping still {answer.status_code}, not {status}"
        time.sleep(0.02)


def stuck_answer(answer: requests.Response) -> dict[str, Any]:
    assert answer.status_code == 503, answer.text
    assert answer.headers["Retry-After"] == "1"
    error: dict[str, Any] = answer.json()["error"]
    assert error["code"] == "not_ready" and "is stuck" in error["message"], error
    return error


def all_loaded(server: ServerProcess, workers: int) -> None:
    """Wait until ``workers`` loads of the model are logged (/ping answers 200 from whichever
    worker is ready first)."""
    deadline = time.monotonic() + 60
    while server.log().count(" loaded from ") < workers:
        assert time.monotonic() < deadline, f"{workers} workers not loaded:\n{server.log()}"
        time.sleep(0.05)


def logged(server: ServerProcess, text: str) -> None:
    """Wait until the server has logged ``text``."""
    deadline = time.monotonic() + SEEN_WITHIN_S
    while text not in server.log():
        assert time.monotonic() < deadline, f"{text!r} not logged:\n{server.log()}"
        time.sleep(0.05)


def answered_elsewhere(url: str, stuck: int, engine: str, keep: requests.Session) -> None:
    """With a sibling: new connections are answered 200 by it. On gunicorn every one (the stuck
    worker accepts none); on granian the kernel spreads connections over both workers' sockets,
    so one may reach the stuck worker: it answers 503 at once, and a retry reaches the sibling.
    ``keep`` ends up holding a connection to the sibling."""
    for _ in range(20):
        started = time.monotonic()
        answer = keep.post(f"{url}/invocations", json={}, timeout=30)
        assert time.monotonic() - started < TIMEOUT_S, "a request waited behind the stuck call"
        if engine == "gunicorn" or answer.status_code == 200:
            assert answer.status_code == 200, answer.text
            assert answer.json()["pid"] != stuck
            return
        stuck_answer(answer)
        keep.close()  # a new connection next time
    pytest.fail("no request was answered by the sibling")


def served_again(url: str, stuck: int) -> None:
    """New connections reach the worker that was stuck again, and it answers them."""
    deadline = time.monotonic() + 2 * SEEN_WITHIN_S
    while True:
        answer = requests.post(f"{url}/invocations", json={}, timeout=30)
        assert answer.status_code == 200, answer.text
        if answer.json()["pid"] == stuck:
            return
        assert time.monotonic() < deadline, "the worker that was stuck takes no connections"


def same_worker(url: str, held: requests.Session, other: requests.Session) -> None:
    """Have ``other`` hold a connection to the worker ``held``'s goes to (granian: the kernel
    picks a worker per connection)."""
    pid = held.post(f"{url}/invocations", json={}, timeout=30).json()["pid"]
    for _ in range(50):
        if other.post(f"{url}/invocations", json={}, timeout=30).json()["pid"] == pid:
            return
        other.close()  # a new connection next time
    pytest.fail("50 connections in a row went to the other worker")


@pytest.mark.parametrize("workers", [1, 2])
def test_a_stuck_worker_says_so_at_once_and_serves_again_when_the_call_returns(
    tmp_path: Path, workers: int, engine: str
) -> None:
    with (
        serving(tmp_path, workers) as (server, gate),
        requests.Session() as held,
        requests.Session() as other,
        requests.Session() as sibling,
    ):
        all_loaded(server, workers)
        if engine == "granian" and workers == 2:
            same_worker(server.url, held, other)
        stuck, release = block(held, server.url, gate)
        ping = until_ping(held, server.url, 503)
        assert ping.json()["status"] == "Unhealthy"
        assert "past its 1 s timeout" in ping.json()["message"]
        if workers == 1:  # its connections are its own: the model's requests fail fast
            started = time.monotonic()
            stuck_answer(held.post(f"{server.url}/invocations", json={}, timeout=30))
            assert time.monotonic() - started < TIMEOUT_S
        else:
            answered_elsewhere(server.url, stuck, engine, sibling)
            for _ in range(10):  # on gunicorn every new connection goes to the sibling
                answer = requests.post(f"{server.url}/invocations", json={}, timeout=30)
                if engine == "gunicorn":
                    assert answer.status_code == 200 and answer.json()["pid"] != stuck
        if engine == "granian" and workers == 2:  # a connection it holds: 503, and closed
            logged(server, "has run past its 1 s timeout")
            answer = other.post(f"{server.url}/invocations", json={}, timeout=30)
            stuck_answer(answer)
            assert answer.headers["Connection"] == "close"
        os.close(release)  # the call returns within the grace
        if workers == 1:
            until_ping(held, server.url, 200)
        served_again(server.url, stuck)  # (gunicorn: the sibling holds more connections)
        assert server.worker_pids().count(stuck) == 1, "the worker was replaced, not recovered"
        logged(server, "the handler call returned after")


@pytest.mark.parametrize("workers", [1, 2])
def test_a_call_that_does_not_return_within_the_grace_has_its_worker_replaced(
    tmp_path: Path, workers: int
) -> None:
    with (
        serving(tmp_path, workers, SHORT_GRACE_S) as (server, gate),
        requests.Session() as held,
    ):
        all_loaded(server, workers)
        stuck, release = block(held, server.url, gate)
        until_ping(held, server.url, 503)
        try:
            server.wait_workers(workers, timeout=SHORT_GRACE_S + 60, without=stuck)
        finally:
            os.close(release)
        all_loaded(server, workers + 1)  # granian's replacement accepts while it loads
        answer = requests.post(f"{server.url}/invocations", json={}, timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.json()["pid"] != stuck
        logged(server, "this worker stops and another takes its place")
