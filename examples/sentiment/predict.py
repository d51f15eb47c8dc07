"""Reference inference for the sentiment example, from a trained model directory.

Loads ``model.py``, ``text_tokenizer.py``, ``vocab.json``, ``index_to_name.json``
and ``model.pt`` from the directory that ``train.py --out`` wrote, exactly as a
server would, so its answers are the reference for the served model::

    >>> predict("build/sentiment-model", ["This is an amazing movie."])
    [{'label': 'positive', 'score': 0.98...}]
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import torch


def load_module(path: Path, name: str) -> ModuleType:
    """Import one source file from a model directory under a private module name."""
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_model(model_dir: Path) -> torch.nn.Module:
    """Instantiate ``SentimentClassifier()`` from ``model.py`` and load ``model.pt``."""
    source = load_module(model_dir / "model.py", "sentiment_model")
    model: torch.nn.Module = source.SentimentClassifier()
    model.load_state_dict(torch.load(model_dir / "model.pt", weights_only=True))
    return model.eval()


def predict(model_dir: str | Path, texts: Sequence[str]) -> list[dict[str, object]]:
    """Classify texts with the model saved in ``model_dir``.

    Args:
        model_dir: A directory written by ``train.py --out``.
        texts: The texts to classify.

    Returns:
        One ``{"label": "positive" | "negative", "score": float}`` per text, where
        ``score`` is the softmax probability of the predicted label.
    """
    model_dir = Path(model_dir)
    tokenizer = load_module(model_dir / "text_tokenizer.py", "sentiment_text_tokenizer")
    vocab = json.loads((model_dir / "vocab.json").read_text(encoding="utf-8"))
    names = json.loads((model_dir / "index_to_name.json").read_text(encoding="utf-8"))
    ids, offsets = tokenizer.encode(texts, vocab)
    with torch.no_grad():
        logits = load_model(model_dir)(torch.tensor(ids), torch.tensor(offsets))
    scores, indices = logits.softmax(dim=1).max(dim=1)
    return [
        {"label": names[str(index)], "score": score}
        for index, score in zip(indices.tolist(), scores.tolist(), strict=True)
    ]


def main(argv: Sequence[str] | None = None) -> None:
    """``python predict.py MODEL_DIR TEXT...``: print one JSON result per text."""
    model_dir, *texts = sys.argv[1:] if argv is None else argv
    for text, result in zip(texts, predict(model_dir, texts), strict=True):
        print(json.dumps({"text": text, **result}))


if __name__ == "__main__":
    main()
