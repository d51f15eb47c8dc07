"""Endpoint definitions: one small TOML file per endpoint, kept in ``endpoints/``.

A definition says what to deploy (one model archive, or for a multi-model endpoint several, and
the image repository), on what (instance type and count, timeouts), with which container
environment and autoscaling bounds. Relative paths are relative to the project root, the directory
that holds ``endpoints/``. See docs/deploy.md.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deploy.errors import DeployError

NAME_PATTERN = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,39}$")
TARGET_PATTERN = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9._-]{0,200}\.tar\.gz$")
SINGLE_MODEL, MULTI_MODEL = "single-model", "multi-model"
# The keys each table may hold; [environment] is free-form.
KNOWN_KEYS = {
    "model": {"mode", "archive", "archives", "make_target"},
    "image": {"repository", "dockerfile"},
    "endpoint": {
        "instance_type",
        "instance_count",
        "startup_health_check_timeout",
        "model_data_download_timeout",
    },
    "autoscaling": {
        "min_capacity",
        "max_capacity",
        "target_invocations_per_instance",
        "target_backlog_per_instance",
        "target_provisioned_concurrency_utilization",
        "scale_in_cooldown",
        "scale_out_cooldown",
    },
    "aws": {"region", "role_arn", "bucket"},
    "async": {
        "output_path",
        "failure_path",
        "success_topic",
        "error_topic",
        "include_response_in",
        "max_concurrent_invocations_per_instance",
        "invocation_timeout",
    },
    "serverless": {"memory_mb", "max_concurrency", "provisioned_concurrency"},
}
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
KNOWN_TABLES = set(KNOWN_KEYS) | {"environment"}


class DefinitionError(DeployError):
    """The definition file is missing or holds a value that cannot be used."""


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


@dataclass(frozen=True, slots=True)
class TargetArchive:
    """One archive of a multi-model endpoint and its name under the endpoint's S3 prefix.

    The name is what callers pass as ``TargetModel`` to ``InvokeEndpoint``.
    """

    path: Path
    name: str


@dataclass(frozen=True, slots=True)
class EndpointDefinition:
    """One endpoint, as read from ``endpoints/NAME.toml``.

    A single-model endpoint has one ``archive``; a multi-model one (``mode = "multi-model"``) has
    ``targets`` and no ``archive``.
    """

    name: str
    source: Path
    archive: Path | None = None
    mode: str = SINGLE_MODEL
    targets: tuple[TargetArchive, ...] = ()
    make_target: str | None = None
    repository: str = "byoserve"
    dockerfile: str = "Dockerfile"
    instance_type: str = "ml.m5.large"
    instance_count: int = 1
    startup_health_check_timeout: int = 600
    model_data_download_timeout: int = 600
    environment: dict[str, str] = field(default_factory=dict)
    autoscaling: Autoscaling | None = None
    region: str | None = None
    role_arn: str | None = None
    bucket: str | None = None
    async_inference: AsyncInference | None = None
    serverless: Serverless | None = None

    @property
    def multi_model(self) -> bool:
        """Whether the endpoint serves several archives, chosen per request by ``TargetModel``."""
        return self.mode == MULTI_MODEL

    @property
    def hosting(self) -> str:
        """``real-time``, ``async`` or ``serverless``: how SageMaker hosts the endpoint."""
        if self.serverless is not None:
            return "serverless"
        return "real-time" if self.async_inference is None else "async"

    @property
    def archive_hint(self) -> str:
        """How to produce the archive, for error messages."""
        if self.make_target:
            return f"build it with `make {self.make_target}`"
        return f"set [model] {'archives' if self.multi_model else 'archive'} in {self.source}"


def check_target_name(name: str, where: str) -> str:
    """``name`` if it can be a multi-model target (an S3 key under the prefix), else an error."""
    if not TARGET_PATTERN.match(name):
        raise DefinitionError(
            f"{where}: archive name {name!r}: use letters, digits, '.', '_' and '-', ending in "
            ".tar.gz (it is the TargetModel of the invocations)"
        )
    return name


def _table(data: dict[str, Any], key: str, source: Path) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise DefinitionError(f"{source}: [{key}] must be a table")
    _check_keys(value, KNOWN_KEYS.get(key), f"{source} [{key}]")
    return value


def _check_keys(table: dict[str, Any], known: set[str] | None, where: str) -> None:
    unknown = set(table) - known if known is not None else set()
    if unknown:
        raise DefinitionError(
            f"{where}: unknown key(s) {', '.join(sorted(unknown))} "
            f"(known: {', '.join(sorted(known or ()))})"
        )


def _typed(table: dict[str, Any], key: str, kind: type, default: Any, where: str) -> Any:
    value = table.get(key, default)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
        raise DefinitionError(f"{where}: `{key}` must be a {kind.__name__}, not {value!r}")
    return value


def _autoscaling(table: dict[str, Any], where: str) -> Autoscaling | None:
    if not table:
        return None
    scaling = Autoscaling(
        min_capacity=_typed(table, "min_capacity", int, 1, where),
        max_capacity=_typed(table, "max_capacity", int, 1, where),
        target_invocations_per_instance=_typed(
            table, "target_invocations_per_instance", float, 100.0, where
        ),
        scale_in_cooldown=_typed(table, "scale_in_cooldown", int, 300, where),
        scale_out_cooldown=_typed(table, "scale_out_cooldown", int, 60, where),
        target_backlog_per_instance=_typed(table, "target_backlog_per_instance", float, 5.0, where),
        target_provisioned_concurrency_utilization=_typed(
            table, "target_provisioned_concurrency_utilization", float, 0.5, where
        ),
    )
    if not 0 <= scaling.min_capacity <= scaling.max_capacity or scaling.max_capacity < 1:
        raise DefinitionError(f"{where}: need 0 <= min_capacity <= max_capacity, max >= 1")
    return scaling


# The [autoscaling] keys that mean something for each hosting mode.
_SCALING_KEYS = {
    "real-time": {"target_invocations_per_instance"},
    "async": {"target_backlog_per_instance"},
    "serverless": {"target_provisioned_concurrency_utilization"},
}


def _check_scaling(definition: EndpointDefinition, table: dict[str, Any], where: str) -> None:
    """Refuse what the endpoint's hosting mode cannot scale: zero outside async, instances on
    serverless (only provisioned concurrency scales there), another mode's target."""
    scaling = definition.autoscaling
    if scaling is None:
        return
    mode = definition.hosting
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
    serverless = definition.serverless
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
    value: str | None = _typed(table, key, str, None, where)
    if value is not None and not value.startswith("s3://"):
        raise DefinitionError(f"{where}: `{key}` must be an s3:// path, not {value!r}")
    return value


