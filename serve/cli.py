"""`python -m serve` / `serve`: start the server for a model directory or archive.

``serve archive ...`` builds a model archive (see serve.archive.archiver); TorchServe's and MMS's
command lines (``serve --start ...``, ``serve --stop``) are read by serve/dialect/cli.py.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from serve.config import ConfigError, ServingConfig
from serve.dialect.cli import is_torchserve_command
from serve.dialect.cli import main as torchserve_main
from serve.errors import StartupError
from serve.flags import build_parser, config_from_args
from serve.observe.logs import configure_logging

logger = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``serve`` and ``python -m serve``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["archive"]:
        from serve.archive.archiver import main as archive_main

        status: int = archive_main(argv[1:])
        return status
    if argv[:1] == ["serve"]:
        argv = argv[1:]
    if is_torchserve_command(argv):
        return torchserve_main(argv, start)
    args = build_parser().parse_args(argv)
    try:
        config = config_from_args(args)
    except ConfigError as exc:
        print(f"serve: {exc.line()}", file=sys.stderr)
        return exc.exit_code
    configure_logging(config.log_level, config.log_format)
    return start(config)


def start(config: ServingConfig) -> int:
    """Prepare the model, load the handler's code, and serve; start-up errors exit non-zero.

    The settings are read by now, so whatever stops the start (an address in use too) is said
    as :class:`StartupError` says it, with its status.
    """
    from serve.bootstrap import build_server
    from serve.process.cpus import resolved
    from serve.process.engine import engine_for
    from serve.process.server import run_server

    config = resolved(config)  # workers=0 and torch_threads=0: this machine's CPUs
    if config.serverless:
        sys.dont_write_bytecode = True  # __pycache__ would land beside the code, outside TMPDIR
    transform_job = config.transform_job()
    if transform_job is not None:
        logger.info("%s", transform_job)
    engine = engine_for(config)
    try:
        engine.check(config)
        app, registry = build_server(config, engine.body_rules)
    except StartupError as exc:
        logger.error("%s: %s", StartupError.reason, exc)
        return StartupError.exit_code
    failure = run_server(engine, app, registry, config)
    if failure:
        logger.error("%s: %s", StartupError.reason, failure)
        return StartupError.exit_code
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
