"""The benchmark's workloads: each model saved once as a model directory (TorchServe layout)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from bench.models import DigitNet, ResNet18, digit_png, photo_jpeg, save_torchscript

HANDLERS = Path(__file__).resolve().parent / "handlers"


@dataclass(frozen=True)
class Workload:
    name: str
    handler_file: str
    handler_class: str
    content_type: str
    model_dir: Path
    payload: Path

    def body(self) -> bytes:
        return self.payload.read_bytes()


@dataclass(frozen=True)
class _Spec:
    name: str
    build: Callable[[], torch.nn.Module]
    input_shape: tuple[int, ...]
    handler_file: str
    handler_class: str
    content_type: str
    sample: Callable[[], bytes]
    suffix: str


SPECS = (
    _Spec("digit", DigitNet, (1, 1, 28, 28), "digit_handler.py", "DigitHandler", "image/png",
          digit_png, "png"),
    _Spec("resnet18", ResNet18, (1, 3, 224, 224), "resnet_handler.py", "ResNetHandler",
          "image/jpeg", photo_jpeg, "jpg"),
)  # fmt: skip


def build_workloads(root: Path) -> dict[str, Workload]:
    """Save each model (random weights, seed 0) with its handler and a sample request."""
    torch.manual_seed(0)
    workloads = {}
    for spec in SPECS:
        directory = root / spec.name
        if directory.exists():
            shutil.rmtree(directory)
        (directory / "MAR-INF").mkdir(parents=True)
        save_torchscript(spec.build(), torch.randn(spec.input_shape), directory / "model.pt")
        for name in ("image_classifier.py", spec.handler_file):
            shutil.copy(HANDLERS / name, directory / name)
        manifest = {
            "runtime": "python",
            "model": {
                "modelName": spec.name,
                "serializedFile": "model.pt",
                "handler": spec.handler_file,
                "modelVersion": "1.0",
            },
        }
        (directory / "MAR-INF" / "MANIFEST.json").write_text(json.dumps(manifest, indent=2))
        payload = root / f"{spec.name}.{spec.suffix}"
        payload.write_bytes(spec.sample())
        workloads[spec.name] = Workload(
            spec.name, spec.handler_file, spec.handler_class, spec.content_type, directory, payload
        )
    return workloads


def build_noop(root: Path, like: Workload) -> Workload:
    """A model directory whose handler does nothing, loaded with ``like``'s requests."""
    directory = root / "noop"
    if directory.exists():
        shutil.rmtree(directory)
    (directory / "MAR-INF").mkdir(parents=True)
    shutil.copy(HANDLERS / "noop_handler.py", directory / "noop_handler.py")
    manifest = {"runtime": "python", "model": {"modelName": "noop", "handler": "noop_handler.py"}}
    (directory / "MAR-INF" / "MANIFEST.json").write_text(json.dumps(manifest, indent=2))
    return Workload(
        "noop", "noop_handler.py", "NoopHandler", like.content_type, directory, like.payload
    )
