"""`python -m serve` / `serve`: start the server for a model directory or archive.

``serve archive ...`` builds a model archive (see serve.archive.archiver).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from handlers.contract import HandlerLoadError
from serve.config import MIB, ConfigError, ServingConfig
from serve.model.directory import ModelDirError
from serve.observe.logs import configure_logging

logger = logging.getLogger(__name__)

USAGE_ERROR = 2
START_ERROR = 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="serve",
        description="Serve a model directory or model.tar.gz with the SageMaker container API. "
        "Flags override the environment variables (see README).",
    )
    add = parser.add_argument
    add("--model-dir", type=Path, help="extracted model dir, or a dir/file with model.tar.gz")
    add("--host", help="address to bind (default 0.0.0.0)")
    add("--port", type=int, help="port (default SAGEMAKER_BIND_TO_PORT or 8080)")
    add("--workers", type=int, help="worker processes (default: available CPUs)")
    add("--threads", type=int, help="request threads per worker")
    add("--torch-threads", type=int, help="torch intra-op threads per worker")
    add("--timeout", type=float, help="per-request timeout, seconds")
    add("--max-request-size", type=int, help="largest request body, bytes")
    add("--max-batch-size", type=int, help="dynamic batching: most requests per model call")
    add("--max-batch-delay-ms", type=float, help="dynamic batching: longest wait for a batch")
    add("--program", help="handler module (SAGEMAKER_PROGRAM), e.g. inference.py")
    add("--log-level", help="DEBUG, INFO, WARNING, ... or a number")
    add("--no-install-requirements", action="store_true", help="skip code/requirements.txt")
    add("--model-store", type=Path, help="directory of model archives and model directories")
    add(
        "--models",
        nargs="+",
        metavar="NAME=PATH",
        help="models to start with: NAME=PATH, PATH (named after the file) or all; "
        "relative paths are in the model store",
    )
    add("--max-models", type=int, help="most models held at once (least recently used unloaded)")
    add("--memory-budget-mb", type=float, help="most memory the models may take, in MiB")
    return parser


def config_from_args(args: argparse.Namespace) -> ServingConfig:
    """The environment's configuration with the given flags laid over it."""
    overrides = {
        name: getattr(args, name)
        for name in (
            "model_dir",
            "host",
            "port",
            "workers",
            "threads",
            "torch_threads",
            "timeout",
            "max_request_size",
            "max_batch_size",
            "max_batch_delay_ms",
            "program",
            "model_store",
            "max_models",
        )
    }
    if args.models:
        overrides["models"] = tuple(args.models)
    if args.memory_budget_mb is not None:
        if not args.memory_budget_mb > 0:
            raise ConfigError(f"--memory-budget-mb={args.memory_budget_mb}: must be above 0")
        overrides["memory_budget"] = int(args.memory_budget_mb * MIB)
    if args.log_level is not None:
        from serve.config import _log_level

        try:
            overrides["log_level"] = _log_level(args.log_level)
        except ValueError as exc:
            raise ConfigError(f"--log-level={args.log_level!r}: {exc}") from exc
    if args.no_install_requirements:
        overrides["install_requirements"] = False
    for name in ("port", "workers", "threads", "torch_threads", "max_batch_size", "max_models"):
        value = overrides[name]
        if value is not None and value < 1:
            raise ConfigError(f"--{name.replace('_', '-')}={value}: must be at least 1")
    return ServingConfig.from_env(**overrides)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``serve`` and ``python -m serve``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["archive"]:
        from serve.archive.archiver import main as archive_main

        status: int = archive_main(argv[1:])
        return status
    if argv[:1] == ["serve"]:
        argv = argv[1:]
    args = build_parser().parse_args(argv)
    try:
        config = config_from_args(args)
    except ConfigError as exc:
        print(f"serve: configuration error: {exc}", file=sys.stderr)
        return USAGE_ERROR
    configure_logging(config.log_level, config.log_format)
    return start(config)


def start(config: ServingConfig) -> int:
    """Prepare the model, load the handler's code, and serve; start-up errors exit non-zero."""
    from serve.bootstrap import StartupError, build_server
    from serve.process.server import run_server

    try:
        app, registry = build_server(config)
    except (ModelDirError, HandlerLoadError, ConfigError, StartupError) as exc:
        logger.error("cannot start: %s", exc)
        return START_ERROR
    return run_server(app, registry, config)


TRAIN_MESSAGE = (
    "this image serves models; it cannot train. Train elsewhere, package the model as "
    "model.tar.gz, and create a SageMaker model/endpoint with this image."
)


def container_main(argv: Sequence[str]) -> int:
    """``serve [flags]`` (the default) starts the server; ``train`` exits 2 with a message."""
    command, rest = (argv[0], list(argv[1:])) if argv else ("serve", [])
    if command == "serve":
        return main(rest)
    if command == "train":
        print(f"byoserve: {TRAIN_MESSAGE}", file=sys.stderr)
        return 2
    if command.startswith("-"):
        return main(list(argv))
    print(f"byoserve: unknown command {command!r}; expected 'serve' or 'train'", file=sys.stderr)
    return 2
