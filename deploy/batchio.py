"""Where a local batch transform reads and writes: a directory (or one file), or an S3 prefix.

Input objects are named relative to the input (``a.jsonl``, ``day1/b.jsonl``), as SageMaker names
them under ``S3OutputPath``; each answer is written as ``<name>.out`` under the output.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from deploy.aws import Aws
from deploy.errors import DeployError
from deploy.s3paths import S3Path

OUT_SUFFIX = ".out"


class ObjectStore(Protocol):
    """Objects by name: the input lists and reads, the output writes."""

    @property
    def url(self) -> str:
        """Where the objects are, as the user wrote it."""

    def names(self) -> list[str]:
        """Every object's name, sorted."""

    def read(self, name: str) -> bytes:
        """The bytes of object ``name``."""

    def write(self, name: str, data: bytes) -> str:
        """Store ``data`` as object ``name``; returns where it went."""


@dataclass(frozen=True, slots=True)
class DirectoryStore:
    """A local directory (created when written to), or one file as an input of one object."""

    root: Path

    @property
    def url(self) -> str:
        return str(self.root)

    def names(self) -> list[str]:
        if self.root.is_file():
            return [self.root.name]
        if not self.root.is_dir():
            raise DeployError(f"--input {self.root}: no such file or directory")
        found = (path.relative_to(self.root) for path in self.root.rglob("*") if path.is_file())
        return sorted(
            path.as_posix()
            for path in found
            if not any(part.startswith(".") for part in path.parts)
        )

    def read(self, name: str) -> bytes:
        return (self.root if self.root.is_file() else self.root / name).read_bytes()

    def write(self, name: str, data: bytes) -> str:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return str(path)


@dataclass(frozen=True, slots=True)
class S3Store:
    """The objects whose keys start with ``prefix`` in ``bucket`` (SageMaker's ``S3Prefix``)."""

    aws: Aws
    bucket: str
    prefix: str

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    @property
    def base(self) -> str:
        """The prefix up to its last ``/``: input names are keys relative to it."""
        return self.prefix[: self.prefix.rfind("/") + 1]

    def names(self) -> list[str]:
        keys = [str(item["Key"]) for item in self.aws.objects(self.bucket, self.prefix)]
        keys = [key for key in keys if not key.endswith("/")]
        if not keys:
            raise DeployError(f"--input {self.url}: no objects under this prefix")
        return sorted(key[len(self.base) :] for key in keys)

    def read(self, name: str) -> bytes:
        body: Any = self.aws.call("s3", "get_object", Bucket=self.bucket, Key=self.base + name)
        data: bytes = body["Body"].read()
        return data

    def write(self, name: str, data: bytes) -> str:
        key = f"{self.prefix.rstrip('/')}/{name}" if self.prefix.strip("/") else name
        self.aws.call("s3", "put_object", Bucket=self.bucket, Key=key, Body=data)
        return f"s3://{self.bucket}/{key}"


def open_store(url: str, aws: Aws | None) -> ObjectStore:
    """A :class:`S3Store` for ``s3://BUCKET/PREFIX`` (needs ``aws``), else a directory."""
    if not url.startswith("s3://"):
        return DirectoryStore(Path(url))
    try:
        where = S3Path.parse(url, url)
    except DeployError as exc:
        raise DeployError(f"{url}: expected s3://BUCKET/PREFIX") from exc
    if aws is None:
        raise DeployError(f"{url}: expected s3://BUCKET/PREFIX")
    return S3Store(aws, where.bucket, where.key)
