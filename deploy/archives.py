"""Model archives: find the ``model.tar.gz``, hash it, upload it to S3 under its content hash."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from botocore.exceptions import ClientError

from deploy.aws import Aws, error_code
from deploy.definitions import EndpointDefinition
from deploy.errors import DeployError

logger = logging.getLogger(__name__)

CHUNK = 1024 * 1024


class ArchiveMissingError(DeployError):
    """The model archive named by the definition is not there."""


@dataclass(frozen=True, slots=True)
class UploadedArchive:
    """Where an archive lives in S3, and whether this run uploaded it."""

    bucket: str
    key: str
    sha256: str
    uploaded: bool

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def resolve_archive(definition: EndpointDefinition, override: Path | None = None) -> Path:
    """The archive to deploy: ``override`` if given, else the definition's; it must exist."""
    archive = override or definition.archive
    if not archive.is_file():
        hint = "check --archive" if override else definition.archive_hint
        raise ArchiveMissingError(f"model archive {archive} not found: {hint}")
    return archive


def file_sha256(path: Path) -> str:
    """The hex SHA-256 of the file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def archive_key(name: str, sha256: str) -> str:
    """``models/NAME/<sha256>/model.tar.gz``: same bytes, same key; new bytes, new key."""
    return f"models/{name}/{sha256}/model.tar.gz"


def _check_bucket(aws: Aws, bucket: str) -> None:
    try:
        aws.call("s3", "head_bucket", Bucket=bucket)
    except ClientError as exc:
        raise DeployError(
            f"cannot use bucket s3://{bucket} ({error_code(exc)}): create it "
            f"(aws s3 mb s3://{bucket}), or pass --bucket / set BYOSERVE_BUCKET to one you own"
        ) from exc


def _exists(aws: Aws, bucket: str, key: str) -> bool:
    try:
        aws.call("s3", "head_object", Bucket=bucket, Key=key)
    except ClientError as exc:
        if error_code(exc) in ("404", "NoSuchKey", "NotFound"):
            return False
        raise
    return True


def upload_archive(aws: Aws, name: str, archive: Path, bucket: str) -> UploadedArchive:
    """Upload ``archive`` unless an object with the same content hash is already there."""
    sha256 = file_sha256(archive)
    key = archive_key(name, sha256)
    _check_bucket(aws, bucket)
    if _exists(aws, bucket, key):
        logger.info("s3://%s/%s is already there; not uploading", bucket, key)
        return UploadedArchive(bucket, key, sha256, uploaded=False)
    with archive.open("rb") as body:
        aws.call(
            "s3",
            "put_object",
            Bucket=bucket,
            Key=key,
            Body=body,
            ContentType="application/gzip",
            Metadata={"sha256": sha256, "byoserve-endpoint": name},
        )
    return UploadedArchive(bucket, key, sha256, uploaded=True)
