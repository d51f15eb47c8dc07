"""``invoke``: one request through ``sagemaker-runtime``, to SageMaker or to a local server;
whole (``InvokeEndpoint``) or as a stream of pieces (``InvokeEndpointWithResponseStream``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from botocore.exceptions import ClientError, ResponseStreamingError
from urllib3.exceptions import HTTPError

from deploy.aws import make_client
from deploy.errors import DeployError

LOOPBACK = ("localhost", "127.0.0.1", "::1")


class InvokeError(DeployError):
    """The endpoint answered with an error (for the container's own errors: ModelError)."""


class StreamError(InvokeError):
    """A stream that had begun ended in an error (``ModelStreamError``) or broke off."""


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

    def stream_params(self, endpoint: str) -> dict[str, Any]:
        """The ``InvokeEndpointWithResponseStream`` parameters: the same, never a TargetModel.

        Raises:
            DeployError: a target model is set (multi-model endpoints cannot stream).
        """
        if self.target_model:
            raise DeployError(
                "--stream cannot go to a --target-model: multi-model endpoints do not stream"
            )
        return self.params(endpoint)


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


def answered(endpoint: str, exc: ClientError) -> InvokeError:
    """The endpoint's refusal in one line: its status, error code and message."""
    error = exc.response.get("Error", {})
    metadata = exc.response.get("ResponseMetadata", {})
    status = exc.response.get("OriginalStatusCode") or metadata.get("HTTPStatusCode")
    message = " ".join(str(error.get("Message", "")).split())  # one line, as the CLI prints
    return InvokeError(f"{endpoint} answered {status}: {error.get('Code', '')}: {message}")


def invoke(client: Any, endpoint: str, invocation: Invocation) -> Answer:
    """Call ``InvokeEndpoint``; a container error becomes ``InvokeError`` with its message."""
    try:
        response = client.invoke_endpoint(**invocation.params(endpoint))
    except ClientError as exc:
        raise answered(endpoint, exc) from exc
    return Answer(
        body=response["Body"].read(),
        content_type=str(response.get("ContentType", "")),
        custom_attributes=response.get("CustomAttributes"),
    )


def invoke_stream(
    client: Any, endpoint: str, invocation: Invocation, write: Callable[[bytes], None]
) -> Answer:
    """Call ``InvokeEndpointWithResponseStream``; ``write`` gets each piece as it arrives.

    Returns:
        The answer's content type and custom attributes; its ``body`` is empty (the pieces went
        to ``write``).

    Raises:
        InvokeError: the endpoint refused the request before any piece (e.g. ``ModelError``).
        StreamError: an error event (``ModelStreamError``, ``InternalStreamFailure``) came
            after the stream began, or the connection broke off.
    """
    try:
        response = client.invoke_endpoint_with_response_stream(**invocation.stream_params(endpoint))
    except ClientError as exc:
        raise answered(endpoint, exc) from exc
    try:
        for event in response["Body"]:
            part = event.get("PayloadPart")
            if part is not None:  # other event types are for newer clients: skipped, as boto3
                write(part["Bytes"])
    except ClientError as exc:  # EventStreamError: the stream's exception event
        error = exc.response.get("Error", {})
        raise StreamError(
            f"{endpoint} stream failed: {error.get('Code', '')}: {error.get('Message', '')}"
        ) from exc
    except (HTTPError, ResponseStreamingError) as exc:
        raise StreamError(f"{endpoint} stream broke off: {exc}") from exc
    return Answer(
        body=b"",
        content_type=str(response.get("ContentType", "")),
        custom_attributes=response.get("CustomAttributes"),
    )
