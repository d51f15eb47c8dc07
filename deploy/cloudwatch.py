"""CloudWatch Logs: the tail of an endpoint's container logs, ``/aws/sagemaker/Endpoints/NAME``."""

from __future__ import annotations

import time
from collections.abc import Iterator

from botocore.exceptions import ClientError

from deploy.aws import Aws, error_code


def log_group(endpoint_name: str) -> str:
    """Where SageMaker sends the containers' stdout and stderr."""
    return f"/aws/sagemaker/Endpoints/{endpoint_name}"


def _recent_streams(aws: Aws, group: str, count: int, prefix: str) -> list[str]:
    # CloudWatch cannot order by last event and filter by a prefix in one request.
    order: dict[str, object] = (
        {"logStreamNamePrefix": prefix}
        if prefix
        else {"orderBy": "LastEventTime", "descending": True, "limit": count}
    )
    response = aws.call("logs", "describe_log_streams", logGroupName=group, **order)
    streams = response.get("logStreams", [])
    if prefix:
        streams = sorted(streams, key=lambda s: s.get("lastEventTimestamp", 0), reverse=True)
    return [stream["logStreamName"] for stream in streams[:count]]


def tail_events(aws: Aws, endpoint_name: str, lines: int = 50, streams: int = 5) -> list[str]:
    """The last ``lines`` events across the ``streams`` most recent streams, oldest first.

    Each line reads ``TIME STREAM MESSAGE``. An endpoint that never started has no group: [].
    """
    return tail_group(aws, log_group(endpoint_name), lines, streams)


def tail_group(
    aws: Aws, group: str, lines: int = 50, streams: int = 5, prefix: str = ""
) -> list[str]:
    """``tail_events`` of any log group, its streams limited to those named ``prefix...``
    (a transform job's streams start with the job's name)."""
    try:
        names = _recent_streams(aws, group, streams, prefix)
    except ClientError as exc:
        if error_code(exc) == "ResourceNotFoundException":
            return []
        raise
    events: list[tuple[int, str, str]] = []
    for name in names:
        response = aws.call(
            "logs",
            "get_log_events",
            logGroupName=group,
            logStreamName=name,
            limit=lines,
            startFromHead=False,
        )
        events += [(e["timestamp"], name, e["message"].rstrip()) for e in response["events"]]
    events.sort()
    return [f"{_clock(stamp)} {name} {message}" for stamp, name, message in events[-lines:]]


def _clock(millis: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(millis / 1000))


def format_tail(aws: Aws, endpoint_name: str, lines: int = 50) -> Iterator[str]:
    """Lines to print for ``logs`` and after a failure, with a note when there are none."""
    found = tail_events(aws, endpoint_name, lines)
    if not found:
        yield f"(no log events in {log_group(endpoint_name)})"
    yield from found
