"""`python -m serve` / `serve`: start the server for a model directory or archive.

``serve archive ...`` builds a model archive (see serve.archive.archiver); TorchServe's and MMS's
command lines (``serve --start ...``, ``serve --stop``) are read by serve/dialect/cli.py.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from serve.config import ConfigError, ServingConfig
from serve.contract import HandlerLoadError
from serve.model.directory import ModelDirError
from serve.observe.logs import configure_logging

logger = logging.getLogger(__name__)

USAGE_ERROR = 2
START_ERROR = 1


def build_parser() -> argparse.ArgumentParser:
    """The flags, one per setting that has one (serve/config.py declares them), read as text and
    parsed by the setting's own parser."""
    parser = argparse.ArgumentParser(
        prog="serve",
        description="Serve a model directory or model.tar.gz with the SageMaker container API. "
        "Flags override the environment variables (see README).",
    )
    for spec in ServingConfig.flags():
        many = spec.name == "models"
        parser.add_argument(
            spec.metadata["flag"],
            dest=spec.name,
            nargs="+" if many else None,
            metavar="NAME=PATH" if many else None,
            help=spec.metadata["help"],
        )
    parser.add_argument(
        "--no-install-requirements", action="store_true", help="skip code/requirements.txt"
    )
    return parser


def flag_values(args: argparse.Namespace) -> dict[str, str]:
    """The settings given on the command line, as raw text by setting name."""
    flags = {}
    for spec in ServingConfig.flags():
        value = getattr(args, spec.name)
        if value is not None:
            flags[spec.name] = " ".join(value) if isinstance(value, list) else value
    if args.no_install_requirements:
        flags["install_requirements"] = "false"
    return flags


def config_from_args(args: argparse.Namespace) -> ServingConfig:
    """The environment's configuration with the given flags laid over it, each parsed as its
    variable is."""
    return ServingConfig.from_env(flags=flag_values(args))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``serve`` and ``python -m serve``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["archive"]:
        from serve.archive.archiver import main as archive_main

        status: int = archive_main(argv[1:])
        return status
    if argv[:1] == ["serve"]:
        argv = argv[1:]
    from serve.dialect.cli import is_torchserve_command

    if is_torchserve_command(argv):
        from serve.dialect.cli import main as torchserve_main

        return torchserve_main(argv)
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
    from serve.process.engine import engine_for
    from serve.process.server import run_server

    engine = engine_for(config)
    try:
        engine.check(config)
        app, registry = build_server(config, engine.body_rules)
    except (ModelDirError, HandlerLoadError, ConfigError, StartupError) as exc:
        logger.error("cannot start: %s", exc)
        return START_ERROR
    failure = run_server(engine, app, registry, config)
    if failure:
        logger.error("cannot start: %s", failure)
        return START_ERROR
    logger.info("stopped")
    return 0


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
