"""``local`` and ``invoke``: the archive served here, reached with boto3's runtime client;
the whole chain create-endpoint (moto) -> invoke (local server) -> delete-endpoint; and
endpoints/catalog.toml (multi-model) served here from a model store, each target chosen with
boto3's TargetModel, as ``python -m serve`` and in the real image through both engines."""

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
from typing import Any

import boto3
import pytest
import requests

from deploy.definitions import TargetArchive
from deploy.local import model_store
from tests.deploy.conftest import AwsWorld, Result, make_archive
from tests.deploy.engines import (
    local_registry,
    podman_service,
    remove_images,
)
from tests.fixtures.server import REPO

CATALOG = ("catalog", "--endpoints-dir", str(REPO / "endpoints"))  # the project's own
TORCH_WHEELS = ("--volume", "/opt/wheels:/wheels:ro", "--build-arg", "TORCH_FIND_LINKS=/wheels")


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


def _invoke(url: str, endpoint: str, body: bytes, content_type: str, **extra: str) -> Any:
    """One boto3 ``invoke_endpoint`` to the local server (``extra``: e.g. TargetModel)."""
    runtime = boto3.client(
        "sagemaker-runtime",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
    )
    response = runtime.invoke_endpoint(
        EndpointName=endpoint, Body=body, ContentType=content_type, **extra
    )
    return json.loads(response["Body"].read())


def _runtime_invoke(url: str, endpoint: str, payload: object) -> dict[str, object]:
    answer: dict[str, object] = _invoke(
        url, endpoint, json.dumps(payload).encode(), "application/json"
    )
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
@pytest.mark.parametrize("engine", ["gunicorn", "granian"])
def test_invoke_reads_the_body_from_stdin(
    aws: AwsWorld, local_server: Callable[..., LocalServer], engine: str
) -> None:
    """The definition's [environment] reaches the local server: its HTTP engine among it."""
    definition = aws.endpoints_dir / "demo.toml"
    workers = 'SAGEMAKER_MODEL_SERVER_WORKERS = "1"\n'
    text = definition.read_text()
    assert workers in text
    definition.write_text(text.replace(workers, f'{workers}BYOSERVE_HTTP_ENGINE = "{engine}"\n'))
    server = local_server("demo", "--no-docker")
    assert (
        requests.get(f"{server.url}/ping", timeout=10)
        .headers["Server"]
        .startswith({"gunicorn": "gunicorn", "granian": "granian"}[engine])
    )
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


@pytest.fixture(scope="module")
def deploy_image() -> Iterator[str]:
    """The real Dockerfile built once for this module with ``deploy build`` (podman): the name
    of ``NAME:latest``, removed afterwards."""
    name = f"byoserve-deploytest-{secrets.token_hex(3)}"
    command = [sys.executable, "-m", "deploy", "build", "--repository", name, "--docker", "podman"]
    build = subprocess.run(
        [*command, *TORCH_WHEELS], cwd=REPO, capture_output=True, text=True, check=False
    )
    try:
        assert build.returncode == 0, (build.stdout + build.stderr)[-4000:]
        yield name
    finally:
        remove_images(f"{name}:latest")


@pytest.mark.container
@pytest.mark.usefixtures("container_tools")
def test_real_image_build_push_create_and_local_run(
    aws: AwsWorld,
    cli: Callable[..., Result],
    local_server: Callable[..., LocalServer],
    tmp_path: Path,
    deploy_image: str,
) -> None:
    """The chain with the real Dockerfile: build, push (local registry, ECR login from moto),
    create-endpoint by digest, the image run locally, invoke, delete."""
    name = deploy_image
    definition = (aws.endpoints_dir / "demo.toml").read_text()
    (aws.endpoints_dir / "demo.toml").write_text(definition.replace("byoserve-test", name))
    made = []
    try:
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


def test_model_store_holds_each_archive_under_its_target_name(tmp_path: Path) -> None:
    archives = [make_archive(tmp_path / "build" / f"{i}.tar.gz", marker=str(i)) for i in (1, 2)]
    targets = [TargetArchive(archives[0], "one.tar.gz"), TargetArchive(archives[1], "2.tar.gz")]
    with model_store(targets) as source:
        assert source.store and source.server_args() == ["--model-store", str(source.path)]
        assert sorted(entry.name for entry in source.path.iterdir()) == ["2.tar.gz", "one.tar.gz"]
        for target in targets:  # hard links (the same file system here), not copies or symlinks
            entry = source.path / target.name
            assert not entry.is_symlink() and entry.samefile(target.path)
        assert source.path.stat().st_mode & 0o777 == 0o755  # readable by the image's user
        assert source.container_args() == ("--model-store", "/opt/ml/model-store")
        assert source.mounts() == {str(source.path.resolve()): "/opt/ml/model-store"}
    assert not source.path.exists() and all(archive.is_file() for archive in archives)


