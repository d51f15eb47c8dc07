"""The torchvision variant of the image (``Dockerfile`` with ``VARIANT=torchvision``), built for the
compat tests and kept between runs.

Unlike the session images of ``tests/container``, this one stays: a cold build installs the CUDA
build of torch 2.14.1 (about 6 GB) and takes several minutes, a rebuild after a code change well
under one. Two names hold it, and with them the layers a rebuild reuses: :data:`IMAGE` and
:data:`DEPS_IMAGE` (the ``builder`` stage, whose venv the final stage copies). Whatever else a
build adds goes again: the images it made that no name holds, and the images those names held
before a rebuild moved them. ``podman images -a`` then lists what it listed before, plus these two
(and their layers, on the first run).

The packages come from pip's local indexes on this machine (``global.extra-index-url`` pointing at
``file://DIR/simple``), mounted read-only into the build's RUN steps, as ``make build-torchvision``
does; where pip has none, from PyPI and download.pytorch.org.
"""

from __future__ import annotations

import subprocess
import sys
import time
import warnings
from pathlib import Path

from tests.container.podman import images_removed_afterwards, podman, run_build
from tests.fixtures.server import REPO

IMAGE = "localhost/byoserve-compat:torchvision"
DEPS_IMAGE = f"{IMAGE}-deps"
# Where each local index directory appears inside the build: /indexes/<its path on the host>.
INDEXES_IN_BUILD = "/indexes"
BUILD_TIMEOUT = 1800.0


def local_indexes() -> list[Path]:
    """The directories of pip's ``file://DIR/simple`` extra indexes on this machine."""
    done = subprocess.run(
        [sys.executable, "-m", "pip", "config", "get", "global.extra-index-url"],
        capture_output=True,
        text=True,
        check=False,
    )
    found = []
    for url in done.stdout.split():
        if url.startswith("file://") and url.rstrip("/").endswith("/simple"):
            found.append(Path(url.removeprefix("file://").rstrip("/")).parent)
    return [directory for directory in found if directory.is_dir()]


def build_arguments() -> list[str]:
    """``podman build`` flags for the variant: the build argument and the local indexes."""
    flags = ["--build-arg", "VARIANT=torchvision"]
    indexes = local_indexes()
    for directory in indexes:
        flags += ["-v", f"{directory}:{INDEXES_IN_BUILD}{directory}:ro"]
    if indexes:
        urls = " ".join(f"file://{INDEXES_IN_BUILD}{d}/simple" for d in indexes)
        flags += ["--build-arg", f"TORCH_INDEX_URL={urls}"]
    return flags


def _build(tag: str, log_path: Path, target: str | None = None) -> None:
    command = [
        "build",
        "--layers",
        "--format",
        "docker",  # the format the Makefile and the container tests build in (one cache)
        *build_arguments(),
        *(["--target", target] if target else []),
        "-t",
        tag,
        "-f",
        str(REPO / "Dockerfile"),
        str(REPO),
    ]
    run_build(command, tag, log_path, timeout=BUILD_TIMEOUT)


def _image_id(reference: str) -> str | None:
    done = podman("image", "inspect", "--format", "{{.Id}}", reference, check=False)
    return done.stdout.strip() or None if done.returncode == 0 else None


def build_vision_image(log_dir: Path) -> float:
    """Build (or bring up to date) :data:`IMAGE` and :data:`DEPS_IMAGE`, logs in ``log_dir``;
    returns how many seconds the builds took."""
    log_dir.mkdir(parents=True, exist_ok=True)
    previous = {tag: _image_id(tag) for tag in (IMAGE, DEPS_IMAGE)}
    with images_removed_afterwards():
        started = time.monotonic()
        _build(IMAGE, log_dir / "torchvision.log")
        _build(DEPS_IMAGE, log_dir / "torchvision-deps.log", target="builder")
        seconds = time.monotonic() - started
        for tag, old in previous.items():
            if old is not None and old != _image_id(tag):
                _remove_replaced(tag, old)
    return seconds


def _remove_replaced(tag: str, old: str) -> None:
    """Remove the image ``tag`` named before this build. Without ``--no-prune``: the parent
    layers only it used (its code layers, or a dependency layer replaced) go with it."""
    done = podman("rmi", old, check=False, timeout=600)
    if done.returncode != 0:
        warnings.warn(
            f"could not remove {old[:12]}, which {tag} named before this build: "
            f"{done.stderr.strip()[-1000:]}",
            stacklevel=2,
        )


if __name__ == "__main__":  # `make test` builds it while the main tests run
    logs = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "build" / "compat-logs"
    print(f"{IMAGE}: built or up to date in {build_vision_image(logs):.0f} s")
