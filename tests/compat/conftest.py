"""Tests that need TorchServe's torchvision-based handlers: run them in ``.venv-compat``
(torch, torchvision, torchserve, torch-model-archiver) with ``make test-compat``; the main run
leaves this folder out (``--ignore=tests/compat`` in pyproject.toml)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.compat.mnist_example import Digit, archive_example, held_out_digits, train_weights
from tests.compat.vision_image import IMAGE, build_vision_image
from tests.container.podman import require_podman


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "compat: needs torchvision and TorchServe's handlers (the .venv-compat venv)"
    )


@pytest.fixture(scope="session")
def vision_image(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The torchvision variant of the image, built or brought up to date (kept afterwards)."""
    require_podman()
    build_vision_image(tmp_path_factory.mktemp("vision-build"))
    return IMAGE


@pytest.fixture(scope="session")
def mnist_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """TorchServe's MNIST example archived as its README says: ``mnist.mar``."""
    work = tmp_path_factory.mktemp("mnist")
    weights = work / "weights" / "mnist_cnn.pt"
    weights.parent.mkdir()
    trained = train_weights(weights)
    assert trained["accuracy"] > 0.8, trained  # a model that tells digits apart
    return archive_example(weights, work / "archive")


@pytest.fixture(scope="session")
def mnist_digits() -> list[Digit]:
    return held_out_digits()
