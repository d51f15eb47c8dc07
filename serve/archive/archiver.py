"""``python -m serve archive``: package a model as a TorchServe/MMS ``.mar`` or a SageMaker
``model.tar.gz``.

Takes torch-model-archiver 0.12's flags, or MMS model-archiver 1.0's (see
:mod:`serve.archive.flags`), so existing build scripts carry over::

    python -m serve archive --model-name digits --version 1.0 --serialized-file model.pt \\
        --model-file model.py --handler digit --extra-files index_to_name.json \\
        --export-path build

writes ``build/digits.mar``, as both tools do by default: the files at the root and a
``MAR-INF/MANIFEST.json``. ``--archive-format tgz`` writes SageMaker's ``build/digits.tar.gz``
instead: the files at the root, user code and requirements under ``code/``. The same inputs always
give the same bytes; ``SOURCE_DATE_EPOCH``, when set, becomes the manifest's ``createdOn`` (else it
is left out). Errors are one line on stderr and exit status 2.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from serve.archive.flags import PROG, parse_command
from serve.archive.layout import CODE_DIR, FLAT_FORMATS, plan_archive, read_config
from serve.archive.spec import FORMATS, SUFFIXES, ArchiveError, ArchiveSpec
from serve.archive.writer import write_directory, write_mar, write_tgz

logger = logging.getLogger(__name__)


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
    if spec.archive_format not in SUFFIXES:
        raise ArchiveError(f"--archive-format {spec.archive_format!r}: expected one of {FORMATS}")
    target = archive_path(export_path, spec.model_name, spec.archive_format)
    layout = plan_archive(
        spec,
        builtins,
        created=_created(environ or {}),
        archiver_version=_version(),
        output=target,
    )
    if spec.handler in builtins:
        options = read_config(spec.config_file) if spec.config_file is not None else {}
        names = set(layout.members)

        def has_file(name: str) -> bool:
            return name in names or f"{CODE_DIR}/{name}" in names

        problem = check_builtin(spec.handler, options, has_file)
        if problem:
            raise ArchiveError(f"--handler {spec.handler}: {problem}")
    try:
        if spec.archive_format in FLAT_FORMATS:
            compress = spec.archive_format != "zip-store"
            write_mar(layout.members.values(), target, force=force, compress=compress)
        elif spec.archive_format == "tgz":
            write_tgz(layout.members.values(), target, force=force)
        else:
            write_directory(layout.members.values(), target, force=force)
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
    try:
        command = parse_command(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:  # argparse: --help (0), or a usage error already printed (2)
        return exc.code if isinstance(exc.code, int) else 2
    try:
        target = create_archive(
            command.spec, command.export_path, force=command.force, environ=environ
        )
    except ArchiveError as exc:
        print(f"{PROG}: {exc.line()}", file=sys.stderr)
        return exc.exit_code
    print(target)
    return 0
