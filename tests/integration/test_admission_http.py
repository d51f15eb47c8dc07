"""Admission by expected wait over real HTTP: a burst well past the old queue bound (half the
request threads) is queued and answered while its wait fits the timeout; with a short timeout
the excess is refused 503 with Retry-After and Retry-After-Ms, and the metrics count the
refusals by cause."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.fixtures import handler_styles as styles
from tests.fixtures.server import ServerProcess
from tests.unit.test_metrics import sample

pytestmark = pytest.mark.slow

OLD_BOUND = 32  # half the request threads (64) per worker, before admission by wait


def slow_model(tmp_path: Path) -> Path:
    directory = tmp_path / "model"
    (directory / "code").mkdir(parents=True)
    (directory / "code" / "inference.py").write_text(styles.TOOLKIT_SLOW)
    return directory


def post(url: str, seconds: float) -> requests.Response:
    body = f'{{"sleep": {seconds}}}'
    headers = {"Content-Type": "application/json"}
    return requests.post(f"{url}/invocations", data=body, headers=headers, timeout=120)


def burst(url: str, count: int, seconds: float) -> list[requests.Response]:
    """``count`` requests sent at once, each on its own connection."""
    barrier = threading.Barrier(count)

    def call(_: int) -> requests.Response:
        barrier.wait()
        return post(url, seconds)

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(call, range(count)))


def scrape(url: str) -> str:
    response = requests.get(f"{url}/metrics", timeout=30)
    assert response.status_code == 200
    return response.text


def test_a_burst_past_the_old_bound_is_answered_while_its_wait_fits(
    serve_model: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    server = serve_model(slow_model(tmp_path))
    assert post(server.url, 0.01).status_code == 200  # measured: 10 ms a request
    responses = burst(server.url, 3 * OLD_BOUND, 0.01)  # about a second of work, 60 s timeout
    assert [r.status_code for r in responses] == [200] * (3 * OLD_BOUND)
    assert sample(scrape(server.url), "byoserve_rejected_total") == 0


def test_with_a_short_timeout_the_excess_is_refused_with_when_to_retry(
    serve_model: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    timeout, service, count = 2.0, 0.1, 60  # about 18 fit the timeout less its slack
    env = {"SAGEMAKER_MODEL_SERVER_TIMEOUT": f"{timeout:g}"}
    server = serve_model(slow_model(tmp_path), env=env)
    assert post(server.url, service).status_code == 200  # measured: 0.1 s a request
    answers: list[requests.Response] = []
    sender = threading.Thread(target=lambda: answers.extend(burst(server.url, count, service)))
    sender.start()
    # The refusals come back at once; the admitted requests are still waiting meanwhile.
    deadline = time.monotonic() + 60
    while (text := scrape(server.url)) and sample(
        text, "byoserve_rejected_total", cause="wait"
    ) < count // 2:
        assert time.monotonic() < deadline, f"no refusals within 60 s:\n{text}"
        time.sleep(0.05)
    assert sample(text, "byoserve_expected_wait_seconds") > 0
    sender.join(120)
    statuses = [r.status_code for r in answers]
    assert set(statuses) == {200, 503}, statuses
    assert statuses.count(200) >= 10 and statuses.count(503) >= count // 2, statuses
    for response in answers:
        if response.status_code == 200:
            # the timeout runs from the queue; before it, granian may hold a request of a
            # burst while its thread pool grows (docs/engines.md)
            assert response.elapsed.total_seconds() < 1.5 * timeout
            continue
        error = response.json()["error"]
        assert error["code"] == "overloaded"
        milliseconds = int(response.headers["Retry-After-Ms"])
        assert error["retry_after_ms"] == milliseconds >= 1
        assert int(response.headers["Retry-After"]) == max(1, -(-milliseconds // 1000))
    text = scrape(server.url)
    assert sample(text, "byoserve_rejected_total", cause="wait") == statuses.count(503)
    assert sample(text, "byoserve_rejected_total", cause="memory") == 0


def test_the_hard_bound_refuses_with_its_own_cause(
    serve_model: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    server = serve_model(slow_model(tmp_path), env={"BYOSERVE_QUEUE_SIZE": "2"})
    statuses = [r.status_code for r in burst(server.url, 10, 0.3)]
    assert statuses.count(200) >= 2 and set(statuses) == {200, 503}, statuses
    text = scrape(server.url)
    assert sample(text, "byoserve_rejected_total", cause="memory") == statuses.count(503)
    assert sample(text, "byoserve_rejected_total", cause="wait") == 0
