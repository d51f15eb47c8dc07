"""The model directory: find it, unpack its archive safely, read its manifest, install its needs.

On SageMaker the model tree is already extracted into ``/opt/ml/model``. Locally the same path is
often a mounted directory holding a ``model.tar.gz``; that archive is unpacked here, once, refusing
members that would land outside the target (absolute paths, ``..``, links, devices).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from serve.errors import StartupError
from serve.model.extraction import (
    UnsafeArchiveError,
    extract_archive,
    mounted_root,
    unpacked_root,
)
from serve.model.manifest import Manifest
from serve.model.paths import inside

logger = logging.getLogger(__name__)

PREFERRED_ARCHIVE = "model.tar.gz"
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".mar")
EXTRACTED_NAME = ".byoserve-extracted"
MARKER_NAME = ".byoserve-unpacked"
_PIP_TAIL_LINES = 20


class ModelDirError(StartupError):
    """Start-up error: the message names the file and what is wrong with it."""


@dataclass(frozen=True, slots=True)
class ModelDirectory:
    """The prepared model tree, as handlers see it.

    Attributes:
        root: The extracted model tree (TorchServe's ``model_dir``).
        code_dir: ``root / "code"`` when that directory exists, else None.
        manifest: ``MAR-INF/MANIFEST.json``, else ``root/MANIFEST.json``, else empty: read here
            once (its ``raw`` document is what handlers get as ``context.manifest``).
        manifest_path: The file the manifest was read from, or None.
    """

    root: Path
    code_dir: Path | None
    manifest: Manifest
    manifest_path: Path | None


def prepare_model_dir(
    path: Path,
    *,
    unpack_dir: Path | None = None,
    install_requirements: bool = True,
    requirements_target: Path | None = None,
) -> ModelDirectory:
    """Turn a model path into a ready model tree.

    Rules, in order: an archive file given directly is unpacked. A directory holding
    ``model.tar.gz`` has it unpacked even when other files sit beside it (the local
    ``docker run -v dir:/opt/ml/model`` case). A directory whose only non-hidden entry is one
    ``*.tar.gz``, ``*.tgz``, ``*.tar`` or ``*.mar`` has that unpacked. Any other directory is an
    extracted tree, used in place, or one directory down when its only entry is a directory
    holding the model (a manifest or ``code/``): an archiver's tgz, whose files sit under
    ``NAME/``, extracted by SageMaker into ``/opt/ml/model``.

    Archives go to ``unpack_dir / ".byoserve-extracted"`` when ``unpack_dir`` is given, else to
    ``.byoserve-extracted`` beside the archive when that directory is writable, else to a stable
    directory under the system temp dir. An unpacked tree that holds a single top-level directory
    (``tar czf model.tar.gz mymodel/``) is replaced by that directory. ``sys.path`` is not touched;
    see :func:`activate_code_paths`.

    Args:
        path: The model directory or archive, usually ``/opt/ml/model``.
        unpack_dir: Where to unpack an archive instead of the default locations.
        install_requirements: Install ``code/requirements.txt`` and the manifest's
            ``model.requirementsFile`` with pip.
        requirements_target: Install them into this directory (put first on ``sys.path``)
            instead of the environment; nothing goes to pip's cache either.

    Raises:
        ModelDirError: The path is missing, an archive is unsafe or corrupt, the manifest is not
            a JSON object, or pip failed.
    """
    if path.is_file():
        archive: Path | None = path
    elif path.is_dir():
        archive = find_archive(path)
    else:
        raise ModelDirError(f"model directory {path}: does not exist")
    if archive is not None:
        root = unpacked_root(unpack_archive(archive, _unpack_target(archive, unpack_dir)))
    else:
        root = mounted_root(path)
    code_dir = root / "code"
    manifest, manifest_path = _read_manifest(root)
    model = ModelDirectory(root, code_dir if code_dir.is_dir() else None, manifest, manifest_path)
    if install_requirements:
        for requirements in _requirements_files(model):
            install_requirements_file(requirements, requirements_target)
    return model


def find_archive(directory: Path) -> Path | None:
    """The archive to unpack from ``directory``, or None when it holds an extracted tree.

    Returns ``model.tar.gz`` when present, else the one archive that is the only non-hidden entry.
    """
    preferred = directory / PREFERRED_ARCHIVE
    if preferred.is_file():
        return preferred
    entries = [p for p in directory.iterdir() if not p.name.startswith(".")]
    if len(entries) == 1 and entries[0].is_file() and entries[0].name.endswith(ARCHIVE_SUFFIXES):
        return entries[0]
    return None


def directory_is_writable(directory: Path) -> bool:
    """Whether files can really be created in ``directory`` (a read-only mount fails the probe)."""
    if not os.access(directory, os.W_OK):
        return False
    try:
        with tempfile.TemporaryFile(dir=directory):
            return True
    except OSError:
        return False


def unpack_archive(archive: Path, target: Path) -> Path:
    """Unpack a tar or zip (``.mar``) archive into ``target``, safely, atomically, idempotently.

    It is extracted, under a lock file, into a temporary sibling renamed into place, so a crash
    never leaves half a tree. A marker in ``target`` records the archive's path, size, mtime and
    SHA-256; while path, size and mtime match, nothing is done. The format is read from the
    content, not the extension. Returns ``target``.

    Raises:
        ModelDirError: The archive is corrupt, not tar or zip, or has an unsafe member.
    """
    st = archive.stat()
    fingerprint = {"archive": str(archive.resolve()), "size": st.st_size}
    fingerprint["mtime_ns"] = st.st_mtime_ns
    target.parent.mkdir(parents=True, exist_ok=True)
    stem = target.name.lstrip(".")
    with (target.parent / f".{stem}.lock").open("a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # released when the file is closed
        if _marker_matches(target / MARKER_NAME, fingerprint):
            logger.debug("model archive %s already unpacked in %s", archive, target)
            return target
        for stale in target.parent.glob(f".{stem}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        logger.info("unpacking model archive %s into %s", archive, target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{stem}.tmp-", dir=target.parent))
        try:
            tmp.chmod(0o755)
            _extract_safely(archive, tmp)
            with archive.open("rb") as handle:
                sha256 = hashlib.file_digest(handle, "sha256").hexdigest()
            (tmp / MARKER_NAME).write_text(json.dumps({**fingerprint, "sha256": sha256}))
            if target.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{stem}.tmp-", dir=target.parent))
                target.rename(old / "old")
                tmp.rename(target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                tmp.rename(target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def install_requirements_file(requirements: Path, target: Path | None = None) -> None:
    """Install a requirements file with pip; one holding only blanks and comments is skipped.

    With ``target`` the packages go there (``pip --target``, no cache), and it is put first on
    ``sys.path``: the environment may be read-only, as it is on SageMaker Serverless.

    Raises:
        ModelDirError: The file cannot be read, or pip failed (its last lines are included).
    """
    try:
        text = requirements.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelDirError(f"requirements file {requirements}: cannot read: {exc}") from exc
    if not any(line.strip() and not line.lstrip().startswith("#") for line in text.splitlines()):
        logger.info("requirements file %s is empty; nothing to install", requirements)
        return
    logger.info("installing requirements from %s", requirements)
    cmd = [sys.executable, "-m", "pip", "install", "--no-input", "--disable-pip-version-check"]
    if target is not None:
        cmd += ["--target", str(target), "--no-cache-dir", "--upgrade"]
    result = subprocess.run(
        [*cmd, "-r", str(requirements)],
        cwd=requirements.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        tail = "\n".join(result.stdout.splitlines()[-_PIP_TAIL_LINES:])
        raise ModelDirError(
            f"requirements file {requirements}: pip install failed "
            f"(exit {result.returncode}):\n{tail}"
        )
    if target is not None and str(target) not in sys.path:
        sys.path.insert(0, str(target))


def activate_code_paths(model: ModelDirectory) -> None:
    """Put ``model.code_dir`` then ``model.root`` at the front of ``sys.path``, each once."""
    for entry in (model.root, model.code_dir):  # reversed: the last inserted ends up first
        if entry is None:
            continue
        sys.path[:] = [p for p in sys.path if p != str(entry)]
        sys.path.insert(0, str(entry))


def _extracted_name(archive: Path) -> str:
    """``.byoserve-extracted`` for model.tar.gz; other archives get their own, by name."""
    if archive.name == PREFERRED_ARCHIVE:
        return EXTRACTED_NAME
    stem = archive.name
    for suffix in ARCHIVE_SUFFIXES:
        stem = stem.removesuffix(suffix)
    return f"{EXTRACTED_NAME}-{stem}"


def _unpack_target(archive: Path, unpack_dir: Path | None) -> Path:
    if unpack_dir is not None:
        return unpack_dir / _extracted_name(archive)
    if directory_is_writable(archive.parent):
        return archive.parent / _extracted_name(archive)
    # Keyed on the archive's path only, so a changed archive replaces its old tree in place.
    digest = hashlib.sha256(str(archive.resolve()).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"byoserve-model-{digest}"


def _marker_matches(marker: Path, fingerprint: Mapping[str, Any]) -> bool:
    try:
        recorded = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(recorded, dict) and all(recorded.get(k) == v for k, v in fingerprint.items())


def _extract_safely(archive: Path, dest: Path) -> None:
    try:
        extract_archive(archive, dest)
    except UnsafeArchiveError as exc:
        raise ModelDirError(str(exc)) from exc


def _read_manifest(root: Path) -> tuple[Manifest, Path | None]:
    for candidate in (root / "MAR-INF" / "MANIFEST.json", root / "MANIFEST.json"):
        if candidate.is_file():
            try:
                data = json.loads(candidate.read_text())
            except (ValueError, OSError) as exc:
                raise ModelDirError(f"model manifest {candidate}: invalid JSON: {exc}") from exc
            if not isinstance(data, dict):
                raise ModelDirError(f"model manifest {candidate}: must be a JSON object")
            return Manifest.from_raw(MappingProxyType(data)), candidate
    return Manifest(), None


def _requirements_files(model: ModelDirectory) -> list[Path]:
    found: list[Path] = []
    if model.code_dir is not None and (model.code_dir / "requirements.txt").is_file():
        found.append(model.code_dir / "requirements.txt")
    named = model.manifest.requirements_file
    if named:
        path = model.root / str(named)
        if not inside(model.root, path) or not path.is_file():
            raise ModelDirError(
                f"model manifest {model.manifest_path}: requirementsFile {named!r} "
                f"is not a file inside {model.root}"
            )
        if all(path.resolve() != p.resolve() for p in found):
            found.append(path)
    return found
