"""The archiver's command line: torch-model-archiver 0.12's flags, or MMS model-archiver 1.0's.

The two tools share most flags and differ in one letter: ``-c`` is torch-model-archiver's
``--config-file`` and MMS's ``--convert``. Which set a command line uses is decided by MMS's own
flags: ``--model-path`` (or ``--convert``) means MMS's, anything else torch-model-archiver's.
Both default to ``--archive-format default``, a ``NAME.mar``. Every error is one line on stderr
and exit status 2.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from serve.archive.spec import DEFAULT_FORMAT, FORMATS, ArchiveSpec

USAGE_ERROR = 2
PROG = "serve archive"
MMS_ONLY = ("--model-path", "--convert")
TORCH_ONLY = (
    "--serialized-file",
    "--model-file",
    "--extra-files",
    "-v",
    "--version",
    "-r",
    "--requirements-file",
    "--config-file",
)
FORMAT_HELP = (
    "default: NAME.mar, a zip (the default, as both tools); zip-store: NAME.mar uncompressed; "
    "tgz: NAME.tar.gz, SageMaker's model.tar.gz; no-archive: a directory NAME/ "
    "(mar: same as default)"
)


@dataclass(frozen=True, slots=True)
class ArchiveCommand:
    """A parsed command line: what to archive, where, and whether to overwrite."""

    spec: ArchiveSpec
    export_path: Path
    force: bool


class _Parser(argparse.ArgumentParser):
    """Reports a usage error as one line and exit status 2, as the archiver's other errors."""

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE_ERROR, f"{PROG}: error: {message}\n")


def uses_mms_flags(argv: Sequence[str]) -> bool:
    """Whether the command line is MMS model-archiver's (it names ``--model-path`` or
    ``--convert``)."""
    return any(arg.partition("=")[0] in MMS_ONLY for arg in argv)


def build_parser(mms: bool = False) -> argparse.ArgumentParser:
    """torch-model-archiver's flag set, or with ``mms`` MMS model-archiver's."""
    other = (
        "without --model-path, torch-model-archiver's flags"
        if mms
        else "with --model-path, MMS model-archiver's: serve archive --model-path DIR --help"
    )
    tool = "MMS model-archiver 1.0" if mms else "torch-model-archiver 0.12"
    parser = _Parser(
        prog=PROG,
        allow_abbrev=False,
        description=f"Package a model with {tool}'s flags ({other}). Writes NAME.mar by "
        "default; --archive-format tgz writes SageMaker's NAME.tar.gz.",
    )
    add = parser.add_argument
    add("--model-name", required=True, help="the archive's name: EXPORT_PATH/NAME.mar")
    add("--handler", help=_handler_help(mms))
    add("--export-path", type=Path, default=Path("."), help="output directory (default .)")
    add("--archive-format", choices=FORMATS, default=DEFAULT_FORMAT, help=FORMAT_HELP)
    add("-f", "--force", action="store_true", help="overwrite an existing archive")
    if mms:
        add("--model-path", type=Path, required=True, help="the directory to archive, whole")
        add("--runtime", default="python", choices=["python", "python2", "python3"])
        add(
            "-c",
            "--convert",
            action="store_true",
            help="MMS converts an .onnx file to MXNet: refused here when --model-path holds "
            "one (MXNet is not served), nothing to do otherwise",
        )
        return parser
    add("-v", "--version", help="model version (manifest modelVersion)")
    add("--serialized-file", type=Path, help="weights: TorchScript, torch.export or state_dict")
    add("--model-file", type=Path, help="Python file defining the one nn.Module of a state_dict")
    add("--extra-files", default="", help="comma-separated files, directories or wildcards")
    add("-r", "--requirements-file", type=Path, help="pip requirements, installed at load")
    add("-c", "--config-file", type=Path, help="per-model settings, YAML or JSON (batch_size...)")
    add(
        "--runtime",
        default="python",
        choices=["python", "python3", "LSP"],
        help="python (LSP, TorchServe's C++ handlers, cannot be served here)",
    )
    return parser


def _handler_help(mms: bool) -> str:
    if mms:
        return "module:function of a module in --model-path (or a built-in handler name)"
    return "a built-in handler name, or a .py file (file.py:function for a function)"


def parse_command(argv: Sequence[str]) -> ArchiveCommand:
    """The archive a command line asks for; a usage error exits with status 2 (one line)."""
    mms = uses_mms_flags(argv)
    parser = build_parser(mms)
    args, unknown = parser.parse_known_args(list(argv))
    if unknown:
        parser.error(_unknown_message(unknown, mms))
    spec = _mms_spec(args) if mms else _torch_spec(args)
    return ArchiveCommand(spec, args.export_path, args.force)


def _unknown_message(unknown: Sequence[str], mms: bool) -> str:
    names = " ".join(unknown)
    first = unknown[0].partition("=")[0]
    if mms and first in TORCH_ONLY:
        return (
            f"{first} is torch-model-archiver's; with --model-path (MMS model-archiver's flags) "
            "the whole directory is archived"
        )
    return f"unrecognized arguments: {names}"


def _torch_spec(args: argparse.Namespace) -> ArchiveSpec:
    extras = tuple(Path(item.strip()) for item in args.extra_files.split(",") if item.strip())
    return ArchiveSpec(
        model_name=args.model_name,
        serialized_file=args.serialized_file,
        handler=args.handler,
        model_file=args.model_file,
        extra_files=extras,
        requirements_file=args.requirements_file,
        config_file=args.config_file,
        version=args.version,
        archive_format=args.archive_format,
        runtime=args.runtime,
    )


def _mms_spec(args: argparse.Namespace) -> ArchiveSpec:
    return ArchiveSpec(
        model_name=args.model_name,
        handler=args.handler,
        archive_format=args.archive_format,
        runtime=args.runtime,
        model_path=args.model_path,
        convert=args.convert,
    )
