"""The real TorchServe 0.12 (its Java frontend and Python backend), started as its docs say:
``torchserve --start --ncs --model-store DIR --models NAME.mar --disable-token-auth`` with a
``config.properties`` that puts every listener on a free loopback port, and stopped again with
``torchserve --stop``.

Everything it writes stays in one directory: its pid file and worker sockets (``TMPDIR``,
``TEMP``), its logs (``LOG_LOCATION``, ``METRICS_LOCATION``), so two runs on one machine do not
meet, and a failure can show its logs.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import requests

from tests.fixtures.server import free_port

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


def _script(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def _config(home: Path) -> dict[str, int]:
    ports = {name: free_port() for name in ("inference", "management", "metrics", "grpc", "gm")}
    lines = [
        f"inference_address=http://127.0.0.1:{ports['inference']}",
        f"management_address=http://127.0.0.1:{ports['management']}",
        f"metrics_address=http://127.0.0.1:{ports['metrics']}",
        f"grpc_inference_port={ports['grpc']}",
        f"grpc_management_port={ports['gm']}",
        "default_workers_per_model=1",
        "disable_system_metrics=true",
    ]
    (home / "config.properties").write_text("\n".join(lines) + "\n")
    return ports


def _environment(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        TMPDIR=str(home / "tmp"),
        TEMP=str(home / "tmp"),
        LOG_LOCATION=str(home / "logs"),
        METRICS_LOCATION=str(home / "logs"),
    )
    return env


def _wait_model_ready(server: TorchServe, process: subprocess.Popen[bytes], model: str) -> None:
    """Until the model has a READY worker; fails early when TorchServe exits."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise TorchServeError(f"torchserve exited {process.returncode}:\n{server.logs()}")
        try:
            response = requests.get(f"{server.management_url}/models/{model}", timeout=2)
            workers = response.json()[0].get("workers", []) if response.ok else []
            if any(worker.get("status") == "READY" for worker in workers):
                return
        except (requests.RequestException, ValueError, LookupError):
            pass
        time.sleep(0.2)
    raise TorchServeError(f"{model}: no READY worker within {START_TIMEOUT} s:\n{server.logs()}")


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
def torchserve(model_store: Path, archive: str, home: Path) -> Iterator[TorchServe]:
    """Serve ``model_store/archive`` with the real TorchServe until the block ends."""
    if shutil.which("java") is None:
        raise TorchServeError("TorchServe's frontend needs Java: `make test-compat` installs it")
    (home / "tmp").mkdir(parents=True, exist_ok=True)
    (home / "logs").mkdir(exist_ok=True)
    ports = _config(home)
    command = [
        _script("torchserve"),
        "--start",
        "--foreground",  # so the process we hold is the frontend's parent
        "--ncs",
        "--model-store", str(model_store),
        "--models", archive,
        "--ts-config", str(home / "config.properties"),
        "--disable-token-auth",
    ]  # fmt: skip
    with (home / "console.log").open("wb") as console:
        process = subprocess.Popen(
            command,
            cwd=home,
            env=_environment(home),
            stdout=console,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = TorchServe(home, ports["inference"], ports["management"])
    try:
        _wait_model_ready(server, process, Path(archive).stem)
        yield server
    finally:
        _stop(home, process)
