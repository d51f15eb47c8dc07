"""TorchServe's MNIST example (``examples/image_classifier/mnist``) made servable here: its
``mnist.py`` and ``mnist_handler.py`` as they are (``tests/fixtures/torchserve_mnist``), weights
trained for a few seconds on scikit-learn's digits, digit PNGs, and the ``.mar`` that
torch-model-archiver makes of them with the example README's command.

The example ships a trained ``mnist_cnn.pt``; a binary is not committed here, so the weights are
made in the fixture: the example's ``Net``, trained on the 8x8 digits scaled up to MNIST's 28x28,
saved as a ``state_dict`` under the key names ``Net`` itself gives.
"""

from __future__ import annotations

import importlib.util
import io
import shutil
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from sklearn.datasets import load_digits

from tests.fixtures.server import REPO

EXAMPLE = REPO / "tests" / "fixtures" / "torchserve_mnist"
MODEL_FILE = EXAMPLE / "mnist.py"
HANDLER_FILE = EXAMPLE / "mnist_handler.py"
SIDE = 28  # MNIST's images are 28x28 grayscale, white digit on black
# mnist_handler.py's image_processing: ToTensor, then Normalize((0.1307,), (0.3081,))
MEAN, STD = 0.1307, 0.3081
TRAIN_COUNT = 1500  # of the 1797 digits; the inputs come from the rest
EPOCHS = 2


@dataclass(frozen=True)
class Digit:
    """One input: the PNG's bytes and the digit it shows."""

    label: int
    png: bytes


def digit_image(pixels: np.ndarray) -> Image.Image:
    """An 8x8 digit (values 0..16, ink high) as a 28x28 grayscale image, as MNIST draws them."""
    small = Image.fromarray(np.clip(pixels * 16, 0, 255).astype(np.uint8), mode="L")
    return small.resize((SIDE, SIDE), Image.Resampling.BILINEAR)


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def load_net_class() -> type[torch.nn.Module]:
    """``Net`` from the example's ``mnist.py``, imported from the file."""
    spec = importlib.util.spec_from_file_location("torchserve_mnist_model", MODEL_FILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    net: type[torch.nn.Module] = module.Net
    return net


def _as_tensor(images: list[Image.Image]) -> torch.Tensor:
    stacked = np.stack([np.asarray(image, dtype=np.float32) / 255.0 for image in images])
    return ((torch.from_numpy(stacked) - MEAN) / STD).unsqueeze(1)


def train_weights(target: Path, seed: int = 0) -> dict[str, Any]:
    """Train the example's ``Net`` briefly and save its ``state_dict`` to ``target`` (what the
    example's ``mnist_cnn.pt`` holds). Returns the held-out accuracy as ``{"accuracy": ...}``."""
    torch.manual_seed(seed)
    digits = load_digits()
    images = [digit_image(pixels) for pixels in digits.images]
    inputs, labels = _as_tensor(images), torch.as_tensor(digits.target)
    model = load_net_class()()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    order = torch.Generator().manual_seed(seed)
    model.train()
    with warnings.catch_warnings():
        # mnist.py applies Dropout2d to a flat (N, 128) input, which torch warns about
        warnings.filterwarnings("ignore", message="dropout2d: Received a 2-D input")
        for _ in range(EPOCHS):
            for batch in torch.split(torch.randperm(TRAIN_COUNT, generator=order), 64):
                optimizer.zero_grad()
                loss = torch.nn.functional.nll_loss(model(inputs[batch]), labels[batch])
                torch.autograd.backward(loss)
                optimizer.step()
        model.eval()
        with torch.no_grad():
            predicted = model(inputs[TRAIN_COUNT:]).argmax(1)
    torch.save(model.state_dict(), target)
    return {"accuracy": float((predicted == labels[TRAIN_COUNT:]).float().mean())}


def held_out_digits() -> list[Digit]:
    """Ten PNG inputs, the first held-out sample of each digit 0..9."""
    digits = load_digits()
    chosen: dict[int, Digit] = {}
    for index in range(TRAIN_COUNT, len(digits.target)):
        label = int(digits.target[index])
        if label not in chosen:
            chosen[label] = Digit(label, png_bytes(digit_image(digits.images[index])))
    return [chosen[label] for label in sorted(chosen)]


def archive_example(weights: Path, workdir: Path) -> Path:
    """``torch-model-archiver`` (0.12, the real one) run as the example's README says; returns
    ``workdir/mnist.mar``."""
    workdir.mkdir(parents=True, exist_ok=True)
    for source in (MODEL_FILE, HANDLER_FILE, weights):
        shutil.copy2(source, workdir / source.name)
    archiver = Path(sys.executable).parent / "torch-model-archiver"
    subprocess.run(
        [
            str(archiver),
            "--model-name", "mnist",
            "--version", "1.0",
            "--model-file", "mnist.py",
            "--serialized-file", weights.name,
            "--handler", "mnist_handler.py",
        ],
        cwd=workdir,
        check=True,
        capture_output=True,
        timeout=120,
    )  # fmt: skip
    return workdir / "mnist.mar"
