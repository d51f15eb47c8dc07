"""Reference inference for the text generator, in-process, from a trained model directory.

Runs the model directory's own ``inference.py`` as the server does (``model_fn``, ``input_fn``,
``predict_fn``, then ``output_fn`` per piece), so its text is the reference for the served
model's::

    python examples/textgen/predict.py build/textgen-model "The server " --seed 7

prints the pieces as they are made.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any


def load_inference(model_dir: Path) -> ModuleType:
    """Import ``MODEL_DIR/inference.py`` under a private module name."""
    path = model_dir / "inference.py"
    spec = importlib.util.spec_from_file_location("textgen_inference", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def generate(
    model_dir: str | Path, request: dict[str, Any], accept: str = "text/plain"
) -> Iterator[str]:
    """The answer's pieces, as ``output_fn`` formats them for ``accept``.

    Args:
        model_dir: A directory written by ``train.py --out``.
        request: The request's JSON object (``prompt``, ``max_new_tokens``, ``seed``, ...).
        accept: The piece format (``text/plain``, ``application/jsonlines``, ...).
    """
    inference = load_inference(Path(model_dir))
    model = inference.model_fn(str(model_dir))
    data = inference.input_fn(json.dumps(request), "application/json")
    for piece in inference.predict_fn(data, model):
        yield inference.output_fn(piece, accept)


def main(argv: Sequence[str] | None = None) -> None:
    """``python predict.py MODEL_DIR PROMPT [--seed N] ...``: print the pieces as they come."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("prompt")
    parser.add_argument("--max-new-tokens", type=int, default=200)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--top-k", type=int, default=0)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--chunk", type=int, default=4)
    parser.add_argument("--accept", default="text/plain")
    args = parser.parse_args(argv)
    request = {
        "prompt": args.prompt,
        "max_new_tokens": args.max_new_tokens,
        "temperature": args.temperature,
        "top_k": args.top_k,
        "seed": args.seed,
        "chunk": args.chunk,
    }
    for piece in generate(args.model_dir, request, args.accept):
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
