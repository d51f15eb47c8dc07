"""serve's flags: one per setting that has one (serve/config.py declares them), read as text and
parsed by the setting's own parser. Shared by ``serve`` (serve/cli.py) and TorchServe's command
line (serve/dialect/cli.py), which adds its own flags to the same parser."""

from __future__ import annotations

import argparse

from serve.config import ServingConfig


def build_parser() -> argparse.ArgumentParser:
    """The flags, one per setting that has one (serve/config.py declares them), read as text and
    parsed by the setting's own parser."""
    parser = argparse.ArgumentParser(
        prog="serve",
        description="Serve a model directory or model.tar.gz with the SageMaker container API. "
        "Flags override the environment variables (see docs/reference/configuration.md).",
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
