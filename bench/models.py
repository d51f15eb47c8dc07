"""The two benchmark networks (random weights), saved as TorchScript, and a sample request each."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn


class DigitNet(nn.Module):
    """The classic MNIST network of benchmark.md."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3)
        self.conv2 = nn.Conv2d(32, 64, 3)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        x = torch.flatten(nn.functional.max_pool2d(x, 2), 1)
        x = torch.relu(self.fc1(x))
        return torch.log_softmax(self.fc2(x), dim=1)


class BasicBlock(nn.Module):
    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module = nn.Identity()
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.downsample(x))


class ResNet18(nn.Module):
    """ResNet-18: basic blocks 64/128/256/512, two per stage, batch norm, 1000 classes."""

    def __init__(self, classes: int = 1000) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 64, 7, 2, 3, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1),
        )
        stages: list[nn.Module] = []
        inplanes = 64
        for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            stages += [BasicBlock(inplanes, planes, stride), BasicBlock(planes, planes)]
            inplanes = planes
        self.layers = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.layers(self.stem(x))), 1))


def save_torchscript(module: nn.Module, example: torch.Tensor, path: Path) -> Path:
    module.eval()
    with torch.no_grad():
        traced = torch.jit.trace(module, example)
    traced.save(str(path))
    return path


def digit_png(seed: int = 0) -> bytes:
    """A 28x28 grayscale digit-like image as PNG (about 0.9 KB)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:28, 0:28]
    ring = np.abs(np.hypot(yy - 14, xx - 14) - 8) < 2.5
    pixels = np.where(ring, 255, 0) + rng.integers(0, 160, (28, 28))
    return _encode(Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "L"), "PNG")


def photo_jpeg(seed: int = 0, quality: int = 96) -> bytes:
    """A 224x224 RGB photo-like image as JPEG (about 45 KB): gradients plus texture."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:224, 0:224].astype(np.float32)
    base = np.stack([xx, yy, (xx + yy) / 2], axis=-1) * (255 / 224)
    texture = rng.normal(0, 30, (224, 224, 3))
    pixels = np.clip(base + texture, 0, 255).astype(np.uint8)
    return _encode(Image.fromarray(pixels, "RGB"), "JPEG", quality=quality)


def _encode(image: Image.Image, fmt: str, **options: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()
