"""What goes into a model archive, and where: the members and the TorchServe-style manifest.

Layouts, from torch-model-archiver's inputs (``--serialized-file``, ``--handler``...):
    ``tgz`` and ``no-archive`` (SageMaker): the serialized model, extra files and the config file
    at the root; the handler file and ``requirements.txt`` under ``code/`` (SageMaker's code
    convention: that directory goes on ``sys.path`` and its requirements are installed). The model
    file goes under ``code/`` too, except with a handler file of the user's own: TorchServe's
    ``BaseHandler`` imports the model file from the root, so it stays there.
    ``default`` and ``zip-store`` (a ``.mar``): every file at the root, as
    ``torch-model-archiver`` lays it out.
From MMS model-archiver's ``--model-path``: that directory as it is, in every format (see
:mod:`serve.archive.tree`). Either way the manifest is ``MAR-INF/MANIFEST.json``.
"""

from __future__ import annotations

import glob
import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from serve.archive.modelfile import check_model_file
from serve.archive.spec import FORMATS, RUNTIMES, ArchiveError, ArchiveSpec, Member
from serve.archive.tree import plan_directory, walk_files

__all__ = [
    "CODE_DIR",
    "MANIFEST_NAME",
    "ArchiveError",
    "ArchiveSpec",
    "Layout",
    "Member",
    "check_model_file",
    "plan_archive",
    "read_config",
]

logger = logging.getLogger(__name__)

MANIFEST_NAME = "MAR-INF/MANIFEST.json"
CODE_DIR = "code"
REQUIREMENTS_NAME = "requirements.txt"
FLAT_FORMATS = frozenset({"default", "zip-store", "mar"})
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_WILDCARD = re.compile(r"[*?]|\[.*\]")


@dataclass(slots=True)
class Layout:
    """The archive's files by name, and its manifest."""

    members: dict[str, Member] = field(default_factory=dict)
    manifest: dict[str, Any] = field(default_factory=dict)

    def add(self, name: str, source: Path, what: str) -> str:
        """Store ``source`` as ``name``; the same file twice under one name is stored once.

        Raises:
            ArchiveError: another file is already stored as ``name``.
        """
        held = self.members.get(name)
        if held is not None:
            if held.source is not None and held.source.resolve() == source.resolve():
                return name
            raise ArchiveError(f"{what} {source}: a second file would be stored as {name!r}")
        self.members[name] = Member(name, source=source)
        return name


def plan_archive(
    spec: ArchiveSpec,
    builtins: Sequence[str],
    *,
    created: datetime | None = None,
    archiver_version: str = "0",
    output: Path | None = None,
) -> Layout:
    """Check every input and decide the archive's members and manifest.

    Args:
        spec: the inputs.
        builtins: the names of the built-in handlers.
        created: the manifest's ``createdOn``, left out when None (so the bytes do not depend
            on the clock).
        archiver_version: the manifest's ``archiverVersion``.
        output: where the archive will be written, never a member of itself (a ``--model-path``
            may hold the export path).

    Raises:
        ArchiveError: a missing file, an unknown built-in, a model file without exactly one
            nn.Module class, an unreadable config file, a bad model name, format or runtime.
    """
    _check_name(spec.model_name)
    if spec.archive_format not in FORMATS:
        raise ArchiveError(f"--archive-format {spec.archive_format!r}: expected one of {FORMATS}")
    _check_runtime(spec.runtime)
    layout = Layout()
    if spec.model_path is not None:
        model = plan_directory(spec, builtins, layout.add, output)
    else:
        model = _plan_files(spec, builtins, layout)
    layout.manifest = _manifest(model, spec.runtime, created, archiver_version)
    text = json.dumps(layout.manifest, indent=2, sort_keys=False) + "\n"
    layout.members[MANIFEST_NAME] = Member(MANIFEST_NAME, data=text.encode("utf-8"))
    return layout


def _plan_files(spec: ArchiveSpec, builtins: Sequence[str], layout: Layout) -> dict[str, Any]:
    """torch-model-archiver's inputs: each file to its place; the manifest's ``model``."""
    flat = spec.archive_format in FLAT_FORMATS
    model: dict[str, Any] = {"modelName": spec.model_name}
    if spec.serialized_file is not None:
        source = _existing(spec.serialized_file, "--serialized-file")
        model["serializedFile"] = layout.add(source.name, source, "--serialized-file")
    user_handler = False
    if spec.handler is not None:
        entry, user_handler = _handler(spec.handler, builtins, layout, flat)
        model["handler"] = entry
    if spec.model_file is not None:
        source = _existing(spec.model_file, "--model-file")
        check_model_file(source)
        place = "" if flat or user_handler else f"{CODE_DIR}/"
        model["modelFile"] = layout.add(place + source.name, source, "--model-file")
    if spec.version:
        model["modelVersion"] = spec.version
    if spec.requirements_file is not None:
        source = _existing(spec.requirements_file, "--requirements-file")
        name = source.name if flat else f"{CODE_DIR}/{REQUIREMENTS_NAME}"
        model["requirementsFile"] = layout.add(name, source, "--requirements-file")
    if spec.config_file is not None:
        source = _existing(spec.config_file, "--config-file")
        read_config(source)
        model["configFile"] = layout.add(source.name, source, "--config-file")
    for extra in spec.extra_files:
        _add_extra(layout, extra)
    return model


