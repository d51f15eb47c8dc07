"""ECR through moto, and a real build and push to a real registry (Debian's docker-registry).

The ECR repository and the login come from moto's ECR over HTTP; the bytes go to a registry on
loopback (``push --registry``), once through the podman CLI and once through the Docker API
(docker-py against ``podman system service``). The digest ``push`` records must equal the one the
registry reports for the tag.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.deploy.conftest import AwsWorld, Result
from tests.deploy.engines import (
    local_registry,
    podman_service,
    remove_images,
)

needs_tools = pytest.mark.usefixtures("container_tools")


def test_ecr_repository_is_created_once_with_scan_on_push(aws: AwsWorld) -> None:
    from deploy.aws import Aws
    from deploy.images import ensure_repository, registry_login

    session = Aws("us-east-1")
    uri = ensure_repository(session, "byoserve-test")
    assert uri.endswith(".amazonaws.com/byoserve-test")
    assert ensure_repository(session, "byoserve-test") == uri
    (repo,) = aws.client("ecr").describe_repositories()["repositories"]
    assert repo["imageScanningConfiguration"] == {"scanOnPush": True}
    assert repo["imageTagMutability"] == "IMMUTABLE"
    username, password, endpoint = registry_login(session)
    assert username == "AWS" and password and endpoint.startswith("https://")


@pytest.fixture
def tiny_image(tmp_path: Path) -> Iterator[str]:
    """A context for a one-file image ``FROM scratch``; yields a repository name unique to
    the test; every image tagged with it is removed afterwards."""
    context = tmp_path / "context"
    context.mkdir()
    (context / "hello.txt").write_text(secrets.token_hex(16))
    (context / "Dockerfile").write_text("FROM scratch\nCOPY hello.txt /hello.txt\n")
    name = f"byoserve-pushtest-{secrets.token_hex(4)}"
    made: list[str] = [f"{name}:latest"]
    yield name
    records = (tmp_path / "build" / "images").glob("*.json")
    made += [f"{r['registry']}/{r['repository']}:{r['tag']}" for r in map(_load, records)]
    remove_images(*made)


def _load(path: Path) -> dict[str, str]:
    data: dict[str, str] = json.loads(path.read_text())
    return data


def _build_and_push(
    cli: Callable[..., Result], name: str, context: Path, registry: str, *engine: str
) -> dict[str, str]:
    build = cli(
        "build",
        "--repository",
        name,
        "--context",
        str(context),
        "--dockerfile",
        str(context / "Dockerfile"),
        *engine,
    )
    assert build.code == 0, build.err
    push = cli("push", "--repository", name, "--registry", registry, *engine)
    assert push.code == 0, push.err
    return _load(Path(push.out.split("recorded in ")[1].strip()))


@pytest.mark.container
@needs_tools
def test_push_through_the_podman_cli_records_the_registry_digest(
    aws: AwsWorld, cli: Callable[..., Result], tiny_image: str, tmp_path: Path
) -> None:
    with local_registry(tmp_path) as registry:
        record = _build_and_push(
            cli, tiny_image, tmp_path / "context", registry.host, "--docker", "podman"
        )
        assert record["digest"] == registry.manifest_digest(tiny_image, record["tag"])
        assert record["uri"] == f"{registry.host}/{tiny_image}@{record['digest']}"
        again = cli(
            "push", "--repository", tiny_image, "--registry", registry.host, "--docker", "podman"
        )
        assert again.code == 0 and record["digest"] in again.out
        dry = cli(
            "push",
            "--repository",
            tiny_image,
            "--registry",
            registry.host,
            "--docker",
            "podman",
            "--dry-run",
        )
        assert "DRY-RUN docker push" in dry.out


@pytest.mark.container
@needs_tools
def test_push_through_the_docker_api_records_the_registry_digest(
    aws: AwsWorld,
    cli: Callable[..., Result],
    tiny_image: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with local_registry(tmp_path) as registry, podman_service(tmp_path, registry.host) as url:
        monkeypatch.setenv("DOCKER_HOST", url)
        record = _build_and_push(cli, tiny_image, tmp_path / "context", registry.host)
        assert record["digest"] == registry.manifest_digest(tiny_image, record["tag"])
        tags = aws.client("ecr").describe_repositories(repositoryNames=[tiny_image])
        assert tags["repositories"][0]["repositoryName"] == tiny_image


def test_the_login_token_is_what_ecr_returned(aws: AwsWorld) -> None:
    token = aws.client("ecr").get_authorization_token()["authorizationData"][0]
    user, _, password = base64.b64decode(token["authorizationToken"]).decode().partition(":")
    from deploy.aws import Aws
    from deploy.images import registry_login

    assert registry_login(Aws("us-east-1"))[:2] == (user, password)
