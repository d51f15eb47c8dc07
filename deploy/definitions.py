"""Endpoint definitions: one small TOML file per endpoint, kept in ``endpoints/``.

A definition says what to deploy (one model archive, or for a multi-model endpoint several, and
the image repository), on what (instance type and count, timeouts), with which container
environment and autoscaling bounds. Relative paths are relative to the project root, the directory
that holds ``endpoints/``. The hosting-mode tables (``[async]``, ``[serverless]``,
``[autoscaling]``) are read in deploy/hostingtables.py. See docs/deploy.md.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deploy.hostingtables import (
    AsyncInference,
    Autoscaling,
    Serverless,
    check_scaling,
    check_serverless_hardware,
    parse_async_inference,
    parse_autoscaling,
    parse_serverless,
)
from deploy.tomltables import DefinitionError, check_keys, typed

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
KNOWN_TABLES = set(KNOWN_KEYS) | {"environment"}


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
    check_keys(value, KNOWN_KEYS.get(key), f"{source} [{key}]")
    return value


def _target(entry: Any, root: Path, where: str) -> TargetArchive:
    if isinstance(entry, str):
        entry = {"path": entry}
    if not isinstance(entry, dict):
        raise DefinitionError(f"{where}: must be a path or a table {{path, name}}, not {entry!r}")
    check_keys(entry, {"path", "name"}, where)
    path = typed(entry, "path", str, None, where)
    if not path:
        raise DefinitionError(f"{where}: needs `path` (path to the .tar.gz)")
    archive = (root / path).resolve()
    name = typed(entry, "name", str, None, where)
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
    mode = typed(model, "mode", str, SINGLE_MODEL, where)
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
    archive = typed(model, "archive", str, None, where)
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
        make_target=typed(model, "make_target", str, None, f"{source} [model]"),
        repository=typed(image, "repository", str, "byoserve", f"{source} [image]"),
        dockerfile=typed(image, "dockerfile", str, "Dockerfile", f"{source} [image]"),
        instance_type=typed(endpoint, "instance_type", str, "ml.m5.large", where),
        instance_count=typed(endpoint, "instance_count", int, 1, where),
        startup_health_check_timeout=typed(
            endpoint, "startup_health_check_timeout", int, 600, where
        ),
        model_data_download_timeout=typed(endpoint, "model_data_download_timeout", int, 600, where),
        environment={str(k): str(v) for k, v in environment.items()},
        autoscaling=parse_autoscaling(
            _table(data, "autoscaling", source), f"{source} [autoscaling]"
        ),
        region=typed(aws, "region", str, None, f"{source} [aws]"),
        role_arn=typed(aws, "role_arn", str, None, f"{source} [aws]"),
        bucket=typed(aws, "bucket", str, None, f"{source} [aws]"),
        async_inference=parse_async_inference(
            _table(data, "async", source) if "async" in data else None, f"{source} [async]"
        ),
        serverless=parse_serverless(
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
        check_serverless_hardware(source, definition.instance_type, definition.dockerfile, endpoint)
    check_scaling(
        definition.autoscaling,
        definition.hosting,
        definition.serverless,
        data.get("autoscaling", {}),
        f"{source} [autoscaling]",
    )
    return definition


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
