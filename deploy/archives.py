"""Model archives: find the ``model.tar.gz``, hash it, upload it to S3 unless its bytes are there.

A single-model endpoint's archive goes under its content hash (new bytes, new key); a multi-model
endpoint's archives go under fixed names below one prefix (see ``deploy.multimodel``), where the
object's ``sha256`` metadata tells whether the same bytes are already there.

SageMaker takes a gzipped tar. A ``.tar.gz`` is uploaded as it is; a TorchServe/MMS ``.mar`` (a
zip), a plain ``.tar`` or a model directory is first repacked into one with the same files, the
same way every time (sorted, fixed times and owners), so the same model gives the same bytes and
is not uploaded twice (see :mod:`deploy.repack`).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from botocore.exceptions import ClientError

from deploy.aws import Aws, error_code
from deploy.definitions import EndpointDefinition
from deploy.errors import DeployError
from deploy.repack import sagemaker_archive

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
    replaced: bool = False

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def existing_archive(archive: Path, hint: str, *, directory: bool = False) -> Path:
    """``archive`` if it is a file (or, with ``directory``, a directory), else an error ending
    in ``hint`` (how to make it)."""
    if not (archive.is_file() or (directory and archive.is_dir())):
        raise ArchiveMissingError(f"model archive {archive} not found: {hint}")
    return archive


def resolve_archive(
    definition: EndpointDefinition, override: Path | None = None, *, directory: bool = False
) -> Path:
    """The archive to deploy: ``override`` if given (with ``directory``, a model directory
    too), else the definition's; it must exist."""
    if override:
        return existing_archive(override, "check --archive", directory=directory)
    if definition.archive is None:
        raise DeployError(
            f"{definition.source} is a multi-model definition with no single archive: "
            "pass --archive"
        )
    return existing_archive(definition.archive, definition.archive_hint)


def file_sha256(path: Path) -> str:
    """The hex SHA-256 of the file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def endpoint_prefix(name: str) -> str:
    """``models/NAME/``: where every archive of endpoint ``name`` is kept."""
    return f"models/{name}/"


def archive_key(name: str, sha256: str) -> str:
    """``models/NAME/<sha256>/model.tar.gz``: same bytes, same key; new bytes, new key."""
    return f"{endpoint_prefix(name)}{sha256}/model.tar.gz"


def _check_bucket(aws: Aws, bucket: str) -> None:
    try:
        aws.call("s3", "head_bucket", Bucket=bucket)
    except ClientError as exc:
        raise DeployError(
            f"cannot use bucket s3://{bucket} ({error_code(exc)}): create it "
            f"(aws s3 mb s3://{bucket}), or pass --bucket / set BYOSERVE_BUCKET to one you own"
        ) from exc


def _stored_sha256(aws: Aws, bucket: str, key: str) -> str | None:
    """The ``sha256`` metadata of the object at ``key``: "" when it has none, None when absent."""
    try:
        head = aws.call("s3", "head_object", Bucket=bucket, Key=key)
    except ClientError as exc:
        if error_code(exc) in ("404", "NoSuchKey", "NotFound"):
            return None
        raise
    return str(head.get("Metadata", {}).get("sha256", ""))


def upload_archive(
    aws: Aws, name: str, archive: Path, bucket: str, key: str | None = None
) -> UploadedArchive:
    """Upload ``archive`` to ``key`` unless the object there already holds the same bytes.

    Args:
        name: the endpoint, recorded in the object's metadata.
        archive: a ``.tar.gz``, or a ``.mar``, ``.tar`` or model directory, repacked first.
        key: where to put it; by default the content-addressed ``archive_key``.
    """
    with sagemaker_archive(archive) as packed:
        return _upload_file(aws, name, packed, bucket, key)


def _upload_file(
    aws: Aws, name: str, archive: Path, bucket: str, key: str | None
) -> UploadedArchive:
    sha256 = file_sha256(archive)
    key = key or archive_key(name, sha256)
    _check_bucket(aws, bucket)
    stored = _stored_sha256(aws, bucket, key)
    if stored == sha256:
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
    return UploadedArchive(bucket, key, sha256, uploaded=True, replaced=stored is not None)
