"""Drive podman from the container tests: build images, run containers, wait for them, clean up.

Every helper shells out to the ``podman`` CLI, the same commands a person types; the Docker API
path (docker-py against ``podman system service``) lives in ``dockerapi``.
"""

from __future__ import annotations

import array
import contextlib
import fcntl
import json
import os
import re
import shutil
import socket
import subprocess
import termios
import time
import uuid
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from serve.process.probe import wait_for_ping
from tests.fixtures.server import REPO, free_port

PODMAN = "podman"
# The same variable as the Makefile's; the CPU torch wheel lies there on the project's machines.
WHEELS = Path(os.environ.get("TORCH_WHEELS", "/opt/wheels"))
# Mounted into the build's RUN steps, and named by the build argument that the Dockerfile reads.
WHEELS_IN_BUILD = "/wheels"
BUILD_ARGS = {"TORCH_FIND_LINKS": WHEELS_IN_BUILD}
BUILD_TIMEOUT = 900.0
TEST_LABEL = "byoserve-test"
# Every image a build of this test process commits, intermediate ones included, carries
# SESSION_LABEL=SESSION (buildah copies --label onto each step's image; a layer reused from the
# cache keeps the label of the build that made it): remove_image deletes only those.
SESSION_LABEL = "byoserve-test.session"
SESSION = uuid.uuid4().hex[:12]
MISSING_PODMAN = (
    "podman is not usable here ({reason}). The container tests build and run the real image and "
    "must not be skipped: run `make test`, which sets podman up (container/setup-podman.sh)."
)


class PodmanError(RuntimeError):
    """A podman command failed; the message holds the command and the end of its output."""


