"""The real TorchServe 0.12 (its Java frontend and Python backend), run as its docs say:
``torchserve --start --ncs --model-store DIR [--models ...] --ts-config config.properties
--disable-token-auth`` with every listener on a free loopback port, and stopped again with
``torchserve --stop``. The bench serves its workloads with it; the compat tests
(tests/compat/) compare byoserve's answers with its answers.

TorchServe runs with the Python it is installed in (its backend workers run ``sys.executable``
of the ``torchserve`` script's interpreter): the bench's own venv, torch 2.13.0, or the compat
venv, torch 2.14.1. Everything it writes stays in one directory: its pid file and worker sockets
(``TMPDIR``, ``TEMP``), its logs (``LOG_LOCATION``, ``METRICS_LOCATION``), so two runs on one
machine do not meet, and a failure can show its logs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from serve.process.probe import free_port

START_TIMEOUT = 180.0
LOG_FILES = ("console.log", "logs/ts_log.log", "logs/model_log.log")


class TorchServeError(RuntimeError):
    """TorchServe did not start, or stopped, with the end of its logs."""


@dataclass(frozen=True)
class TorchServe:
    """A running TorchServe: where it answers, and where it keeps its files."""

    home: Path
    inference_port: int
    management_port: int

    @property
    def inference_url(self) -> str:
        return f"http://127.0.0.1:{self.inference_port}"

    @property
    def management_url(self) -> str:
        return f"http://127.0.0.1:{self.management_port}"

    def logs(self, tail: int = 6000) -> str:
        """The end of each of its logs, named."""
        parts = []
        for name in LOG_FILES:
            path = self.home / name
            if path.exists():
                parts.append(f"--- {name}\n{path.read_text(errors='replace')[-tail:]}")
        return "\n".join(parts)

    def register(self, archive: str, **settings: str | int) -> None:
        """``POST /models?url=ARCHIVE&synchronous=true&...``: returns once its workers are up."""
        query = urllib.parse.urlencode({"url": archive, "synchronous": "true", **settings})
        self._manage("POST", f"/models?{query}")

    def unregister(self, model: str) -> None:
        """``DELETE /models/MODEL``: its workers stop."""
        self._manage("DELETE", f"/models/{model}")

    def _manage(self, method: str, path: str) -> None:
        request = urllib.request.Request(f"{self.management_url}{path}", method=method)
        try:
            with urllib.request.urlopen(request, timeout=START_TIMEOUT):
                pass
        except urllib.error.URLError as exc:
            raise TorchServeError(f"{method} {path} failed: {exc}\n{self.logs()}") from exc


def _script(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def _config(home: Path, workers: int) -> dict[str, int]:
    ports = {name: free_port() for name in ("inference", "management", "metrics", "grpc", "gm")}
    lines = [
        f"inference_address=http://127.0.0.1:{ports['inference']}",
        f"management_address=http://127.0.0.1:{ports['management']}",
        f"metrics_address=http://127.0.0.1:{ports['metrics']}",
        f"grpc_inference_port={ports['grpc']}",
        f"grpc_management_port={ports['gm']}",
        f"default_workers_per_model={workers}",
        "disable_system_metrics=true",
        "enable_model_api=true",  # registering models (the bench), off by default since 0.12
    ]
    (home / "config.properties").write_text("\n".join(lines) + "\n")
    return ports


def _environment(home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        TMPDIR=str(home / "tmp"),
        TEMP=str(home / "tmp"),
        LOG_LOCATION=str(home / "logs"),
        METRICS_LOCATION=str(home / "logs"),
        **(extra or {}),
    )
    return env


def _answers(server: TorchServe) -> bool:
    """Whether the management API answers its model list."""
    try:
        with urllib.request.urlopen(f"{server.management_url}/models", timeout=2) as response:
            json.load(response)
            return True
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _ready(server: TorchServe, model: str) -> bool:
    """Whether ``model`` has a READY worker."""
    try:
        with urllib.request.urlopen(f"{server.management_url}/models/{model}", timeout=2) as r:
            workers = json.load(r)[0].get("workers", [])
    except (urllib.error.URLError, OSError, ValueError, LookupError):
        return False
    return any(worker.get("status") == "READY" for worker in workers)


def _wait(server: TorchServe, process: subprocess.Popen[bytes], model: str | None) -> None:
    """Until ``model`` has a READY worker (or, with no model, the management API answers); fails
    early when TorchServe exits."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise TorchServeError(f"torchserve exited {process.returncode}:\n{server.logs()}")
        if _ready(server, model) if model else _answers(server):
            return
        time.sleep(0.2)
    raise TorchServeError(f"{model}: not ready within {START_TIMEOUT} s:\n{server.logs()}")


def _stop(home: Path, process: subprocess.Popen[bytes]) -> None:
    """``torchserve --stop`` (it reads the pid file in our TMPDIR), then the process group we
    started is made sure to be gone: the frontend, and the backend workers it started."""
    subprocess.run(
        [_script("torchserve"), "--stop"],
        env=_environment(home),
        cwd=home,
        capture_output=True,
        timeout=60,
        check=False,
    )
    with suppress(subprocess.TimeoutExpired):
        process.wait(timeout=60)
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


@contextmanager
def torchserve(
    model_store: Path,
    home: Path,
    archives: Sequence[str] = (),
    workers: int = 1,
    env: Mapping[str, str] | None = None,
) -> Iterator[TorchServe]:
    """Serve ``archives`` (start-up models) from ``model_store`` with the real TorchServe until
    the block ends; ``workers`` per model, ``env`` added to its environment."""
    if shutil.which("java") is None:
        raise TorchServeError("TorchServe's frontend needs Java: `make java` installs it")
    (home / "tmp").mkdir(parents=True, exist_ok=True)
    (home / "logs").mkdir(exist_ok=True)
    ports = _config(home, workers)
    command = [
        _script("torchserve"),
        "--start",
        "--foreground",  # so the process we hold is the frontend's parent
        "--ncs",
        "--model-store", str(model_store),
        *(["--models", *archives] if archives else []),
        "--ts-config", str(home / "config.properties"),
        "--disable-token-auth",
    ]  # fmt: skip
    with (home / "console.log").open("wb") as console:
        process = subprocess.Popen(
            command,
            cwd=home,
            env=_environment(home, env),
            stdout=console,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = TorchServe(home, ports["inference"], ports["management"])
    try:
        _wait(server, process, Path(archives[0]).stem if archives else None)
        yield server
    finally:
        _stop(home, process)
