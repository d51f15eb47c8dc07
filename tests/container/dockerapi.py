"""podman's Docker API on a private socket, for docker-py (what the deploy module uses)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import docker
from docker.errors import DockerException

from tests.container.podman import PODMAN, unique


class PodmanService:
    """``podman system service --time=0`` on a unique unix socket; stop() ends it."""

    def __init__(self, log_dir: Path) -> None:
        self.socket = Path("/tmp") / f"{unique('byoserve-test')}.sock"
        self.base_url = f"unix://{self.socket}"
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / "podman-service.log"
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [PODMAN, "system", "service", "--time=0", self.base_url],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def client(self, timeout: float = 30.0) -> docker.DockerClient:
        """A docker-py client once the service answers ``/_ping`` (monotonic deadline)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"podman system service exited {self.proc.returncode}:\n"
                    f"{self.log_path.read_text(errors='replace')}"
                )
            if self.socket.exists():
                client = docker.DockerClient(base_url=self.base_url, timeout=900)
                try:
                    client.ping()
                    return client
                except DockerException:
                    client.close()
            time.sleep(0.05)
        raise TimeoutError(f"podman system service not answering on {self.socket}")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s; the socket file goes too."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.socket.unlink(missing_ok=True)
