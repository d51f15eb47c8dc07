"""Loading and unloading models for the whole server, from whichever worker a request reaches:
each call changes the desired set and waits for every worker (the protocol, and what happens
when things race, is written down in serve/runtime/shared.py). Models the server starts with are
admitted here too, in the master."""

from __future__ import annotations

import errno
import logging
import time
from dataclasses import replace
from pathlib import Path

from serve.config import ServingConfig
from serve.errors import (
    ConflictError,
    InferenceTimeoutError,
    InsufficientStorageError,
    ModelLoadError,
    ModelNotFoundError,
    brief,
)
from serve.model.directory import ModelDirectory, ModelDirError, prepare_model_dir
from serve.model.settings import Registration
from serve.model.store import check_name
from serve.runtime.budget import Budget, least_recently_used
from serve.runtime.memory import tree_bytes
from serve.runtime.shared import DesiredSet, HeldModel, ModelSpec, SharedModels

logger = logging.getLogger(__name__)

DRAIN_GRACE_S = 5.0  # an unload waits for queued requests: their timeout plus this


def _check_free(desired: DesiredSet, name: str, version: str) -> str:
    """The key a new model ``name`` (at ``version``) takes in the set.

    Raises:
        ConflictError: that name (or that version of it) is loaded or loading.
    """
    if not version:
        if desired.find(name) is not None:
            raise ConflictError(f"model {name!r} is already loaded")
        return name
    if any(spec.version == version for spec in desired.versions(name)):
        raise ConflictError(f"Model version {version} is already registered for model {name}")
    key = name if name not in desired.models and not desired.versions(name) else f"{name}/{version}"
    if desired.find(key) is not None:
        raise ConflictError(f"model {key!r} is already loaded")
    return key