def _manifest(
    model: Mapping[str, Any], runtime: str, created: datetime | None, archiver_version: str
) -> dict[str, Any]:
    manifest: dict[str, Any] = {}
    if created is not None:
        # TorchServe's format; in UTC so that SOURCE_DATE_EPOCH gives the same text everywhere
        manifest["createdOn"] = created.astimezone(UTC).strftime("%d/%m/%Y %H:%M:%S")
    manifest["runtime"] = runtime
    manifest["model"] = dict(model)
    manifest["archiverVersion"] = archiver_version
    return manifest


def _check_name(name: str) -> None:
    if not _MODEL_NAME.match(name):
        raise ArchiveError(
            f"--model-name {name!r}: use letters, digits, '_', '-' and '.', "
            "starting with a letter or digit"
        )


def _check_runtime(runtime: str) -> None:
    if runtime not in RUNTIMES:
        raise ArchiveError(f"--runtime {runtime!r}: expected one of {RUNTIMES}")
    if runtime == "LSP":
        raise ArchiveError(
            "--runtime LSP: TorchServe's C++ handlers (.so) cannot be served here; "
            "archive a Python handler (--runtime python)"
        )
    if runtime == "python2":
        logger.warning("--runtime python2: the handler will run on the server's Python 3")


def _existing(path: Path, flag: str) -> Path:
    if not path.exists():
        raise ArchiveError(f"{flag} {path}: no such file")
    if not path.is_file():
        raise ArchiveError(f"{flag} {path}: not a file")
    return path


def _handler(handler: str, builtins: Sequence[str], layout: Layout, flat: bool) -> tuple[str, bool]:
    """The manifest's handler entry, and whether it is the user's own file.

    As torch-model-archiver does, ``path/name`` without ``.py`` that is not a built-in means
    ``path/name.py``.
    """
    file_part, colon, function = handler.partition(":")
    if not file_part.endswith(".py"):
        if not colon and handler in builtins:
            return handler, False
        if not Path(f"{file_part}.py").is_file():
            names = ", ".join(sorted(builtins)) or "none"
            raise ArchiveError(
                f"--handler {handler!r}: not a .py file or a built-in handler (built-ins: {names})"
            )
        file_part += ".py"
    source = _existing(Path(file_part), "--handler")
    name = source.name if flat else f"{CODE_DIR}/{source.name}"
    layout.add(name, source, "--handler")
    return name + colon + function, True


def _add_extra(layout: Layout, extra: Path) -> None:
    """One ``--extra-files`` item as torch-model-archiver takes it: a file goes to the root; a
    directory's entries go to the root (its files, and its subdirectories as they are); a
    wildcard adds whatever it matches, and matching nothing is only a warning."""
    text = str(extra)
    if _WILDCARD.search(text):
        matches = [Path(match) for match in sorted(glob.glob(text))]
        if not matches:
            logger.warning("--extra-files %s: the wildcard matches no file", text)
    elif extra.exists():
        matches = [extra]
    else:
        raise ArchiveError(f"--extra-files {extra}: no such file")
    for match in matches:
        if match.is_file():
            layout.add(match.name, match, "--extra-files")
            continue
        for name, path in walk_files(match):
            layout.add(name, path, "--extra-files")


def read_config(path: Path) -> dict[str, Any]:
    """The per-model settings in a YAML or JSON file (JSON needs no PyYAML).

    Raises:
        ArchiveError: the file does not parse or does not hold a mapping.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ArchiveError(f"--config-file {path}: cannot read: {exc}") from exc
    loaded = _parse_config(path, text)
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ArchiveError(f"--config-file {path}: must hold a mapping of settings")
    return loaded


def _parse_config(path: Path, text: str) -> Any:
    if path.suffix == ".json":
        try:
            return json.loads(text)
        except ValueError as exc:
            raise ArchiveError(f"--config-file {path}: invalid JSON: {exc}") from exc
    try:
        import yaml
    except ImportError as exc:
        raise ArchiveError(
            f"--config-file {path}: reading YAML needs PyYAML (pip install pyyaml)"
        ) from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        reason = " ".join(str(exc).split())
        raise ArchiveError(f"--config-file {path}: invalid YAML: {reason}") from exc
