"""Fixtures for the deploy tests: moto in server mode over HTTP, a stand-in model archive, the CLI.

moto runs as a ``ThreadedMotoServer`` on a free loopback port and every client reaches it through
``AWS_ENDPOINT_URL`` (boto3 reads it itself), exactly as a real AWS endpoint would be reached.
Because the server runs in this process, shims can be installed on it:

* ``endpoint_lifecycle`` moves endpoints through Creating, Updating and Deleting as SageMaker
  does, adds the ``UpdateEndpoint`` moto 5.2 lacks, and lets a test fail a creation or an update
  or keep an endpoint from ever settling (tests/deploy/motoendpoints.py);
* ``failing_endpoints`` makes every endpoint moto creates end ``Failed`` with a
  ``FailureReason``, and ``failing_transform_jobs`` fails transform jobs (moto completes
  them at once): states no API call can provoke.

The container tests here build images (``deploy build``, pushes); the images those builds add,
stages included, are removed at the end of the session (``images_left_as_found``).
"""

from __future__ import annotations

import io
import logging
import shutil
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
from moto.sagemaker import models as sagemaker_models
from moto.server import ThreadedMotoServer

from deploy.cli import main
from tests.container.podman import images_removed_afterwards
from tests.deploy import motoendpoints
from tests.deploy.engines import require_container_tools
from tests.fixtures.server import free_port

REGION = "us-east-1"
ROLE_NAME = "byoserve-test-role"
BUCKET = "byoserve-test-models"

INFERENCE_PY = """\
import json


def model_fn(model_dir):
    return {"label": "POSITIVE"}


def transform_fn(model, body, content_type, accept):
    text = json.loads(body)
    return json.dumps({"label": model["label"], "input": text})
"""


def make_archive(path: Path, marker: str = "") -> Path:
    """A small model.tar.gz: ``code/inference.py`` whose transform_fn answers JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as archive:
        for name, text in (("code/inference.py", INFERENCE_PY), ("marker.txt", marker)):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture(scope="session", autouse=True)
def images_left_as_found(request: pytest.FixtureRequest) -> Iterator[None]:
    """When container tests of this directory run: the images their builds add go at the end.

    Set up before the first test here, so before any module's image fixture builds; the
    container tests' own images are removed by tests/container's ``session_images``.
    """
    here = Path(__file__).parent
    builds = shutil.which("podman") is not None and any(
        item.get_closest_marker("container") is not None and here in item.path.parents
        for item in request.session.items
    )
    if not builds:
        yield
        return
    with images_removed_afterwards():
        yield


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    """One moto server for the session; each test resets it (``aws`` fixture)."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def endpoint_lifecycle(monkeypatch: pytest.MonkeyPatch) -> motoendpoints.Lifecycle:
    """moto's endpoints pass through Creating/Updating/Deleting (tests/deploy/motoendpoints.py)."""
    return motoendpoints.install(monkeypatch)


@pytest.fixture
def failing_endpoints(endpoint_lifecycle: motoendpoints.Lifecycle) -> str:
    """Endpoints moto creates from now on end Failed; returns the reason."""
    reason = "The primary container for production variant AllTraffic did not pass the ping"
    endpoint_lifecycle.create_failure = reason
    return reason