@pytest.fixture(scope="module")
def digit_png(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """A held-out digit written by examples/digits/make_images.py (28x28 PNG), and its label."""
    out = tmp_path_factory.mktemp("digit-images")
    script = REPO / "examples" / "digits" / "make_images.py"
    command = [sys.executable, str(script), "--out", str(out), "--count", "1"]
    subprocess.run(command, check=True, capture_output=True, timeout=120)
    labels = json.loads((out / "labels.json").read_text())
    return out / "digit-000-28.png", int(labels["digit-000-28.png"])


def _check_catalog_targets(url: str, digit: tuple[Path, int]) -> list[dict[str, str]]:
    """Both targets of endpoints/catalog.toml through boto3's TargetModel, each loaded on its
    first request; returns ``GET /models`` afterwards."""
    models = requests.get(f"{url}/models", timeout=10).json()["models"]
    assert models == []  # nothing is loaded before a request names it, as on SageMaker
    text = json.dumps("This is an amazing movie.").encode()
    sentiment = _invoke(url, "catalog", text, "application/json", TargetModel="sentiment.tar.gz")
    assert sentiment["label"] == "positive"
    png, label = digit
    answer = _invoke(url, "catalog", png.read_bytes(), "image/png", TargetModel="digits.tar.gz")
    assert answer["digit"] == label
    models = requests.get(f"{url}/models", timeout=10).json()["models"]
    assert sorted(model["modelName"] for model in models) == ["digits.tar.gz", "sentiment.tar.gz"]
    return list(models)


@pytest.mark.slow
def test_local_serves_every_archive_of_a_multi_model_endpoint(
    cli: Callable[..., Result],
    local_server: Callable[..., LocalServer],
    sentiment_archive: Path,
    digits_archive: Path,
    digit_png: tuple[Path, int],
) -> None:
    server = local_server(*CATALOG, "--no-docker")
    models = _check_catalog_targets(server.url, digit_png)
    store = Path(models[0]["modelUrl"]).parent
    assert {path.name: path.read_bytes() for path in store.glob("*.tar.gz")} == {
        "sentiment.tar.gz": sentiment_archive.read_bytes(),
        "digits.tar.gz": digits_archive.read_bytes(),
    }
    png, label = digit_png
    body = ("--content-type", "image/png", "--body-file", str(png))
    result = cli(
        "invoke", *CATALOG, "--endpoint-url", server.url, "--target-model", "digits.tar.gz", *body
    )
    assert result.code == 0 and json.loads(result.out)["digit"] == label, result.err
    missing = cli(
        "invoke",
        *CATALOG,
        "--endpoint-url",
        server.url,
        "--target-model",
        "no.tar.gz",
        "--body",
        "{}",
    )
    assert missing.code != 0 and "404" in missing.err, missing.err
    assert server.stop() == 0
    assert not store.exists()  # the temporary store goes with the server


@pytest.fixture(params=["cli", "api"])
def engine_flags(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[tuple[str, ...]]:
    """``local``'s engine: the podman CLI, or the Docker API of ``podman system service``."""
    monkeypatch.delenv("DOCKER", raising=False)
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    if request.param == "cli":
        yield ("--docker", "podman")
        return
    with podman_service(tmp_path, "localhost:5000") as url:
        monkeypatch.setenv("DOCKER_HOST", url)
        yield ()


@pytest.mark.container
@pytest.mark.usefixtures("podman_tool")
def test_local_runs_a_multi_model_endpoint_in_the_real_image(
    local_server: Callable[..., LocalServer],
    deploy_image: str,
    engine_flags: tuple[str, ...],
    sentiment_archive: Path,
    digits_archive: Path,
    digit_png: tuple[Path, int],
) -> None:
    """The image runs ``serve --model-store /opt/ml/model-store`` on the archives mounted
    read-only, and loads each target on first use."""
    server = local_server(*CATALOG, "--image", f"{deploy_image}:latest", *engine_flags)
    models = _check_catalog_targets(server.url, digit_png)
    assert {model["modelUrl"] for model in models} == {
        "/opt/ml/model-store/sentiment.tar.gz",
        "/opt/ml/model-store/digits.tar.gz",
    }
    assert server.stop() == 0
