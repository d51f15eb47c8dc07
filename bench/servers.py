"""Start a server under test as a subprocess on a free port, wait for /ping, stop it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from serve.process.probe import wait_for_ping

REPO = Path(__file__).resolve().parents[1]


@contextmanager
def running(
    command: Sequence[str],
    port: int,
    log: Path,
    env: Mapping[str, str] | None = None,
    ready_timeout: float = 120.0,
    cwd: Path = REPO,
) -> Iterator[tuple[str, float, int]]:
    """Run ``command`` in ``cwd`` (a ``python -m`` command serves that checkout's code); yields
    its URL, the seconds from process start to the first 200, and its process id."""
    url = f"http://127.0.0.1:{port}"
    environ = {**os.environ, **(env or {})}
    with log.open("wb") as out:
        started = time.monotonic()
        proc = subprocess.Popen(
            command,
            cwd=cwd,  # ``python -m serve`` serves the checkout it runs in
            env=environ,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        # a fine poll: the seconds to the first 200 are what cold starts report
        if not wait_for_ping(url, started + ready_timeout, lambda: proc.poll() is None, 0.01):
            if proc.poll() is not None:
                raise RuntimeError(f"{command[:4]} exited with {proc.returncode}; see {log}")
            raise TimeoutError(f"{command[:4]} not ready in {ready_timeout} s; see {log}")
        yield url, time.monotonic() - started, proc.pid
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def byoserve_command(model_dir: Path, port: int, args: Sequence[str] = ()) -> list[str]:
    return [
        sys.executable, "-m", "serve", "--model-dir", str(model_dir), "--host", "127.0.0.1",
        "--port", str(port), "--log-level", "WARNING", *args,
    ]  # fmt: skip


def plain_command(model_dir: Path, handler_file: str, handler_class: str, port: int,
                  workers: int) -> list[str]:  # fmt: skip
    return [
        sys.executable, "-m", "bench.plain_server", str(model_dir), handler_file, handler_class,
        str(port), str(workers),
    ]  # fmt: skip
