"""How the worker processes of one server agree on which models it holds.

gunicorn runs several worker processes and a load or unload request reaches only one of them. The
set of models the server should hold, and what each worker holds, live in a directory the master
creates before it forks (and removes at exit):

- ``models.json``: the desired set, ``{"version", "next_generation", "models": {name: spec}}``,
  changed only under ``models.lock`` (``flock``) and replaced atomically, so readers need no lock.
  Each registration of a name gets a new *generation*, so an old registration still draining and a
  new one loading are never confused.
- ``worker-<pid>.json``: what one worker holds: each model's generation and state (``loading``,
  ``loaded``, ``failed`` with its error and status, ``unloading``), the memory its load added and
  when it was last used. Written by that worker only, atomically.
- a datagram socket each worker listens on (Linux: in the abstract namespace, named after the
  directory and the pid, so a long temp path cannot make it too long; elsewhere
  ``worker-<pid>.sock``); one byte makes the worker read the set.

A **load** (``POST /models``, or a TargetModel found in the model store) adds the model to the set
under a new generation, wakes every worker, and waits until every live worker reports that
generation ``loaded`` (success), or one reports it ``failed`` (the model is taken out of the set
again, the caller gets that worker's error once no worker holds it). An **unload** takes the name
out, wakes every worker and returns once no live worker holds that generation; each worker first
lets the requests already queued for it finish. Each worker applies the set on a thread of its own
(serve/runtime/registry.py); the hot path never reads any of this.

What happens when things race, by design:

- Two loads of one name at once: whichever takes the lock first adds it; the other gets 409 at once,
  whether the first is still loading or done.
- An unload while the model is still loading: the unload goes ahead (it returns once every worker
  has dropped the model, which waits for a load in progress to end); the load returns 409, "unloaded
  before it finished loading".
- A load of a name whose unload is still draining: it gets a new generation; a worker loads it while
  the old one drains, and each waiter waits for its own generation.
- A worker that dies while it loads the model: the load fails with 507 (a worker killed during a
  load has most often run out of memory: SageMaker then unloads other models and tries again) and
  the model is taken out of the set, so the worker that replaces it does not load it again.
- A worker that dies otherwise: waiters ignore it. Its replacement registers first and then reads
  the set, and loads all of it before it reports ready and takes connections; a waiter lists
  workers after it has written the set, so a load in flight waits for the replacement too.
- The worker serving a load request dies before it answers: the model stays in the set and loads in
  every worker; the client's connection drops, and retrying answers 409 (it is loaded).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from serve.model.settings import Registration
from serve.process.probe import pid_alive

logger = logging.getLogger(__name__)

STATE_FILE = "models.json"
LOCK_FILE = "models.lock"
FAILURE_FILE = "startup-failure.txt"
POLL_S = 0.01  # how often a waiter looks at the workers' reports
MAX_WITHDRAWN = 256  # reasons kept for loads still waiting on a model taken out
_UNLOADED = "unloaded before it finished loading"

LOADING, LOADED, FAILED, UNLOADING = "loading", "loaded", "failed", "unloading"


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One model in the desired set.

    Attributes:
        name: the model's name.
        url: where it was loaded from (a directory or archive).
        generation: which registration of the name this is.
        aliases: other names a TargetModel may use for it (its path in the model store).
        registered: what it was given when added: its settings (batch size, delay, timeout), the
            url and handler a register call named.
        startup: one the server was started with: failing to load it in a worker stops the server.
        estimate: bytes its files take, the memory one worker is expected to need for it.
        added: when it was added (wall clock), for listings.
        model: the name TorchServe's API knows it by, when it is one version of several (its
            ``name`` is then ``model/version``); empty when that is ``name``.
        version: its version (TorchServe's ``modelVersion``); empty when it has none.
        default: the version TorchServe's routes without a version go to.
    """

    name: str
    url: str
    generation: int
    aliases: tuple[str, ...] = ()
    registered: Registration = Registration()
    startup: bool = False
    estimate: int = 0
    added: float = 0.0
    model: str = ""
    version: str = ""
    default: bool = True

    @property
    def model_name(self) -> str:
        """The name TorchServe's API knows it by."""
        return self.model or self.name

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ModelSpec:
        """A spec as ``models.json`` holds it (``dataclasses.asdict`` of the set)."""
        return cls(
            **{
                **data,
                "aliases": tuple(data.get("aliases", ())),
                "registered": Registration.from_json(data.get("registered", {})),
            }
        )


@dataclass(frozen=True, slots=True)
class Withdrawal:
    """Why a model was last taken out of the set, for the load that was waiting on it."""

    generation: int
    status: int
    error: str


