"""What the image's entrypoint does with SageMaker's ``serve`` and ``train`` arguments."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from serve.cli import main as serve_main

TRAIN_MESSAGE = (
    "this image serves models; it cannot train. Train elsewhere, package the model as "
    "model.tar.gz, and create a SageMaker model/endpoint with this image."
)


def container_main(argv: Sequence[str]) -> int:
    """``serve [flags]`` (the default) starts the server; ``train`` exits 2 with a message."""
    command, rest = (argv[0], list(argv[1:])) if argv else ("serve", [])
    if command == "serve":
        return serve_main(rest)
    if command == "train":
        print(f"byoserve: {TRAIN_MESSAGE}", file=sys.stderr)
        return 2
    if command.startswith("-"):
        return serve_main(list(argv))
    print(f"byoserve: unknown command {command!r}; expected 'serve' or 'train'", file=sys.stderr)
    return 2
