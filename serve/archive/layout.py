"""What goes into a model archive, and where: the members and the TorchServe-style manifest.

Layouts:
    ``tgz`` and ``no-archive`` (SageMaker): the serialized model, extra files and the config file
    at the root; the handler file and ``requirements.txt`` under ``code/`` (SageMaker's code
    convention: that directory goes on ``sys.path`` and its requirements are installed). The model
    file goes under ``code/`` too, except with a handler file of the user's own: TorchServe's
    ``BaseHandler`` imports the model file from the root, so it stays there.
    ``mar`` (TorchServe): every file at the root, as ``torch-model-archiver`` lays it out.
Either way the manifest is ``MAR-INF/MANIFEST.json``.
"""

from __future__ import annotations

import ast
import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

MANIFEST_NAME = "MAR-INF/MANIFEST.json"
CODE_DIR = "code"
REQUIREMENTS_NAME = "requirements.txt"
FORMATS = ("tgz", "no-archive", "mar")
RUNTIME = "python"
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_SKIPPED_DIRS = frozenset({"__pycache__", ".git", ".ipynb_checkpoints"})
# names a model file may import nn.Module (or its subclasses) under
_TORCH_MODULES = ("torch.nn", "torch.nn.modules")


class ArchiveError(Exception):
    """The archive cannot be built; the message is one line naming the flag or file at fault."""


@dataclass(frozen=True, slots=True)
class ArchiveSpec:
    """The archiver's inputs, as given on the command line.

    Attributes:
        model_name: the archive's name (``<export_path>/<model_name>.tar.gz``).
        serialized_file: the weights, TorchScript or ``torch.export`` file.
        handler: a built-in handler name, a ``.py`` file (optionally ``file.py:function``), or
            None for the default handler.
        model_file: the Python file defining the one ``nn.Module`` of a state_dict.
        extra_files: more files or directories, placed at the root.
        requirements_file: pip requirements, installed when the model loads.
        config_file: per-model settings (YAML or JSON): batch size, built-in handler settings.
        version: the model's version.
        archive_format: ``tgz``, ``no-archive`` or ``mar``.
    """

    model_name: str
    serialized_file: Path | None = None
    handler: str | None = None
    model_file: Path | None = None
    extra_files: tuple[Path, ...] = ()
    requirements_file: Path | None = None
    config_file: Path | None = None
    version: str | None = None
    archive_format: str = "tgz"


@dataclass(frozen=True, slots=True)
class Member:
    """One file of the archive: its name inside, and its content (a file, or bytes)."""

    name: str
    source: Path | None = None
    data: bytes | None = None


@dataclass(slots=True)
class Layout:
    """The archive's files by name, and its manifest."""

    members: dict[str, Member] = field(default_factory=dict)
    manifest: dict[str, Any] = field(default_factory=dict)

    def add(self, name: str, source: Path, what: str) -> str:
        if name in self.members:
            raise ArchiveError(f"{what} {source}: a second file would be stored as {name!r}")
        self.members[name] = Member(name, source=source)
        return name


def plan_archive(
    spec: ArchiveSpec,
    builtins: Sequence[str],
    *,
    created: datetime | None = None,
    archiver_version: str = "0",
) -> Layout:
    """Check every input and decide the archive's members and manifest.

    Args:
        spec: the inputs.
        builtins: the names of the built-in handlers.
        created: the manifest's ``createdOn``, left out when None (so the bytes do not depend
            on the clock).
        archiver_version: the manifest's ``archiverVersion``.

    Raises:
        ArchiveError: a missing file, an unknown built-in, a model file without exactly one
            nn.Module class, an unreadable config file, a bad model name or format.
    """
    _check_name(spec.model_name)
    if spec.archive_format not in FORMATS:
        raise ArchiveError(f"--archive-format {spec.archive_format!r}: expected one of {FORMATS}")
    flat = spec.archive_format == "mar"
    layout = Layout()
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
        _add_extra(layout, _existing(extra, "--extra-files"))
    layout.manifest = _manifest(model, created, archiver_version)
    text = json.dumps(layout.manifest, indent=2, sort_keys=False) + "\n"
    layout.members[MANIFEST_NAME] = Member(MANIFEST_NAME, data=text.encode("utf-8"))
    return layout


