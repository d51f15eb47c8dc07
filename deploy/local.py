"""``local``: serve an endpoint's archive on this machine, in its image or as ``python -m serve``.

The archive is mounted read-only as ``/opt/ml/model/model.tar.gz`` (the server unpacks it, as it
does for any local mount). Once ``/ping`` answers, one line ``endpoint_url=http://127.0.0.1:PORT``
is printed; ``boto3.client("sagemaker-runtime", endpoint_url=...)`` then reaches the server.
It runs until interrupted (Ctrl-C or SIGTERM) and then stops what it started.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from types import FrameType

from deploy.engines import Engine, RunRequest
from deploy.errors import DeployError

CONTAINER_ARCHIVE = "/opt/ml/model/model.tar.gz"


class LocalServerError(DeployError):
    """The local server did not come up."""


class _StoppedError(Exception):
    """SIGTERM arrived."""


def free_port() -> int:
    """A loopback TCP port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_ping(url: str, timeout: float, alive: Callable[[], bool]) -> None:
    """Poll ``url/ping`` until 200 against a monotonic deadline; give up if the server died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise LocalServerError(f"the local server exited before {url}/ping answered")
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.1)
    raise LocalServerError(f"{url}/ping did not answer 200 within {timeout:.0f} s")


def _raise_stopped(signum: int, frame: FrameType | None) -> None:
    raise _StoppedError


def serve_until_stopped(url: str, alive: Callable[[], bool], ready_timeout: float) -> None:
    """Wait for /ping, print the endpoint URL, then block until a signal or the server's exit."""
    previous = signal.signal(signal.SIGTERM, _raise_stopped)
    try:
        wait_for_ping(url, ready_timeout, alive)
        print(f"endpoint_url={url}", flush=True)
        while alive():
            time.sleep(0.5)
        raise LocalServerError("the local server exited")
    except (KeyboardInterrupt, _StoppedError):
        print("stopping the local server", file=sys.stderr)
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_subprocess(
    archive: Path, port: int, environment: Mapping[str, str], ready_timeout: float
) -> None:
    """``python -m serve`` on the archive, without any container engine."""
    command = [sys.executable, "-m", "serve", "--model-dir", str(archive)]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(command, env={**os.environ, **environment})
    try:
        serve_until_stopped(f"http://127.0.0.1:{port}", lambda: proc.poll() is None, ready_timeout)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def run_container(
    engine: Engine,
    image: str,
    archive: Path,
    port: int,
    environment: Mapping[str, str],
    ready_timeout: float,
) -> None:
    """The image, as SageMaker runs it (``serve``), with the archive mounted read-only."""
    if engine.image_id(image) is None:
        raise LocalServerError(f"no local image {image}: run `python -m deploy build` or --image")
    request = RunRequest(image, port, {str(archive.resolve()): CONTAINER_ARCHIVE}, environment)
    container = engine.run(request)
    running = [True]

    def alive() -> bool:
        return running[0]

    try:
        serve_until_stopped(f"http://127.0.0.1:{port}", alive, ready_timeout)
    except LocalServerError:
        print(engine.container_logs(container)[-4000:], file=sys.stderr)
        raise
    finally:
        running[0] = False
        engine.remove_container(container)
