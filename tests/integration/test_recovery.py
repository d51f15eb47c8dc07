"""A handler that never comes back: its worker says so on /ping and is replaced, and the server
serves again from the new worker, as TorchServe restarts a worker after its response timeout."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests

from tests.fixtures import handler_styles as styles
from tests.fixtures.server import start_server

pytestmark = pytest.mark.slow


def test_a_hung_worker_is_replaced_and_the_model_serves_again(tmp_path: Path) -> None:
    directory = tmp_path / "slow"
    (directory / "code").mkdir(parents=True)
    (directory / "code" / "inference.py").write_text(styles.TOOLKIT_SLOW)
    env = {"SAGEMAKER_MODEL_SERVER_TIMEOUT": "1", "BYOSERVE_HUNG_GRACE": "1"}
    server = start_server(directory, tmp_path / "logs", env=env)
    try:
        (hung,) = server.worker_pids()
        answer = requests.post(f"{server.url}/invocations", json={"sleep": 120}, timeout=30)
        assert answer.status_code == 504
        server.wait_workers(1, timeout=60, without=hung)
        again = requests.post(f"{server.url}/invocations", json={"sleep": 0}, timeout=30)
        assert again.status_code == 200, again.text
        assert "this worker stops and another takes its place" in server.log()
        assert server.alive()
    finally:
        started = time.monotonic()
        assert server.stop(30) == 0
        assert time.monotonic() - started < 30
