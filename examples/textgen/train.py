"""Train the text generator example: a character-level GRU on this project's own docs.

Training text: ``README.md`` and ``docs/*.md`` of this repository, read at train time
(``corpus.py``); every tenth block of 1,000 characters is held out for the reported loss.

Usage::

    python examples/textgen/train.py --out build/textgen-model
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from corpus import read_corpus, split
from model import VOCAB_SIZE, CharGRU
from torch import nn

# examples/, for what the training scripts share (only this script's folder is on the path)
sys.path.append(str(Path(__file__).resolve().parents[1]))
from training import configure_torch, parse_training_args

HERE = Path(__file__).resolve().parent
STEPS = 400
BATCH_SIZE = 64
SEQ_LEN = 64
LEARNING_RATE = 0.01
CLIP_NORM = 1.0


def vocabulary() -> list[str]:
    """The characters by id: ``""`` for <unk> (id 0), then ``"\\n"`` and printable ASCII."""
    chars = ["", "\n", *(chr(code) for code in range(32, 127))]
    assert len(chars) == VOCAB_SIZE
    return chars


def encode(text: str, vocab: Sequence[str]) -> torch.Tensor:
    """Character ids, characters outside the vocabulary as <unk> (0)."""
    index = {char: i for i, char in enumerate(vocab) if char}
    return torch.tensor([index.get(char, 0) for char in text], dtype=torch.long)


def train_model(ids: torch.Tensor) -> CharGRU:
    """Fit a fresh model with Adam on random windows of SEQ_LEN + 1 characters."""
    model = CharGRU()
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, STEPS)
    loss_fn = nn.CrossEntropyLoss()
    offsets = torch.arange(SEQ_LEN + 1)
    model.train()
    for _ in range(STEPS):
        starts = torch.randint(len(ids) - SEQ_LEN - 1, (BATCH_SIZE, 1))
        windows = ids[starts + offsets]
        logits, _ = model(windows[:, :-1])
        loss = loss_fn(logits.reshape(-1, VOCAB_SIZE), windows[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), CLIP_NORM)
        optimizer.step()
        schedule.step()
    return model.eval()


def heldout_loss(model: CharGRU, ids: torch.Tensor) -> float:
    """Mean cross-entropy (nats per character) over the held-out text, read in one pass."""
    with torch.inference_mode():
        logits, _ = model(ids[None, :-1])
        return float(nn.functional.cross_entropy(logits[0], ids[1:]))


def save(model: CharGRU, vocab: Sequence[str], out: Path) -> None:
    """Write the weights, the vocabulary and the source files the server loads."""
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / "model.pt")
    (out / "vocab.json").write_text(json.dumps(list(vocab)), encoding="utf-8")
    for source in ("model.py", "inference.py"):
        shutil.copy(HERE / source, out / source)


def main(argv: Sequence[str] | None = None) -> None:
    """Train, measure the held-out loss, write the model directory with a sample."""
    args = parse_training_args(__doc__.splitlines()[0], argv)
    configure_torch(args.seed)
    started = time.perf_counter()
    vocab = vocabulary()
    text = read_corpus()
    train_text, heldout_text = split(text)
    model = train_model(encode(train_text, vocab))
    train_seconds = time.perf_counter() - started
    loss = heldout_loss(model, encode(heldout_text, vocab))
    save(model, vocab, args.out)
    metrics = {
        "heldout_loss": round(loss, 4),
        "heldout_bits_per_char": round(loss / math.log(2), 4),
        "heldout_chars": len(heldout_text),
        "train_chars": len(train_text),
        "parameters": sum(p.numel() for p in model.parameters()),
        "steps": STEPS,
        "train_seconds": round(train_seconds, 2),
    }
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    print(f"held-out loss: {loss:.3f} nats/char ({len(heldout_text)} characters)")
    print(f"trained in {train_seconds:.1f}s; wrote {args.out}")


if __name__ == "__main__":
    main()
