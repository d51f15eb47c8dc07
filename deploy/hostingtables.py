"""An endpoint definition's hosting-mode tables: ``[async]``, ``[serverless]``, ``[autoscaling]``.

Each table's values, and what each hosting mode refuses: an asynchronous endpoint's S3 paths and
SNS topics, a serverless endpoint's memory and concurrency (and no accelerator), the autoscaling
target that fits the mode. See docs/async.md and docs/serverless.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploy.tomltables import DefinitionError, check_between, typed

# IncludeInferenceResponseIn's values, by the short names a definition may also use.
RESPONSE_TOPICS = {
    "success": "SUCCESS_NOTIFICATION_TOPIC",
    "error": "ERROR_NOTIFICATION_TOPIC",
}
SERVERLESS_MEMORY_MB = (1024, 2048, 3072, 4096, 5120, 6144)
MAX_SERVERLESS_CONCURRENCY = 200
MAX_ASYNC_TIMEOUT = 3600  # seconds, SageMaker's InvocationTimeoutSeconds bound
# Accelerated instance families (GPU, Inferentia, Trainium): serverless has none of them.
ACCELERATED_INSTANCE = re.compile(r"^ml\.(p|g|inf|trn)\d")
# The [autoscaling] keys that mean something for each hosting mode.
_SCALING_KEYS = {
    "real-time": {"target_invocations_per_instance"},
    "async": {"target_backlog_per_instance"},
    "serverless": {"target_provisioned_concurrency_utilization"},
}


@dataclass(frozen=True, slots=True)
class Autoscaling:
    """Application Auto Scaling bounds and target for the ``AllTraffic`` variant.

    A real-time endpoint tracks invocations per instance; an asynchronous one tracks its queue
    (``target_backlog_per_instance``) and may scale to ``min_capacity = 0``; a serverless one
    scales its provisioned concurrency (the bounds count it, not instances) to keep
    ``target_provisioned_concurrency_utilization`` of it busy.
    """

    min_capacity: int = 1
    max_capacity: int = 1
    target_invocations_per_instance: float = 100.0
    scale_in_cooldown: int = 300
    scale_out_cooldown: int = 60
    target_backlog_per_instance: float = 5.0
    target_provisioned_concurrency_utilization: float = 0.5


@dataclass(frozen=True, slots=True)
class AsyncInference:
    """An ``[async]`` table: the endpoint takes only ``InvokeEndpointAsync``.

    ``output_path`` (and ``failure_path``) are ``s3://`` prefixes; None means the default under the
    bucket, ``s3://BUCKET/async/NAME/output`` (``.../failures``). ``include_response_in`` holds
    SageMaker's names (``SUCCESS_NOTIFICATION_TOPIC``, ``ERROR_NOTIFICATION_TOPIC``).
    ``invocation_timeout`` is the default ``InvocationTimeoutSeconds`` of ``invoke --async`` and the
    container's per-request timeout.
    """

    output_path: str | None = None
    failure_path: str | None = None
    success_topic: str | None = None
    error_topic: str | None = None
    include_response_in: tuple[str, ...] = ()
    max_concurrent_invocations_per_instance: int | None = None
    invocation_timeout: int = 900

    def output_prefix(self, bucket: str | None, endpoint: str) -> str:
        """Where answers go: ``output_path``, else ``s3://BUCKET/async/ENDPOINT/output``.

        Raises:
            DefinitionError: no ``output_path`` and no bucket to put the default under.
        """
        return self._prefix(self.output_path, bucket, endpoint, "output")

    def failure_prefix(self, bucket: str | None, endpoint: str) -> str:
        """Where failures go: ``failure_path``, else ``s3://BUCKET/async/ENDPOINT/failures``."""
        return self._prefix(self.failure_path, bucket, endpoint, "failures")

    @staticmethod
    def _prefix(path: str | None, bucket: str | None, endpoint: str, leaf: str) -> str:
        if path is not None:
            return path.rstrip("/")
        if not bucket:
            raise DefinitionError(
                f"[async] of {endpoint}: set `output_path`, or a bucket (--bucket, "
                "BYOSERVE_BUCKET or [aws] bucket) to put the answers under"
            )
        return f"s3://{bucket}/async/{endpoint}/{leaf}"


@dataclass(frozen=True, slots=True)
class Serverless:
    """A ``[serverless]`` table: the variant gets a ``ServerlessConfig`` instead of instances."""

    memory_mb: int
    max_concurrency: int
    provisioned_concurrency: int | None = None


def parse_autoscaling(table: dict[str, Any], where: str) -> Autoscaling | None:
    """The ``[autoscaling]`` table; absent or empty means no autoscaling."""
    if not table:
        return None
    scaling = Autoscaling(
        min_capacity=typed(table, "min_capacity", int, 1, where),
        max_capacity=typed(table, "max_capacity", int, 1, where),
        target_invocations_per_instance=typed(
            table, "target_invocations_per_instance", float, 100.0, where
        ),
        scale_in_cooldown=typed(table, "scale_in_cooldown", int, 300, where),
        scale_out_cooldown=typed(table, "scale_out_cooldown", int, 60, where),
        target_backlog_per_instance=typed(table, "target_backlog_per_instance", float, 5.0, where),
        target_provisioned_concurrency_utilization=typed(
            table, "target_provisioned_concurrency_utilization", float, 0.5, where
        ),
    )
    if not 0 <= scaling.min_capacity <= scaling.max_capacity or scaling.max_capacity < 1:
        raise DefinitionError(f"{where}: need 0 <= min_capacity <= max_capacity, max >= 1")
    return scaling


