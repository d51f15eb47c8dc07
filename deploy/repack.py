"""What SageMaker takes as model data, from what archivers write: a gzipped tar.

A ``.tar.gz`` is used as it is (a tgz of torch-model-archiver or MMS model-archiver, with its
files under ``NAME/``, serves unchanged: the server looks one directory down). A ``.mar`` (a zip),
a plain ``.tar``, or a model directory (``--archive-format no-archive``) is repacked into a
``model.tar.gz`` holding the same files at its top, reproducibly: members sorted, fixed times,
owners and modes, so the same model gives the same bytes (and so the same content hash). A
directory holding an archive (``build/sentiment/model.tar.gz``) stands for that archive.
"""

from __future__ import annotations

import logging
import os
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from deploy.errors import DeployError
from serve.archive.spec import Member
from serve.archive.tree import walk_files
from serve.archive.writer import write_tgz
from serve.model.directory import find_archive
from serve.model.extraction import UnsafeArchiveError, extract_archive

logger = logging.getLogger(__name__)

GZIP_MAGIC = b"\x1f\x8b"
TARGET_SUFFIX = ".tar.gz"
_RENAMED_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".mar", ".zip")


class RepackError(DeployError):
    """The model cannot be repacked: an unsafe or unreadable archive, or nothing in it."""


def is_gzipped_tar(path: Path) -> bool:
    """Whether ``path`` is a gzip-compressed tar (by its content, not its name)."""
    with path.open("rb") as handle:
        if handle.read(2) != GZIP_MAGIC:
            return False
    return tarfile.is_tarfile(path)


def target_name(path: Path) -> str:
    """A model's default name under a multi-model prefix: ``digits.mar`` -> ``digits.tar.gz``,
    a directory ``digits/`` -> ``digits.tar.gz``; a ``.tar.gz`` keeps its name."""
    name = path.name
    for suffix in _RENAMED_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name.removesuffix(suffix) + TARGET_SUFFIX
    return name + TARGET_SUFFIX


@contextmanager
def sagemaker_archive(path: Path) -> Iterator[Path]:
    """``path`` as a gzipped tar: itself, or a repacked copy that lives while the block runs.

    Raises:
        RepackError: the archive is unsafe or unreadable, or holds no file.
    """
    if path.is_dir():
        path = find_archive(path) or path
    if path.is_file() and is_gzipped_tar(path):
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="byoserve-repack-") as tmp:
        yield repack(path, Path(tmp))


def repack(path: Path, workdir: Path) -> Path:
    """Write ``workdir/model.tar.gz`` holding the files of ``path`` (an archive or directory).

    Raises:
        RepackError: the archive is unsafe or unreadable, or holds no file.
    """
    if path.is_dir():
        files = walk_files(path)  # as the archivers take a directory: no hidden dirs, caches
    else:
        tree = workdir / "tree"
        tree.mkdir()
        try:
            extract_archive(path, tree)
        except UnsafeArchiveError as exc:
            raise RepackError(str(exc)) from exc
        files = _every_file(tree)
    if not files:
        raise RepackError(f"model {path}: holds no file to upload")
    members = [Member(name, source=source) for name, source in files]
    target = write_tgz(members, workdir / "model.tar.gz")
    logger.info("repacked %s into a gzipped tar for SageMaker (%d files)", path, len(members))
    return target


def _every_file(tree: Path) -> list[tuple[str, Path]]:
    """Every regular file under ``tree`` (hidden ones included): an archive's files, all of
    them."""
    found: list[tuple[str, Path]] = []
    for current, _, files in os.walk(tree):
        for name in files:
            path = Path(current) / name
            if path.is_file():
                found.append((path.relative_to(tree).as_posix(), path))
    return sorted(found)
