"""``s3://BUCKET/KEY`` locations, split for boto3 and joined back for people."""

from __future__ import annotations

from dataclasses import dataclass

from deploy.errors import DeployError


@dataclass(frozen=True, slots=True)
class S3Path:
    """One S3 object or prefix."""

    bucket: str
    key: str

    @classmethod
    def parse(cls, url: str, what: str) -> S3Path:
        """``s3://BUCKET/KEY`` (the key may be empty: a bucket).

        Raises:
            DeployError: ``url`` is not an ``s3://`` URL with a bucket; ``what`` names it.
        """
        scheme, _, rest = url.partition("://")
        bucket, _, key = rest.partition("/")
        if scheme != "s3" or not bucket:
            raise DeployError(f"{what} must be an s3://BUCKET/KEY location, not {url!r}")
        return cls(bucket, key)

    def child(self, name: str) -> S3Path:
        """The object ``name`` under this prefix."""
        prefix = self.key.rstrip("/")
        return S3Path(self.bucket, f"{prefix}/{name}" if prefix else name)

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"