def unique(prefix: str) -> str:
    """A name no other session uses: ``prefix-<12 hex digits>``."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def require_podman() -> None:
    """Fail (never skip) when podman is missing or cannot run containers."""
    if shutil.which(PODMAN) is None:
        pytest.fail(MISSING_PODMAN.format(reason="no podman on PATH"), pytrace=False)
    info = subprocess.run([PODMAN, "info"], capture_output=True, text=True, timeout=120)
    if info.returncode != 0:
        reason = f"`podman info` exited {info.returncode}: {info.stderr.strip()[-500:]}"
        pytest.fail(MISSING_PODMAN.format(reason=reason), pytrace=False)


def podman(
    *args: str, timeout: float = 120.0, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run ``podman ARGS``; with ``check``, a non-zero exit raises PodmanError."""
    done = subprocess.run(
        [PODMAN, *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and done.returncode != 0:
        raise PodmanError(
            f"podman {' '.join(args)} exited {done.returncode}:\n"
            f"{done.stdout[-2000:]}{done.stderr[-4000:]}"
        )
    return done


# --- images ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class BuildStep:
    """One ``STEP n/m: INSTRUCTION`` of podman's build output and the lines it printed."""

    stage: str  # "2/3" for multi-stage builds, "" otherwise
    instruction: str
    lines: tuple[str, ...]

    @property
    def cached(self) -> bool:
        return any(line.startswith("--> Using cache") for line in self.lines)


_STEP = re.compile(r"^(?:\[(?P<stage>\d+/\d+)\] )?STEP \d+/\d+: (?P<instruction>.*)$")


def build_steps(output: str) -> list[BuildStep]:
    """Split podman/buildah build output into its steps."""
    steps: list[BuildStep] = []
    header: re.Match[str] | None = None
    lines: list[str] = []
    for line in output.splitlines():
        match = _STEP.match(line)
        if match is None:
            lines.append(line)
            continue
        if header is not None:
            steps.append(BuildStep(header["stage"] or "", header["instruction"], tuple(lines)))
        header, lines = match, []
    if header is not None:
        steps.append(BuildStep(header["stage"] or "", header["instruction"], tuple(lines)))
    return steps


def build_image(context: Path, tag: str, log_path: Path, *, target: str | None = None) -> str:
    """``podman build`` the Dockerfile in ``context`` the way the project's machines do.

    The local torch wheel directory is mounted into RUN steps (``-v``), never copied into the
    context. Every image the build commits is labelled as this session's (``SESSION_LABEL``); the
    label does not enter buildah's cache key, so layers are reused across sessions and by builds
    without it. Returns the build output (also written to ``log_path``).
    """
    if not any(WHEELS.glob("torch-*.whl")):
        pytest.fail(f"no torch wheel in {WHEELS} (set TORCH_WHEELS to the wheel directory)")
    command = [
        "build",
        "--layers",
        "--force-rm",
        # podman's Docker API builds in docker format, and buildah reuses a cached layer only for
        # builds of the same format: docker format here too, so both paths share one cache.
        "--format",
        "docker",
        "--label",
        f"{SESSION_LABEL}={SESSION}",
        "-v",
        f"{WHEELS}:{WHEELS_IN_BUILD}:ro",
        *(arg for name, value in BUILD_ARGS.items() for arg in ("--build-arg", f"{name}={value}")),
        *(["--target", target] if target else []),
        "-t",
        tag,
        "-f",
        str(context / "Dockerfile"),
        str(context),
    ]
    return run_build(command, tag, log_path)


def run_build(command: list[str], tag: str, log_path: Path, timeout: float = BUILD_TIMEOUT) -> str:
    """Run ``podman`` + ``command`` (a build of ``tag``), its output into ``log_path``; buildah's
    working containers are removed if it fails.

    Raises:
        PodmanError: the build failed (the end of its log in the message).
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with working_containers_removed_on_failure():
        done = subprocess.run(
            [PODMAN, *command],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            check=False,
        )
        log_path.write_text(done.stdout)
        if done.returncode != 0:
            raise PodmanError(
                f"podman build of {tag} exited {done.returncode} (full log: {log_path}):\n"
                f"{done.stdout[-6000:]}"
            )
    return done.stdout


def working_containers(attempts: int = 3) -> set[str]:
    """Ids of buildah's working containers (what a build runs its steps in).

    A build elsewhere on the machine can remove one of its containers while podman lists them,
    which fails the listing ("container not known"); it is listed again.
    """
    args = ("ps", "--all", "--external", "--format", "{{.ID}} {{.Names}}")
    for _ in range(attempts - 1):
        done = podman(*args, check=False)
        if done.returncode == 0:
            break
        time.sleep(1)
    else:
        done = podman(*args)  # the last attempt raises PodmanError with podman's message
    listed = done.stdout
    return {
        fields[0]
        for fields in map(str.split, listed.splitlines())
        if len(fields) == 2 and "working-container" in fields[1]
    }


@contextlib.contextmanager
def working_containers_removed_on_failure() -> Iterator[None]:
    """Remove the working containers a failed or interrupted build leaves behind.

    A successful build removes its own. Those that appeared while the build ran are taken to be
    its own; on a machine shared with other builds that is a guess, so only a failure acts on it.
    """
    before = working_containers()
    try:
        yield
    except BaseException:
        for leftover in sorted(working_containers() - before):
            # `podman rm` refuses a mounted storage container; `buildah rm` unmounts it first.
            subprocess.run(["buildah", "rm", leftover], capture_output=True, check=False)
        raise


def image_id(reference: str) -> str:
    return podman("image", "inspect", "--format", "{{.Id}}", reference).stdout.strip()


def remove_image(tag: str) -> None:
    """Remove one name, and the image with it when this session's build made it.

    An image that carries this session's ``SESSION_LABEL`` was committed by its build: ``podman
    rmi --no-prune`` deletes it (only it; with other names it just loses this one). Any other
    image only loses the name: a build given ``--target`` names the cached stage image itself,
    which may have been on the machine before the session, and so may a build through the Docker
    API (no label). :class:`SessionImages` removes those the session added at its end. Never
    ``prune``, which would take other people's images too.
    """
    if podman("image", "exists", tag, check=False).returncode != 0:
        return
    if image_labels(tag).get(SESSION_LABEL) == SESSION:
        podman("rmi", "--no-prune", tag, timeout=300)
    else:
        podman("untag", tag, tag)


def image_labels(reference: str) -> dict[str, str]:
    inspected = json.loads(podman("image", "inspect", reference).stdout)
    labels: dict[str, str] = inspected[0].get("Labels") or {}
    return labels


@dataclass(frozen=True)
class LocalImage:
    """One image in podman's storage, intermediate ones included."""

    id: str
    parent: str
    names: tuple[str, ...]


def local_images() -> dict[str, LocalImage]:
    """Every image in podman's storage (``podman images -a``), by id."""
    listed = json.loads(podman("images", "-a", "--format", "json").stdout or "[]")
    return {
        item["Id"]: LocalImage(
            item["Id"],
            item.get("ParentId") or "",
            tuple(item.get("Names") or ()),
        )
        for item in listed
    }


@dataclass(frozen=True)
class SessionImages:
    """The images podman held when a test session began, to remove at its end those it added.

    A build with ``--layers`` commits an image per step, and each stage's last one stays behind
    untagged once the session's names are gone (1.25 GB for the dependency stage). What the end
    removes: images that were not there at the start and that no name holds, neither their own
    (a person's image, or another test's, which removes its own) nor a descendant's (the stages
    under an image that a session running beside this one still uses). What was there before
    stays, cache layers included.
    """

    before: frozenset[str]

    @classmethod
    def record(cls) -> SessionImages:
        return cls(frozenset(local_images()))

    def added(self) -> list[LocalImage]:
        """The images the session added that no name holds, children before their parents."""
        images = local_images()
        held: set[str] = set()
        for image in images.values():
            ancestor = image.id if image.names else ""
            while ancestor in images and ancestor not in held:
                held.add(ancestor)
                ancestor = images[ancestor].parent
        found = {
            image.id: image
            for image in images.values()
            if image.id not in self.before and image.id not in held
        }
        ordered: list[LocalImage] = []
        while found:
            parents = {image.parent for image in found.values()}
            leaves = [image for image in found.values() if image.id not in parents] or list(
                found.values()
            )
            ordered += leaves
            for image in leaves:
                del found[image.id]
        return ordered

    def remove_added(self) -> None:
        """Remove the session's images (``--no-prune``: never a parent that was there before);
        warns with podman's message when some stay (in use by a container, say)."""
        added = [image.id for image in self.added()]
        if not added:
            return
        # one call: podman goes on past an image it cannot remove and says why at the end
        done = podman("rmi", "--no-prune", *added, check=False, timeout=600)
        left = [image.id[:12] for image in self.added()]
        if left:
            warnings.warn(
                f"the test session could not remove the images it built {', '.join(left)}: "
                f"{done.stderr.strip()[-2000:]}",
                stacklevel=2,
            )


@contextlib.contextmanager
def images_removed_afterwards() -> Iterator[SessionImages]:
    """Record the images there are now; on leaving, remove those added since (see
    :class:`SessionImages`)."""
    images = SessionImages.record()
    try:
        yield images
    finally:
        images.remove_added()


def copy_build_context(target: Path) -> Path:
    """The repository's files as git sees them (tracked and untracked, not ignored) under target.

    Modification times are kept, so layers whose inputs did not change stay cache hits.
    """
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in sorted(set(filter(None, listed.split("\0")))):
        source = REPO / name
        if not source.is_file():  # deleted in the work tree but still in the index
            continue
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target / name)
    return target


# --- containers -----------------------------------------------------------------------------


@dataclass
class Container:
    """A detached container; ``port`` is the host port mapped to the server's port."""

    name: str
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def inspect(self) -> dict[str, Any]:
        data: list[dict[str, Any]] = json.loads(podman("container", "inspect", self.name).stdout)
        return data[0]

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = self.inspect()["State"]
        return state

    def running(self) -> bool:
        return self.state().get("Status") == "running"

    def logs(self) -> str:
        done = podman("logs", self.name, check=False)
        return done.stdout + done.stderr

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Poll /ping until 200 against a monotonic deadline; fail early if the container ended
        (each check of that costs a podman call, ~0.1 s)."""
        if wait_for_ping(self.url, time.monotonic() + timeout, self.running):
            return
        if not self.running():
            raise RuntimeError(
                f"container {self.name} ended ({self.state()}) before /ping answered:\n"
                f"{self.logs()}"
            )
        raise TimeoutError(f"{self.name}: /ping not 200 within {timeout} s:\n{self.logs()}")

    def host_pid(self) -> int:
        """The host's process id of the container's PID 1."""
        pid = self.state()["Pid"]
        assert isinstance(pid, int) and pid > 0, self.state()
        return pid


@dataclass
class Containers:
    """Starts containers for a test and removes every one of them afterwards, pass or fail."""

    image: str
    names: list[str] = field(default_factory=list)

    def run(
        self,
        model_dir: Path | None,
        *,
        args: Sequence[str] = ("serve",),
        env: Mapping[str, str] | None = None,
        container_port: int = 8080,
        mounts: Mapping[Path, str] | None = None,
    ) -> Container:
        """``podman run -d`` with a free host port, ``model_dir`` mounted read-only at
        /opt/ml/model and each of ``mounts`` (host path: container path) read-only."""
        name = unique(TEST_LABEL)
        port = free_port()
        command = ["run", "-d", "--name", name, "--label", TEST_LABEL]
        command += ["-p", f"127.0.0.1:{port}:{container_port}"]
        if model_dir is not None:
            command += ["-v", f"{model_dir}:/opt/ml/model:ro"]
        for source, target in (mounts or {}).items():
            command += ["-v", f"{source}:{target}:ro"]
        for key, value in (env or {}).items():
            command += ["-e", f"{key}={value}"]
        self.names.append(name)
        podman(*command, self.image, *args)
        return Container(name, port)

    def run_to_end(
        self, args: Sequence[str], timeout: float = 120.0
    ) -> subprocess.CompletedProcess[str]:
        """``podman run --rm IMAGE ARGS`` in the foreground; its exit status and output."""
        name = unique(TEST_LABEL)
        self.names.append(name)
        command = ["run", "--rm", "--name", name, "--label", TEST_LABEL, self.image, *args]
        return podman(*command, timeout=timeout, check=False)

    def remove_all(self) -> None:
        for name in self.names:
            podman("rm", "-f", "-t", "0", "--ignore", name, check=False, timeout=60)
        self.names.clear()


LISTEN, ESTABLISHED = "0A", "01"  # TCP states as /proc/net/tcp writes them


def server_sockets(pid: int, port: int) -> Iterator[tuple[str, int]]:
    """(state, receive-queue bytes) of the TCP sockets on ``port`` in ``pid``'s network namespace.

    For a listening socket the receive queue is the number of connections not yet accepted.
    """
    for table in ("tcp", "tcp6"):
        path = Path(f"/proc/{pid}/net/{table}")
        if not path.exists():
            continue
        for row in path.read_text().splitlines()[1:]:
            fields = row.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port:
                yield fields[3], int(fields[4].split(":")[1], 16)


def unacknowledged_bytes(client: socket.socket) -> int:
    """Bytes ``client`` has sent that the peer's kernel has not acknowledged yet (SIOCOUTQ)."""
    queued = array.array("i", [0])
    fcntl.ioctl(client.fileno(), termios.TIOCOUTQ, queued)
    return queued[0]


def wait_request_taken(
    container: Container, client: socket.socket, port: int = 8080, timeout: float = 30.0
) -> None:
    """Wait until the request sent on ``client`` has been accepted and read by the server.

    True when the server's kernel has acknowledged every byte, a connection is established,
    none waits in the listen backlog, and no established connection has unread bytes: the
    request is in the handler.
    """
    pid = container.host_pid()
    deadline = time.monotonic() + timeout
    sockets: list[tuple[str, int]] = []
    while time.monotonic() < deadline:
        delivered = unacknowledged_bytes(client) == 0
        sockets = list(server_sockets(pid, port))
        backlog = sum(queue for state, queue in sockets if state == LISTEN)
        unread = [queue for state, queue in sockets if state == ESTABLISHED]
        if delivered and unread and backlog == 0 and not any(unread):
            return
        time.sleep(0.005)
    raise TimeoutError(f"the request was not taken within {timeout} s: {sockets}")