@pytest.fixture
def failing_transform_jobs(monkeypatch: pytest.MonkeyPatch) -> str:
    """Transform jobs moto creates from now on are Failed (moto completes them at once, and no
    API call can make one fail); returns the reason."""
    reason = "ClientError: See job logs for more information"
    original = sagemaker_models.FakeTransformJob.__init__

    def failing_init(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self.transform_job_status = "Failed"
        self.failure_reason = reason

    monkeypatch.setattr(sagemaker_models.FakeTransformJob, "__init__", failing_init)
    return reason


@dataclass
class AwsWorld:
    """The fake AWS a test runs against, plus its project directories."""

    url: str
    role_arn: str
    bucket: str
    endpoints_dir: Path
    build_dir: Path
    archive: Path

    def client(self, service: str) -> Any:
        return boto3.client(service, region_name=REGION)


DEFINITION = """\
[model]
archive = "{archive}"
make_target = "model"

[image]
repository = "byoserve-test"

[endpoint]
instance_type = "ml.m5.large"
instance_count = 2
startup_health_check_timeout = 300
model_data_download_timeout = 240

[environment]
SAGEMAKER_MODEL_SERVER_WORKERS = "1"

[autoscaling]
min_capacity = 2
max_capacity = 5
target_invocations_per_instance = 150
"""


def fake_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No real AWS configuration can leak in; keys that moto accepts."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def aws(moto_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> AwsWorld:
    """A reset moto with a role and a bucket, env pointing at it, a definition ``demo``."""
    requests.post(f"{moto_url}/moto-api/reset", timeout=10).raise_for_status()
    fake_credentials(monkeypatch, tmp_path)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    for name in ("SAGEMAKER_ROLE_ARN", "DOCKER", "DOCKER_HOST"):
        monkeypatch.delenv(name, raising=False)
    endpoints_dir, build_dir = tmp_path / "endpoints", tmp_path / "build"
    archive = make_archive(tmp_path / "build" / "demo.tar.gz")
    endpoints_dir.mkdir()
    (endpoints_dir / "demo.toml").write_text(DEFINITION.format(archive=archive))
    iam = boto3.client("iam", region_name=REGION)
    role = iam.create_role(RoleName=ROLE_NAME, AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    boto3.client("s3", region_name=REGION).create_bucket(Bucket=BUCKET)
    monkeypatch.setenv("BYOSERVE_ROLE_ARN", role)
    monkeypatch.setenv("BYOSERVE_BUCKET", BUCKET)
    monkeypatch.setenv("BYOSERVE_ENDPOINTS_DIR", str(endpoints_dir))
    monkeypatch.setenv("BYOSERVE_BUILD_DIR", str(build_dir))
    return AwsWorld(moto_url, role, BUCKET, endpoints_dir, build_dir, archive)


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., Result]:
    """Run ``python -m deploy ARGS`` in-process; returns exit code, stdout, stderr."""

    def run(*args: str) -> Result:
        capsys.readouterr()
        code = main(list(args))
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


def sagemaker_resources(aws: AwsWorld) -> dict[str, list[str]]:
    """The names of every endpoint, endpoint config and model in moto."""
    sm = aws.client("sagemaker")
    return {
        "endpoints": [e["EndpointName"] for e in sm.list_endpoints()["Endpoints"]],
        "configs": [c["EndpointConfigName"] for c in sm.list_endpoint_configs()["EndpointConfigs"]],
        "models": [m["ModelName"] for m in sm.list_models()["Models"]],
    }


FAKE_DIGEST = "sha256:" + "ab" * 32


def record_pushed_image(aws: AwsWorld, repository: str) -> str:
    """Record an image of ``repository`` as ``push`` does; returns its URI (by digest)."""
    from deploy.images import PushedImage, record_image

    image = PushedImage(
        repository=repository,
        registry="123456789012.dkr.ecr.us-east-1.amazonaws.com",
        tag="abc-def",
        digest=FAKE_DIGEST,
        local_image=f"{repository}:latest",
        image_id="sha256:" + "cd" * 32,
        pushed_at="2025-01-01T00:00:00Z",
    )
    record_image(image, aws.build_dir / "images")
    return image.uri


@pytest.fixture
def pushed(aws: AwsWorld) -> str:
    """An image record as ``push`` writes it (for endpoint tests that need no registry)."""
    return record_pushed_image(aws, "byoserve-test")


@pytest.fixture
def container_tools() -> None:
    """podman and the local registry are here; otherwise the test FAILS (CI must never skip)."""
    require_container_tools()


@pytest.fixture
def podman_tool() -> None:
    """podman is here; otherwise the test FAILS."""
    require_container_tools(registry=False)
