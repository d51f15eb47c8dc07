"""The real image, built from the Dockerfile and run with podman: the SageMaker container contract.

Every container mounts its model read-only (``-v DIR:/opt/ml/model:ro``), maps a free host port,
and runs without ``--init``: PID 1 is the server itself and must handle SIGTERM.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests

from tests.container.conftest import BuiltImage
from tests.container.podman import (
    LISTEN,
    PODMAN,
    Container,
    Containers,
    podman,
    server_sockets,
    wait_request_taken,
)
from tests.fixtures.models import DigitsModel
from tests.fixtures.server import runtime_client
from tests.integration.test_metrics_http import wait_all_ready

pytestmark = pytest.mark.container

ENTRYPOINT = ["/opt/venv/bin/python", "/opt/program/container/serve"]
BIND_LABEL = "com.amazonaws.sagemaker.capabilities.accept-bind-to-port"
MME_LABEL = "com.amazonaws.sagemaker.capabilities.multi-models"
REVIEW = "This is an amazing movie."
WORKERS = 2


def _engine_env(engine: str) -> dict[str, str]:
    """The container's environment for ``engine``, with a known number of workers."""
    return {"BYOSERVE_HTTP_ENGINE": engine, "SAGEMAKER_MODEL_SERVER_WORKERS": str(WORKERS)}


@pytest.fixture(scope="module")
def digits_server(image: BuiltImage, digits_tree: Path) -> Iterator[Container]:
    """One container serving the extracted digits tree, shared by this module's tests."""
    started = Containers(image.tag)
    try:
        server = started.run(digits_tree)
        server.wait_ready()
        yield server
    finally:
        started.remove_all()


def assert_digits_answer(body: object, digits: DigitsModel, images: np.ndarray) -> None:
    assert isinstance(body, dict), body
    expected = digits.predict(images).argmax(1).tolist()
    assert body["predictions"] == expected
    assert np.allclose(body["logits"], digits.predict(images), atol=1e-4)


def test_image_declares_the_sagemaker_contract(image: BuiltImage) -> None:
    config = json.loads(podman("image", "inspect", image.tag).stdout)[0]["Config"]
    assert config["Entrypoint"] == ENTRYPOINT  # exec form: no shell between podman and serve
    assert config["Cmd"] == ["serve"]
    assert "8080/tcp" in config["ExposedPorts"]
    assert config["Labels"][BIND_LABEL] == "true"
    assert config["Labels"][MME_LABEL] == "true"


def test_train_exits_non_zero_with_its_message(containers: Containers) -> None:
    done = containers.run_to_end(["train"])
    assert done.returncode != 0, done
    assert "cannot train" in done.stderr, done.stderr


def test_extracted_tree_answers_ping_and_invocations(
    digits_server: Container, digits: DigitsModel
) -> None:
    images = digits.images[:5]
    response = requests.post(f"{digits_server.url}/invocations", json=images.tolist(), timeout=30)
    assert response.status_code == 200, response.text
    assert_digits_answer(response.json(), digits, images)


def test_pid_1_is_the_server_and_the_model_mount_is_read_only(digits_server: Container) -> None:
    cmdline = podman("exec", digits_server.name, "cat", "/proc/1/cmdline").stdout
    assert cmdline.split("\0")[:2] == ENTRYPOINT  # the gunicorn master, not a shell or an init
    processes = podman("top", digits_server.name, "pid", "ppid", "args").stdout.splitlines()[1:]
    workers = [line.split() for line in processes if line.split()[0] != "1"]
    assert workers and all(fields[1] == "1" for fields in workers), processes
    mounts = digits_server.inspect()["Mounts"]
    mount = next(m for m in mounts if m["Destination"] == "/opt/ml/model")
    assert mount["RW"] is False, mount
    touch = podman("exec", digits_server.name, "touch", "/opt/ml/model/probe", check=False)
    assert touch.returncode != 0 and "Read-only file system" in touch.stderr, touch


def test_boto3_sagemaker_runtime_reaches_the_container(
    digits_server: Container, digits: DigitsModel
) -> None:
    client = runtime_client(digits_server.url, retries={"max_attempts": 1})
    images = digits.images[:3]
    response = client.invoke_endpoint(
        EndpointName="byoserve-local",
        Body=json.dumps(images.tolist()),
        ContentType="application/json",
        Accept="application/json",
        CustomAttributes="trace=1",
    )
    assert response["ContentType"] == "application/json"
    assert response["CustomAttributes"] == "echo=trace=1"
    assert_digits_answer(json.loads(response["Body"].read()), digits, images)


def test_directory_holding_only_model_tar_gz_is_unpacked_elsewhere(
    containers: Containers, digits_archive: Path, digits: DigitsModel
) -> None:
    assert [p.name for p in digits_archive.iterdir()] == ["model.tar.gz"]
    server = containers.run(digits_archive)
    server.wait_ready()
    images = digits.images[5:9]
    response = requests.post(f"{server.url}/invocations", json=images.tolist(), timeout=30)
    assert response.status_code == 200, response.text
    assert_digits_answer(response.json(), digits, images)


