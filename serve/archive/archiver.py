"""``python -m serve archive``: package a model as a SageMaker ``model.tar.gz`` (or a ``.mar``).

Takes ``torch-model-archiver``'s flags, so existing build scripts carry over::

    python -m serve archive --model-name digits --serialized-file model.pt \\
        --model-file model.py --handler digit --extra-files index_to_name.json \\
        --export-path build

writes ``build/digits.tar.gz``: the files at the root, user code and requirements under
``code/``, and a TorchServe-style ``MAR-INF/MANIFEST.json``. The same inputs always give the same
bytes; ``SOURCE_DATE_EPOCH``, when set, becomes the manifest's ``createdOn`` (else it is left
out). Errors are one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from serve.archive.layout import (
    CODE_DIR,
    FORMATS,
    ArchiveError,
    ArchiveSpec,
    plan_archive,
    read_config,
)
from serve.archive.writer import write_directory, write_mar, write_tgz

logger = logging.getLogger(__name__)

USAGE_ERROR = 2
SUFFIXES = {"tgz": ".tar.gz", "mar": ".mar", "no-archive": ""}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="serve archive",
        description="Package a model for SageMaker (model.tar.gz) or TorchServe (.mar).",
    )
    add = parser.add_argument
    add("--model-name", required=True, help="archive name: <export-path>/<model-name>.tar.gz")
    add("--version", help="model version (manifest modelVersion)")
    add("--serialized-file", type=Path, help="weights: TorchScript, torch.export or state_dict")
    add("--model-file", type=Path, help="Python file defining the one nn.Module of a state_dict")
    add("--handler", help="a built-in handler name, or a .py file (file.py:function for MMS)")
    add("--extra-files", default="", help="comma-separated files or directories for the root")
    add("--requirements-file", type=Path, help="pip requirements, installed at model load")
    add("--config-file", type=Path, help="per-model settings, YAML or JSON (batch_size, ...)")
    add("--export-path", type=Path, default=Path("."), help="output directory (default .)")
    add("--archive-format", choices=FORMATS, default="tgz", help="default tgz")
    add("-f", "--force", action="store_true", help="overwrite an existing archive")
    add("--runtime", default="python", choices=["python", "python3"], help=argparse.SUPPRESS)
    return parser


def spec_from_args(args: argparse.Namespace) -> ArchiveSpec:
    """The archiver's inputs from parsed command-line flags."""
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
    )


def archive_path(export_path: Path, model_name: str, archive_format: str) -> Path:
    """Where the archive goes: ``<export_path>/<model_name>`` plus the format's suffix."""
    return export_path / f"{model_name}{SUFFIXES[archive_format]}"


def create_archive(
    spec: ArchiveSpec,
    export_path: Path,
    *,
    force: bool = False,
    environ: Mapping[str, str] | None = None,
) -> Path:
    """Check the inputs and write the archive; returns its path.

    Args:
        spec: the inputs.
        export_path: the output directory (created when missing).
        force: overwrite an existing archive.
        environ: where ``SOURCE_DATE_EPOCH`` is looked up (the manifest's ``createdOn``).

    Raises:
        ArchiveError: an input is missing or invalid, or the archive exists and not ``force``.
    """
    from handlers.builtins import builtin_handlers, check_builtin

    builtins = sorted(builtin_handlers())
    layout = plan_archive(
        spec, builtins, created=_created(environ or {}), archiver_version=_version()
    )
    if spec.handler in builtins:
        options = read_config(spec.config_file) if spec.config_file is not None else {}
        names = set(layout.members)

        def has_file(name: str) -> bool:
            return name in names or f"{CODE_DIR}/{name}" in names

        problem = check_builtin(spec.handler, options, has_file)
        if problem:
            raise ArchiveError(f"--handler {spec.handler}: {problem}")
    target = archive_path(export_path, spec.model_name, spec.archive_format)
    writer = {"tgz": write_tgz, "mar": write_mar, "no-archive": write_directory}
    try:
        writer[spec.archive_format](layout.members.values(), target, force=force)
    except FileExistsError as exc:
        raise ArchiveError(str(exc)) from exc
    except OSError as exc:
        raise ArchiveError(f"cannot write {target}: {exc.strerror or exc}") from exc
    logger.info("wrote %s", target)
    return target


def _created(environ: Mapping[str, str]) -> datetime | None:
    value = environ.get("SOURCE_DATE_EPOCH", "").strip()
    if not value:
        return None
    try:
        return datetime.fromtimestamp(int(value), UTC)
    except (ValueError, OverflowError, OSError) as exc:
        raise ArchiveError(f"SOURCE_DATE_EPOCH={value!r}: expected whole seconds") from exc


def _version() -> str:
    try:
        return f"byoserve-{metadata.version('byoserve')}"
    except metadata.PackageNotFoundError:
        return "byoserve"


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] = os.environ) -> int:
    """``serve archive ...``: print the archive's path; on error, one line and exit status 2."""
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        target = create_archive(
            spec_from_args(args), args.export_path, force=args.force, environ=environ
        )
    except ArchiveError as exc:
        print(f"serve archive: error: {exc}", file=sys.stderr)
        return USAGE_ERROR
    print(target)
    return 0
