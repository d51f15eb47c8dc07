"""Directories into archives: MMS ``model-archiver``'s ``--model-path``, archived whole, and the
walk that ``--extra-files`` directories share.

What MMS model-archiver 1.0 leaves out, left out here too: hidden directories, ``__pycache__``
and ``__MACOSX``, ``*.pyc``, ``.DS_Store`` and ``*.mar`` files, and any ``MANIFEST.json`` (the
archive gets its own). Its ``--convert`` turns a ``.onnx`` file into an MXNet model; nothing here
serves MXNet, so ``--convert`` is refused when the directory holds an ``.onnx`` file and has
nothing to do otherwise.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from serve.archive.spec import ArchiveError, ArchiveSpec

logger = logging.getLogger(__name__)

SKIPPED_DIRS = frozenset({"__pycache__", "__MACOSX"})
MMS_SKIPPED_SUFFIXES = (".pyc", ".DS_Store", ".mar")
MMS_SKIPPED_NAMES = frozenset({"MANIFEST.json"})

Add = Callable[[str, Path, str], str]


def walk_files(root: Path) -> list[tuple[str, Path]]:
    """Every file under ``root``: its name relative to ``root`` (POSIX) and its path, sorted.

    Hidden directories, ``__pycache__`` and ``__MACOSX`` are not entered; links to directories
    are not followed (as ``os.walk``, and so both archivers, do).
    """
    found: list[tuple[str, Path]] = []
    for current, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in SKIPPED_DIRS)
        base = Path(current)
        for name in files:
            path = base / name
            if path.is_file():
                found.append((path.relative_to(root).as_posix(), path))
    return sorted(found)


def plan_directory(
    spec: ArchiveSpec, builtins: Sequence[str], add: Add, output: Path | None
) -> dict[str, Any]:
    """Add ``spec.model_path``'s files with ``add``; returns the manifest's ``model``.

    Raises:
        ArchiveError: the path is not a directory, ``--convert`` has an ``.onnx`` file to
            convert, or the handler's module is nowhere to be found.
    """
    directory = spec.model_path
    assert directory is not None
    if not directory.is_dir():
        raise ArchiveError(f"--model-path {directory}: not a directory")
    if spec.convert:
        check_convert(directory)
    skipped = output.resolve() if output is not None else None
    for name, path in walk_files(directory):
        if _mms_skips(name):
            continue
        resolved = path.resolve()
        if skipped is not None and (resolved == skipped or resolved.is_relative_to(skipped)):
            continue
        add(name, path, "--model-path")
    model: dict[str, Any] = {"modelName": spec.model_name}
    if spec.handler is not None:
        check_module_handler(spec.handler, directory, builtins)
        model["handler"] = spec.handler
    if spec.version:
        model["modelVersion"] = spec.version
    return model


def _mms_skips(name: str) -> bool:
    base = name.rpartition("/")[2]
    return base in MMS_SKIPPED_NAMES or base.endswith(MMS_SKIPPED_SUFFIXES)


def check_convert(directory: Path) -> None:
    """MMS's ``--convert``: refused when there is an ``.onnx`` file to convert (to MXNet, which
    is not served here); nothing to do otherwise.

    Raises:
        ArchiveError: ``directory`` holds an ``.onnx`` file at its top.
    """
    onnx = sorted(p.name for p in directory.iterdir() if p.is_file() and p.suffix == ".onnx")
    if onnx:
        raise ArchiveError(
            f"--convert: model-archiver would turn {onnx[0]} into an MXNet model, and MXNet "
            "models are not served here; leave out --convert to archive the .onnx file as it is"
        )
    logger.info("--convert: no .onnx file in %s, nothing to convert", directory)


def check_module_handler(handler: str, directory: Path, builtins: Sequence[str]) -> None:
    """An MMS ``--handler module:function`` (or ``module``): the module's file must be in
    ``directory`` (or its ``code/``), or the name a built-in, or an installed module.

    Raises:
        ArchiveError: the entry is malformed or its module is nowhere to be found.
    """
    module, colon, function = handler.partition(":")
    if not module or (colon and not function.isidentifier()):
        raise ArchiveError(f"--handler {handler!r}: expected module:function")
    if not colon and handler in builtins:
        return
    file = module if module.endswith(".py") else module.replace(".", "/") + ".py"
    if any((base / file).is_file() for base in (directory, directory / "code")):
        return
    if not module.endswith(".py") and _installed(module.partition(".")[0]):
        return
    raise ArchiveError(
        f"--handler {handler!r}: no {file} in --model-path {directory}, "
        "and no installed module of that name"
    )


def _installed(name: str) -> bool:
    """Whether a top-level module of that name can be imported (found, not imported)."""
    try:
        return name.isidentifier() and importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False
