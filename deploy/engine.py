"""What a container engine is to deploy: the :class:`Engine` protocol, the requests it takes and
the error it raises. The engines themselves are in deploy/engines.py (a ``docker``/``podman`` CLI)
and deploy/dockerapi.py (the Docker API); both import this module and not each other.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from deploy.errors import DeployError

DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


class EngineError(DeployError):
    """The container engine refused or failed an operation."""


@dataclass(frozen=True, slots=True)
class BuildRequest:
    """What to build: context directory, Dockerfile, tag, ``--build-arg``s, build-time mounts."""

    context: Path
    dockerfile: str
    tag: str
    build_args: Mapping[str, str]
    volumes: Sequence[str] = ()
    labels: Mapping[str, str] | None = None


@dataclass(frozen=True, slots=True)
class RunRequest:
    """A detached container: image, host port for 8080, read-only mounts, environment, and the
    flags that follow the image's ``serve`` command (none: SageMaker's own command)."""

    image: str
    port: int
    mounts: Mapping[str, str]
    environment: Mapping[str, str]
    args: Sequence[str] = ()


def is_local_registry(registry: str) -> bool:
    """Loopback registries are reached over plain HTTP (``--tls-verify=false``)."""
    host = registry.split("/")[0].rsplit(":", 1)[0]
    return host in ("localhost", "127.0.0.1", "[::1]")


class Engine(Protocol):
    """The container operations deploy uses."""

    def build(self, request: BuildRequest) -> str: ...
    def image_id(self, ref: str) -> str | None: ...
    def tag(self, ref: str, repository: str, tag: str) -> None: ...
    def push(self, repository: str, tag: str, username: str, password: str) -> str: ...
    def run(self, request: RunRequest) -> str: ...
    def remove_container(self, container_id: str) -> None: ...
    def container_logs(self, container_id: str) -> str: ...
