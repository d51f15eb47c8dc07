"""Multi-model endpoints: every archive under one S3 prefix, chosen per request by ``TargetModel``.

The SageMaker model's ``ModelDataUrl`` is the prefix (``s3://BUCKET/models/NAME/``) and its
``Mode`` is ``MultiModel``; an invocation with ``TargetModel="x.tar.gz"`` makes SageMaker fetch
``<prefix>x.tar.gz`` onto an instance and load it in the container on first use. The prefix only
depends on the bucket and the endpoint's name, so it stays the same across releases: an update
makes a new model object pointing at the same prefix, and archives added with ``upload-model``
are still there for it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from deploy.archives import UploadedArchive, endpoint_prefix, existing_archive, upload_archive
from deploy.aws import Aws
from deploy.definitions import EndpointDefinition, TargetArchive
from deploy.endpoints import describe_endpoint
from deploy.errors import DeployError
from deploy.release import MODE_MULTI, model_container

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ModelPrefix:
    """The S3 location a multi-model endpoint loads its targets from."""

    bucket: str
    prefix: str

    @classmethod
    def of(cls, bucket: str, endpoint: str) -> ModelPrefix:
        """``s3://BUCKET/models/ENDPOINT/``, the prefix deploy gives the endpoint."""
        return cls(bucket, endpoint_prefix(endpoint))

    @classmethod
    def parse(cls, url: str) -> ModelPrefix:
        """The prefix of a ``ModelDataUrl`` such as ``s3://bucket/models/name/``."""
        if not url.startswith("s3://"):
            raise DeployError(f"not an S3 prefix: {url}")
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        return cls(bucket, prefix if not prefix or prefix.endswith("/") else prefix + "/")

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def key(self, name: str) -> str:
        """The key of target ``name``."""
        return self.prefix + name


def upload_target(
    aws: Aws, endpoint: str, target: TargetArchive, prefix: ModelPrefix
) -> UploadedArchive:
    """Put one archive at ``<prefix><name>``, unless the same bytes are already there."""
    return upload_archive(aws, endpoint, target.path, prefix.bucket, prefix.key(target.name))


def warn_replaced(uploads: Iterable[UploadedArchive]) -> None:
    """Warn about archives overwritten under a live prefix: SageMaker may serve cached copies."""
    for uploaded in uploads:
        if uploaded.replaced:
            logger.warning(
                "replaced %s: instances that already loaded it may keep serving the old bytes "
                "until SageMaker unloads it; upload new versions under a new name (--name), or "
                "redeploy with `create-endpoint --force` for a fresh fleet",
                uploaded.url,
            )


def existing_targets(definition: EndpointDefinition) -> tuple[TargetArchive, ...]:
    """The definition's archives, once each is known to exist (else an error on the first)."""
    for target in definition.targets:
        existing_archive(target.path, definition.archive_hint)
    return definition.targets


def upload_targets(
    aws: Aws, definition: EndpointDefinition, prefix: ModelPrefix
) -> dict[str, UploadedArchive]:
    """Upload every archive the definition lists under ``prefix`` (all must exist first).

    Returns what was uploaded (or found there already) by target name.
    """
    return {
        target.name: upload_target(aws, definition.name, target, prefix)
        for target in existing_targets(definition)
    }


def live_prefix(aws: Aws, endpoint: str) -> ModelPrefix | None:
    """The prefix the endpoint serves now, or None when it is missing or single-model."""
    found = describe_endpoint(aws, endpoint)
    if found is None:
        return None
    config = aws.call(
        "sagemaker", "describe_endpoint_config", EndpointConfigName=found["EndpointConfigName"]
    )
    container = model_container(aws, config)
    if container.get("Mode") != MODE_MULTI:
        return None
    return ModelPrefix.parse(str(container["ModelDataUrl"]))


def list_targets(aws: Aws, prefix: ModelPrefix) -> list[dict[str, Any]]:
    """The archives directly under ``prefix`` (``ListObjectsV2``): name, size, last modified."""
    objects = aws.objects(prefix.bucket, prefix.prefix, Delimiter="/")
    return [
        {
            "Name": item["Key"][len(prefix.prefix) :],
            "Size": item.get("Size"),
            "LastModified": item.get("LastModified"),
        }
        for item in objects
    ]


def warn_if_moved(aws: Aws, endpoint: str, prefix: ModelPrefix) -> None:
    """Say so when a release is about to move the endpoint to another prefix (a new bucket)."""
    live = live_prefix(aws, endpoint)
    if live is not None and live != prefix:
        logger.warning(
            "%s serves %s; the new release serves %s: archives added under the old prefix with "
            "upload-model are not carried over",
            endpoint,
            live.url,
            prefix.url,
        )
