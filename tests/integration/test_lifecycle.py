"""Start-up, archives, worker death, SIGTERM drain, the container entrypoint, and boto3."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from botocore.exceptions import ClientError

from tests.fixtures import handler_styles as styles
from tests.fixtures.modeldirs import model_dir, tar_gz
from tests.fixtures.models import DigitsModel
from tests.fixtures.server import REPO, ServerProcess, free_port, run_serve, runtime_client
from tests.fixtures.waiting import wait_until

Serve = Callable[..., ServerProcess]


def _toolkit_dir(tmp_path: Path, digits: DigitsModel) -> Path:
    return model_dir(
        tmp_path / "m", digits.directory, {"code/inference.py": styles.TOOLKIT_INFERENCE}
    )


def _predict_ok(server: ServerProcess, digits: DigitsModel) -> None:
    response = requests.post(
        f"{server.url}/invocations", json=digits.images[:2].tolist(), timeout=10
    )
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == digits.predict(digits.images[:2]).argmax(1).tolist()


def test_model_tar_gz_inside_the_model_dir_and_given_directly(
    tmp_path: Path, digits: DigitsModel, serve_model: Serve
) -> None:
    mounted = tmp_path / "mounted"
    tar_gz(_toolkit_dir(tmp_path, digits), mounted / "model.tar.gz")
    _predict_ok(serve_model(mounted), digits)
    _predict_ok(serve_model(mounted / "model.tar.gz"), digits)  # second start: already unpacked


def test_a_malicious_archive_stops_the_start(tmp_path: Path) -> None:
    archive = tmp_path / "evil" / "model.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        data = b"owned"
        member = tarfile.TarInfo("../../escaped.txt")
        member.size = len(data)
        tar.addfile(member, io.BytesIO(data))
    result = run_serve(["--model-dir", str(archive.parent), "--port", str(free_port())])
    assert result.returncode != 0
    assert "escaped.txt" in result.stderr
    assert not (tmp_path / "escaped.txt").exists()
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"SAGEMAKER_MODEL_SERVER_WORKERS": "many"}, "SAGEMAKER_MODEL_SERVER_WORKERS='many'"),
        ({"SAGEMAKER_BIND_TO_PORT": "70000"}, "SAGEMAKER_BIND_TO_PORT='70000'"),
        ({"BYOSERVE_INSTALL_REQUIREMENTS": "yes"}, "BYOSERVE_INSTALL_REQUIREMENTS='yes'"),
    ],
)
def test_a_bad_setting_stops_the_start_naming_it(env: dict[str, str], expected: str) -> None:
    result = run_serve(["--model-dir", "/nonexistent"], env=env)
    assert result.returncode == 2
    assert expected in result.stderr


def test_handler_errors_stop_the_start_naming_the_file(tmp_path: Path, digits: DigitsModel) -> None:
    broken = model_dir(
        tmp_path / "syntax", digits.directory, {"code/inference.py": "def model_fn(:\n"}
    )
    result = run_serve(["--model-dir", str(broken), "--port", str(free_port())])
    assert result.returncode != 0
    assert "inference.py" in result.stderr and "Traceback" not in result.stderr

    mixed = (
        styles.TOOLKIT_INFERENCE
        + "\ndef transform_fn(model, body, content_type, accept):\n    pass\n"
    )
    both = model_dir(tmp_path / "mixed", digits.directory, {"code/inference.py": mixed})
    result = run_serve(["--model-dir", str(both), "--port", str(free_port())])
    assert result.returncode != 0
    assert "transform_fn" in result.stderr


def test_a_model_fn_that_raises_stops_the_server(tmp_path: Path, digits: DigitsModel) -> None:
    failing = "def model_fn(model_dir):\n    raise FileNotFoundError('weights.bin is missing')\n"
    directory = model_dir(tmp_path / "m", digits.directory, {"code/inference.py": failing})
    result = run_serve(["--model-dir", str(directory), "--port", str(free_port())])
    assert result.returncode != 0
    assert "weights.bin is missing" in result.stderr


def test_bind_to_port_moves_the_port(tmp_path: Path, digits: DigitsModel) -> None:
    port = free_port()
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "serve",
                "--model-dir",
                str(_toolkit_dir(tmp_path, digits)),
                "--host",
                "127.0.0.1",
                "--workers",
                "1",
            ],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "SAGEMAKER_BIND_TO_PORT": str(port)},
        )
    server = ServerProcess(proc, port, log)
    try:
        server.wait_ready(60)
        assert requests.get(f"http://127.0.0.1:{port}/ping", timeout=5).status_code == 200
    finally:
        server.stop(10)


# The digits model by the default loader, answering with the worker that predicted.
WHO_PREDICTS = """
import os