def _topic(table: dict[str, Any], key: str, where: str) -> str | None:
    value: str | None = _typed(table, key, str, None, where)
    if value is not None and not (value.startswith("arn:") and ":sns:" in value):
        raise DefinitionError(f"{where}: `{key}` must be an SNS topic ARN, not {value!r}")
    return value


def _between(value: int | None, low: int, high: int, key: str, where: str) -> None:
    if value is not None and not low <= value <= high:
        raise DefinitionError(f"{where}: `{key}` must be {low}-{high}, not {value}")


def _async_inference(table: dict[str, Any] | None, where: str) -> AsyncInference | None:
    """The ``[async]`` table; present and empty means asynchronous with every default."""
    if table is None:
        return None
    topics = _typed(table, "include_response_in", list, [], where)
    included = []
    for topic in topics:
        name = RESPONSE_TOPICS.get(str(topic).lower(), str(topic))
        if name not in RESPONSE_TOPICS.values():
            raise DefinitionError(
                f"{where}: `include_response_in` takes success, error or "
                f"{' / '.join(RESPONSE_TOPICS.values())}, not {topic!r}"
            )
        included.append(name)
    concurrency = _typed(table, "max_concurrent_invocations_per_instance", int, None, where)
    _between(concurrency, 1, 1000, "max_concurrent_invocations_per_instance", where)
    timeout = _typed(table, "invocation_timeout", int, 900, where)
    _between(timeout, 1, MAX_ASYNC_TIMEOUT, "invocation_timeout", where)
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


