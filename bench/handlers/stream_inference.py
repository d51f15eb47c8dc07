"""The streaming workload's code/inference.py (SageMaker toolkit style): predict_fn returns a
generator that yields ``pieces`` pieces, each after ``units`` units of real CPU work.

The work holds the CPU, never sleeps: a sleeping generator frees the GIL and the core, and would
hide what serving a piece costs. Two kinds, as the request asks:

- ``python``: a pure-Python loop, which holds the GIL throughout (a tokenizer, a sampler, any
  per-piece Python);
- ``torch``: small matrix products, which release the GIL while they run (a model's forward).

Each piece is :data:`PIECE_BYTES` bytes ending in a newline, so a client counts pieces by
newlines however the transport splits or joins them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import torch

PIECE_BYTES = 32
SIDE = 64  # the torch work's matrices: SIDE x SIDE


def model_fn(model_dir: str) -> dict[str, torch.Tensor]:
    """No weights: two fixed matrices for the torch work."""
    generator = torch.Generator().manual_seed(0)
    return {
        "a": torch.rand(SIDE, SIDE, generator=generator),
        "b": torch.rand(SIDE, SIDE, generator=generator) / SIDE,
    }


def input_fn(body: bytes | str, content_type: str) -> dict[str, Any]:
    settings: dict[str, Any] = json.loads(body)
    return settings


def work(kind: str, units: int, model: dict[str, torch.Tensor]) -> float:
    """``units`` units of CPU work of ``kind``; returns something made of it."""
    if kind == "python":
        total = 0
        for i in range(units):
            total += i * i % 7
        return float(total)
    product = model["a"]
    for _ in range(units):
        product = torch.mm(product, model["b"])
    return float(product[0, 0])


def piece(index: int, value: float) -> bytes:
    """Piece ``index``: :data:`PIECE_BYTES` bytes, the last a newline."""
    text = f"{index} {value:.6g}"[: PIECE_BYTES - 1]
    return text.ljust(PIECE_BYTES - 1).encode() + b"\n"


def predict_fn(settings: dict[str, Any], model: dict[str, torch.Tensor]) -> Iterator[bytes]:
    kind, units = str(settings["work"]), int(settings["units"])
    for index in range(int(settings["pieces"])):
        yield piece(index, work(kind, units, model))