def _manifest(
    model: Mapping[str, Any], created: datetime | None, archiver_version: str
) -> dict[str, Any]:
    manifest: dict[str, Any] = {}
    if created is not None:
        # TorchServe's format; in UTC so that SOURCE_DATE_EPOCH gives the same text everywhere
        manifest["createdOn"] = created.astimezone(UTC).strftime("%d/%m/%Y %H:%M:%S")
    manifest["runtime"] = RUNTIME
    manifest["model"] = dict(model)
    manifest["archiverVersion"] = archiver_version
    return manifest


def _check_name(name: str) -> None:
    if not _MODEL_NAME.match(name):
        raise ArchiveError(
            f"--model-name {name!r}: use letters, digits, '_', '-' and '.', "
            "starting with a letter or digit"
        )


def _existing(path: Path, flag: str) -> Path:
    if not path.exists():
        raise ArchiveError(f"{flag} {path}: no such file")
    if flag != "--extra-files" and not path.is_file():
        raise ArchiveError(f"{flag} {path}: not a file")
    return path


def _handler(handler: str, builtins: Sequence[str], layout: Layout, flat: bool) -> tuple[str, bool]:
    """The manifest's handler entry, and whether it is the user's own file."""
    file_part, colon, function = handler.partition(":")
    if not file_part.endswith(".py"):
        if colon or handler not in builtins:
            names = ", ".join(sorted(builtins)) or "none"
            raise ArchiveError(
                f"--handler {handler!r}: not a .py file or a built-in handler (built-ins: {names})"
            )
        return handler, False
    source = _existing(Path(file_part), "--handler")
    name = source.name if flat else f"{CODE_DIR}/{source.name}"
    layout.add(name, source, "--handler")
    return name + colon + function, True


def _add_extra(layout: Layout, source: Path) -> None:
    if source.is_file():
        layout.add(source.name, source, "--extra-files")
        return
    for path in sorted(source.rglob("*")):
        relative = path.relative_to(source)
        if path.is_file() and not _SKIPPED_DIRS.intersection(relative.parts):
            name = f"{source.name}/{relative.as_posix()}"
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


def check_model_file(path: Path) -> str:
    """The name of the one ``nn.Module`` class ``path`` defines, found without importing it.

    Counts the module-level classes deriving, directly or through each other, from a class of
    ``torch.nn`` (``nn.Module``, ``torch.nn.Sequential``, ``Module`` imported from there...):
    the same classes the loader counts when it imports the file.

    Raises:
        ArchiveError: the file does not parse, or defines zero or several such classes.
    """
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except SyntaxError as exc:
        raise ArchiveError(f"--model-file {path}: syntax error on line {exc.lineno}") from exc
    except (OSError, ValueError) as exc:
        raise ArchiveError(f"--model-file {path}: cannot read: {exc}") from exc
    names = _module_classes(tree)
    if len(names) != 1:
        found = f" ({', '.join(names)})" if names else ""
        raise ArchiveError(
            f"--model-file {path}: defines {len(names)} nn.Module classes{found}; expected one"
        )
    return names[0]


def _module_classes(tree: ast.Module) -> list[str]:
    aliases = _torch_aliases(tree)
    found: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and any(
            _is_module_base(base, aliases, found) for base in node.bases
        ):
            found.append(node.name)
    return found


def _torch_aliases(tree: ast.Module) -> tuple[set[str], set[str], set[str]]:
    """Names bound to ``torch``, to ``torch.nn`` (or a submodule), and to classes from there."""
    torch_names: set[str] = set()
    nn_names: set[str] = set()
    classes: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname and alias.name.startswith(_TORCH_MODULES):
                    nn_names.add(alias.asname)
                elif alias.name == "torch" or alias.name.startswith("torch."):
                    torch_names.add(alias.asname or "torch")
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                bound = alias.asname or alias.name
                if node.module == "torch" and alias.name == "nn":
                    nn_names.add(bound)
                elif node.module.startswith(_TORCH_MODULES):
                    (nn_names if alias.name[:1].islower() else classes).add(bound)
    return torch_names, nn_names, classes


def _is_module_base(
    base: ast.expr, aliases: tuple[set[str], set[str], set[str]], local: list[str]
) -> bool:
    torch_names, nn_names, classes = aliases
    if isinstance(base, ast.Name):
        return base.id in classes or base.id in local
    parts: list[str] = []
    node: ast.expr = base
    while isinstance(node, ast.Attribute):
        parts.insert(0, node.attr)
        node = node.value
    if not isinstance(node, ast.Name) or not parts or not parts[-1][:1].isupper():
        return False
    return node.id in nn_names or (node.id in torch_names and parts[0] == "nn")
