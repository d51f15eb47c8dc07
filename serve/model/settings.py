"""One model's serving settings: what each source may set, how each is spelled and checked, and
the one order in which they win.

A model's batch size, batch delay, response timeout and queue size come from up to five sources,
first wins (:func:`choose_settings`):

1. its registration: TorchServe's register call (``batch_size``, ``max_batch_delay`` in ms,
   ``response_timeout`` in s) or SageMaker's ``POST /models`` (the same, and ``queue_size``);
2. TorchServe's ``models`` JSON (``config.properties`` ``models=`` or BYOSERVE_MODEL_CONFIG, by
   model name and version: ``batchSize``, ``maxBatchDelay``, ``responseTimeout``), for a
   setting the archive's own config file does not give (as TorchServe's
   ``ModelManager.createModel`` does);
3. the environment and flags (BYOSERVE_MAX_BATCH_SIZE or SAGEMAKER_TS_BATCH_SIZE,
   BYOSERVE_MAX_BATCH_DELAY_MS or SAGEMAKER_TS_MAX_BATCH_DELAY: declared in serve/config.py);
4. the archive's own settings (its ``model-config.yaml`` or the manifest's ``options``, in either
   spelling);
5. the server's defaults (batch size 1, 5 ms, SAGEMAKER_MODEL_SERVER_TIMEOUT, BYOSERVE_QUEUE_SIZE).

Each name a source may use is one row of :data:`SPELLINGS`, and each field has one check
(:data:`CHECKS`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from serve.config import ServingConfig

logger = logging.getLogger(__name__)

DEFAULT_BATCH_DELAY_MS = 5.0

# Where a setting is given: TorchServe's models JSON, TorchServe's register call, SageMaker's
# POST /models, the archive's config file.
Entrance = Literal["models", "register", "sagemaker", "archive"]


class SettingError(ValueError):
    """A per-model setting has a value its field refuses; the message names the key."""


@dataclass(frozen=True, slots=True)
class ModelOverrides:
    """What one source sets for one model; None where it says nothing.

    Attributes:
        batch_size: the most requests passed to one handler call.
        max_batch_delay_ms: milliseconds to wait for a batch to fill.
        response_timeout_s: seconds a request may wait for its answer.
        queue_size: requests that may wait for the model in one worker before 503.
    """

    batch_size: int | None = None
    max_batch_delay_ms: float | None = None
    response_timeout_s: float | None = None
    queue_size: int | None = None

    @classmethod
    def from_config(cls, config: ServingConfig) -> ModelOverrides:
        """The environment's and the command line's batch settings."""
        return cls(batch_size=config.max_batch_size, max_batch_delay_ms=config.max_batch_delay_ms)

    @classmethod
    def defaults(cls, config: ServingConfig) -> ModelOverrides:
        """The server's own: every field set."""
        return cls(1, DEFAULT_BATCH_DELAY_MS, config.timeout, config.queue_size)

    @classmethod
    def from_fields(cls, given: Mapping[str, Any], entrance: Entrance) -> ModelOverrides:
        """The settings among ``given`` (by the names ``entrance`` uses), each checked; other
        keys are the caller's.

        Raises:
            SettingError: ``key must be what, not value``.
        """
        values: dict[str, Any] = {}
        for name, value in given.items():
            target = field_of(name, entrance)
            if target is not None:
                values[target] = check(target, name, value)
        return cls(**values)

    @classmethod
    def from_register_params(cls, params: Mapping[str, Any]) -> ModelOverrides:
        """TorchServe's register call: query parameters are text, so ``"50"`` is 50.

        Raises:
            SettingError: a value its field refuses.
        """
        return cls.from_fields(
            {key: _number_text(value) for key, value in params.items()}, "register"
        )

    @classmethod
    def from_archive_options(cls, options: Mapping[str, Any]) -> ModelOverrides:
        """The archive's own settings (``batchSize`` or ``batch_size``, ...); a value of the wrong
        kind is left out, as the archive's other settings are the handler's business."""
        values: dict[str, Any] = {}
        for name, value in options.items():
            target = field_of(name, "archive")
            if target is None:
                continue
            try:
                values[target] = check(target, name, value)
            except SettingError as exc:
                logger.warning("the archive's %s; it does not apply", exc)
        return cls(**values)

    def without(self, other: ModelOverrides) -> ModelOverrides:
        """These settings, less those ``other`` gives."""
        return ModelOverrides(
            **{
                spec.name: None
                if getattr(other, spec.name) is not None
                else getattr(self, spec.name)
                for spec in dataclasses.fields(self)
            }
        )

    def given(self) -> dict[str, Any]:
        """The fields set, by name (for logs and ``models.json``)."""
        return {key: value for key, value in dataclasses.asdict(self).items() if value is not None}


class Spelling(NamedTuple):
    """One name a setting goes by, the field it sets, and the entrances that use it."""

    name: str
    field: str
    entrances: frozenset[Entrance]


