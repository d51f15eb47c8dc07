"""The archives TorchServe's tests take from ``ts_scripts/marsgen.py``, built from local files.

TorchServe's marsgen downloads torchvision weights and archives its image classifiers; its tests
and its management collection only register, scale, describe and unregister those (squeezenet1_1,
densenet161, resnet-18, resnet-152-batch), so each stand-in here is the same name with a small
handler (``standin_handlers/echo_handler.py``). ``mnist.mar`` is TorchServe's MNIST example
(``examples/image_classifier/mnist/mnist.py``, copied) with weights written here and a handler
that needs no torchvision (``standin_handlers/mnist_handler.py``). All are made by the real
torch-model-archiver, as marsgen makes them.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import torch

PEERS = Path(__file__).resolve().parent
REPO = PEERS.parents[1]
UPSTREAM = PEERS / "torchserve"
HANDLERS = PEERS / "standin_handlers"
MNIST_DIR = UPSTREAM / "examples" / "image_classifier" / "mnist"
MNIST_WEIGHTS = MNIST_DIR / "mnist_cnn.pt"  # upstream ships trained weights; not in the mirror
MODEL_STORE_GEN = REPO / "build" / "peers" / "model_store_gen"
IMAGE_CLASSIFIERS = ("squeezenet1_1", "densenet161", "resnet-18", "resnet-152-batch")
ARCHIVER = Path(sys.executable).with_name("torch-model-archiver")

mar_set: set[str] = set()  # marsgen's name: the archives made in this session


def write_mnist_weights() -> Path:
    """``mnist_cnn.pt``: the example's ``Net`` with seeded weights (its answers are not checked)."""
    if not MNIST_WEIGHTS.exists():
        sys.path.insert(0, str(MNIST_DIR))
        try:
            from mnist import Net  # TorchServe's example module
        finally:
            sys.path.remove(str(MNIST_DIR))
        torch.manual_seed(0)
        torch.save(Net().state_dict(), MNIST_WEIGHTS)
    return MNIST_WEIGHTS


def _archive(name: str, export: Path, *flags: str) -> None:
    command = [str(ARCHIVER), "--model-name", name, "--version", "1.0", *flags]
    subprocess.run([*command, "--export-path", str(export), "--force"], check=True)
    mar_set.add(f"{name}.mar")


def generate_mars(model_store_dir: Path = MODEL_STORE_GEN) -> set[str]:
    """Every stand-in archive into ``model_store_dir`` (once per session)."""
    if mar_set:
        return mar_set
    model_store_dir.mkdir(parents=True, exist_ok=True)
    for name in IMAGE_CLASSIFIERS:
        _archive(name, model_store_dir, "--handler", str(HANDLERS / "echo_handler.py"))
    _archive(
        "mnist",
        model_store_dir,
        "--model-file",
        str(MNIST_DIR / "mnist.py"),
        "--serialized-file",
        str(write_mnist_weights()),
        "--handler",
        str(HANDLERS / "mnist_handler.py"),
    )
    return mar_set


def gen_mar(model_store: str | None = None) -> None:
    """marsgen's ``gen_mar``: the archives into ``model_store`` (copies where marsgen links: a
    link out of the store is not a file inside it)."""
    generate_mars()
    if model_store is not None and Path(model_store).exists():
        for mar in sorted(mar_set):
            target = Path(model_store) / mar
            if not target.exists():
                shutil.copyfile(MODEL_STORE_GEN / mar, target)


def delete_model_store_gen_dir() -> None:
    """marsgen's clean-up."""
    mar_set.clear()
    shutil.rmtree(MODEL_STORE_GEN, ignore_errors=True)
