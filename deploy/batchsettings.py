"""A local batch transform's settings: what SageMaker tells the container, what the container's
``/execution-parameters`` answers, and the two combined (flags first, then the reply, then
SageMaker's defaults).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import urllib3

from deploy.transform import DEFAULT_PAYLOAD_MB, STRATEGIES, TransformJob, canonical

MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Settings:
    """The job's settings once the flags, the server's ``/execution-parameters`` and the
    defaults are combined (in that order, as SageMaker does)."""

    strategy: str
    payload_bytes: int
    concurrency: int


def server_environment(job: TransformJob) -> dict[str, str]:
    """What SageMaker sets in a transform job's container: always ``SAGEMAKER_BATCH``, the rest
    only when the job gives them."""
    environment = {"SAGEMAKER_BATCH": "true"}
    if job.max_payload_mb is not None:
        environment["SAGEMAKER_MAX_PAYLOAD_IN_MB"] = str(job.max_payload_mb)
    if job.batch_strategy is not None:
        environment["SAGEMAKER_BATCH_STRATEGY"] = (
            "MULTI_RECORD" if job.batch_strategy == "MultiRecord" else "SINGLE_RECORD"
        )
    if job.max_concurrent is not None:
        environment["SAGEMAKER_MAX_CONCURRENT_TRANSFORMS"] = str(job.max_concurrent)
    return environment


def execution_parameters(pool: urllib3.PoolManager, url: str) -> dict[str, Any]:
    """The server's ``GET /execution-parameters`` reply; {} when it has none."""
    try:
        response = pool.request("GET", f"{url}/execution-parameters", retries=False, timeout=10)
    except urllib3.exceptions.HTTPError:
        return {}
    if response.status != 200:
        return {}
    try:
        reply = json.loads(response.data)
    except ValueError:
        return {}
    return reply if isinstance(reply, dict) else {}


def resolve(job: TransformJob, reply: Mapping[str, Any]) -> Settings:
    """Flags, else the server's reply, else SageMaker's defaults (SingleRecord, 6 MB, 1)."""
    try:
        answered = canonical(str(reply["BatchStrategy"]), STRATEGIES, "BatchStrategy")
    except Exception:  # absent or a spelling neither SageMaker nor its SDK takes
        answered = None
    strategy = job.batch_strategy or answered or "SingleRecord"
    if job.split_type == "None":
        strategy = "SingleRecord"  # each object is one record
    payload = job.max_payload_mb or _positive(reply.get("MaxPayloadInMB")) or DEFAULT_PAYLOAD_MB
    concurrency = job.max_concurrent or _positive(reply.get("MaxConcurrentTransforms")) or 1
    return Settings(strategy, payload * MIB, concurrency)


def _positive(value: Any) -> int | None:
    return value if isinstance(value, int) and value > 0 else None
