"""Container engines: the Docker API (docker-py, ``DOCKER_HOST``) or a ``docker``/``podman`` CLI.

Both offer the same few operations deploy needs: build, look up, tag, push (returning the digest the
registry stored), run and remove a container. Podman serves the Docker API too
(``podman system service``), so the API path is tested against it.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from deploy.engine import DIGEST, BuildRequest, Engine, EngineError, RunRequest, is_local_registry


class CliEngine:
    """``docker`` or ``podman`` on PATH (podman: ``--creds``, ``--digestfile``, no login file)."""

    def __init__(self, binary: str) -> None:
        path = shutil.which(binary)
        if path is None:
            raise EngineError(
                f"container CLI {binary!r} not found on PATH: install it or pass --docker"
            )
        self.binary = path
        self.podman = Path(binary).name.startswith("podman")

    def _run(self, *args: str, stdin: str | None = None, stream: bool = False) -> str:
        command = [self.binary, *args]
        result = subprocess.run(
            command,
            input=stdin,
            text=True,
            stdout=None if stream else subprocess.PIPE,
            stderr=None if stream else subprocess.STDOUT,
            check=False,
        )
        if result.returncode != 0:
            tail = (result.stdout or "").strip().splitlines()[-5:]
            raise EngineError(f"`{' '.join(command[:3])} ...` failed: {' | '.join(tail)}")
        return result.stdout or ""

    def build(self, request: BuildRequest) -> str:
        with tempfile.TemporaryDirectory() as scratch:
            iidfile = Path(scratch) / "iid"
            args = ["build", "-t", request.tag, "-f", request.dockerfile, "--iidfile", str(iidfile)]
            for key, value in request.build_args.items():
                args += ["--build-arg", f"{key}={value}"]
            for volume in request.volumes:
                args += ["-v", volume]
            for key, value in (request.labels or {}).items():
                args += ["--label", f"{key}={value}"]
            self._run(*args, str(request.context), stream=True)
            return iidfile.read_text().strip()

    def image_id(self, ref: str) -> str | None:
        try:
            return self._run("image", "inspect", "--format", "{{.Id}}", ref).strip() or None
        except EngineError:
            return None

    def tag(self, ref: str, repository: str, tag: str) -> None:
        self._run("tag", ref, f"{repository}:{tag}")

    def push(self, repository: str, tag: str, username: str, password: str) -> str:
        registry = repository.split("/")[0]
        tls = ["--tls-verify=false"] if is_local_registry(registry) else []
        if self.podman:
            with tempfile.TemporaryDirectory() as scratch:
                digest_file = Path(scratch) / "digest"
                self._run(
                    "push", *tls, "--creds", f"{username}:{password}",
                    "--digestfile", str(digest_file), f"{repository}:{tag}",
                )  # fmt: skip
                return digest_file.read_text().strip()
        self._run("login", "--username", username, "--password-stdin", registry, stdin=password)
        output = self._run("push", f"{repository}:{tag}")
        found = DIGEST.findall(output)
        if not found:
            raise EngineError(f"push of {repository}:{tag} printed no digest")
        return str(found[-1])

    def run(self, request: RunRequest) -> str:
        args = ["run", "-d", "--init", "-p", f"127.0.0.1:{request.port}:8080"]
        for source, target in request.mounts.items():
            args += ["-v", f"{source}:{target}:ro"]
        for key, value in request.environment.items():
            args += ["-e", f"{key}={value}"]
        command = [request.image, "serve", *request.args]
        return self._run(*args, *command).strip().splitlines()[-1]

    def remove_container(self, container_id: str) -> None:
        self._run("rm", "-f", container_id)

    def container_logs(self, container_id: str) -> str:
        return self._run("logs", container_id)


def open_engine(docker: str | None, docker_host: str | None) -> Engine:
    """The CLI named by ``--docker``/``DOCKER``; else the Docker API at ``DOCKER_HOST``; else
    ``podman`` or ``docker`` found on PATH."""
    if docker:
        return CliEngine(docker)
    if docker_host:
        from deploy.dockerapi import ApiEngine

        return ApiEngine(docker_host)
    for binary in ("podman", "docker"):
        if shutil.which(binary):
            return CliEngine(binary)
    raise EngineError("no container engine: set DOCKER_HOST, or pass --docker docker|podman")


def describe(engine: Engine) -> dict[str, Any]:
    """How the engine is reached, for dry-run lines."""
    if isinstance(engine, CliEngine):
        return {"cli": engine.binary}
    return {"api": getattr(engine, "base_url", "")}
