"""``invoke --async``: one ``InvokeEndpointAsync`` request, its input in S3, and (``--wait``) its
answer or failure fetched from S3 once it appears.

An asynchronous endpoint answers at once with where the answer will be
(``X-Amzn-SageMaker-OutputLocation``) and where a failure would be
(``X-Amzn-SageMaker-FailureLocation``); the answer comes later, as an S3 object. The same code
reaches SageMaker and ``python -m deploy local`` on an asynchronous definition
(deploy/asyncfront.py).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from deploy.aws import error_code
from deploy.errors import DeployError
from deploy.invoke import InvokeError, answered
from deploy.s3paths import S3Path

logger = logging.getLogger(__name__)

MISSING = frozenset({"NoSuchKey", "404", "NotFound"})
MIN_TIMEOUT, MAX_TIMEOUT = 1, 3600  # InvocationTimeoutSeconds, as botocore's model bounds it


class AsyncFailedError(InvokeError):
    """The inference failed: its failure object appeared (the message is its text)."""


@dataclass(frozen=True, slots=True)
class AsyncInvocation:
    """One asynchronous request: where its input is, and the runtime headers."""

    input_location: str
    content_type: str = "application/json"
    accept: str | None = None
    custom_attributes: str | None = None
    inference_id: str | None = None
    invocation_timeout: int | None = None

    def params(self, endpoint: str) -> dict[str, Any]:
        """The ``InvokeEndpointAsync`` parameters, optional ones left out when not set.

        Raises:
            DeployError: the invocation timeout is outside 1-3600 s.
        """
        timeout = self.invocation_timeout
        if timeout is not None and not MIN_TIMEOUT <= timeout <= MAX_TIMEOUT:
            raise DeployError(
                f"--invocation-timeout must be {MIN_TIMEOUT}-{MAX_TIMEOUT} seconds, not {timeout}"
            )
        optional = {
            "Accept": self.accept,
            "CustomAttributes": self.custom_attributes,
            "InferenceId": self.inference_id,
            "InvocationTimeoutSeconds": timeout,
        }
        return {
            "EndpointName": endpoint,
            "InputLocation": self.input_location,
            "ContentType": self.content_type,
            **{key: value for key, value in optional.items() if value is not None},
        }


@dataclass(frozen=True, slots=True)
class AsyncReceipt:
    """What the endpoint answered at once: the request's id and where its outcome will be."""

    inference_id: str
    output_location: str
    failure_location: str | None


def input_location(bucket: str, endpoint: str) -> S3Path:
    """Where ``invoke --async`` puts a request body it uploads: a fresh key per request."""
    return S3Path(bucket, f"async/{endpoint}/input/{uuid.uuid4()}")


def upload_input(s3: Any, where: S3Path, body: bytes, content_type: str) -> str:
    """Put the request body at ``where``; returns its ``s3://`` URL."""
    s3.put_object(Bucket=where.bucket, Key=where.key, Body=body, ContentType=content_type)
    return str(where)


def invoke_async(client: Any, endpoint: str, invocation: AsyncInvocation) -> AsyncReceipt:
    """Call ``InvokeEndpointAsync``; a refusal becomes ``InvokeError`` with its message."""
    try:
        response = client.invoke_endpoint_async(**invocation.params(endpoint))
    except ClientError as exc:
        raise answered(endpoint, exc) from exc
    return AsyncReceipt(
        inference_id=str(response.get("InferenceId", "")),
        output_location=str(response["OutputLocation"]),
        failure_location=response.get("FailureLocation"),
    )


def await_outcome(
    s3: Any,
    receipt: AsyncReceipt,
    timeout: float,
    poll: float,
    sleep: Callable[[float], None] = time.sleep,
) -> bytes:
    """Poll S3 until the answer or the failure appears; returns the answer's bytes.

    Raises:
        AsyncFailedError: the failure object appeared; its text, on one line, is the message.
        InvokeError: neither appeared within ``timeout`` seconds.
    """
    output = S3Path.parse(receipt.output_location, "OutputLocation")
    failure = (
        S3Path.parse(receipt.failure_location, "FailureLocation")
        if receipt.failure_location
        else None
    )
    deadline = time.monotonic() + timeout
    while True:
        answer = _fetch(s3, output)
        if answer is not None:
            return answer
        failed = _fetch(s3, failure) if failure is not None else None
        if failed is not None:
            text = " ".join(failed.decode("utf-8", "replace").split())
            raise AsyncFailedError(f"inference {receipt.inference_id} failed: {text}")
        if time.monotonic() >= deadline:
            raise InvokeError(
                f"no answer at {output} within {timeout:g} s (inference {receipt.inference_id}); "
                "it may still come"
            )
        sleep(poll)


def _fetch(s3: Any, where: S3Path) -> bytes | None:
    try:
        response = s3.get_object(Bucket=where.bucket, Key=where.key)
    except ClientError as exc:
        if error_code(exc) in MISSING:
            return None
        raise
    body: bytes = response["Body"].read()
    return body
