"""Real container infrastructure for the push tests: Debian's ``docker-registry`` on loopback and
``podman system service`` (the Docker API), each started on demand and always stopped."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.fixtures.server import free_port

REGISTRY_BINARY = "/usr/bin/docker-registry"
MANIFEST_TYPES = ", ".join(
    (
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    )
)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _wait(check: str | Path, proc: subprocess.Popen[bytes], what: str, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited: {log.read_text(errors='replace')[-2000:]}")
        if isinstance(check, Path):
            if check.exists():
                return
        else:
            with contextlib.suppress(requests.ConnectionError):
                if requests.get(check, timeout=2).status_code == 200:
                    return
        time.sleep(0.05)
    raise TimeoutError(f"{what} did not start: {log.read_text(errors='replace')[-2000:]}")


@dataclass
class Registry:
    host: str

    def manifest_digest(self, repository: str, tag: str) -> str:
        """The registry's own ``Docker-Content-Digest`` for ``repository:tag``."""
        response = requests.get(
            f"http://{self.host}/v2/{repository}/manifests/{tag}",
            headers={"Accept": MANIFEST_TYPES},
            timeout=10,
        )
        response.raise_for_status()
        return response.headers["Docker-Content-Digest"]


@contextlib.contextmanager
def local_registry(workdir: Path) -> Iterator[Registry]:
    """``docker-registry serve`` with filesystem storage under ``workdir`` on a free port."""
    port = free_port()
    storage = workdir / "registry-storage"
    storage.mkdir(parents=True)
    config = workdir / "registry.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
        f"    rootdirectory: {storage}\nhttp:\n  addr: 127.0.0.1:{port}\n"
    )
    log = workdir / "registry.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([REGISTRY_BINARY, "serve", str(config)], stdout=out, stderr=out)
    try:
        _wait(f"http://127.0.0.1:{port}/v2/", proc, "docker-registry", log)
        yield Registry(f"127.0.0.1:{port}")
    finally:
        _stop(proc)


@contextlib.contextmanager
def podman_service(workdir: Path, insecure_registry: str) -> Iterator[str]:
    """``podman system service`` on a private socket; ``insecure_registry`` is plain HTTP.

    The registries.conf is private to this service (CONTAINERS_REGISTRIES_CONF), so the machine's
    own configuration is not touched. Yields the ``unix://`` URL for DOCKER_HOST.
    """
    socket = workdir / "podman.sock"
    conf = workdir / "registries.conf"
    conf.write_text(f'[[registry]]\nlocation = "{insecure_registry}"\ninsecure = true\n')
    log = workdir / "podman-service.log"
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CONTAINERS_REGISTRIES_CONF": str(conf)}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["podman", "system", "service", "--time=0", f"unix://{socket}"],
            stdout=out,
            stderr=out,
            env=env,
        )
    try:
        _wait(socket, proc, "podman system service", log)
        yield f"unix://{socket}"
    finally:
        _stop(proc)


def require_container_tools(registry: bool = True) -> None:
    """Fail (never skip: CI must run these) unless podman and, with ``registry``, the local
    registry are installed; ``make containers`` installs both, and ``make test`` runs it."""
    missing = [
        name
        for name, present in (
            ("podman", shutil.which("podman") is not None),
            (REGISTRY_BINARY, not registry or Path(REGISTRY_BINARY).exists()),
        )
        if not present
    ]
    if missing:
        pytest.fail(f"{' and '.join(missing)} not installed: run `make containers` first")


def remove_images(*refs: str) -> None:
    """``podman rmi -f --no-prune`` the images a test made: only those, not their parents."""
    for ref in refs:
        subprocess.run(["podman", "rmi", "-f", "--no-prune", ref], capture_output=True, check=False)
