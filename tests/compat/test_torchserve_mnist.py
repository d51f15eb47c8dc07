"""TorchServe's own MNIST example, served unchanged by byoserve inside the torchvision image,
answers as TorchServe 0.12 itself does.

The example (``examples/image_classifier/mnist``: ``mnist.py``, and ``mnist_handler.py``, which
subclasses ``ts.torch_handler.image_classifier.ImageClassifier`` and imports torchvision) is
archived by the real torch-model-archiver as its README says. The same ``mnist.mar`` is served by
the real TorchServe (Java frontend, Python backend; ``POST /predictions/mnist``) and, mounted at
``/opt/ml/model``, by the image built from ``Dockerfile`` with ``VARIANT=torchvision``
(``POST /invocations``). Ten digit PNGs go to both, as raw bytes; the answers (the class index
the handler returns) must be the same.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import model_archiver  # noqa: F401 - run by `make test-compat`, in .venv-compat
import pytest
import requests
import torchvision  # noqa: F401

from bench.torchserve import torchserve
from tests.compat.mnist_example import Digit
from tests.container.podman import Containers

pytestmark = [pytest.mark.compat, pytest.mark.slow, pytest.mark.container]

BYTES = {"Content-Type": "application/octet-stream"}


def only(archive: Path, directory: Path) -> Path:
    """``directory`` holding nothing but a copy of ``archive`` (a model store, or /opt/ml/model)."""
    directory.mkdir(parents=True)
    shutil.copy2(archive, directory / archive.name)
    return directory


def answers(url: str, digits: list[Digit]) -> list[tuple[int, str]]:
    """``(status, body)`` for each digit PNG posted to ``url``."""
    replies = []
    for digit in digits:
        response = requests.post(url, data=digit.png, headers=BYTES, timeout=60)
        replies.append((response.status_code, response.text))
    return replies


@pytest.fixture
def containers(vision_image: str) -> Iterator[Containers]:
    started = Containers(vision_image)
    try:
        yield started
    finally:
        started.remove_all()


def test_mnist_example_answers_as_torchserve_does(
    mnist_archive: Path, mnist_digits: list[Digit], containers: Containers, tmp_path: Path
) -> None:
    store = only(mnist_archive, tmp_path / "model-store")
    with torchserve(store, tmp_path / "torchserve", [mnist_archive.name]) as reference:
        expected = answers(f"{reference.inference_url}/predictions/mnist", mnist_digits)
        reference_logs = reference.logs()
    assert all(status == 200 for status, _ in expected), (expected, reference_logs)
    classes = [int(body) for _, body in expected]
    # the trained example tells most digits apart, so equal answers are not a constant's
    assert len(set(classes)) >= 6, (classes, [digit.label for digit in mnist_digits])

    container = containers.run(only(mnist_archive, tmp_path / "model"))
    container.wait_ready(timeout=300)
    got = answers(f"{container.url}/invocations", mnist_digits)

    assert got == expected, container.logs()