def _serverless(table: dict[str, Any] | None, where: str) -> Serverless | None:
    if table is None:
        return None
    memory = _typed(table, "memory_mb", int, None, where)
    if memory not in SERVERLESS_MEMORY_MB:
        raise DefinitionError(
            f"{where}: `memory_mb` must be one of {', '.join(map(str, SERVERLESS_MEMORY_MB))}, "
            f"not {memory}"
        )
    concurrency = _typed(table, "max_concurrency", int, None, where)
    if concurrency is None:
        raise DefinitionError(f"{where}: needs `max_concurrency` (1-200)")
    _between(concurrency, 1, MAX_SERVERLESS_CONCURRENCY, "max_concurrency", where)
    provisioned = _typed(table, "provisioned_concurrency", int, None, where)
    _between(provisioned, 1, concurrency, "provisioned_concurrency", where)
    return Serverless(memory, concurrency, provisioned)


def _target(entry: Any, root: Path, where: str) -> TargetArchive:
    if isinstance(entry, str):
        entry = {"path": entry}
    if not isinstance(entry, dict):
        raise DefinitionError(f"{where}: must be a path or a table {{path, name}}, not {entry!r}")
    _check_keys(entry, {"path", "name"}, where)
    path = _typed(entry, "path", str, None, where)
    if not path:
        raise DefinitionError(f"{where}: needs `path` (path to the .tar.gz)")
    archive = (root / path).resolve()
    name = _typed(entry, "name", str, None, where)
    return TargetArchive(archive, check_target_name(archive.name if name is None else name, where))


def _targets(entries: Any, root: Path, where: str) -> tuple[TargetArchive, ...]:
    if not isinstance(entries, list) or not entries:
        raise DefinitionError(
            f'{where}: mode = "multi-model" needs `archives`, a list of paths or '
            f"{{path, name}} tables, not {entries!r}"
        )
    targets = tuple(
        _target(entry, root, f"{where} archives[{i}]") for i, entry in enumerate(entries)
    )
    names = [target.name for target in targets]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise DefinitionError(f"{where}: two archives named {twice[0]}: give one a `name`")
    return targets


def _model_fields(model: dict[str, Any], source: Path) -> dict[str, Any]:
    """``mode`` and either ``archive`` (single-model) or ``targets`` (multi-model)."""
    where, root = f"{source} [model]", source.parent.parent
    mode = _typed(model, "mode", str, SINGLE_MODEL, where)
    if mode not in (SINGLE_MODEL, MULTI_MODEL):
        raise DefinitionError(
            f"{where}: `mode` must be {SINGLE_MODEL!r} or {MULTI_MODEL!r}, not {mode!r}"
        )
    if mode == MULTI_MODEL:
        if "archive" in model:
            raise DefinitionError(
                f"{where}: `archive` is for single-model endpoints; list `archives` instead"
            )
        return {"mode": mode, "targets": _targets(model.get("archives"), root, where)}
    if "archives" in model:
        raise DefinitionError(
            f'{where}: `archives` needs mode = "multi-model"; a single-model endpoint has '
            "one `archive`"
        )
    archive = _typed(model, "archive", str, None, where)
    if not archive:
        raise DefinitionError(f"{source}: [model] needs `archive` (path to model.tar.gz)")
    return {"mode": mode, "archive": (root / archive).resolve()}


