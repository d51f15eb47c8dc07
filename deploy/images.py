"""``build`` and ``push``: the serving image, into ECR under an immutable tag, digest recorded.

``push`` writes ``build/images/<repository>.json``; ``create-endpoint`` reads it and refers to
the image by digest (``registry/repository@sha256:...``), so what runs is exactly what was pushed.
"""

from __future__ import annotations

import base64
import json
import logging
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from botocore.exceptions import ClientError

from deploy.aws import Aws, error_code
from deploy.dryrun import Plan
from deploy.engine import BuildRequest, Engine
from deploy.engines import describe
from deploy.errors import DeployError, SettingMissingError

logger = logging.getLogger(__name__)

MANAGED_TAG = {"Key": "byoserve:managed", "Value": "true"}


@dataclass(frozen=True, slots=True)
class PushedImage:
    """What ``push`` records about an image now in the registry."""

    repository: str
    registry: str
    tag: str
    digest: str
    local_image: str
    image_id: str
    pushed_at: str

    @property
    def uri(self) -> str:
        """The image by digest, as SageMaker should pull it."""
        return f"{self.registry}/{self.repository}@{self.digest}"


def git_revision(directory: Path) -> str | None:
    """The short commit of ``directory``'s checkout, or None outside git."""
    result = subprocess.run(
        ["git", "-C", str(directory), "rev-parse", "--short=12", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout.strip() or None if result.returncode == 0 else None


def immutable_tag(image_id: str, revision: str | None) -> str:
    """``<git sha>-<image id>``: the content id alone decides it, the commit says where from."""
    content = image_id.split(":")[-1][:12]
    return f"{revision}-{content}" if revision else content


def build_image(engine: Engine, request: BuildRequest, plan: Plan | None = None) -> str | None:
    """Build ``request.tag``; returns the image id (None in a dry run, which only prints)."""
    if plan is not None:
        plan.record("docker", "build", {**asdict(request), **describe(engine)})
        return None
    return engine.build(request)


def ensure_repository(aws: Aws, repository: str) -> str:
    """The repository URI; the repository is created (scan on push, immutable tags) if missing."""
    try:
        found = aws.call("ecr", "describe_repositories", repositoryNames=[repository])
        return str(found["repositories"][0]["repositoryUri"])
    except ClientError as exc:
        if error_code(exc) != "RepositoryNotFoundException":
            raise
    created = aws.call(
        "ecr",
        "create_repository",
        repositoryName=repository,
        imageScanningConfiguration={"scanOnPush": True},
        imageTagMutability="IMMUTABLE",
        tags=[MANAGED_TAG],
    )
    account = "<account>" if aws.dry_run else aws.account_id()
    default = f"{account}.dkr.ecr.{aws.region}.amazonaws.com/{repository}"
    return str(created.get("repository", {}).get("repositoryUri", default))


def registry_login(aws: Aws) -> tuple[str, str, str]:
    """``(username, password, proxy endpoint)`` from ECR's ``GetAuthorizationToken``."""
    data = aws.call("ecr", "get_authorization_token")["authorizationData"][0]
    username, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
    return username, password, str(data["proxyEndpoint"])


def _already_in_ecr(aws: Aws, repository: str, tag: str) -> str | None:
    try:
        found = aws.call(
            "ecr", "describe_images", repositoryName=repository, imageIds=[{"imageTag": tag}]
        )
    except ClientError as exc:
        if error_code(exc) in ("ImageNotFoundException", "RepositoryNotFoundException"):
            return None
        raise
    details = found.get("imageDetails", [])
    return str(details[0]["imageDigest"]) if details else None


def push_image(
    aws: Aws,
    engine: Engine,
    local_image: str,
    repository: str,
    images_dir: Path,
    registry: str | None = None,
) -> PushedImage | None:
    """Push ``local_image`` to ``repository`` and record its digest; None in a dry run.

    Args:
        registry: push here instead of the ECR host (a local registry in tests); the ECR
            repository is still created and the ECR login still used.
    """
    image_id = engine.image_id(local_image)
    if image_id is None:
        raise SettingMissingError(
            f"no local image {local_image}: run `python -m deploy build` first (or pass --image)"
        )
    uri = ensure_repository(aws, repository)
    tag = immutable_tag(image_id, git_revision(Path.cwd()))
    target_registry = registry or uri.split("/")[0]
    target = f"{target_registry}/{repository}"
    username, password, _ = registry_login(aws)
    digest = None if registry else _already_in_ecr(aws, repository, tag)
    if aws.plan is not None:
        aws.plan.record("docker", "tag", {"image": local_image, "target": f"{target}:{tag}"})
        aws.plan.record("docker", "push", {"target": f"{target}:{tag}", **describe(engine)})
        return None
    if digest is not None:
        logger.info("%s:%s is already in ECR; not pushing", target, tag)
    else:
        engine.tag(local_image, target, tag)
        digest = engine.push(target, tag, username, password)
    pushed = PushedImage(
        repository=repository,
        registry=target_registry,
        tag=tag,
        digest=digest,
        local_image=local_image,
        image_id=image_id,
        pushed_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    record_image(pushed, images_dir)
    return pushed


def record_image(pushed: PushedImage, images_dir: Path) -> Path:
    """Write ``images_dir/<repository>.json``."""
    images_dir.mkdir(parents=True, exist_ok=True)
    path = images_dir / f"{pushed.repository}.json"
    path.write_text(json.dumps({**asdict(pushed), "uri": pushed.uri}, indent=2) + "\n")
    return path


def recorded_image(repository: str, images_dir: Path) -> PushedImage:
    """The image ``push`` last recorded for ``repository``."""
    path = images_dir / f"{repository}.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise SettingMissingError(
            f"no pushed image recorded in {path}: run `python -m deploy push --repository "
            f"{repository}` (make build push) first, or pass --image URI"
        ) from exc
    data.pop("uri", None)
    try:
        return PushedImage(**data)
    except TypeError as exc:
        raise DeployError(f"{path} is not an image record; push again") from exc
