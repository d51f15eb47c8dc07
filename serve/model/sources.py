"""Where a TorchServe registration's ``url`` points, and what its manifest says, read without
unpacking anything.

A ``url`` is an archive or directory in the model store, or an http(s) URL that matches one of
the configured ``allowed_urls`` patterns (none by default: a server that fetches any URL it is
given runs whatever code it finds there, CVE-2023-43654 "ShellTorch"). A fetched archive is saved
in the model store under its file name, as TorchServe does. A ``..`` anywhere is refused
(CVE-2024-35198).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import tarfile
import tempfile
import urllib.request
import zipfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from urllib.error import URLError
from urllib.parse import urlsplit

from serve.errors import BadRequestError, ConflictError, ForbiddenError, ModelNotFoundError
from serve.model.manifest import Manifest
from serve.model.store import ModelStore

logger = logging.getLogger(__name__)

MANIFEST = "MAR-INF/MANIFEST.json"
MAX_MANIFEST = 1024 * 1024
FETCH_TIMEOUT_S = 60.0


def locate(url: str, store: ModelStore | None, allowed: Sequence[str]) -> Path:
    """The model a registration names.

    Raises:
        BadRequestError: a ``..``, another scheme, or no model store to look in.
        ForbiddenError: an http(s) URL that no ``allowed_urls`` pattern matches.
        ModelNotFoundError: no such file in the store, or the URL cannot be fetched.
        ConflictError: a fetched archive's name is taken in the store.
    """
    if ".." in url:
        raise BadRequestError(f"url {url[:200]!r}: relative path with .. is not allowed")
    scheme = urlsplit(url).scheme.lower() if "://" in url else ""
    if scheme in ("http", "https"):
        if not any(re.fullmatch(pattern, url) for pattern in allowed):
            raise ForbiddenError(
                f"url {url[:200]!r} does not match any allowed URL (allowed_urls); "
                "none are allowed unless configured"
            )
        if store is None:
            raise BadRequestError("a model fetched from a URL needs a model store (--model-store)")
        return _fetch(url, store)
    if scheme:
        raise BadRequestError(f"url {url[:200]!r}: only http(s) URLs and model store paths")
    if store is None:
        raise BadRequestError("registering a model needs a model store (--model-store)")
    return store.resolve(url)


def _fetch(url: str, store: ModelStore) -> Path:
    name = PurePosixPath(urlsplit(url).path).name
    if not name or name.startswith("."):
        raise BadRequestError(f"url {url[:200]!r} does not end in a file name")
    target = store.root / name
    if target.exists():
        raise ConflictError(f"{name} is already in the model store; unregister and remove it first")
    with tempfile.NamedTemporaryFile(dir=store.root, prefix=".fetch-", delete=False) as out:
        partial = Path(out.name)
        try:
            with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT_S) as response:
                shutil.copyfileobj(response, out)
        except (URLError, OSError, ValueError) as exc:
            partial.unlink(missing_ok=True)
            raise ModelNotFoundError(f"cannot fetch {url[:200]}: {exc}") from exc
    partial.rename(target)
    logger.info("fetched %s into the model store as %s", url, name)
    return target


def peek_manifest(path: Path) -> Manifest:
    """The ``MAR-INF/MANIFEST.json`` of a model directory, ``.mar``/zip or tar archive (at the
    top or one directory down, as archivers' tgz write it); empty when there is none or it is
    not readable JSON. Reads only that member."""
    try:
        raw = _manifest_bytes(path)
    except (OSError, zipfile.BadZipFile, tarfile.TarError):
        return Manifest()
    if raw is None:
        return Manifest()
    try:
        manifest = json.loads(raw)
    except ValueError:
        return Manifest()
    return Manifest.from_raw(manifest) if isinstance(manifest, dict) else Manifest()


def _manifest_bytes(path: Path) -> bytes | None:
    if path.is_dir():
        for candidate in (path / MANIFEST, *sorted(path.glob(f"*/{MANIFEST}"))):
            if candidate.is_file() and candidate.stat().st_size <= MAX_MANIFEST:
                return candidate.read_bytes()
        return None
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if _is_manifest(info.filename) and info.file_size <= MAX_MANIFEST:
                    return archive.read(info)
        return None
    with tarfile.open(path) as archive:
        for member in archive:
            if member.isfile() and _is_manifest(member.name) and member.size <= MAX_MANIFEST:
                extracted = archive.extractfile(member)
                return extracted.read() if extracted is not None else None
    return None


def _is_manifest(name: str) -> bool:
    parts = PurePosixPath(name.removeprefix("./")).parts
    return len(parts) in (2, 3) and "/".join(parts[-2:]) == MANIFEST
