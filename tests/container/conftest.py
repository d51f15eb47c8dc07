"""Fixtures for the container tests: the real image built once, models to mount, containers.

Everything started here is removed again, pass or fail: containers (``podman rm -f``), the image
names the session made, and at the end of the session every image its builds added, the stages'
intermediate images included (``session_images``). Images that were there before stay: the base
image, a person's own builds, cache layers a build reused. Within the session, builds reuse each
other's layers.
"""

from __future__ import annotations

import shutil
import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.container.podman import (
    Containers,
    SessionImages,
    build_image,
    images_removed_afterwards,
    remove_image,
    require_podman,
)
from tests.fixtures.handler_styles import TOOLKIT_INFERENCE, TOOLKIT_SLOW
from tests.fixtures.modeldirs import model_dir, tar_gz
from tests.fixtures.models import DigitsModel
from tests.fixtures.server import REPO

SENTIMENT_ARCHIVE = REPO / "build" / "sentiment.tar.gz"


@dataclass(frozen=True)
class BuiltImage:
    tag: str
    build_output: str


@pytest.fixture(scope="session")
def podman_ready() -> None:
    """podman works here; otherwise every container test FAILS (CI must never skip them)."""
    require_podman()


@pytest.fixture(scope="session")
def image_repository() -> str:
    """``localhost/byoserve-test:<random>`` names are this session's, and only those go away."""
    return f"localhost/byoserve-test:{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def session_images(podman_ready: None) -> Iterator[SessionImages]:
    """The images there were before the first build; those added since go at the session's end."""
    with images_removed_afterwards() as images:
        yield images


@pytest.fixture(scope="session")
def image(
    session_images: SessionImages, image_repository: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BuiltImage]:
    """The real Dockerfile built once for the session (about 2.5 min cold, 30 s cached)."""
    tag = image_repository
    deps_tag = f"{tag}-deps"
    logs = tmp_path_factory.mktemp("build-logs")
    try:
        output = build_image(REPO, tag, logs / "build.log")
        # Name the dependency stage while the session runs, so that a `podman image prune`
        # elsewhere cannot drop the layer the rebuild and Docker API tests expect to reuse.
        build_image(REPO, deps_tag, logs / "deps.log", target="builder")
        yield BuiltImage(tag, output)
    finally:
        remove_image(deps_tag)
        remove_image(tag)


@pytest.fixture
def containers(image: BuiltImage) -> Iterator[Containers]:
    """Start containers from the session's image; all are removed after the test."""
    started = Containers(image.tag)
    try:
        yield started
    finally:
        started.remove_all()


# --- models to mount read-only -----------------------------------------------------------


def archive_only(tree: Path, target: Path) -> Path:
    """A directory holding nothing but ``model.tar.gz`` of ``tree``."""
    target.mkdir(parents=True, exist_ok=True)
    tar_gz(tree, target / "model.tar.gz")
    return target


@pytest.fixture(scope="session")
def digits_tree(digits: DigitsModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trained digits CNN with a toolkit-style ``code/inference.py``, extracted."""
    return model_dir(
        tmp_path_factory.mktemp("digits-tree"),
        digits.directory,
        files={"code/inference.py": TOOLKIT_INFERENCE},
    )


@pytest.fixture(scope="session")
def digits_archive(digits_tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return archive_only(digits_tree, tmp_path_factory.mktemp("digits-archive"))


@pytest.fixture(scope="session")
def slow_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model whose transform_fn sleeps ``{"sleep": N}`` seconds."""
    empty = tmp_path_factory.mktemp("slow-files")
    return model_dir(
        tmp_path_factory.mktemp("slow-tree"), empty, files={"code/inference.py": TOOLKIT_SLOW}
    )


@pytest.fixture(scope="session")
def sentiment_archive() -> Path:
    """``build/sentiment.tar.gz``, made by ``make model`` when it is not there yet."""
    if not SENTIMENT_ARCHIVE.exists():
        made = subprocess.run(
            ["make", "model"],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=600,
            check=False,
        )
        assert made.returncode == 0, f"`make model` exited {made.returncode}:\n{made.stdout}"
        assert SENTIMENT_ARCHIVE.exists(), (
            f"`make model` did not make {SENTIMENT_ARCHIVE}:\n{made.stdout}"
        )
    return SENTIMENT_ARCHIVE


@pytest.fixture(scope="session")
def sentiment_tree(sentiment_archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("sentiment-tree")
    with tarfile.open(sentiment_archive) as tar:
        tar.extractall(target, filter="data")
    return target


@pytest.fixture(scope="session")
def sentiment_archive_dir(
    sentiment_archive: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    target = tmp_path_factory.mktemp("sentiment-archive")
    shutil.copy(sentiment_archive, target / "model.tar.gz")
    return target