class ModelManager:
    """Loads and unloads models in every worker of the server.

    Args:
        config: the serving configuration (budgets, timeouts, unpacking, requirements).
        shared: the server's shared directory.
    """

    def __init__(self, config: ServingConfig, shared: SharedModels) -> None:
        self.config = config
        self.shared = shared
        self.budget = Budget(config.max_models, config.memory_budget, config.workers)

    def admit_startup(
        self,
        name: str,
        url: Path,
        estimate: int,
        aliases: tuple[str, ...] = (),
        registered: Registration | None = None,
        version: str = "",
    ) -> ModelSpec:
        """Add a model the server starts with (in the master, before any worker runs), with its
        per-model settings ``registered`` as :meth:`register` takes them (TorchServe's ``models``
        in config.properties).

        Raises:
            ConflictError: a model of that name was added already.
            InsufficientStorageError: BYOSERVE_MAX_MODELS or BYOSERVE_MEMORY_BUDGET_MB is passed.
        """
        with self.shared.editing() as desired:
            if desired.find(name) is not None:
                raise ConflictError(f"model {name!r} is given twice")
            self.budget.check(desired, {}, estimate, measure_available=False)
            return desired.add(
                name,
                str(url),
                aliases=aliases,
                registered=registered,
                startup=True,
                estimate=estimate,
                version=version,
                model=name,
            )

    def register(
        self,
        name: str,
        url: str,
        registered: Registration | None = None,
        *,
        aliases: tuple[str, ...] = (),
        evict: bool = False,
        version: str = "",
    ) -> ModelSpec:
        """Load a model in every worker; returns once all of them answer it.

        Args:
            name: the model's name.
            url: its directory or archive.
            registered: what the registration gave: settings, the url as given, a handler.
            aliases: other names a TargetModel may use for it.
            evict: unload the least recently used models when a budget would be exceeded,
                instead of refusing with 507.
            version: a version of the model ``name`` (TorchServe's registrations): several
                versions of one name may be loaded; the first is the default. The set holds it
                as ``name``, or as ``name/version`` when that name is taken.

        Raises:
            BadRequestError: a bad name. ModelNotFoundError: no such url. ConflictError: the name
            is loaded or loading. InsufficientStorageError: it does not fit. ModelLoadError: it
            failed to load (the reason; no traceback).
        """
        check_name(name)
        _check_free(self.shared.read(), name, version)  # a name taken is 409 whatever the url
        path = Path(url)
        if not path.exists():
            raise ModelNotFoundError(f"model url {url[:200]!r} does not exist")
        estimate = tree_bytes(self._prepare(path).root)
        deadline = self.deadline()
        if evict:
            self._make_room(estimate, deadline)
        with self.shared.editing() as desired:
            key = _check_free(desired, name, version)
            workers = self.shared.workers()  # before the model is in the set: see await_loaded
            self.budget.check(desired, workers, estimate)
            spec = desired.add(
                key,
                url,
                aliases=aliases,
                registered=registered,
                estimate=estimate,
                version=version,
                model=name,
            )
        self.shared.wake_all()
        started = time.monotonic()
        outcome = self.shared.await_loaded(spec, deadline, workers)
        if outcome.ok:
            logger.info(
                "model %s loaded in every worker in %.2f s", spec.name, time.monotonic() - started
            )
            return spec
        if outcome.abandoned:
            raise ConflictError(f"model {name!r} was {outcome.error}")
        self._withdraw(spec, deadline)
        message = f"model {name!r} failed to load: {outcome.error}"
        if outcome.status == InsufficientStorageError.status_code:
            raise InsufficientStorageError(message)
        raise ModelLoadError(message)

    def set_default(self, model: str, version: str) -> ModelSpec:
        """Make ``version`` the default version of ``model`` (TorchServe's set-default).

        Raises:
            ModelNotFoundError: no such model or version.
        """
        with self.shared.editing() as desired:
            versions = desired.versions(model)
            if not versions:
                raise ModelNotFoundError(f"model {model!r} is not loaded")
            spec = next((spec for spec in versions if spec.version == version), None)
            if spec is None:
                raise ModelNotFoundError(f"model {model!r} has no version {version!r}")
            desired.make_default(spec)
        self.shared.wake_all()
        return spec

    def record_scale(self, name: str, min_workers: int, max_workers: int) -> None:
        """Keep what a scale call asked for with the model's registration; no worker reloads it.

        Raises:
            ModelNotFoundError: it is not loaded.
        """
        with self.shared.editing() as desired:
            spec = desired.models.get(name)
            if spec is None:
                raise ModelNotFoundError(f"model {name!r} is not loaded")
            registered = replace(spec.registered, min_workers=min_workers, max_workers=max_workers)
            desired.models[name] = replace(spec, registered=registered)

    def unregister(self, name: str) -> ModelSpec:
        """Unload a model from every worker; returns once none holds it (queued requests for it
        have finished, its memory is released).

        Raises:
            ModelNotFoundError: it is not loaded. InferenceTimeoutError: a worker did not drop it
            in time (it still will).
        """
        with self.shared.editing() as desired:
            spec = desired.remove(name)
        if spec is None:
            raise ModelNotFoundError(f"model {name!r} is not loaded")
        self.shared.wake_all()
        if not self.shared.await_unloaded(spec, self.deadline()):
            raise InferenceTimeoutError(f"model {name!r} is still unloading")
        return spec

    def describe(self, name: str) -> tuple[ModelSpec, dict[int, HeldModel]]:
        """A model of the set and how each worker holds it.

        Raises:
            ModelNotFoundError: it is not in the set.
        """
        spec = self.shared.read().models.get(name)
        if spec is None:
            raise ModelNotFoundError(f"model {name!r} is not loaded")
        held = {
            pid: model
            for pid, report in self.shared.workers().items()
            if (model := report.held(spec.name, spec.generation)) is not None
        }
        return spec, held

    def specs(self) -> list[ModelSpec]:
        """Every model of the set, by name."""
        return sorted(self.shared.read().models.values(), key=lambda spec: spec.name)

    def _prepare(self, path: Path) -> ModelDirectory:
        """Unpack the model and install its requirements, once, in the worker registering it."""
        try:
            return prepare_model_dir(
                path,
                unpack_dir=self.config.unpack_dir,
                install_requirements=self.config.install_requirements,
            )
        except ModelDirError as exc:
            raise ModelLoadError(str(exc)) from exc
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise InsufficientStorageError(f"no disk space to unpack {path}: {exc}") from exc
            raise ModelLoadError(f"cannot read {path}: {brief(exc)}") from exc

    def _withdraw(self, spec: ModelSpec, deadline: float) -> None:
        """Take a model out of the set and wait until no worker holds it."""
        with self.shared.editing() as desired:
            desired.remove(spec.name, spec.generation)
        self.shared.wake_all()
        self.shared.await_unloaded(spec, deadline)

    def deadline(self) -> float:
        """When a load or unload started now gives up."""
        return time.monotonic() + self.config.startup_timeout + DRAIN_GRACE_S

    def _make_room(self, estimate: int, deadline: float) -> None:
        """Unload least recently used models until one of ``estimate`` bytes fits."""
        while True:
            desired, reports = self.shared.read(), self.shared.workers()
            try:
                self.budget.check(desired, reports, estimate)
                return
            except InsufficientStorageError as exc:
                victim = least_recently_used(desired, reports)
                if victim is None:
                    raise
                logger.info("unloading model %s, the least recently used: %s", victim.name, exc)
                self._withdraw(victim, deadline)
