"""Asynchronous and serverless endpoints: what each adds to a release, and what is refused first.

An ``[async]`` definition's endpoint config carries an ``AsyncInferenceConfig``; a ``[serverless]``
one's variant carries a ``ServerlessConfig`` instead of instances. The container's environment
follows the mode (async: requests up to 1 GB and the invocation timeout; serverless: one worker,
``BYOSERVE_SERVERLESS``), unless the definition's ``[environment]`` says otherwise. What
serverless cannot run is refused in one line before anything is created. See docs/serverless.md
and docs/async.md.
"""

from __future__ import annotations

import re
from typing import Any

from botocore.exceptions import ClientError

from deploy.aws import Aws, error_code
from deploy.definitions import EndpointDefinition
from deploy.errors import DeployError
from deploy.hostingtables import AsyncInference, Serverless
from serve.config import ServingConfig

# SageMaker's asynchronous payload limit, 1 GB [smdg:async-inference.md].
ASYNC_MAX_REQUEST_SIZE = 1_000_000_000
# The largest image a serverless endpoint runs [smdg:serverless-endpoints.md].
SERVERLESS_MAX_IMAGE_BYTES = 10 * 1000**3
ECR_IMAGE = re.compile(
    r"^(?P<account>\d{12})\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com(?:\.cn)?/"
    r"(?P<repository>[^@:]+)(?:@(?P<digest>sha256:[0-9a-f]{64})|:(?P<tag>[\w][\w.-]*))?$"
)


class HostingRefusedError(DeployError):
    """The definition asks for something its hosting mode cannot do."""


def _variable(setting: str) -> str:
    """The container's environment variable for a server setting (named once, in the config)."""
    return str(ServingConfig.spec(setting).metadata["env"][0])


def _set_by(environment: dict[str, str], *settings: str) -> bool:
    return any(ServingConfig.set_in_environment(setting, environment) for setting in settings)


def container_environment(definition: EndpointDefinition) -> dict[str, str]:
    """The definition's ``[environment]`` with the defaults its hosting mode needs under it."""
    environment = dict(definition.environment)
    defaults: dict[str, str] = {}
    if definition.async_inference is not None:
        if not _set_by(environment, "max_request_size", "max_payload_mb"):
            defaults[_variable("max_request_size")] = str(ASYNC_MAX_REQUEST_SIZE)
        if not _set_by(environment, "timeout"):
            defaults[_variable("timeout")] = str(definition.async_inference.invocation_timeout)
    if definition.serverless is not None:
        if not _set_by(environment, "workers"):
            defaults[_variable("workers")] = "1"
        if not _set_by(environment, "serverless"):
            defaults[_variable("serverless")] = "true"
    return {**defaults, **environment}


def async_inference_config(
    spec: AsyncInference, bucket: str | None, endpoint: str
) -> dict[str, Any]:
    """``AsyncInferenceConfig`` as ``CreateEndpointConfig`` takes it; only what is set."""
    output: dict[str, Any] = {
        "S3OutputPath": spec.output_prefix(bucket, endpoint),
        "S3FailurePath": spec.failure_prefix(bucket, endpoint),
    }
    notification = {
        key: value
        for key, value in (
            ("SuccessTopic", spec.success_topic),
            ("ErrorTopic", spec.error_topic),
            ("IncludeInferenceResponseIn", list(spec.include_response_in) or None),
        )
        if value
    }
    if notification:
        output["NotificationConfig"] = notification
    config: dict[str, Any] = {"OutputConfig": output}
    if spec.max_concurrent_invocations_per_instance is not None:
        config["ClientConfig"] = {
            "MaxConcurrentInvocationsPerInstance": spec.max_concurrent_invocations_per_instance
        }
    return config


def serverless_config(spec: Serverless) -> dict[str, int]:
    """A variant's ``ServerlessConfig``; ``ProvisionedConcurrency`` only when set."""
    config = {"MemorySizeInMB": spec.memory_mb, "MaxConcurrency": spec.max_concurrency}
    if spec.provisioned_concurrency is not None:
        config["ProvisionedConcurrency"] = spec.provisioned_concurrency
    return config


def check_serverless_image(aws: Aws, image_uri: str) -> int | None:
    """Refuse an image a serverless endpoint cannot pull or hold; returns its size in bytes.

    The size is ECR's ``imageSizeInBytes`` of the pushed image (what exists at create time,
    without a container engine). ECR counts the compressed layers, so an image it reports under
    10 GB can still be over the limit unpacked; one it reports over is surely too large.

    Raises:
        HostingRefusedError: not an ECR image, not in ECR, or over 10 GB.
    """
    match = ECR_IMAGE.match(image_uri)
    if match is None:
        raise HostingRefusedError(
            f"image {image_uri}: a serverless endpoint pulls only from ECR (SageMaker refuses "
            "other registries): push it with `python -m deploy push`"
        )
    digest, tag = match["digest"], match["tag"] or "latest"
    image = {"imageDigest": digest} if digest else {"imageTag": tag}
    try:
        found = aws.call(
            "ecr",
            "describe_images",
            registryId=match["account"],
            repositoryName=match["repository"],
            imageIds=[image],
        )
    except ClientError as exc:
        if error_code(exc) not in ("ImageNotFoundException", "RepositoryNotFoundException"):
            raise
        raise HostingRefusedError(
            f"image {image_uri} is not in ECR: push it (`python -m deploy push`) before "
            "creating a serverless endpoint"
        ) from exc
    details = found.get("imageDetails") or [{}]
    size = details[0].get("imageSizeInBytes")
    if size is not None and size > SERVERLESS_MAX_IMAGE_BYTES:
        raise HostingRefusedError(
            f"image {image_uri} is {size / 1000**3:.1f} GB in ECR: a serverless endpoint "
            "runs images up to 10 GB"
        )
    return int(size) if size is not None else None


def check_mode_change(aws: Aws, definition: EndpointDefinition, found: dict[str, Any]) -> None:
    """Refuse moving a running real-time endpoint to serverless, which SageMaker rejects.

    Args:
        found: the endpoint's ``DescribeEndpoint``.
    """
    if definition.serverless is None or found.get("EndpointStatus") == "Failed":
        return
    config = aws.call(
        "sagemaker", "describe_endpoint_config", EndpointConfigName=found["EndpointConfigName"]
    )
    if any("ServerlessConfig" not in item for item in config.get("ProductionVariants", [])):
        raise HostingRefusedError(
            f"{definition.name} runs on instances and SageMaker cannot update it to serverless: "
            f"`python -m deploy delete-endpoint {definition.name}` first, then create it"
        )
