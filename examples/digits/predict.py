"""Reference inference for the digits example, from a trained model directory.

Loads ``model.py`` and ``model.pt`` from the directory that ``train.py --out``
wrote, as a server would, and preprocesses images with ``preprocess.to_tensor``::

    python examples/digits/predict.py build/digits-model digit-0.png digit-1.png
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from preprocess import to_tensor


def load_model(model_dir: Path) -> torch.nn.Module:
    """Instantiate ``DigitsCNN()`` from the directory's ``model.py`` and load ``model.pt``."""
    spec = importlib.util.spec_from_file_location("digits_model", model_dir / "model.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {model_dir / 'model.py'}")
    source = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(source)
    model: torch.nn.Module = source.DigitsCNN()
    model.load_state_dict(torch.load(model_dir / "model.pt", weights_only=True))
    return model.eval()


def predict(model_dir: str | Path, images: Sequence[Image.Image]) -> list[dict[str, object]]:
    """Classify digit images with the model saved in ``model_dir``.

    Args:
        model_dir: A directory written by ``train.py --out``.
        images: Grayscale images, light digits on a dark background, any size.

    Returns:
        One ``{"label": "0".."9", "score": float}`` per image, where ``score`` is
        the softmax probability of the predicted label.
    """
    model_dir = Path(model_dir)
    names = json.loads((model_dir / "index_to_name.json").read_text(encoding="utf-8"))
    batch = torch.stack([to_tensor(image) for image in images])
    with torch.no_grad():
        scores, indices = load_model(model_dir)(batch).softmax(dim=1).max(dim=1)
    return [
        {"label": names[str(index)], "score": score}
        for index, score in zip(indices.tolist(), scores.tolist(), strict=True)
    ]


def main(argv: Sequence[str] | None = None) -> None:
    """``python predict.py MODEL_DIR IMAGE...``: print one JSON result per image."""
    model_dir, *paths = sys.argv[1:] if argv is None else argv
    images = [Image.open(path) for path in paths]
    for path, result in zip(paths, predict(model_dir, images), strict=True):
        print(json.dumps({"image": path, **result}))


if __name__ == "__main__":
    main()
