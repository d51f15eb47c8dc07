"""What the archiver is asked for (:class:`ArchiveSpec`), what it writes (:class:`Member`), and its
one error."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from serve.errors import StartupError

# archive formats: torch-model-archiver's four ("mar" is this archiver's earlier name of
# "default"), and the path suffix each writes
SUFFIXES = {
    "default": ".mar",
    "zip-store": ".mar",
    "mar": ".mar",
    "tgz": ".tar.gz",
    "no-archive": "",
}
FORMATS = tuple(SUFFIXES)
DEFAULT_FORMAT = "default"
RUNTIMES = ("python", "python2", "python3", "LSP")


class ArchiveError(StartupError):
    """The archive cannot be built; the message is one line naming the flag or file at fault."""

    exit_code = 2
    reason = "error"


@dataclass(frozen=True, slots=True)
class ArchiveSpec:
    """The archiver's inputs, as given on the command line.

    Attributes:
        model_name: the archive's name (``<export_path>/<model_name>.mar`` by default).
        serialized_file: the weights, TorchScript or ``torch.export`` file.
        handler: a built-in handler name, a ``.py`` file (optionally ``file.py:function``), an
            MMS ``module:function`` with ``model_path``, or None for the default handler.
        model_file: the Python file defining the one ``nn.Module`` of a state_dict.
        extra_files: more files, directories (their entries go to the root, as
            torch-model-archiver puts them) or wildcards.
        requirements_file: pip requirements, installed when the model loads.
        config_file: per-model settings (YAML or JSON): batch size, built-in handler settings.
        version: the model's version.
        archive_format: ``default`` (a ``.mar``), ``zip-store`` (an uncompressed ``.mar``),
            ``tgz`` (SageMaker's ``model.tar.gz``) or ``no-archive`` (a directory).
        runtime: the manifest's ``runtime``: ``python``, ``python2`` or ``python3``
            (``LSP``, TorchServe's C++ handlers, is refused).
        model_path: MMS ``model-archiver``'s ``--model-path``: a directory archived whole (the
            torch-model-archiver inputs above are then not used).
        convert: MMS's ``--convert``: convert an ``.onnx`` file to MXNet, which cannot apply
            here; refused when there is such a file, nothing to do otherwise.
    """

    model_name: str
    serialized_file: Path | None = None
    handler: str | None = None
    model_file: Path | None = None
    extra_files: tuple[Path, ...] = ()
    requirements_file: Path | None = None
    config_file: Path | None = None
    version: str | None = None
    archive_format: str = DEFAULT_FORMAT
    runtime: str = "python"
    model_path: Path | None = None
    convert: bool = False


@dataclass(frozen=True, slots=True)
class Member:
    """One file of the archive: its name inside, and its content (a file, or bytes)."""

    name: str
    source: Path | None = None
    data: bytes | None = None
