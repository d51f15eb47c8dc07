"""The same build and run driven through the Docker API (docker-py on podman's socket).

docker-py cannot pass podman's build volume (``-v /opt/wheels:/wheels``), and the Dockerfile
takes the torch wheel only from a directory visible to RUN, not from the build context. The
session's CLI build has just made the dependency layer with the same build arguments and image
format (docker, the API's), so this build reuses it (asserted) and needs no wheel. Everything
else goes through the API for real: context upload with .dockerignore, build arguments, tag,
run with ports and a read-only volume, logs, removal.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import docker
import numpy as np
import pytest
import requests
from docker.errors import BuildError
from docker.models.containers import Container as ApiContainer

from serve.process.probe import wait_for_ping
from tests.container.conftest import BuiltImage
from tests.container.dockerapi import PodmanService
from tests.container.podman import (
    BUILD_ARGS,
    TEST_LABEL,
    build_steps,
    remove_image,
    unique,
    working_containers_removed_on_failure,
)
from tests.container.test_rebuild import dependency_install
from tests.fixtures.models import DigitsModel
from tests.fixtures.server import REPO, free_port

pytestmark = pytest.mark.container


@pytest.fixture
def podman_service(podman_ready: None, tmp_path: Path) -> Iterator[PodmanService]:
    service = PodmanService(tmp_path / "service")
    try:
        yield service
    finally:
        service.stop()


def api_build(client: docker.DockerClient, tag: str) -> str:
    """Build the repository through the API; returns the build output."""
    try:
        with working_containers_removed_on_failure():
            _, log = client.images.build(
                path=str(REPO),
                dockerfile="Dockerfile",
                tag=tag,
                buildargs=BUILD_ARGS,
                rm=True,
                forcerm=True,
                pull=False,
            )
    except BuildError as exc:
        output = "".join(str(chunk.get("stream", "")) for chunk in exc.build_log)
        raise AssertionError(
            "the Docker API build failed; it has no torch wheel and relies on reusing the "
            f"dependency layer of the session's build (same format and build arguments):\n{output}"
        ) from exc
    return "".join(str(chunk.get("stream", "")) for chunk in log)


def wait_ready(container: ApiContainer, url: str, timeout: float = 120.0) -> None:
    """Poll /ping against a monotonic deadline; fail early if the container ended."""

    def running() -> bool:
        container.reload()  # an API round trip
        return bool(container.status == "running")

    if wait_for_ping(url, time.monotonic() + timeout, running):
        return
    if container.status != "running":
        raise RuntimeError(f"container {container.status}:\n{container.logs().decode()}")
    raise TimeoutError(f"/ping not 200 within {timeout} s:\n{container.logs().decode()}")


def test_build_and_run_through_the_docker_api(
    image: BuiltImage,
    image_repository: str,
    podman_service: PodmanService,
    digits_tree: Path,
    digits: DigitsModel,
) -> None:
    client = podman_service.client()
    tag = f"{image_repository}-api"
    container: ApiContainer | None = None
    try:
        output = api_build(client, tag)
        install = dependency_install(build_steps(output))
        assert install.cached, "the API build did not reuse the dependency layer:\n" + output

        port = free_port()
        container = client.containers.run(
            tag,
            "serve",
            detach=True,
            name=unique(TEST_LABEL),
            labels=[TEST_LABEL],
            ports={"8080/tcp": ("127.0.0.1", port)},
            volumes={str(digits_tree): {"bind": "/opt/ml/model", "mode": "ro"}},
        )
        url = f"http://127.0.0.1:{port}"
        wait_ready(container, url)
        images = digits.images[:4]
        response = requests.post(f"{url}/invocations", json=images.tolist(), timeout=30)
        assert response.status_code == 200, response.text
        assert response.json()["predictions"] == np.argmax(digits.predict(images), 1).tolist()
        assert "serving" in container.logs().decode()
    finally:
        if container is not None:
            container.remove(force=True)
        client.close()
        remove_image(tag)
