"""The Docker API engine (docker-py), for ``DOCKER_HOST`` = a Docker daemon or ``podman system
service``."""

from __future__ import annotations

import contextlib
import sys
from typing import Any

import docker
from docker.errors import APIError, DockerException, ImageNotFound, NotFound

from deploy.engine import DIGEST, BuildRequest, EngineError, RunRequest


def _raise_on_error(chunk: dict[str, Any], what: str) -> None:
    if "error" in chunk or "errorDetail" in chunk:
        detail = chunk.get("errorDetail", {}).get("message") or chunk.get("error")
        raise EngineError(f"{what} failed: {detail}")


class ApiEngine:
    """docker-py against ``base_url``; build-time ``--volume`` mounts need a CLI instead."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        try:
            self.client = docker.DockerClient(base_url=base_url)
            self.client.ping()
        except DockerException as exc:
            raise EngineError(f"cannot reach the Docker API at {base_url}: {exc}") from exc

    def build(self, request: BuildRequest) -> str:
        if request.volumes:
            raise EngineError("--volume needs a CLI engine: pass --docker podman (or docker)")
        stream = self.client.api.build(
            path=str(request.context),
            dockerfile=request.dockerfile,
            tag=request.tag,
            buildargs=dict(request.build_args),
            labels=dict(request.labels or {}),
            rm=True,
            decode=True,
        )
        for chunk in stream:
            _raise_on_error(chunk, "build")
            if "stream" in chunk:
                sys.stdout.write(chunk["stream"])
        image_id = self.image_id(request.tag)
        if image_id is None:
            raise EngineError(f"build finished but image {request.tag} is not there")
        return image_id

    def image_id(self, ref: str) -> str | None:
        try:
            return str(self.client.images.get(ref).id)
        except ImageNotFound:
            return None

    def tag(self, ref: str, repository: str, tag: str) -> None:
        self.client.images.get(ref).tag(repository, tag)

    def push(self, repository: str, tag: str, username: str, password: str) -> str:
        auth = {"username": username, "password": password}
        digest = None
        try:
            for chunk in self.client.images.push(
                repository, tag=tag, auth_config=auth, stream=True, decode=True
            ):
                _raise_on_error(chunk, f"push of {repository}:{tag}")
                aux = chunk.get("aux") or {}
                found = DIGEST.findall(str(aux.get("Digest", "")) + str(chunk.get("status", "")))
                digest = str(found[-1]) if found else digest
        except APIError as exc:
            raise EngineError(f"push of {repository}:{tag} failed: {exc}") from exc
        if digest is None:
            raise EngineError(f"push of {repository}:{tag} reported no digest")
        return digest

    def run(self, request: RunRequest) -> str:
        container = self.client.containers.run(
            request.image,
            command=["serve", *request.args],
            detach=True,
            init=True,
            ports={"8080/tcp": ("127.0.0.1", request.port)},
            volumes={src: {"bind": dst, "mode": "ro"} for src, dst in request.mounts.items()},
            environment=dict(request.environment),
        )
        return str(container.id)

    def remove_container(self, container_id: str) -> None:
        with contextlib.suppress(NotFound):
            self.client.containers.get(container_id).remove(force=True)

    def container_logs(self, container_id: str) -> str:
        logs: bytes = self.client.containers.get(container_id).logs()
        return logs.decode(errors="replace")
