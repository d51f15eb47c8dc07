"""Endpoint lifecycle: create, update blue/green with rollback, wait, report failures, delete.

An update creates a new model and config, points the endpoint at them (SageMaker brings the new
fleet up before moving traffic), and once it is ``InService`` deletes the previous releases, so an
endpoint only ever owns the release it runs. If the new fleet fails, the endpoint is sent back to
the previous config and the new release is deleted.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

from botocore.exceptions import ClientError

from deploy.aws import Aws, error_code
from deploy.cloudwatch import format_tail
from deploy.errors import EndpointFailedError
from deploy.release import (
    Release,
    create_release,
    delete_release,
    release_fingerprint,
    tagged,
)

SETTLED = ("InService", "Failed", "OutOfService")


@dataclass(frozen=True, slots=True)
class Waiting:
    """How to wait: poll interval and limit in seconds, where progress lines go."""

    poll: float = 15.0
    timeout: float = 3600.0
    out: TextIO = field(default_factory=lambda: sys.stdout)
    enabled: bool = True


def describe_endpoint(aws: Aws, name: str) -> dict[str, Any] | None:
    """``DescribeEndpoint``, or None when there is no such endpoint."""
    try:
        return aws.call("sagemaker", "describe_endpoint", EndpointName=name)
    except ClientError as exc:
        if error_code(exc) == "ValidationException" and "find" in str(exc).lower():
            return None
        raise


def wait_until_settled(aws: Aws, name: str, waiting: Waiting) -> dict[str, Any] | None:
    """Poll until the endpoint is InService, Failed or gone; one line per status change."""
    start = time.monotonic()
    last = None
    while True:
        found = describe_endpoint(aws, name)
        status = found["EndpointStatus"] if found else "Deleted"
        elapsed = time.monotonic() - start
        if status != last:
            print(f"[{elapsed:5.0f}s] {name}: {status}", file=waiting.out, flush=True)
            last = status
        if found is None or status in SETTLED:
            return found
        if elapsed > waiting.timeout:
            raise EndpointFailedError(
                f"{name} still {status} after {waiting.timeout:.0f} s; "
                f"see `python -m deploy status {name}`"
            )
        time.sleep(waiting.poll)


def report_failure(aws: Aws, name: str, found: dict[str, Any], out: TextIO) -> str:
    """Print FailureReason and the tail of the endpoint's logs; returns the reason."""
    reason = str(found.get("FailureReason") or "no FailureReason given")
    print(f"{name}: {found.get('EndpointStatus')}: {reason}", file=out)
    print(f"last log lines of /aws/sagemaker/Endpoints/{name}:", file=out)
    for line in format_tail(aws, name, lines=30):
        print(f"  {line}", file=out)
    out.flush()
    return reason


def _create(aws: Aws, release: Release, waiting: Waiting) -> str:
    config = create_release(aws, release)
    aws.call(
        "sagemaker",
        "create_endpoint",
        EndpointName=release.endpoint,
        EndpointConfigName=config,
        Tags=release.tags()[:1],
    )
    if aws.dry_run or not waiting.enabled:
        return config
    found = wait_until_settled(aws, release.endpoint, waiting)
    if found is None or found["EndpointStatus"] != "InService":
        reason = report_failure(aws, release.endpoint, found or {}, waiting.out)
        raise EndpointFailedError(
            f"endpoint {release.endpoint} failed to create: {reason} (kept for inspection; "
            f"`python -m deploy delete-endpoint {release.endpoint}` removes it)"
        )
    return config


def _update(aws: Aws, release: Release, previous: str, waiting: Waiting) -> str:
    config = create_release(aws, release)
    aws.call(
        "sagemaker", "update_endpoint", EndpointName=release.endpoint, EndpointConfigName=config
    )
    if aws.dry_run or not waiting.enabled:
        return config
    found = wait_until_settled(aws, release.endpoint, waiting) or {}
    if found.get("EndpointStatus") == "InService" and found.get("EndpointConfigName") == config:
        for old in set(tagged(aws, release.endpoint, "endpoint_config")) - {config}:
            delete_release(aws, old)
        return config
    reason = report_failure(aws, release.endpoint, found, waiting.out)
    if found.get("EndpointConfigName") != previous:
        print(f"rolling {release.endpoint} back to {previous}", file=waiting.out, flush=True)
        aws.call(
            "sagemaker",
            "update_endpoint",
            EndpointName=release.endpoint,
            EndpointConfigName=previous,
        )
        wait_until_settled(aws, release.endpoint, waiting)
    delete_release(aws, config)
    raise EndpointFailedError(
        f"update of {release.endpoint} failed: {reason}; it runs the previous config {previous}"
    )


def deploy_release(aws: Aws, release: Release, waiting: Waiting, *, force: bool = False) -> str:
    """Create the endpoint, or move it to ``release``; returns the config it runs.

    Running it again with nothing changed makes no new resources (unless ``force``).
    """
    found = describe_endpoint(aws, release.endpoint)
    if found and found["EndpointStatus"] not in SETTLED and waiting.enabled and not aws.dry_run:
        found = wait_until_settled(aws, release.endpoint, waiting)
    if found and found["EndpointStatus"] == "Failed":
        print(f"{release.endpoint} is Failed; deleting it to create it again", file=waiting.out)
        aws.call("sagemaker", "delete_endpoint", EndpointName=release.endpoint)
        if not aws.dry_run:
            wait_until_settled(aws, release.endpoint, waiting)
        found = None
    if found is None:
        return _create(aws, release, waiting)
    current = str(found["EndpointConfigName"])
    if not force and release_fingerprint(aws, current) == release.fingerprint:
        print(f"{release.endpoint} already runs this release ({current})", file=waiting.out)
        return current
    return _update(aws, release, current, waiting)


def delete_endpoint(aws: Aws, name: str, waiting: Waiting) -> list[str]:
    """Delete the endpoint and every config and model tagged for it; returns what was deleted."""
    deleted = []
    if describe_endpoint(aws, name) is not None:
        aws.call("sagemaker", "delete_endpoint", EndpointName=name)
        deleted.append(f"endpoint {name}")
        if waiting.enabled and not aws.dry_run:
            wait_until_settled(aws, name, waiting)
    configs = tagged(aws, name, "endpoint_config")
    models = tagged(aws, name, "model")
    for config in configs:
        aws.call("sagemaker", "delete_endpoint_config", EndpointConfigName=config)
        deleted.append(f"endpoint config {config}")
    for model in models:
        aws.call("sagemaker", "delete_model", ModelName=model)
        deleted.append(f"model {model}")
    return deleted
