"""A release: one SageMaker model and one endpoint config, named with a short unique suffix.

Every resource is tagged ``byoserve:endpoint=NAME`` (so ``delete-endpoint`` finds them all) and
``byoserve:release=<fingerprint>`` (so ``create-endpoint`` with nothing changed does nothing).
A multi-model release's model has ``Mode=MultiModel`` and the S3 prefix as its ``ModelDataUrl``.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from deploy.aws import Aws, error_code
from deploy.definitions import EndpointDefinition
from deploy.errors import DeployError
from deploy.hosting import async_inference_config, container_environment, serverless_config

ENDPOINT_TAG = "byoserve:endpoint"
RELEASE_TAG = "byoserve:release"
VARIANT = "AllTraffic"
MODE_SINGLE, MODE_MULTI = "SingleModel", "MultiModel"  # the container's Mode


@dataclass(frozen=True, slots=True)
class Release:
    """Everything that decides what an endpoint runs."""

    endpoint: str
    image_uri: str
    model_data_url: str
    role_arn: str
    instance_type: str
    instance_count: int
    startup_health_check_timeout: int
    model_data_download_timeout: int
    environment: dict[str, str] = field(default_factory=dict)
    # Multi-model only: the definition's archives (name -> sha256) under the model_data_url prefix.
    # Archives added later with upload-model are not part of the release.
    targets: dict[str, str] | None = None
    # Asynchronous endpoints: the endpoint config's AsyncInferenceConfig.
    async_config: dict[str, Any] | None = None
    # Serverless endpoints: the variant's ServerlessConfig, in place of instances.
    serverless: dict[str, int] | None = None

    @classmethod
    def of(
        cls,
        definition: EndpointDefinition,
        image_uri: str,
        model_data_url: str,
        role_arn: str,
        targets: dict[str, str] | None = None,
        bucket: str | None = None,
    ) -> Release:
        """The release of ``definition``; ``bucket`` holds an async endpoint's default output."""
        spec = definition.async_inference
        return cls(
            endpoint=definition.name,
            image_uri=image_uri,
            model_data_url=model_data_url,
            role_arn=role_arn,
            instance_type=definition.instance_type,
            instance_count=definition.instance_count,
            startup_health_check_timeout=definition.startup_health_check_timeout,
            model_data_download_timeout=definition.model_data_download_timeout,
            environment=container_environment(definition),
            targets=targets,
            async_config=async_inference_config(spec, bucket, definition.name) if spec else None,
            serverless=serverless_config(definition.serverless) if definition.serverless else None,
        )

    @property
    def mode(self) -> str:
        """The container's ``Mode``: ``MultiModel`` or ``SingleModel``."""
        return MODE_SINGLE if self.targets is None else MODE_MULTI

    @property
    def fingerprint(self) -> str:
        """16 hex digits that change whenever anything in the release does.

        A multi-model release changes when one of its archives' bytes do, so that redeploying
        brings up a fleet that has not cached the old ones.
        """
        fields = asdict(self)
        # Real-time single-model releases keep the fingerprint they always had.
        for name in ("targets", "async_config", "serverless"):
            if fields[name] is None:
                del fields[name]
        text = json.dumps(fields, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def variant(self, model_name: str) -> dict[str, Any]:
        """The ``AllTraffic`` production variant: instances, or a serverless config."""
        variant: dict[str, Any] = {"VariantName": VARIANT, "ModelName": model_name}
        if self.serverless is not None:
            return {**variant, "ServerlessConfig": self.serverless}
        return {
            **variant,
            "InitialInstanceCount": self.instance_count,
            "InstanceType": self.instance_type,
            "ContainerStartupHealthCheckTimeoutInSeconds": self.startup_health_check_timeout,
            "ModelDataDownloadTimeoutInSeconds": self.model_data_download_timeout,
        }

    def config_extras(self) -> dict[str, Any]:
        """What ``CreateEndpointConfig`` takes besides the variant: an async endpoint's config."""
        return {} if self.async_config is None else {"AsyncInferenceConfig": self.async_config}

    def tags(self) -> list[dict[str, str]]:
        return [
            {"Key": ENDPOINT_TAG, "Value": self.endpoint},
            {"Key": RELEASE_TAG, "Value": self.fingerprint},
        ]


def unique_name(endpoint: str) -> str:
    """``NAME-YYYYmmdd-HHMMSS-xxxx``: sortable, unique, within SageMaker's 63 characters."""
    return f"{endpoint}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{secrets.token_hex(2)}"


def check_role(aws: Aws, role_arn: str) -> None:
    """Fail early on a role that does not exist; callers without iam:GetRole skip the check."""
    try:
        aws.call("iam", "get_role", RoleName=role_arn.rsplit("/", 1)[-1])
    except ClientError as exc:
        if error_code(exc) == "NoSuchEntity":
            raise DeployError(
                f"execution role {role_arn} does not exist: create a SageMaker execution role "
                "and pass its ARN (--role-arn or BYOSERVE_ROLE_ARN)"
            ) from exc
        if error_code(exc) not in ("AccessDenied", "AccessDeniedException"):
            raise


def create_model(aws: Aws, release: Release, name: str) -> str:
    """Create the SageMaker model ``name`` of ``release`` (image, archive, environment, role);
    an endpoint config or a transform job then runs it. Returns ``name``."""
    aws.call(
        "sagemaker",
        "create_model",
        ModelName=name,
        PrimaryContainer={
            "Image": release.image_uri,
            "Mode": release.mode,
            "ModelDataUrl": release.model_data_url,
            "Environment": release.environment,
        },
        ExecutionRoleArn=release.role_arn,
        Tags=release.tags(),
    )
    return name


def create_release(aws: Aws, release: Release) -> str:
    """Create the model and the endpoint config; returns the config's name (same as the model's)."""
    name = create_model(aws, release, unique_name(release.endpoint))
    aws.call(
        "sagemaker",
        "create_endpoint_config",
        EndpointConfigName=name,
        ProductionVariants=[release.variant(name)],
        **release.config_extras(),
        Tags=release.tags(),
    )
    return name


def resource_tags(aws: Aws, arn: str) -> dict[str, str]:
    """The tags on one SageMaker resource."""
    return {
        tag["Key"]: tag["Value"]
        for tag in aws.pages("sagemaker", "list_tags", "Tags", ResourceArn=arn)
    }


def tagged(aws: Aws, endpoint: str, kind: str) -> list[str]:
    """Names of the models (``kind="model"``) or configs (``"endpoint_config"``) of ``endpoint``."""
    plural = {"model": "Models", "endpoint_config": "EndpointConfigs"}[kind]
    prefix = {"model": "Model", "endpoint_config": "EndpointConfig"}[kind]
    found = []
    for item in aws.pages("sagemaker", f"list_{kind}s", plural, NameContains=endpoint):
        if resource_tags(aws, item[f"{prefix}Arn"]).get(ENDPOINT_TAG) == endpoint:
            found.append(str(item[f"{prefix}Name"]))
    return found


def delete_release(aws: Aws, name: str) -> None:
    """Delete the config and the model called ``name``; either may already be gone."""
    for operation, key in (
        ("delete_endpoint_config", "EndpointConfigName"),
        ("delete_model", "ModelName"),
    ):
        try:
            aws.call("sagemaker", operation, **{key: name})
        except ClientError as exc:
            if error_code(exc) != "ValidationException":
                raise


def release_fingerprint(aws: Aws, config_name: str) -> str | None:
    """The fingerprint tag of an endpoint config (None for one not made by deploy)."""
    try:
        config: dict[str, Any] = aws.call(
            "sagemaker", "describe_endpoint_config", EndpointConfigName=config_name
        )
    except ClientError as exc:
        if error_code(exc) == "ValidationException":
            return None
        raise
    return resource_tags(aws, config["EndpointConfigArn"]).get(RELEASE_TAG)


def model_container(aws: Aws, config: dict[str, Any]) -> dict[str, Any]:
    """The ``PrimaryContainer`` of the model an endpoint config runs ({} when it is gone)."""
    variants = config.get("ProductionVariants") or [{}]
    try:
        model = aws.call("sagemaker", "describe_model", ModelName=variants[0].get("ModelName", ""))
    except ClientError as exc:
        if error_code(exc) == "ValidationException":
            return {}
        raise
    container: dict[str, Any] = model.get("PrimaryContainer", {})
    return container