@pytest.mark.parametrize(
    ("layout", "engine"),
    [
        ("sentiment_tree", "gunicorn"),
        ("sentiment_archive_dir", "gunicorn"),
        ("sentiment_archive_dir", "granian"),
    ],
)
def test_sentiment_example(
    containers: Containers, request: pytest.FixtureRequest, layout: str, engine: str
) -> None:
    model: Path = request.getfixturevalue(layout)
    server = containers.run(model, env=_engine_env(engine))
    server.wait_ready()
    wait_all_ready(server.url, WORKERS)  # granian's workers take requests while they load
    response = requests.post(
        f"{server.url}/invocations",
        data=REVIEW.encode(),
        headers={"Content-Type": "text/plain", "Accept": "application/json"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["label"] == "positive", answer
    assert 0.5 < answer["score"] <= 1.0, answer


def test_bind_to_port_variable_moves_the_port(containers: Containers, slow_tree: Path) -> None:
    server = containers.run(slow_tree, env={"SAGEMAKER_BIND_TO_PORT": "9090"}, container_port=9090)
    server.wait_ready()
    pid = server.host_pid()
    assert any(state == LISTEN for state, _ in server_sockets(pid, 9090))
    assert not any(state == LISTEN for state, _ in server_sockets(pid, 8080))


@pytest.mark.parametrize("engine", ["gunicorn", "granian"])
def test_sigterm_during_a_request_lets_it_finish(
    containers: Containers, slow_tree: Path, engine: str
) -> None:
    server = containers.run(slow_tree, env=_engine_env(engine))
    server.wait_ready()
    wait_all_ready(server.url, WORKERS)  # granian's workers take requests while they load
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        connection.request(
            "POST",
            "/invocations",
            body=json.dumps({"sleep": 3}),
            headers={"Content-Type": "application/json"},
        )
        assert connection.sock is not None
        wait_request_taken(server, connection.sock)
        started = time.monotonic()
        stop = subprocess.Popen(
            [PODMAN, "stop", "-t", "30", server.name],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            response = connection.getresponse()
            status, body = response.status, response.read()
        except (http.client.HTTPException, OSError) as exc:
            status, body = 0, repr(exc).encode()
        finally:
            stopped, _ = stop.communicate(timeout=60)
        elapsed = time.monotonic() - started
    finally:
        connection.close()
    details = (
        f"request: {status} {body!r}; `podman stop` exited {stop.returncode} after "
        f"{elapsed:.1f} s: {stopped.strip()}; state: {server.state()}\n{server.logs()}"
    )
    assert status == 200 and json.loads(body) == {"slept": 3}, details
    assert stop.returncode == 0, details
    assert elapsed < 30, details
    # 0: the server (PID 1) shut down on SIGTERM; 137 would be podman's SIGKILL at 30 s.
    assert server.state()["ExitCode"] == 0, details


def test_a_multi_model_endpoint_loads_invokes_and_unloads(
    containers: Containers, digits_tree: Path, sentiment_tree: Path, digits: DigitsModel
) -> None:
    """As SageMaker runs a multi-model endpoint: no /opt/ml/model, each model extracted under
    /opt/ml/models/<key>/model, and the management calls on the serving port."""
    server = containers.run(
        None,
        env={"SAGEMAKER_MULTI_MODEL": "true", "SAGEMAKER_MODEL_SERVER_WORKERS": "2"},
        mounts={
            digits_tree: "/opt/ml/models/8f3a/model",
            sentiment_tree: "/opt/ml/models/c41e/model",
        },
    )
    server.wait_ready()
    assert requests.get(f"{server.url}/models", timeout=10).json() == {"models": []}
    for key in ("8f3a", "c41e"):
        body = {"model_name": key, "url": f"/opt/ml/models/{key}/model"}
        response = requests.post(f"{server.url}/models", json=body, timeout=120)
        assert response.status_code == 200, response.text
    again = requests.post(
        f"{server.url}/models",
        json={"model_name": "8f3a", "url": "/opt/ml/models/8f3a/model"},
        timeout=30,
    )
    assert again.status_code == 409
    images = digits.images[:2]
    answer = requests.post(
        f"{server.url}/models/8f3a/invoke",
        json=images.tolist(),
        headers={"X-Amzn-SageMaker-Target-Model": "digits.tar.gz"},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    assert_digits_answer(answer.json(), digits, images)
    review = requests.post(
        f"{server.url}/models/c41e/invoke",
        data=REVIEW.encode(),
        headers={"Content-Type": "text/plain"},
        timeout=30,
    )
    assert review.json()["label"] == "positive", review.text
    assert requests.delete(f"{server.url}/models/8f3a", timeout=60).status_code == 200
    assert requests.post(f"{server.url}/models/8f3a/invoke", json=[], timeout=10).status_code == 404
    listed = requests.get(f"{server.url}/models", timeout=10).json()["models"]
    assert [model["modelName"] for model in listed] == ["c41e"]
