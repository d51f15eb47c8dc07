"""Write an archive's members reproducibly and atomically.

Reproducible: members sorted by name, every timestamp the same fixed value, owner 0:0 with empty
names, modes 0644 (files) and 0755 (directories), gzip header without a name or time. The same
members give the same bytes. Atomic: written to a temporary sibling, then renamed over the target,
so a reader never sees half an archive and a failure leaves the old one in place.
"""

from __future__ import annotations

import gzip
import io
import logging
import os
import shutil
import tarfile
import tempfile
import zipfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import IO

from serve.archive.spec import Member

logger = logging.getLogger(__name__)

# 1980-01-01T00:00:00Z: the earliest time a zip can hold, used for tar too
FIXED_MTIME = 315532800
FILE_MODE = 0o644
DIR_MODE = 0o755
_COPY_CHUNK = 1 << 20


def _directories(names: Iterable[str]) -> set[str]:
    found: set[str] = set()
    for name in names:
        found.update(str(parent) for parent in PurePosixPath(name).parents if str(parent) != ".")
    return found


def _entries(members: Iterable[Member]) -> list[tuple[str, Member | None]]:
    """Every member and every directory above one (as ``None``), sorted by name."""
    by_name = {member.name: member for member in members}
    entries: dict[str, Member | None] = dict.fromkeys(_directories(by_name))
    entries.update(by_name)
    return sorted(entries.items())


@contextmanager
def _open(member: Member) -> Iterator[tuple[IO[bytes], int]]:
    if member.data is not None:
        yield io.BytesIO(member.data), len(member.data)
        return
    assert member.source is not None
    with member.source.open("rb") as handle:
        yield handle, os.fstat(handle.fileno()).st_size


@contextmanager
def _replacing(target: Path, force: bool) -> Iterator[Path]:
    """A temporary path beside ``target``, renamed over it when the block succeeds."""
    _refuse_existing(target, force)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        staged = tmp / target.name
        yield staged
        _refuse_existing(target, force)  # another archiver may have finished meanwhile
        if staged.is_dir() and target.exists():
            old = tmp / "old"
            target.rename(old)
        staged.replace(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _refuse_existing(target: Path, force: bool) -> None:
    if target.exists() and not force:
        raise FileExistsError(f"{target} exists; use -f/--force to overwrite it")


def write_tgz(members: Iterable[Member], target: Path, *, force: bool = False) -> Path:
    """Write a gzipped tar of ``members`` to ``target``.

    Raises:
        FileExistsError: ``target`` exists and ``force`` is false.
    """
    with _replacing(target, force) as staged, staged.open("wb") as raw:
        _write_tar(raw, members)
    return target


def _write_tar(raw: IO[bytes], members: Iterable[Member]) -> None:
    with (
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as compressed,
        tarfile.open(fileobj=compressed, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for name, member in _entries(members):
            _add_tar_entry(tar, name, member)


def _add_tar_entry(tar: tarfile.TarFile, name: str, member: Member | None) -> None:
    info = tarfile.TarInfo(name)
    info.mtime = FIXED_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if member is None:
        info.type, info.mode = tarfile.DIRTYPE, DIR_MODE
        tar.addfile(info)
        return
    with _open(member) as (handle, size):
        info.size, info.mode = size, FILE_MODE
        tar.addfile(info, handle)


def write_mar(
    members: Iterable[Member], target: Path, *, force: bool = False, compress: bool = True
) -> Path:
    """Write a TorchServe ``.mar`` (a zip) of ``members`` to ``target``: deflated, or with
    ``compress`` false stored as they are (torch-model-archiver's ``zip-store``).

    Raises:
        FileExistsError: ``target`` exists and ``force`` is false.
    """
    stamp = (1980, 1, 1, 0, 0, 0)
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with (
        _replacing(target, force) as staged,
        zipfile.ZipFile(staged, "w", method) as archive,
    ):
        for name, member in _entries(members):
            if member is None:
                continue  # torch-model-archiver stores no directory entries either
            info = zipfile.ZipInfo(name, date_time=stamp)
            info.create_system = 3  # unix, so that the mode below is read
            info.external_attr = (0o100000 | FILE_MODE) << 16
            info.compress_type = method
            with _open(member) as (handle, _), archive.open(info, "w") as out:
                shutil.copyfileobj(handle, out, _COPY_CHUNK)
    return target


def write_directory(members: Iterable[Member], target: Path, *, force: bool = False) -> Path:
    """Write ``members`` as a plain tree under ``target`` (``--archive-format no-archive``).

    Raises:
        FileExistsError: ``target`` exists and ``force`` is false.
    """
    with _replacing(target, force) as staged:
        for name, member in _entries(members):
            path = staged / name
            if member is None:
                path.mkdir(parents=True, exist_ok=True)
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            with _open(member) as (handle, _), path.open("wb") as out:
                shutil.copyfileobj(handle, out, _COPY_CHUNK)
            path.chmod(FILE_MODE)
            os.utime(path, (FIXED_MTIME, FIXED_MTIME))
        staged.mkdir(exist_ok=True)
    return target
