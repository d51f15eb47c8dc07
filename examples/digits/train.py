"""Train the digits example model: a small CNN on scikit-learn's ``load_digits``.

The data ships with scikit-learn (1,797 8x8 images). 20% is held out (stratified,
fixed seed) and used only for the reported accuracy.

Usage::

    python examples/digits/train.py --out build/digits-model
"""

from __future__ import annotations

import json
import shutil
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from dataset import load_split
from model import DigitsCNN
from torch import nn

# examples/, for what the training scripts share (only this script's folder is on the path)
sys.path.append(str(Path(__file__).resolve().parents[1]))
from training import configure_torch, parse_training_args

HERE = Path(__file__).resolve().parent
EPOCHS = 30
BATCH_SIZE = 64
LEARNING_RATE = 0.002


def train_model(images: torch.Tensor, labels: torch.Tensor) -> DigitsCNN:
    """Fit a fresh CNN with Adam on shuffled mini-batches."""
    model = DigitsCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in range(EPOCHS):
        for batch in torch.split(torch.randperm(len(images)), BATCH_SIZE):
            optimizer.zero_grad()
            loss = loss_fn(model(images[batch]), labels[batch])
            loss.backward()
            optimizer.step()
    return model.eval()


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of images whose arg-max class is the label."""
    with torch.no_grad():
        predicted = model(images).argmax(dim=1)
    return float((predicted == labels).float().mean())


def save(model: DigitsCNN, out: Path) -> None:
    """Write the weights, TorchScript, label names and ``model.py``."""
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / "model.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.script is deprecated
        torch.jit.save(torch.jit.script(model), str(out / "model.ts"))
    names = {str(i): str(i) for i in range(10)}
    (out / "index_to_name.json").write_text(json.dumps(names, indent=2), encoding="utf-8")
    shutil.copy(HERE / "model.py", out / "model.py")


def main(argv: Sequence[str] | None = None) -> None:
    """Train, evaluate on the held-out 20% and write the model directory."""
    args = parse_training_args(__doc__.splitlines()[0], argv)
    configure_torch(args.seed)
    started = time.perf_counter()
    train_x, held_x, train_y, held_y = (torch.from_numpy(a) for a in load_split())
    model = train_model(train_x.unsqueeze(1), train_y)
    train_seconds = time.perf_counter() - started
    metrics = {
        "heldout_accuracy": accuracy(model, held_x.unsqueeze(1), held_y),
        "heldout_size": len(held_y),
        "train_size": len(train_y),
        "train_seconds": round(train_seconds, 2),
    }
    save(model, args.out)
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    print(f"held-out accuracy: {metrics['heldout_accuracy']:.4f} ({len(held_y)} images)")
    print(f"trained in {train_seconds:.1f}s; wrote {args.out}")


if __name__ == "__main__":
    main()
