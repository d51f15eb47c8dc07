"""The models one worker holds: each with its own runtime (queue, inference thread, batching,
settings, load state), kept in step with the server's desired set (serve/runtime/shared.py).

Requests find their model with :meth:`ModelRegistry.route`: a dict lookup, nothing shared between
processes. A thread of the worker's own (the watcher) applies the desired set whenever another
worker changes it: it starts a runtime for each model this worker does not hold yet, and drains
and releases the ones taken out. Loads and unloads for the whole server go through
:attr:`ModelRegistry.manager` (serve/runtime/management.py) from any worker.

Single-model mode (``--model-dir``) is this registry holding one model that every request
without a TargetModel goes to.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

from serve.codecs import CodecRegistry
from serve.config import MIB, ServingConfig
from serve.errors import (
    BadRequestError,
    ConflictError,
    InferenceTimeoutError,
    ModelLoadError,
    ModelNotFoundError,
    ModelVersionNotFoundError,
    ServingError,
    StartupError,
    brief,
)
from serve.model.settings import Registration
from serve.model.store import ModelStore
from serve.observe.logs import log_model
from serve.observe.observer import Observer
from serve.runtime.health import HealthWatch
from serve.runtime.inference import ModelRuntime, OpenedModel
from serve.runtime.management import DRAIN_GRACE_S, ModelManager
from serve.runtime.memory import tree_bytes
from serve.runtime.shared import (
    FAILED,
    LOADED,
    LOADING,
    UNLOADING,
    DesiredSet,
    HeldModel,
    ModelSpec,
    SharedModels,
    WorkerReport,
)

logger = logging.getLogger(__name__)

WATCH_S = 1.0  # the watcher reads the set at least this often, and reports usage for the LRU

Opener = Callable[[ModelSpec], OpenedModel]


def _why(exc: BaseException) -> str:
    """Why a load failed, briefly: our own errors name the file and the cause already."""
    if isinstance(exc, StartupError | ServingError):
        return brief(exc)
    return f"{type(exc).__name__}: {brief(exc)}"


class ModelRegistry:
    """The models of one worker, and the management of the server's models from any worker.

    Args:
        config: the serving configuration (budgets, timeouts, the store).
        shared: the server's shared directory.
        opener: opens a model the master did not prepare: unpacks it if needed (requirements are
            installed by the worker that registered it), imports its handler in a namespace of its
            own. Called on the model's inference thread.
        codecs: the app's codec registry, handed to handlers at load.
        observer: receives load, unload and request events.
        store: where a TargetModel that is not loaded is looked for; None to load none on demand.
        on_startup_failure: called once this worker has tried every model the server started
            with and one or more failed (the reason is recorded in the shared directory first):
            the server stops, as it does for one model.
        on_hung: called once a handler call has overrun its timeout by BYOSERVE_HUNG_GRACE
            (serve/runtime/health.py): the worker is to be recycled.
    """

    def __init__(
        self,
        config: ServingConfig,
        shared: SharedModels,
        opener: Opener,
        codecs: CodecRegistry,
        observer: Observer | None = None,
        store: ModelStore | None = None,
        on_startup_failure: Callable[[BaseException], None] | None = None,
        on_hung: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        self.shared = shared
        self.store = store
        self.codecs = codecs
        self.observer = observer or Observer()
        self.manager = ModelManager(config, shared)
        self._opener = opener
        self._on_startup_failure = on_startup_failure
        self.health = HealthWatch(config, self.runtimes, on_hung)
        self._prepared: dict[tuple[str, int], OpenedModel] = {}  # opened in the master
        self._runtimes: dict[str, ModelRuntime] = {}  # the routing table: read without a lock
        self._aliases: dict[str, str] = {}
        self._versions: dict[tuple[str, str | None], str] = {}  # (model, version or None): key
        self._only: ModelRuntime | None = None
        self._specs: dict[str, ModelSpec] = {}
        self._held: dict[tuple[str, int], HeldModel] = {}
        self._lock = threading.RLock()  # guards applying the set and this worker's report
        self._version = -1
        self._booting: set[str] = set()
        self._startup_failures: list[str] = []
        self._ready = threading.Event()
        self._stopping = threading.Event()
        self._worker_index = 0
        self._socket: socket.socket | None = None

    # Set-up, in the master

    def add_startup(
        self,
        name: str,
        url: Path,
        opened: OpenedModel,
        aliases: tuple[str, ...] = (),
        registered: Registration | None = None,
    ) -> ModelSpec:
        """Add a model the server starts with, opened (and its handler imported) in the master,
        with what it was given (``registered``: TorchServe's ``models`` entry for it); raises as
        :meth:`ModelManager.admit_startup` does."""
        estimate = tree_bytes(opened.directory.root)
        spec = self.manager.admit_startup(
            name,
            url,
            estimate,
            aliases,
            registered,
            version=opened.directory.manifest.model_version,
        )
        self._prepared[(spec.name, spec.generation)] = opened
        return spec

    # The worker's life

    @property
    def ready(self) -> bool:
        """Whether this worker has loaded the models it started with and can answer (its
        /ping): not hung, and no model stuck in a handler call past its timeout unless another
        model is loaded and free (serve/runtime/health.py)."""
        return self._ready.is_set() and not self.health.hung and self.health.serving()

    @property
    def accepting(self) -> bool:
        """Whether this worker should take new connections: ready, and no model stuck (its
        siblings hold the same models, with free inference threads)."""
        return self._ready.is_set() and not self.health.hung and not self.health.stuck()

    def wait_ready(self, timeout: float) -> bool:
        return self._ready.wait(timeout)

    def start(self, worker_index: int = 0) -> None:
        """Register this worker, load the current set, and start the watcher. Call after fork."""
        self._worker_index = worker_index
        self._socket = self.shared.register(os.getpid())
        desired = self.shared.read()
        with self._lock:
            self._booting = set(desired.models)
            self._apply(desired)
            self._check_booted()
        threading.Thread(target=self._watch, name="byoserve-models", daemon=True).start()
        self.health.start()

    def stop(self, timeout: float = 1.0) -> None:
        """Take no more requests for any model and let queued ones finish (worker exit)."""
        with self._lock:
            if self._socket is not None:  # leaving on purpose: nothing it loads is to blame
                self.shared.publish(WorkerReport(os.getpid(), ready=False))
            self._stopping.set()
        self.health.stop()
        if self._socket is not None:
            self._socket.close()  # ends the watcher
        runtimes = list(self._runtimes.values())
        deadline = time.monotonic() + timeout
        for runtime in runtimes:
            runtime.stop(0)
        for runtime in runtimes:
            runtime.stop(max(0.0, deadline - time.monotonic()))

    def end_streams_after(self, seconds: float) -> None:
        """The worker was told to stop: streams still open after ``seconds`` (the graceful
        timeout, less the time to say so) end as failures, logged and counted, rather than
        being cut off when the worker is killed."""

        def end() -> None:
            ended = sum(runtime.end_streams() for runtime in self.runtimes())
            if ended:
                logger.warning("ending %d open streams: the server is stopping", ended)

        timer = threading.Timer(max(0.0, seconds), end)
        timer.daemon = True
        timer.start()

    def worker_exited(self, pid: int) -> None:
        """In the master, once a worker has exited: its metrics are kept as a dead process's,
        and a model it was loading is taken out of the set (its replacement does not load it)."""
        self.observer.worker_exited(pid)
        self.shared.forget(pid)

    # Requests

    def route(self, target: str | None) -> ModelRuntime:
        """The runtime a request goes to: its TargetModel's (by name, or by its path in the model
        store, loaded on first use when the server has one), else the only model's.

        Raises:
            ModelNotFoundError: no such model (and none in the store).
            BadRequestError: no TargetModel while several models are loaded, or one that
                leaves the model store.
        """
        if target is None:
            only = self._only
            if only is not None:
                return only
            raise self._no_default()
        runtime = self._runtimes.get(target) or self._runtimes.get(self._aliases.get(target, ""))
        if runtime is None:
            return self._fetch(target)
        if not runtime.ready and self.store is not None and runtime.load_error is None:
            return self._await(target)  # loading for another request's first use: wait too
        return runtime

    def get(self, name: str) -> ModelRuntime:
        """The model called ``name`` in this worker (``/models/{name}/invoke``).

        Raises:
            ModelNotFoundError: it is not loaded.
        """
        runtime = self._runtimes.get(name)
        if runtime is None:
            raise ModelNotFoundError(f"model {name!r} is not loaded")
        return runtime

    def version(self, model: str, version: str | None = None) -> ModelRuntime:
        """A version of a model by TorchServe's names (``/predictions/{model}[/{version}]``):
        its default version when ``version`` is None.

        Raises:
            ModelNotFoundError: no such model. ModelVersionNotFoundError: not that version.
        """
        key = self._versions.get((model, version))
        runtime = self._runtimes.get(key) if key is not None else None
        if runtime is not None:
            return runtime
        if version is not None and (model, None) in self._versions:
            raise ModelVersionNotFoundError(
                f"Model version: {version} does not exist for model: {model}"
            )
        raise ModelNotFoundError(f"Model not found: {model}")

    @property
    def default(self) -> ModelRuntime | None:
        """The model a request without a TargetModel goes to: the only one, if only one."""
        return self._only

    def runtimes(self) -> list[ModelRuntime]:
        return list(self._runtimes.values())

    def _no_default(self) -> ServingError:
        count = len(self._runtimes)
        if count == 0:
            return ModelNotFoundError("no model is loaded")
        return BadRequestError(
            f"{count} models are loaded: name one with X-Amzn-SageMaker-Target-Model, "
            "or POST /models/{name}/invoke"
        )

    def _fetch(self, target: str) -> ModelRuntime:
        """A TargetModel that is not loaded: load it from the model store, then answer it."""
        if self.store is None:
            raise ModelNotFoundError(f"model {target[:200]!r} is not loaded")
        if self.shared.read().find(target) is None:
            path = self.store.resolve(target)
            with suppress(ConflictError):  # another request loaded it meanwhile: wait below
                self.manager.register(target, str(path), evict=True)
        return self._await(target)

    def _await(self, target: str) -> ModelRuntime:
        """The runtime of a TargetModel once this worker has loaded it (or failed to)."""
        deadline = self.manager.deadline()
        while time.monotonic() < deadline:
            runtime = self._runtimes.get(target) or self._runtimes.get(
                self._aliases.get(target, "")
            )
            if runtime is not None:
                if runtime.wait_ready(0.05) or runtime.load_error is not None:
                    return runtime  # loaded, or it answers 503 with why it did not
            elif self.shared.read().find(target) is None:  # its load failed, or it went again
                raise ModelNotFoundError(f"model {target[:200]!r} is not loaded")
            else:
                time.sleep(0.01)  # this worker has yet to apply the set
        raise InferenceTimeoutError(f"model {target[:200]!r} did not load in time")

    # Applying the set (the watcher thread, and start)

    def _watch(self) -> None:
        assert self._socket is not None
        self._socket.settimeout(WATCH_S)
        while not self._stopping.is_set():
            try:
                self._socket.recv(64)
            except TimeoutError:
                pass
            except OSError:
                return
            desired = self.shared.read()
            with self._lock:
                if desired.version != self._version and not self._stopping.is_set():
                    self._apply(desired)
                self._report_usage()

    def _apply(self, desired: DesiredSet) -> None:
        for name, runtime in list(self._runtimes.items()):
            spec = desired.models.get(name)
            if spec is None or spec.generation != runtime.generation:
                del self._runtimes[name]
                threading.Thread(
                    target=self._unload, args=(runtime,), name="byoserve-unload", daemon=True
                ).start()
        self._specs = dict(desired.models)
        for name, spec in desired.models.items():
            if name not in self._runtimes:
                self._attach(spec)
        self._aliases = {
            alias: spec.name for spec in desired.models.values() for alias in spec.aliases
        }
        self._versions = {
            (spec.model_name, version): spec.name
            for spec in desired.models.values()
            for version in ((spec.version, None) if spec.default else (spec.version,))
        }
        self._only = next(iter(self._runtimes.values())) if len(self._runtimes) == 1 else None
        self._version = desired.version
        self._publish()

    def _attach(self, spec: ModelSpec) -> None:
        prepared = self._prepared.pop((spec.name, spec.generation), None)
        runtime = ModelRuntime(
            spec.name,
            (lambda: prepared) if prepared is not None else (lambda: self._opener(spec)),
            self.config,
            self.codecs,
            self.observer,
            registered=spec.registered,
            generation=spec.generation,
            on_loaded=self._loaded,
            on_failed=self._failed,
        )
        self._runtimes[spec.name] = runtime
        self._set_held(HeldModel(spec.name, spec.generation, LOADING, used=time.monotonic()))
        runtime.start(self._worker_index)

    def _loaded(self, runtime: ModelRuntime) -> None:
        with self._lock:
            held = HeldModel(
                runtime.name,
                runtime.generation,
                LOADED,
                memory=runtime.memory,
                used=runtime.last_used,
            )
            self._set_held(held)
            self._booting.discard(runtime.name)
            self._check_booted()

    def _failed(self, runtime: ModelRuntime, exc: BaseException) -> None:
        with self._lock:
            spec = self._specs.get(runtime.name)
            startup = spec is not None and spec.startup and spec.generation == runtime.generation
            error = _why(exc)
            held = HeldModel(runtime.name, runtime.generation, FAILED, error, runtime.load_status)
            self._set_held(held)
            if startup:  # without its start-up models a worker is never ready
                self._startup_failures.append(f"model {runtime.name}: {error}")
            first = not startup or self.shared.claim(f"failed-{runtime.generation}")
            runtime.log_failure(logging.ERROR if first else logging.DEBUG)  # once, not per worker
            self._booting.discard(runtime.name)
            self._check_booted()

    def _unload(self, runtime: ModelRuntime) -> None:
        """Drain a model taken out of the set, then release it (on a thread of its own)."""
        log_model(runtime.name)
        key = (runtime.name, runtime.generation)
        with self._lock:
            if key in self._held:
                self._set_held(
                    HeldModel(runtime.name, runtime.generation, UNLOADING, memory=runtime.memory)
                )
            self._booting.discard(runtime.name)
            self._check_booted()
        started = time.monotonic()
        if not runtime.stop(runtime.settings.timeout + DRAIN_GRACE_S):
            logger.warning("model %s: still busy after its timeout; released anyway", runtime.name)
        freed = runtime.release()
        elapsed = time.monotonic() - started
        self.observer.model_unloaded(runtime.name, elapsed, freed)
        logger.info("model %s unloaded in %.2f s, -%.1f MiB", runtime.name, elapsed, freed / MIB)
        with self._lock:
            self._held.pop(key, None)
            self._publish()

    def _check_booted(self) -> None:
        """Once every start-up model has loaded or failed: ready, or (with failures) stop."""
        if self._booting or self._ready.is_set():
            return
        if self._startup_failures:
            failures = "; ".join(self._startup_failures)
            self.shared.report_failure(failures)
            if self._on_startup_failure is not None:
                self._on_startup_failure(ModelLoadError(failures))
            return
        self._ready.set()
        self.observer.worker_ready()
        self._publish()

    def _set_held(self, held: HeldModel) -> None:
        self._held[(held.name, held.generation)] = held
        self._publish()

    def _publish(self) -> None:
        if self._stopping.is_set():
            return
        report = WorkerReport(os.getpid(), self._ready.is_set(), tuple(self._held.values()))
        self.shared.publish(report)

    def _report_usage(self) -> None:
        """Write each model's last use into this worker's report when it changed (for the LRU)."""
        changed = False
        for runtime in self._runtimes.values():
            held = self._held.get((runtime.name, runtime.generation))
            if held is not None and held.state == LOADED and held.used != runtime.last_used:
                self._held[(held.name, held.generation)] = HeldModel(
                    held.name, held.generation, LOADED, memory=held.memory, used=runtime.last_used
                )
                changed = True
        if changed:
            self._publish()
