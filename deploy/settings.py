"""Where ``python -m deploy`` takes region, role, bucket and tool locations from.

Every environment variable the deploy tool reads is named here and nowhere else. Precedence:
command-line flag, then environment, then the endpoint definition's ``[aws]`` table. boto3 itself
still reads its usual variables (credentials, ``AWS_PROFILE``, ``AWS_ENDPOINT_URL``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from deploy.errors import SettingMissingError

REGION_ENV = ("AWS_REGION", "AWS_DEFAULT_REGION")
ROLE_ENV = ("BYOSERVE_ROLE_ARN", "SAGEMAKER_ROLE_ARN")
BUCKET_ENV = ("BYOSERVE_BUCKET",)
DOCKER_ENV = ("DOCKER",)
DOCKER_HOST_ENV = ("DOCKER_HOST",)
BUILD_DIR_ENV = ("BYOSERVE_BUILD_DIR",)
ENDPOINTS_DIR_ENV = ("BYOSERVE_ENDPOINTS_DIR",)

_HOW_TO_SET = {
    "region": "pass --region, set AWS_REGION (or AWS_DEFAULT_REGION), or add `region` under [aws]",
    "role_arn": "pass --role-arn, set BYOSERVE_ROLE_ARN (or SAGEMAKER_ROLE_ARN), "
    "or add `role_arn` under [aws]",
    "bucket": "pass --bucket, set BYOSERVE_BUCKET, or add `bucket` under [aws]",
}
_WHAT = {
    "region": "no AWS region",
    "role_arn": "no SageMaker execution role",
    "bucket": "no S3 bucket for model archives",
}


def _first(environ: Mapping[str, str], names: tuple[str, ...]) -> str | None:
    for name in names:
        value = environ.get(name, "").strip()
        if value:
            return value
    return None


@dataclass(frozen=True, slots=True)
class DeploySettings:
    """Flags and environment, read once in the CLI and passed down."""

    region: str | None = None
    role_arn: str | None = None
    bucket: str | None = None
    docker: str | None = None
    docker_host: str | None = None
    build_dir: Path = Path("build")
    endpoints_dir: Path = Path("endpoints")
    dry_run: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> DeploySettings:
        """Environment values, with the non-None ``overrides`` (flags) laid over them."""
        env = os.environ if environ is None else environ
        build_dir = _first(env, BUILD_DIR_ENV)
        endpoints_dir = _first(env, ENDPOINTS_DIR_ENV)
        settings = cls(
            region=_first(env, REGION_ENV),
            role_arn=_first(env, ROLE_ENV),
            bucket=_first(env, BUCKET_ENV),
            docker=_first(env, DOCKER_ENV),
            docker_host=_first(env, DOCKER_HOST_ENV),
            build_dir=Path(build_dir) if build_dir else Path("build"),
            endpoints_dir=Path(endpoints_dir) if endpoints_dir else Path("endpoints"),
        )
        return replace(settings, **{k: v for k, v in overrides.items() if v is not None})

    def require(self, name: str, from_definition: str | None, where: str) -> str:
        """The setting ``name`` from flags/environment, else the definition, else a clear error.

        Args:
            name: ``region``, ``role_arn`` or ``bucket``.
            from_definition: the value in the endpoint definition's ``[aws]`` table, if any.
            where: the definition file, named in the error message.
        """
        value = getattr(self, name) or from_definition
        if not value:
            raise SettingMissingError(f"{_WHAT[name]}: {_HOW_TO_SET[name]} in {where}")
        return str(value)

    @property
    def images_dir(self) -> Path:
        """Where ``push`` records the digest of each pushed image."""
        return self.build_dir / "images"
