"""``local``: serve an endpoint on this machine, in its image or as ``python -m serve``.

A single-model endpoint's archive is mounted read-only as ``/opt/ml/model/model.tar.gz`` (the
server unpacks it, as it does for any local mount). A multi-model endpoint's archives are put in
a temporary model store under their target names and the server runs with ``--model-store`` and
no start-up models, so each archive is loaded on the first request that names it as its
``TargetModel``, as SageMaker does. Once ``/ping`` answers, one line
``endpoint_url=http://127.0.0.1:PORT`` is printed; ``boto3.client("sagemaker-runtime",
endpoint_url=...)`` then reaches the server. It runs until interrupted (Ctrl-C or SIGTERM) and
then stops what it started.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from deploy.definitions import TargetArchive
from deploy.engine import Engine, RunRequest
from deploy.errors import DeployError
from serve.process.probe import wait_for_ping

CONTAINER_ARCHIVE = "/opt/ml/model/model.tar.gz"
CONTAINER_STORE = "/opt/ml/model-store"


class LocalServerError(DeployError):
    """The local server did not come up."""


class _StoppedError(Exception):
    """SIGTERM arrived."""


@dataclass(frozen=True, slots=True)
class ModelSource:
    """What the local server serves: one archive, or a model store (a directory of archives,
    each loaded on the first request whose ``TargetModel`` names it)."""

    path: Path
    store: bool = False

    def server_args(self) -> list[str]:
        """The ``python -m serve`` flags that serve it from this machine."""
        return ["--model-store" if self.store else "--model-dir", str(self.path)]

    def mounts(self) -> dict[str, str]:
        """Its read-only mount: an archive where SageMaker puts the model, a store at
        ``CONTAINER_STORE``."""
        return {str(self.path.resolve()): CONTAINER_STORE if self.store else CONTAINER_ARCHIVE}

    def container_args(self) -> tuple[str, ...]:
        """The flags after the image's ``serve``: none for an archive (SageMaker's command)."""
        return ("--model-store", CONTAINER_STORE) if self.store else ()


def _place(archive: Path, destination: Path) -> None:
    """A hard link, else (another file system) a copy. Not a symlink: the server refuses a
    store entry that resolves outside the store, and the link would not resolve in a mount."""
    try:
        os.link(archive, destination)
    except OSError:
        shutil.copyfile(archive, destination)


@contextlib.contextmanager
def model_store(targets: Iterable[TargetArchive]) -> Iterator[ModelSource]:
    """A temporary model store holding each archive under its target name; removed on exit."""
    with tempfile.TemporaryDirectory(prefix="byoserve-store-", ignore_cleanup_errors=True) as tmp:
        store = Path(tmp)
        store.chmod(0o755)  # the image's server runs as an unprivileged user
        for target in targets:
            _place(target.path, store / target.name)
        yield ModelSource(store, store=True)


def await_ping(url: str, timeout: float, alive: Callable[[], bool]) -> None:
    """Wait for ``url/ping`` to answer 200 (serve/process/probe.py), in deploy's words.

    Raises:
        LocalServerError: the server died first, or did not answer within ``timeout`` seconds.
    """
    if wait_for_ping(url, time.monotonic() + timeout, alive, interval=0.1):
        return
    if not alive():
        raise LocalServerError(f"the local server exited before {url}/ping answered")
    raise LocalServerError(f"{url}/ping did not answer 200 within {timeout:.0f} s")


def _raise_stopped(signum: int, frame: FrameType | None) -> None:
    raise _StoppedError


@contextlib.contextmanager
def stopped_by_signal() -> Iterator[None]:
    """Ctrl-C or SIGTERM inside ends the block quietly (what started inside is stopped by the
    context managers it was started with)."""
    previous = signal.signal(signal.SIGTERM, _raise_stopped)
    try:
        yield
    except (KeyboardInterrupt, _StoppedError):
        print("stopping the local server", file=sys.stderr)
    finally:
        signal.signal(signal.SIGTERM, previous)


@dataclass(frozen=True, slots=True)
class LocalServer:
    """A started local server: its URL, and whether it still runs."""

    url: str
    alive: Callable[[], bool]


@contextlib.contextmanager
def subprocess_server(
    source: ModelSource, port: int, environment: Mapping[str, str], ready_timeout: float
) -> Iterator[LocalServer]:
    """``python -m serve`` on the archive or store, without any container engine; yields once
    ``/ping`` answers, and stops the server on exit."""
    command = [sys.executable, "-m", "serve", *source.server_args()]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(command, env={**os.environ, **environment})
    server = LocalServer(f"http://127.0.0.1:{port}", lambda: proc.poll() is None)
    try:
        await_ping(server.url, ready_timeout, server.alive)
        yield server
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


@contextlib.contextmanager
def container_server(
    engine: Engine,
    image: str,
    source: ModelSource,
    port: int,
    environment: Mapping[str, str],
    ready_timeout: float,
) -> Iterator[LocalServer]:
    """The image, as SageMaker runs it (``serve``), with the archive or store mounted read-only;
    yields once ``/ping`` answers, and removes the container on exit."""
    if engine.image_id(image) is None:
        raise LocalServerError(f"no local image {image}: run `python -m deploy build` or --image")
    request = RunRequest(image, port, source.mounts(), environment, args=source.container_args())
    container = engine.run(request)
    running = [True]
    server = LocalServer(f"http://127.0.0.1:{port}", lambda: running[0])
    try:
        try:
            await_ping(server.url, ready_timeout, server.alive)
        except LocalServerError:
            print(engine.container_logs(container)[-4000:], file=sys.stderr)
            raise
        yield server
    finally:
        running[0] = False
        engine.remove_container(container)


def serve_here(server: AbstractContextManager[LocalServer]) -> None:
    """Start ``server``, print ``endpoint_url=...`` once it answers, run until Ctrl-C or
    SIGTERM (the server's own exit is an error: it was meant to run)."""
    with stopped_by_signal(), server as started:
        print(f"endpoint_url={started.url}", flush=True)
        while started.alive():
            time.sleep(0.5)
        raise LocalServerError("the local server exited")
