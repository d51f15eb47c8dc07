"""Unpacking model archives without letting a member land outside the target directory.

Tar archives pass our own lexical checks (absolute paths, ``..``, links that escape, paths beneath a
link, devices) and then the standard library's ``data`` filter where Python has it (3.11.4+; the
Debian 12 python3 of the image's local base is 3.11.2). TorchServe ``.mar`` files are zips, checked
member by member.

Where the model sits in an extracted tree: at its top, or one directory down when everything is in
one directory (``tar czf model.tar.gz mymodel/``; torch-model-archiver's and MMS model-archiver's
tgz put every file under ``NAME/``).
"""

from __future__ import annotations

import logging
import posixpath
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from serve.errors import StartupError

logger = logging.getLogger(__name__)

# A lone top-level directory with one of these names is content, not a packaging layer.
_NEVER_DESCEND = frozenset({"code", "MAR-INF"})
# What a directory that holds a model has, at least one of (the manifest, as archivers write it)
_MODEL_MARKERS = ("MAR-INF/MANIFEST.json", "MANIFEST.json", "code")


class UnsafeArchiveError(StartupError):
    """The archive is unsafe or unreadable; the message names the archive, the member and why."""


def extract_archive(archive: Path, dest: Path) -> None:
    """Extract a tar (any compression) or zip archive into ``dest``, refusing unsafe members.

    Raises:
        UnsafeArchiveError: a member would escape ``dest`` or is not a regular file, directory or
            contained link, or the archive cannot be read.
    """
    try:
        _extract(archive, dest)
    except _UnsafeMemberError as exc:
        raise UnsafeArchiveError(
            f"model archive {archive}: unsafe member {exc.name!r}: {exc.reason}"
        ) from exc
    except _FILTER_ERRORS as exc:
        name = getattr(getattr(exc, "tarinfo", None), "name", "?")
        raise UnsafeArchiveError(f"model archive {archive}: unsafe member {name!r}: {exc}") from exc
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, OSError) as exc:
        raise UnsafeArchiveError(f"model archive {archive}: cannot extract: {exc}") from exc


def _extract(archive: Path, dest: Path) -> None:
    is_zip = zipfile.is_zipfile(archive)
    if is_zip and (archive.suffix in (".mar", ".zip") or not tarfile.is_tarfile(archive)):
        _extract_zip(archive, dest)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tar:
            _extract_tar(tar, dest)
    else:
        raise UnsafeArchiveError(f"model archive {archive}: not a tar or zip archive")


# The standard library's extraction filters arrived in Python 3.11.4; Debian 12's python3 is 3.11.2.
_HAS_DATA_FILTER = hasattr(tarfile, "data_filter")
_FILTER_ERRORS: tuple[type[Exception], ...] = (
    (tarfile.FilterError,) if _HAS_DATA_FILTER else ()  # type: ignore[attr-defined,unused-ignore]
)


class _UnsafeMemberError(Exception):
    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.reason = reason


def _extract_tar(tar: tarfile.TarFile, dest: Path) -> None:
    """Our lexical checks on every member, then the "data" filter where Python has it."""
    members = _checked_members(tar)
    if _HAS_DATA_FILTER:
        tar.extractall(dest, members=members, filter="data")
    else:
        tar.extractall(dest, members=(_sanitised(member) for member in members))


def _checked_members(tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    """Reject absolute paths, `..`, links escaping the target, paths under links, devices."""
    links: set[PurePosixPath] = set()
    for member in tar:
        if member.name.startswith("/"):  # "data" would strip the "/" and extract anyway
            raise _UnsafeMemberError(member.name, "absolute path")
        name = PurePosixPath(posixpath.normpath(member.name))
        if str(name) == ".." or str(name).startswith("../"):
            raise _UnsafeMemberError(member.name, "path escapes the target directory")
        if links.intersection(name.parents):  # so every real path equals its lexical path
            raise _UnsafeMemberError(member.name, "path lies beneath a symlink member")
        if member.issym() or member.islnk():
            _check_link(member, name)
            if member.issym():
                links.add(name)
        elif not (member.isfile() or member.isdir()):
            raise _UnsafeMemberError(member.name, "device or other special file")
        yield member


def _check_link(member: tarfile.TarInfo, name: PurePosixPath) -> None:
    if member.linkname.startswith("/"):
        raise _UnsafeMemberError(member.name, "link to an absolute path")
    base = posixpath.dirname(str(name)) if member.issym() else ""
    points_to = posixpath.normpath(posixpath.join(base, member.linkname))
    if points_to == ".." or points_to.startswith("../"):
        raise _UnsafeMemberError(member.name, "link escapes the target directory")


def _sanitised(member: tarfile.TarInfo) -> tarfile.TarInfo:
    """What the "data" filter does to modes and owners, for Pythons without it."""
    member.mode &= 0o755
    member.uid = member.gid = 0
    member.uname = member.gname = ""
    return member


def _extract_zip(archive: Path, dest: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            if reason := _unsafe_zip_reason(info):
                name = info.filename
                raise UnsafeArchiveError(
                    f"model archive {archive}: unsafe member {name!r}: {reason}"
                )
        zf.extractall(dest)


def _unsafe_zip_reason(info: zipfile.ZipInfo) -> str | None:
    name = info.filename.replace("\\", "/")
    mode = info.external_attr >> 16
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return "absolute path"
    if ".." in PurePosixPath(name).parts:
        return "path contains '..'"
    if stat.S_ISLNK(mode):
        return "symbolic link"
    if stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        return "special file"
    return None


def lone_directory(tree: Path) -> Path | None:
    """The only non-hidden entry of ``tree`` when it is a directory (not a link) other than
    ``code`` or ``MAR-INF``; else None."""
    entries = [p for p in tree.iterdir() if not p.name.startswith(".")]
    if len(entries) != 1 or not entries[0].is_dir() or entries[0].is_symlink():
        return None
    return None if entries[0].name in _NEVER_DESCEND else entries[0]


def unpacked_root(tree: Path) -> Path:
    """The model's root in a tree just unpacked from an archive: the tree, or its lone
    directory."""
    inner = lone_directory(tree)
    if inner is None:
        return tree
    logger.info("model archive holds a single directory; using %s as root", inner)
    return inner


def mounted_root(directory: Path) -> Path:
    """The model's root in an extracted model directory (``/opt/ml/model``): the directory, or,
    when its only entry is a directory holding the model (a manifest or ``code/``), that one:
    an archiver's tgz, extracted by SageMaker with its ``NAME/`` on top."""
    inner = lone_directory(directory)
    if inner is None or not any((inner / marker).exists() for marker in _MODEL_MARKERS):
        return directory
    logger.info(
        "model directory %s holds only %s/ with the model in it (a tgz extracted as it is, "
        "e.g. by SageMaker); serving %s",
        directory,
        inner.name,
        inner,
    )
    return inner