@dataclass(slots=True)
class DesiredSet:
    """The models the server should hold, as stored in ``models.json``."""

    version: int = 0
    next_generation: int = 1
    models: dict[str, ModelSpec] = field(default_factory=dict)
    withdrawn: dict[str, Withdrawal] = field(default_factory=dict)

    def find(self, name: str) -> ModelSpec | None:
        """The model called ``name``, or whose alias it is."""
        spec = self.models.get(name)
        if spec is None:
            spec = next((m for m in self.models.values() if name in m.aliases), None)
        return spec

    def add(
        self,
        name: str,
        url: str,
        *,
        aliases: tuple[str, ...] = (),
        registered: Registration | None = None,
        startup: bool = False,
        estimate: int = 0,
        version: str = "",
        model: str = "",
    ) -> ModelSpec:
        spec = ModelSpec(
            name,
            url,
            self.next_generation,
            aliases,
            registered or Registration(),
            startup,
            estimate,
            time.time(),
            model=model if model != name else "",
            version=version,
            default=not self.versions(model or name),
        )
        self.next_generation += 1
        self.models[name] = spec
        return spec

    def versions(self, model: str) -> list[ModelSpec]:
        """The versions of the model TorchServe's API calls ``model``, oldest first."""
        return sorted(
            (spec for spec in self.models.values() if spec.model_name == model),
            key=lambda spec: spec.generation,
        )

    def remove(
        self, name: str, generation: int | None = None, status: int = 409, why: str = ""
    ) -> ModelSpec | None:
        """Take ``name`` out (only that generation when given); returns what was taken out. A
        load still waiting on it learns ``status`` and ``why``."""
        spec = self.models.get(name)
        if spec is None or (generation is not None and spec.generation != generation):
            return None
        self.withdrawn.pop(name, None)
        self.withdrawn[name] = Withdrawal(spec.generation, status, why or _UNLOADED)
        while len(self.withdrawn) > MAX_WITHDRAWN:
            del self.withdrawn[next(iter(self.withdrawn))]
        removed = self.models.pop(name)
        remaining = self.versions(removed.model_name)
        if removed.default and remaining:  # the oldest version left takes over
            self.make_default(remaining[0])
        return removed

    def make_default(self, spec: ModelSpec) -> None:
        """Make ``spec`` the default version of its model (no worker reloads anything)."""
        for other in self.versions(spec.model_name):
            if other.default != (other.name == spec.name):
                self.models[other.name] = replace(other, default=other.name == spec.name)


@dataclass(frozen=True, slots=True)
class HeldModel:
    """One model as a worker holds it."""

    name: str
    generation: int
    state: str
    error: str = ""
    status: int = 0
    memory: int = 0
    used: float = 0.0  # time.monotonic() of its last request: CLOCK_MONOTONIC is machine-wide


