"""TorchServe's per-model settings: the ``models`` key of config.properties (or
BYOSERVE_MODEL_CONFIG), JSON by model name and version::

    models={"noop": {"1.0": {"defaultVersion": true, "marName": "noop.mar", "minWorkers": 1,
            "maxWorkers": 1, "batchSize": 4, "maxBatchDelay": 100, "responseTimeout": 120}}}

``batchSize``, ``maxBatchDelay`` (ms) and ``responseTimeout`` (s) become the registered settings
``batch_size``, ``max_batch_delay`` and ``response_timeout`` of the start-up model of that name
(see ModelSettings.choose). As in TorchServe (frontend ``ModelManager.createModel``), the entry
used is the one of the archive's ``modelVersion``, and a setting the archive's own config file
(``model-config.yaml``) gives wins over this one. An archive without a version takes the entry
marked ``defaultVersion``, or the only one. The other keys TorchServe reads here are accepted and
reported as not applying.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)


def _whole(minimum: int) -> Callable[[Any], bool]:
    return lambda value: isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _number(above: float, inclusive: bool) -> Callable[[Any], bool]:
    def check(value: Any) -> bool:
        if not isinstance(value, int | float) or isinstance(value, bool):
            return False
        return value >= above if inclusive else value > above

    return check


# TorchServe's key: (our registered setting, what its value must be, the check)
APPLIED: Mapping[str, tuple[str, str, Callable[[Any], bool]]] = {
    "batchSize": ("batch_size", "a whole number of at least 1", _whole(1)),
    "maxBatchDelay": ("max_batch_delay", "a number of milliseconds, 0 or more", _number(0, True)),
    "responseTimeout": ("response_timeout", "a number of seconds above 0", _number(0, False)),
}
# Read by TorchServe from this JSON, with no meaning here (every worker process holds every model).
NOT_APPLYING = (
    "minWorkers",
    "maxWorkers",
    "startupTimeout",
    "parallelLevel",
    "marName",
    "runtimeType",
)
DEFAULT_VERSION = "defaultVersion"

Versions = Mapping[str, Mapping[str, Any]]


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """TorchServe's ``models`` setting, checked.

    Attributes:
        models: registered settings by model name, then version.
        defaults: the version marked ``defaultVersion`` of each model that has one.
        ignored: the keys given that do not apply here, once each.
    """

    models: Mapping[str, Versions]
    defaults: Mapping[str, str]
    ignored: tuple[str, ...] = ()


def parse_model_config(text: str) -> ModelConfig:
    """Parse TorchServe's ``models`` JSON.

    Raises:
        ValueError: not JSON, not objects by name and version, an unknown key, or a bad value;
            the message names the model, the version and the key.
    """
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"not JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise ValueError('must be a JSON object: {"model": {"version": {"batchSize": 4, ...}}}')
    models: dict[str, dict[str, dict[str, Any]]] = {}
    defaults: dict[str, str] = {}
    ignored: set[str] = set()
    for name, versions in document.items():
        if not isinstance(versions, dict) or not versions:
            raise ValueError(f"model {name!r}: must be an object by version: {{'1.0': {{...}}}}")
        models[name] = {}
        for version, entry in versions.items():
            where = f"model {name!r} version {version!r}"
            if not isinstance(entry, dict):
                raise ValueError(f"{where}: must be an object of settings")
            models[name][version] = _settings(where, entry, ignored)
            if entry.get(DEFAULT_VERSION) is True:
                defaults[name] = version
    return ModelConfig(models, defaults, tuple(sorted(ignored)))


def _settings(where: str, entry: Mapping[str, Any], ignored: set[str]) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    for key, value in entry.items():
        if key in APPLIED:
            setting, wanted, valid = APPLIED[key]
            if not valid(value):
                raise ValueError(f"{where}: {key} must be {wanted}, not {value!r}")
            settings[setting] = value
        elif key == DEFAULT_VERSION:
            if not isinstance(value, bool):
                raise ValueError(f"{where}: {key} must be true or false, not {value!r}")
        elif key in NOT_APPLYING:
            ignored.add(key)
        else:
            known = ", ".join([*APPLIED, DEFAULT_VERSION, *NOT_APPLYING])
            raise ValueError(f"{where}: unknown key {key!r}; TorchServe's are {known}")
    return settings


def startup_settings(
    config: ModelConfig | None,
    name: str,
    version: str | None,
    archive_options: Mapping[str, Any],
) -> dict[str, Any]:
    """The registered settings ``config`` gives the start-up model ``name`` whose archive has
    ``version`` (None: no version) and its own settings ``archive_options``; empty when it names
    neither that model nor that version."""
    versions = config.models.get(name) if config is not None else None
    if not versions or config is None:
        return {}
    chosen = version
    if chosen is None:
        chosen = config.defaults.get(name) or (next(iter(versions)) if len(versions) == 1 else None)
    entry = versions.get(chosen) if chosen is not None else None
    if entry is None:
        logger.warning(
            "models: %s has no entry for version %s (it has %s); its settings do not apply",
            name,
            version or "(none in the archive)",
            ", ".join(versions),
        )
        return {}
    given = {_snake(key) for key in archive_options} | set(archive_options)
    return {key: value for key, value in entry.items() if key not in given}


def _snake(key: str) -> str:
    """``batchSize`` -> ``batch_size``: the archive's config file may use either spelling."""
    return "".join(f"_{char.lower()}" if char.isupper() else char for char in key)