_CAMEL: frozenset[Entrance] = frozenset({"models", "archive"})
_SNAKE: frozenset[Entrance] = frozenset({"register", "sagemaker", "archive"})
SPELLINGS: tuple[Spelling, ...] = (
    Spelling("batchSize", "batch_size", _CAMEL),
    Spelling("maxBatchDelay", "max_batch_delay_ms", _CAMEL),
    Spelling("responseTimeout", "response_timeout_s", _CAMEL),
    Spelling("batch_size", "batch_size", _SNAKE),
    Spelling("max_batch_delay", "max_batch_delay_ms", _SNAKE),
    Spelling("response_timeout", "response_timeout_s", _SNAKE),
    Spelling("queue_size", "queue_size", frozenset({"sagemaker"})),
)


def spellings(entrance: Entrance) -> tuple[str, ...]:
    """The names ``entrance`` may use, in table order."""
    return tuple(row.name for row in SPELLINGS if entrance in row.entrances)


def field_of(name: str, entrance: Entrance) -> str | None:
    """The field ``name`` sets when ``entrance`` gives it, or None."""
    return next(
        (row.field for row in SPELLINGS if row.name == name and entrance in row.entrances), None
    )


def _whole(minimum: int) -> Callable[[Any], bool]:
    return lambda value: isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _number(above: float, inclusive: bool) -> Callable[[Any], bool]:
    def valid(value: Any) -> bool:
        if not isinstance(value, int | float) or isinstance(value, bool):
            return False
        return value >= above if inclusive else value > above

    return valid


class Check(NamedTuple):
    """What a field's value must be, in words, and the test of it."""

    wanted: str
    valid: Callable[[Any], bool]


CHECKS: Mapping[str, Check] = {
    "batch_size": Check("a whole number of at least 1", _whole(1)),
    "max_batch_delay_ms": Check("a number of milliseconds, 0 or more", _number(0, True)),
    "response_timeout_s": Check("a number of seconds above 0", _number(0, False)),
    "queue_size": Check("a whole number of at least 1", _whole(1)),
}


def check(field: str, name: str, value: Any) -> Any:
    """``value`` for ``field`` (given as ``name``), when that field takes it.

    Raises:
        SettingError: ``name must be what, not value``.
    """
    wanted, valid = CHECKS[field]
    if not valid(value):
        raise SettingError(f"{name} must be {wanted}, not {value!r}")
    return value


