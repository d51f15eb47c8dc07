"""``invoke``: one request through ``sagemaker-runtime``, to SageMaker or to a local server."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from botocore.exceptions import ClientError

from deploy.aws import make_client
from deploy.errors import DeployError

LOOPBACK = ("localhost", "127.0.0.1", "::1")


class InvokeError(DeployError):
    """The endpoint answered with an error (for the container's own errors: ModelError)."""


@dataclass(frozen=True, slots=True)
class Invocation:
    """One request: body and the SageMaker runtime headers.

    ``target_model`` picks the archive of a multi-model endpoint (``x.tar.gz`` under its prefix);
    boto3 sends it as ``X-Amzn-SageMaker-Target-Model``.
    """

    body: bytes
    content_type: str = "application/json"
    accept: str | None = None
    custom_attributes: str | None = None
    target_model: str | None = None

    def params(self, endpoint: str) -> dict[str, Any]:
        """The ``InvokeEndpoint`` parameters, optional headers left out when not set."""
        optional = {
            "Accept": self.accept,
            "CustomAttributes": self.custom_attributes,
            "TargetModel": self.target_model,
        }
        return {
            "EndpointName": endpoint,
            "Body": self.body,
            "ContentType": self.content_type,
            **{key: value for key, value in optional.items() if value},
        }


@dataclass(frozen=True, slots=True)
class Answer:
    """The response: body, content type, custom attributes the model set."""

    body: bytes
    content_type: str
    custom_attributes: str | None


def runtime_client(region: str | None, endpoint_url: str | None) -> Any:
    """A ``sagemaker-runtime`` client; a loopback ``endpoint_url`` needs no AWS credentials."""
    local = endpoint_url is not None and urlsplit(endpoint_url).hostname in LOOPBACK
    return make_client(
        "sagemaker-runtime",
        region or "us-east-1" if local else region,
        endpoint_url,
        unsigned=local,
    )


def invoke(client: Any, endpoint: str, invocation: Invocation) -> Answer:
    """Call ``InvokeEndpoint``; a container error becomes ``InvokeError`` with its message."""
    try:
        response = client.invoke_endpoint(**invocation.params(endpoint))
    except ClientError as exc:
        error = exc.response.get("Error", {})
        status = exc.response.get("OriginalStatusCode") or exc.response.get(
            "ResponseMetadata", {}
        ).get("HTTPStatusCode")
        raise InvokeError(
            f"{endpoint} answered {status}: {error.get('Code', '')}: {error.get('Message', '')}"
        ) from exc
    return Answer(
        body=response["Body"].read(),
        content_type=str(response.get("ContentType", "")),
        custom_attributes=response.get("CustomAttributes"),
    )
