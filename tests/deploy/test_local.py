"""``local`` and ``invoke``: the archive served here, reached with boto3's runtime client;
and the whole chain create-endpoint (moto) -> invoke (local server) -> delete-endpoint."""

from __future__ import annotations

import json
import os
import queue
import secrets
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import pytest

from tests.deploy.conftest import AwsWorld, Result
from tests.deploy.engines import have_container_tools, local_registry, remove_images
from tests.fixtures.server import REPO


class LocalServer:
    """``python -m deploy local ...`` in a subprocess; ``url`` once it printed endpoint_url."""

    def __init__(self, *args: str, timeout: float = 300.0) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "deploy", "local", *args],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._pump, args=(lines,), daemon=True).start()
        try:
            self.url = self._wait_for_url(lines, timeout)
        except BaseException:
            self.stop()
            raise

    def _pump(self, lines: queue.Queue[str]) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            lines.put(line)
        lines.put("")

    def _wait_for_url(self, lines: queue.Queue[str], timeout: float) -> str:
        while True:
            line = lines.get(timeout=timeout)
            if line == "":
                raise RuntimeError("deploy local exited:\n" + "".join(self.output))
            if line.startswith("endpoint_url="):
                return line.strip().split("=", 1)[1]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        return self.proc.returncode


@pytest.fixture
def local_server() -> Iterator[Callable[..., LocalServer]]:
    started: list[LocalServer] = []

    def start(*args: str, timeout: float = 300.0) -> LocalServer:
        started.append(LocalServer(*args, timeout=timeout))
        return started[-1]

    yield start
    for server in started:
        server.stop()


def _runtime_invoke(url: str, endpoint: str, payload: object) -> dict[str, object]:
    runtime = boto3.client("sagemaker-runtime", endpoint_url=url, region_name="us-east-1")
    response = runtime.invoke_endpoint(
        EndpointName=endpoint, Body=json.dumps(payload), ContentType="application/json"
    )
    answer: dict[str, object] = json.loads(response["Body"].read())
    return answer


@pytest.mark.slow
def test_chain_create_endpoint_invoke_locally_delete(
    aws: AwsWorld,
    cli: Callable[..., Result],
    pushed: str,
    local_server: Callable[..., LocalServer],
) -> None:
    assert cli("create-endpoint", "demo", "--poll", "0.01").code == 0
    described = aws.client("sagemaker").describe_endpoint(EndpointName="demo")
    assert described["EndpointStatus"] == "InService"
    server = local_server("demo", "--no-docker")
    answer = _runtime_invoke(server.url, "demo", {"text": "great"})
    assert answer == {"label": "POSITIVE", "input": {"text": "great"}}
    result = cli(
        "invoke",
        "demo",
        "--endpoint-url",
        server.url,
        "--body",
        '{"text": "ok"}',
        "--custom-attributes",
        "trace=1",
    )
    assert result.code == 0, result.err
    assert json.loads(result.out) == {"label": "POSITIVE", "input": {"text": "ok"}}
    bad = cli("invoke", "demo", "--endpoint-url", server.url, "--body", "not json")
    assert bad.code != 0 and bad.err.startswith("deploy: demo answered")
    assert "Traceback" not in bad.err
    assert server.stop() == 0
    assert cli("delete-endpoint", "demo", "--poll", "0.01").code == 0
    sm = aws.client("sagemaker")
    assert sm.list_endpoints()["Endpoints"] == [] and sm.list_models()["Models"] == []
    assert sm.list_endpoint_configs()["EndpointConfigs"] == []


@pytest.mark.slow
def test_invoke_reads_the_body_from_stdin(
    aws: AwsWorld, local_server: Callable[..., LocalServer]
) -> None:
    server = local_server("demo", "--no-docker")
    proc = subprocess.run(
        [sys.executable, "-m", "deploy", "invoke", "demo", "--endpoint-url", server.url],
        input='{"from": "stdin"}',
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["input"] == {"from": "stdin"}


@pytest.mark.container
@pytest.mark.skipif(not have_container_tools(), reason="needs podman + docker-registry")
def test_real_image_build_push_create_and_local_run(
    aws: AwsWorld,
    cli: Callable[..., Result],
    local_server: Callable[..., LocalServer],
    tmp_path: Path,
) -> None:
    """The chain with the real Dockerfile: build, push (local registry, ECR login from moto),
    create-endpoint by digest, the image run locally, invoke, delete."""
    name = f"byoserve-deploytest-{secrets.token_hex(3)}"
    definition = (aws.endpoints_dir / "demo.toml").read_text()
    (aws.endpoints_dir / "demo.toml").write_text(definition.replace("byoserve-test", name))
    made = [f"{name}:latest"]
    try:
        wheels = ("--volume", "/opt/wheels:/wheels:ro", "--build-arg", "TORCH_FIND_LINKS=/wheels")
        build = cli("build", "--repository", name, "--docker", "podman", *wheels)
        assert build.code == 0, build.err
        with local_registry(tmp_path) as registry:
            push = cli(
                "push", "--repository", name, "--registry", registry.host, "--docker", "podman"
            )
            assert push.code == 0, push.err
            record = json.loads((aws.build_dir / "images" / f"{name}.json").read_text())
            made.append(f"{registry.host}/{name}:{record['tag']}")
            assert record["digest"] == registry.manifest_digest(name, record["tag"])
        assert cli("create-endpoint", "demo", "--poll", "0.01").code == 0
        model = aws.client("sagemaker").list_models()["Models"][0]["ModelName"]
        image = aws.client("sagemaker").describe_model(ModelName=model)["PrimaryContainer"]["Image"]
        assert image == record["uri"]
        server = local_server("demo", "--docker", "podman", timeout=300)
        assert _runtime_invoke(server.url, "demo", [1, 2])["input"] == [1, 2]
        assert server.stop() == 0
        assert cli("delete-endpoint", "demo", "--poll", "0.01").code == 0
    finally:
        remove_images(*made)
