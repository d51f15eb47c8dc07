"""GET /metrics on a real server with two workers: totals are the server's, whichever worker
answers the scrape, and they survive a worker being replaced."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.fixtures import handler_styles as styles
from tests.fixtures.server import ServerProcess
from tests.fixtures.waiting import wait_until
from tests.unit.test_metrics import sample

pytestmark = pytest.mark.slow

OK, CRASHES, MISSING = 24, 3, 2


def slow_model(tmp_path: Path) -> Path:
    directory = tmp_path / "model"
    (directory / "code").mkdir(parents=True)
    (directory / "code" / "inference.py").write_text(styles.TOOLKIT_SLOW)
    return directory


def wait_all_ready(url: str, workers: int) -> None:
    wait_until(
        lambda: sample(scrape(url), "byoserve_ready_workers") >= workers, 60, "every worker loaded"
    )


def send_known_traffic(url: str) -> None:
    wait_all_ready(url, 2)

    def call(body: str) -> int:
        response = requests.post(
            f"{url}/invocations", data=body, headers={"Content-Type": "application/json"}
        )
        return response.status_code

    bodies = ['{"sleep": 0.01}'] * OK + ['{"crash": true}'] * CRASHES
    with ThreadPoolExecutor(8) as pool:  # a fresh connection per call: both workers get some
        statuses = list(pool.map(call, bodies))
    assert statuses.count(200) == OK and statuses.count(500) == CRASHES, statuses
    for _ in range(MISSING):
        assert requests.get(f"{url}/nowhere").status_code == 404


def scrape(url: str) -> str:
    response = requests.get(f"{url}/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    return response.text


def check_totals(text: str) -> None:
    assert sample(text, "byoserve_requests_total", route="invocations", status="200") == OK
    assert sample(text, "byoserve_requests_total", route="invocations", status="500") == CRASHES
    assert sample(text, "byoserve_requests_total", route="unmatched", status="404") == MISSING
    assert sample(text, "byoserve_errors_total", code="model_error") == CRASHES
    assert sample(text, "byoserve_errors_total", code="not_found") == MISSING
    assert sample(text, "byoserve_request_duration_seconds_count", route="invocations") == (
        OK + CRASHES
    )
    assert sample(text, "byoserve_batch_size_count") == OK + CRASHES
    assert sample(text, "byoserve_batch_size_sum") == OK + CRASHES
    assert sample(text, "byoserve_rejected_total") == 0
    assert sample(text, "byoserve_queue_depth") == 0
    assert sample(text, "byoserve_model_load_seconds") > 0
    assert sample(text, "byoserve_ready_workers") == 2


def test_totals_are_exact_whichever_worker_answers(
    serve_model: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    server = serve_model(slow_model(tmp_path), workers=2)
    send_known_traffic(server.url)
    for _ in range(6):  # new connections: scrapes land on both workers
        check_totals(scrape(server.url))


def test_totals_survive_a_replaced_worker(
    serve_model: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    server = serve_model(slow_model(tmp_path), workers=2)
    send_known_traffic(server.url)
    before = server.worker_pids()
    assert len(before) == 2
    os.kill(before[0], signal.SIGKILL)
    server.wait_workers(2, without=before[0])
    wait_all_ready(server.url, 2)
    for _ in range(4):
        check_totals(scrape(server.url))


def test_metrics_can_be_switched_off(
    serve_model: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    server = serve_model(slow_model(tmp_path), env={"BYOSERVE_METRICS": "false"})
    assert requests.get(f"{server.url}/metrics").status_code == 404