import torch


def predict_fn(data, model):
    with torch.inference_mode():
        return {"pid": os.getpid(), "predictions": model(data).argmax(1).tolist()}
"""


def test_a_dead_worker_is_replaced(tmp_path: Path, digits: DigitsModel, serve_model: Serve) -> None:
    directory = model_dir(tmp_path / "m", digits.directory, {"code/inference.py": WHO_PREDICTS})
    server = serve_model(directory, workers=2)
    server.wait_workers(2)
    before = set(server.worker_pids())
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    server.wait_workers(2, without=victim)
    (replacement,) = set(server.worker_pids()) - before
    expected = digits.predict(digits.images[:2]).argmax(1).tolist()
    answered_by: set[int] = set()
    deadline = time.monotonic() + 60
    while replacement not in answered_by:  # a new connection each time: the workers share them
        assert time.monotonic() < deadline, f"the replacement never answered: {answered_by}"
        response = requests.post(
            f"{server.url}/invocations",
            json=digits.images[:2].tolist(),
            headers={"Connection": "close"},
            timeout=10,
        )
        assert response.status_code == 200, response.text
        assert response.json()["predictions"] == expected
        answered_by.add(response.json()["pid"])
    assert victim not in answered_by


def test_sigterm_lets_the_request_in_flight_finish(tmp_path: Path, serve_model: Serve) -> None:
    directory = tmp_path / "slow"
    (directory / "code").mkdir(parents=True)
    (directory / "code" / "inference.py").write_text(styles.TOOLKIT_SLOW)
    server = serve_model(directory)
    answers: list[requests.Response] = []
    started = tmp_path / "started"
    body = {"sleep": 3, "started": str(started)}
    request = threading.Thread(
        target=lambda: answers.append(
            requests.post(f"{server.url}/invocations", json=body, timeout=30)
        )
    )
    request.start()
    wait_until(started.exists, 20, "the request reaching the model", every=0.01)
    server.proc.send_signal(signal.SIGTERM)
    request.join(30)
    assert server.wait_exit(30) == 0  # raises when it has not exited by then
    assert answers and answers[0].status_code == 200 and answers[0].json() == {"slept": 3}


@pytest.mark.engines("gunicorn", reason="starts no server")
def test_container_entrypoint_train_fails_clearly() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "container" / "serve"), "train"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert result.returncode != 0
    assert "cannot train" in result.stderr


def test_boto3_invoke_endpoint_against_the_local_alias(
    tmp_path: Path, digits: DigitsModel, serve_model: Serve
) -> None:
    server = serve_model(_toolkit_dir(tmp_path, digits))
    client = runtime_client(server.url)
    response = client.invoke_endpoint(
        EndpointName="digits",
        Body=json.dumps(digits.images[:3].tolist()),
        ContentType="application/json",
        Accept="application/json",
        CustomAttributes="user=42",
    )
    assert response["ContentType"] == "application/json"
    assert response["CustomAttributes"] == "echo=user=42"
    body = json.loads(response["Body"].read())
    assert body["predictions"] == digits.predict(digits.images[:3]).argmax(1).tolist()
    with pytest.raises(ClientError) as failure:
        client.invoke_endpoint(
            EndpointName="digits", Body=b"0" * (6 * 1024 * 1024 + 1), ContentType="application/json"
        )
    assert failure.value.response["ResponseMetadata"]["HTTPStatusCode"] == 413