def parse_definition(name: str, data: dict[str, Any], source: Path) -> EndpointDefinition:
    """Check and convert the parsed TOML ``data`` of definition ``name``."""
    unknown = set(data) - KNOWN_TABLES
    if unknown:
        raise DefinitionError(f"{source}: unknown table(s) {', '.join(sorted(unknown))}")
    model, image = _table(data, "model", source), _table(data, "image", source)
    endpoint, aws = _table(data, "endpoint", source), _table(data, "aws", source)
    environment = _table(data, "environment", source)
    where = f"{source} [endpoint]"
    definition = EndpointDefinition(
        name=name,
        source=source,
        **_model_fields(model, source),
        make_target=_typed(model, "make_target", str, None, f"{source} [model]"),
        repository=_typed(image, "repository", str, "byoserve", f"{source} [image]"),
        dockerfile=_typed(image, "dockerfile", str, "Dockerfile", f"{source} [image]"),
        instance_type=_typed(endpoint, "instance_type", str, "ml.m5.large", where),
        instance_count=_typed(endpoint, "instance_count", int, 1, where),
        startup_health_check_timeout=_typed(
            endpoint, "startup_health_check_timeout", int, 600, where
        ),
        model_data_download_timeout=_typed(
            endpoint, "model_data_download_timeout", int, 600, where
        ),
        environment={str(k): str(v) for k, v in environment.items()},
        autoscaling=_autoscaling(_table(data, "autoscaling", source), f"{source} [autoscaling]"),
        region=_typed(aws, "region", str, None, f"{source} [aws]"),
        role_arn=_typed(aws, "role_arn", str, None, f"{source} [aws]"),
        bucket=_typed(aws, "bucket", str, None, f"{source} [aws]"),
        async_inference=_async_inference(
            _table(data, "async", source) if "async" in data else None, f"{source} [async]"
        ),
        serverless=_serverless(
            _table(data, "serverless", source) if "serverless" in data else None,
            f"{source} [serverless]",
        ),
    )
    if definition.instance_count < 1:
        raise DefinitionError(f"{where}: instance_count must be at least 1")
    if definition.serverless and definition.async_inference:
        raise DefinitionError(
            f"{source}: [serverless] and [async] cannot go together: an endpoint is one or "
            "the other"
        )
    if definition.serverless and definition.multi_model:
        raise DefinitionError(
            f"{source}: a serverless endpoint cannot be multi-model (SageMaker refuses it)"
        )
    if definition.serverless:
        _check_serverless(definition, endpoint)
    _check_scaling(definition, data.get("autoscaling", {}), f"{source} [autoscaling]")
    return definition


def _check_serverless(definition: EndpointDefinition, endpoint: dict[str, Any]) -> None:
    """Serverless runs on CPUs only: no accelerated instance type, no GPU image."""
    if "instance_type" in endpoint and ACCELERATED_INSTANCE.match(definition.instance_type):
        raise DefinitionError(
            f"{definition.source}: a serverless endpoint has no GPU or accelerator: "
            f"[endpoint] instance_type {definition.instance_type} cannot be served serverless"
        )
    if "gpu" in definition.dockerfile.lower():
        raise DefinitionError(
            f"{definition.source}: a serverless endpoint has no GPU: build the CPU image "
            f'([image] dockerfile = "Dockerfile"), not {definition.dockerfile}'
        )


def load_definition(name: str, endpoints_dir: Path) -> EndpointDefinition:
    """Read ``endpoints_dir/NAME.toml`` (or NAME itself when it is a path to a .toml file)."""
    path = Path(name) if name.endswith(".toml") else endpoints_dir / f"{name}.toml"
    endpoint_name = path.stem
    if not NAME_PATTERN.match(endpoint_name):
        raise DefinitionError(
            f"endpoint name {endpoint_name!r}: use letters, digits and hyphens, at most 40"
        )
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DefinitionError(
            f"no endpoint definition {path}: create it (see endpoints/sentiment.toml) "
            "or pass --endpoints-dir"
        ) from exc
    except tomllib.TOMLDecodeError as exc:
        raise DefinitionError(f"{path}: not valid TOML: {exc}") from exc
    return parse_definition(endpoint_name, data, path.resolve())