def _number_text(value: Any) -> Any:
    """A query parameter's text as the number it spells, else as given."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return value


@dataclass(frozen=True, slots=True)
class ModelSettings:
    """One model's serving settings, every source weighed.

    Attributes:
        max_batch_size: the most requests passed to one handler call.
        max_batch_delay: seconds to wait for a batch to fill, counted from its first request's
            arrival; zero when the batch size is 1, so unbatched serving adds no delay.
        timeout: seconds a request may wait for its answer.
        queue_size: requests that may wait for the model in one worker before 503.
    """

    max_batch_size: int = 1
    max_batch_delay: float = 0.0
    timeout: float = 60.0
    queue_size: int = 32

    @classmethod
    def resolve(cls, layers: Iterable[ModelOverrides], capacity: int = 1) -> ModelSettings:
        """Each field from the first of ``layers`` that sets it (the last must set them all);
        the batch size never exceeds what the handler can take (``capacity``)."""
        merged: dict[str, Any] = {}
        for layer in layers:
            for key, value in layer.given().items():
                merged.setdefault(key, value)
        size = max(1, min(int(merged["batch_size"]), capacity))
        delay_s = float(merged["max_batch_delay_ms"]) / 1000.0 if size > 1 else 0.0
        return cls(size, delay_s, float(merged["response_timeout_s"]), int(merged["queue_size"]))


def choose_settings(
    config: ServingConfig,
    *,
    registered: ModelOverrides = ModelOverrides(),
    models_json: ModelOverrides = ModelOverrides(),
    archive: ModelOverrides = ModelOverrides(),
    capacity: int = 1,
) -> ModelSettings:
    """The model's settings: the order of its sources, first wins, written here and nowhere else.

    Args:
        config: the server's configuration (the environment, the flags, the defaults).
        registered: the model's registration (TorchServe's register call, SageMaker's load).
        models_json: TorchServe's ``models`` entry for the model (start-up models).
        archive: the archive's own settings (:meth:`ModelOverrides.from_archive_options`).
        capacity: the largest batch the handler takes.
    """
    layers = (
        registered,
        models_json.without(archive),  # TorchServe: the archive's config file beats models=
        ModelOverrides.from_config(config),
        archive,
        ModelOverrides.defaults(config),
    )
    return ModelSettings.resolve(layers, capacity)


@dataclass(frozen=True, slots=True)
class Registration:
    """What a model was given when it was added to the server, kept with it in ``models.json``.

    Attributes:
        overrides: its registration's settings (TorchServe's register call, SageMaker's load).
        models_json: TorchServe's ``models`` entry for it (a start-up model).
        url: the url as the register call gave it (before the model store was searched).
        handler: the register call's handler, over the manifest's.
        min_workers: what a scale call asked for (recorded: every worker serves every model).
        max_workers: likewise.
    """

    overrides: ModelOverrides = ModelOverrides()
    models_json: ModelOverrides = ModelOverrides()
    url: str = ""
    handler: str = ""
    min_workers: int | None = None
    max_workers: int | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Registration:
        """A registration as ``models.json`` holds it (``dataclasses.asdict``)."""
        return cls(
            **{
                **data,
                "overrides": ModelOverrides(**data.get("overrides", {})),
                "models_json": ModelOverrides(**data.get("models_json", {})),
            }
        )

    def settings(
        self, config: ServingConfig, options: Mapping[str, Any], capacity: int = 1
    ) -> ModelSettings:
        """The model's settings, given its archive's own ``options`` and its handler's
        ``capacity`` (see :func:`choose_settings`)."""
        return choose_settings(
            config,
            registered=self.overrides,
            models_json=self.models_json,
            archive=ModelOverrides.from_archive_options(options),
            capacity=capacity,
        )


# TorchServe's ``models`` JSON, by model name and version::
#
#     models={"noop": {"1.0": {"defaultVersion": true, "marName": "noop.mar", "minWorkers": 1,
#             "maxWorkers": 1, "batchSize": 4, "maxBatchDelay": 100, "responseTimeout": 120}}}
#
# The entry used is the one of the archive's ``modelVersion``; an archive without a version takes
# the entry marked ``defaultVersion``, or the only one. The other keys TorchServe reads here are
# accepted and reported as not applying.
DEFAULT_VERSION = "defaultVersion"
# Read by TorchServe from this JSON, with no meaning here (every worker process holds every model).
NOT_APPLYING = (
    "minWorkers",
    "maxWorkers",
    "startupTimeout",
    "parallelLevel",
    "marName",
    "runtimeType",
)


@dataclass(frozen=True, slots=True)
class ModelsJson:
    """TorchServe's ``models`` setting, checked.

    Attributes:
        models: settings by model name, then version.
        defaults: the version marked ``defaultVersion`` of each model that has one.
        ignored: the keys given that do not apply here, once each.
    """

    models: Mapping[str, Mapping[str, ModelOverrides]]
    defaults: Mapping[str, str]
    ignored: tuple[str, ...] = ()

    @classmethod
    def parse(cls, document: Any) -> ModelsJson:
        """Check TorchServe's ``models`` JSON, parsed.

        Raises:
            SettingError: not objects by name and version, an unknown key, or a bad value; the
                message names the model, the version and the key.
        """
        if not isinstance(document, dict):
            raise SettingError(
                'must be a JSON object: {"model": {"version": {"batchSize": 4, ...}}}'
            )
        models: dict[str, dict[str, ModelOverrides]] = {}
        defaults: dict[str, str] = {}
        ignored: set[str] = set()
        for name, versions in document.items():
            if not isinstance(versions, dict) or not versions:
                raise SettingError(
                    f"model {name!r}: must be an object by version: {{'1.0': {{...}}}}"
                )
            models[name] = {}
            for version, entry in versions.items():
                where = f"model {name!r} version {version!r}"
                if not isinstance(entry, dict):
                    raise SettingError(f"{where}: must be an object of settings")
                models[name][version] = _entry(where, entry, ignored)
                if entry.get(DEFAULT_VERSION) is True:
                    defaults[name] = version
        return cls(models, defaults, tuple(sorted(ignored)))

    def overrides_for(self, name: str, version: str | None) -> ModelOverrides:
        """The entry of the start-up model ``name`` whose archive has ``version`` (None: no
        version); empty when this names neither that model nor that version."""
        versions = self.models.get(name)
        if not versions:
            return ModelOverrides()
        chosen = version
        if chosen is None:
            chosen = self.defaults.get(name) or (
                next(iter(versions)) if len(versions) == 1 else None
            )
        entry = versions.get(chosen) if chosen is not None else None
        if entry is None:
            logger.warning(
                "models: %s has no entry for version %s (it has %s); its settings do not apply",
                name,
                version or "(none in the archive)",
                ", ".join(versions),
            )
            return ModelOverrides()
        return entry


def _entry(where: str, entry: Mapping[str, Any], ignored: set[str]) -> ModelOverrides:
    for key, value in entry.items():
        if key == DEFAULT_VERSION:
            if not isinstance(value, bool):
                raise SettingError(f"{where}: {key} must be true or false, not {value!r}")
        elif key in NOT_APPLYING:
            ignored.add(key)
        elif field_of(key, "models") is None:
            known = ", ".join([*spellings("models"), DEFAULT_VERSION, *NOT_APPLYING])
            raise SettingError(f"{where}: unknown key {key!r}; TorchServe's are {known}")
    try:
        return ModelOverrides.from_fields(entry, "models")
    except SettingError as exc:
        raise SettingError(f"{where}: {exc}") from exc