@dataclass(frozen=True, slots=True)
class WorkerReport:
    """What one worker holds, as it last wrote it."""

    pid: int
    ready: bool
    models: tuple[HeldModel, ...] = ()

    def held(self, name: str, generation: int) -> HeldModel | None:
        return next((m for m in self.models if m.name == name and m.generation == generation), None)


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a load ended across the workers."""

    ok: bool
    status: int = 200
    error: str = ""
    abandoned: bool = False


def died_while_loading(pid: int) -> str:
    return f"a worker (pid {pid}) died while loading it (most likely out of memory)"


class SharedModels:
    """The shared directory of one server: the desired set and the workers' reports.

    Args:
        directory: created by the master (see :meth:`create`) and inherited by the workers.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @classmethod
    def create(cls) -> SharedModels:
        """A fresh, empty directory (in the master, before fork)."""
        return cls(Path(tempfile.mkdtemp(prefix="byoserve-models-")))

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)

    # The desired set

    def read(self) -> DesiredSet:
        try:
            data = json.loads((self.directory / STATE_FILE).read_text())
        except FileNotFoundError:
            return DesiredSet()
        models = {name: ModelSpec.from_json(spec) for name, spec in data["models"].items()}
        withdrawn = {name: Withdrawal(**why) for name, why in data["withdrawn"].items()}
        return DesiredSet(data["version"], data["next_generation"], models, withdrawn)

    @contextmanager
    def editing(self) -> Iterator[DesiredSet]:
        """The desired set under the lock; written back (with a new version) if it changed."""
        with (self.directory / LOCK_FILE).open("a") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # released when the file is closed
            desired = self.read()
            before = (desired.next_generation, dict(desired.models))
            yield desired
            if (desired.next_generation, desired.models) != before:
                desired.version += 1
                self._write(STATE_FILE, asdict(desired))

    def _write(self, name: str, data: Mapping[str, Any]) -> None:
        tmp = self.directory / f".{name}.{os.getpid()}.{threading.get_ident()}.tmp"
        tmp.write_text(json.dumps(data))
        os.replace(tmp, self.directory / name)

    # Why the server cannot start: said once, whichever workers find it

    def claim(self, what: str) -> bool:
        """True for the first worker to claim ``what`` (to log a failure once, not per worker)."""
        try:
            os.close(os.open(self.directory / f"claim-{what}", os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            return False
        return True

    def report_failure(self, message: str) -> None:
        """Record why the server cannot start (the first report stands)."""
        if self.claim("startup-failure"):
            (self.directory / FAILURE_FILE).write_text(message)

    def failure(self) -> str | None:
        """The recorded reason the server could not start, if any."""
        try:
            return (self.directory / FAILURE_FILE).read_text()
        except FileNotFoundError:
            return None

    # The workers

    def register(self, pid: int) -> socket.socket:
        """Report an empty worker and open its wake-up socket (in the worker, at start)."""
        self.publish(WorkerReport(pid, ready=False))
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        address = self._address(pid)
        if not address.startswith("\0"):
            with suppress(FileNotFoundError):
                Path(address).unlink()
        sock.bind(address)
        return sock

    def _address(self, pid: int) -> str:
        """Where worker ``pid`` listens for wake-ups."""
        if sys.platform == "linux":
            tag = hashlib.sha256(str(self.directory.resolve()).encode()).hexdigest()[:16]
            return f"\0byoserve-{tag}-{pid}"
        return str(self.directory / f"worker-{pid}.sock")

    def publish(self, report: WorkerReport) -> None:
        self._write(f"worker-{report.pid}.json", asdict(report))

    def workers(self) -> dict[int, WorkerReport]:
        """The reports of the workers that are alive."""
        reports: dict[int, WorkerReport] = {}
        for path in self.directory.glob("worker-*.json"):
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):  # removed meanwhile
                continue
            if pid_alive(data["pid"]):
                held = tuple(HeldModel(**model) for model in data["models"])
                reports[data["pid"]] = WorkerReport(data["pid"], data["ready"], held)
        return reports

    def forget(self, pid: int) -> None:
        """A worker exited (in the master): a model it was loading is taken out of the set, so
        that its replacement does not load it too (see the module docstring); then its report
        and socket are dropped."""
        try:
            report = json.loads((self.directory / f"worker-{pid}.json").read_text())
        except (OSError, ValueError):
            report = {"models": []}
        loading = [HeldModel(**m) for m in report["models"] if m["state"] == LOADING]
        if loading:
            why = died_while_loading(pid)
            with self.editing() as desired:
                for model in loading:
                    if desired.remove(model.name, model.generation, 507, why) is not None:
                        logger.error("model %s: %s; it is unloaded", model.name, why)
            self.wake_all()
        for name in (f"worker-{pid}.json", f"worker-{pid}.sock"):
            with suppress(FileNotFoundError):
                (self.directory / name).unlink()

    def wake_all(self) -> None:
        """Make every worker read the desired set now."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            for report in self.directory.glob("worker-*.json"):
                pid = int(report.stem.removeprefix("worker-"))
                with suppress(OSError):  # gone, or a wake-up is already waiting there
                    sock.sendto(b"!", self._address(pid))

    # Waiting for the workers

    def await_loaded(self, spec: ModelSpec, deadline: float, workers: Iterable[int]) -> Outcome:
        """Wait until every live worker holds ``spec`` loaded, one failed it, one died before it
        had loaded it, or it was taken out of the set; see the module docstring.

        Args:
            spec: the model, as added to the set.
            deadline: a ``time.monotonic()`` value.
            workers: the workers alive before ``spec`` was added (listed under the lock): a
                worker that loads it and dies at once is then still seen to die.
        """
        seen = set(workers)
        done: set[int] = set()
        while time.monotonic() < deadline:
            desired = self.read()
            current = desired.models.get(spec.name)
            if current is None or current.generation != spec.generation:
                why = desired.withdrawn.get(spec.name)
                if why is None or why.generation != spec.generation:
                    return Outcome(False, 409, _UNLOADED, abandoned=True)
                return Outcome(False, why.status, why.error, abandoned=why.status == 409)
            workers = self.workers()
            died = seen - done - workers.keys()
            if died:
                return Outcome(False, 507, died_while_loading(min(died)))
            held = {pid: report.held(spec.name, spec.generation) for pid, report in workers.items()}
            failed = next((m for m in held.values() if m is not None and m.state == FAILED), None)
            if failed is not None:
                return Outcome(False, failed.status or 500, failed.error)
            done |= {pid for pid, m in held.items() if m is not None and m.state == LOADED}
            if held and done >= held.keys():
                return Outcome(True)
            seen |= workers.keys()
            time.sleep(POLL_S)
        return Outcome(False, 500, "it did not load in every worker in time")

    def await_unloaded(self, spec: ModelSpec, deadline: float) -> bool:
        """Wait until no live worker holds ``spec``; False when the deadline passed first."""
        while time.monotonic() < deadline:
            workers = self.workers().values()
            if all(report.held(spec.name, spec.generation) is None for report in workers):
                return True
            time.sleep(POLL_S)
        return False