def check_scaling(
    scaling: Autoscaling | None,
    mode: str,
    serverless: Serverless | None,
    table: dict[str, Any],
    where: str,
) -> None:
    """Refuse what the endpoint's hosting mode cannot scale: zero outside async, instances on
    serverless (only provisioned concurrency scales there), another mode's target."""
    if scaling is None:
        return
    foreign = sorted(
        key for other, keys in _SCALING_KEYS.items() if other != mode for key in keys & set(table)
    )
    if foreign:
        raise DefinitionError(
            f"{where}: `{foreign[0]}` does not apply to a {mode} endpoint "
            f"(its target is `{min(_SCALING_KEYS[mode])}`)"
        )
    if scaling.min_capacity == 0 and mode != "async":
        raise DefinitionError(
            f"{where}: min_capacity = 0 (scale to zero) is for [async] endpoints only"
        )
    if serverless is None:
        return
    if serverless.provisioned_concurrency is None:
        raise DefinitionError(
            f"{where}: a serverless endpoint scales itself; [autoscaling] scales only "
            "provisioned concurrency: set [serverless] provisioned_concurrency, or remove it"
        )
    if scaling.max_capacity > serverless.max_concurrency:
        raise DefinitionError(
            f"{where}: max_capacity (provisioned concurrency) must be at most [serverless] "
            f"max_concurrency ({serverless.max_concurrency})"
        )
    if not 0.1 <= scaling.target_provisioned_concurrency_utilization <= 0.9:
        raise DefinitionError(
            f"{where}: `target_provisioned_concurrency_utilization` must be 0.1-0.9"
        )


def _s3_path(table: dict[str, Any], key: str, where: str) -> str | None:
    value: str | None = typed(table, key, str, None, where)
    if value is not None and not value.startswith("s3://"):
        raise DefinitionError(f"{where}: `{key}` must be an s3:// path, not {value!r}")
    return value


def _topic(table: dict[str, Any], key: str, where: str) -> str | None:
    value: str | None = typed(table, key, str, None, where)
    if value is not None and not (value.startswith("arn:") and ":sns:" in value):
        raise DefinitionError(f"{where}: `{key}` must be an SNS topic ARN, not {value!r}")
    return value


def parse_async_inference(table: dict[str, Any] | None, where: str) -> AsyncInference | None:
    """The ``[async]`` table; present and empty means asynchronous with every default."""
    if table is None:
        return None
    topics = typed(table, "include_response_in", list, [], where)
    included = []
    for topic in topics:
        name = RESPONSE_TOPICS.get(str(topic).lower(), str(topic))
        if name not in RESPONSE_TOPICS.values():
            raise DefinitionError(
                f"{where}: `include_response_in` takes success, error or "
                f"{' / '.join(RESPONSE_TOPICS.values())}, not {topic!r}"
            )
        included.append(name)
    concurrency = typed(table, "max_concurrent_invocations_per_instance", int, None, where)
    check_between(concurrency, 1, 1000, "max_concurrent_invocations_per_instance", where)
    timeout = typed(table, "invocation_timeout", int, 900, where)
    check_between(timeout, 1, MAX_ASYNC_TIMEOUT, "invocation_timeout", where)
    topic_arns = {key: _topic(table, key, where) for key in ("success_topic", "error_topic")}
    for name in included:
        key = "success_topic" if name == RESPONSE_TOPICS["success"] else "error_topic"
        if topic_arns[key] is None:
            raise DefinitionError(f"{where}: `include_response_in` names {name}: set `{key}`")
    return AsyncInference(
        output_path=_s3_path(table, "output_path", where),
        failure_path=_s3_path(table, "failure_path", where),
        success_topic=topic_arns["success_topic"],
        error_topic=topic_arns["error_topic"],
        include_response_in=tuple(dict.fromkeys(included)),
        max_concurrent_invocations_per_instance=concurrency,
        invocation_timeout=timeout,
    )


def parse_serverless(table: dict[str, Any] | None, where: str) -> Serverless | None:
    """The ``[serverless]`` table; None when the definition has none."""
    if table is None:
        return None
    memory = typed(table, "memory_mb", int, None, where)
    if memory not in SERVERLESS_MEMORY_MB:
        raise DefinitionError(
            f"{where}: `memory_mb` must be one of {', '.join(map(str, SERVERLESS_MEMORY_MB))}, "
            f"not {memory}"
        )
    concurrency = typed(table, "max_concurrency", int, None, where)
    if concurrency is None:
        raise DefinitionError(f"{where}: needs `max_concurrency` (1-200)")
    check_between(concurrency, 1, MAX_SERVERLESS_CONCURRENCY, "max_concurrency", where)
    provisioned = typed(table, "provisioned_concurrency", int, None, where)
    check_between(provisioned, 1, concurrency, "provisioned_concurrency", where)
    return Serverless(memory, concurrency, provisioned)


def check_serverless_hardware(
    source: Path, instance_type: str, dockerfile: str, endpoint: dict[str, Any]
) -> None:
    """Serverless runs on CPUs only: no accelerated instance type, no GPU image."""
    if "instance_type" in endpoint and ACCELERATED_INSTANCE.match(instance_type):
        raise DefinitionError(
            f"{source}: a serverless endpoint has no GPU or accelerator: "
            f"[endpoint] instance_type {instance_type} cannot be served serverless"
        )
    if "gpu" in dockerfile.lower():
        raise DefinitionError(
            f"{source}: a serverless endpoint has no GPU: build the CPU image "
            f'([image] dockerfile = "Dockerfile"), not {dockerfile}'
        )
