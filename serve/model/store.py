"""The model store: a directory of model archives and model directories that models are loaded
from by name (TorchServe's ``--model-store``; locally, where a SageMaker TargetModel is found).

Names that come from requests (a TargetModel) are paths relative to the store and never leave it:
an absolute path, a ``..`` segment, or a link that resolves outside the store is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from serve.errors import BadRequestError, ModelNotFoundError
from serve.model.directory import ARCHIVE_SUFFIXES
from serve.model.paths import inside

MODEL_SUFFIXES = (*ARCHIVE_SUFFIXES, ".zip")
MAX_NAME = 512


@dataclass(frozen=True, slots=True)
class StoredModel:
    """A model the server is asked to hold: its name, where it is, and the store path it was
    named by (another name a TargetModel may use for it), if any."""

    name: str
    path: Path
    alias: str | None = None


def model_name(entry: str) -> str:
    """A model's default name from its file or directory name: ``digits.tar.gz`` -> ``digits``."""
    base = PurePosixPath(entry).name
    for suffix in MODEL_SUFFIXES:
        if base.endswith(suffix) and len(base) > len(suffix):
            return base[: -len(suffix)]
    return base


def check_name(name: str) -> str:
    """A model name as given in a request: printable, at most 512 characters, no ``..`` segment.

    Raises:
        BadRequestError: it is not.
    """
    if not name or len(name) > MAX_NAME or not name.isprintable() or name != name.strip():
        raise BadRequestError(
            f"model name {name[:80]!r}: must be 1 to {MAX_NAME} printable characters"
        )
    if name.startswith("/") or ".." in PurePosixPath(name).parts:
        raise BadRequestError(f"model name {name[:80]!r}: must not start with / or hold ..")
    return name


class ModelStore:
    """A directory holding model archives (``.tar.gz``, ``.tgz``, ``.tar``, ``.mar``, ``.zip``)
    and model directories.

    Args:
        root: the store directory.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def resolve(self, relative: str) -> Path:
        """The store entry named by ``relative`` (a path inside the store).

        Raises:
            BadRequestError: ``relative`` is absolute, holds ``..``, or leads out of the store.
            ModelNotFoundError: there is no such entry.
        """
        parts = PurePosixPath(relative).parts
        if not relative or relative.startswith(("/", "\\")) or ".." in parts or "\x00" in relative:
            raise BadRequestError(
                f"model {relative[:80]!r}: must be a path inside the model store, "
                "with no leading / and no .."
            )
        path = self.root.joinpath(*parts)
        if not inside(self.root, path):
            raise BadRequestError(f"model {relative[:80]!r} leads out of the model store")
        if not path.exists():
            raise ModelNotFoundError(f"model {relative[:80]!r}: no such file in the model store")
        return path

    def discover(self) -> list[StoredModel]:
        """Every model in the store (``--models all``): archives and directories at its top
        level, hidden entries skipped, named by :func:`model_name`.

        Raises:
            ValueError: an entry is a link that leads out of the store (as :meth:`resolve`
                refuses it for a request, so the start refuses it, naming it).
        """
        found = []
        for entry in sorted(self.root.iterdir()):
            if entry.name.startswith("."):
                continue
            if entry.is_dir() or entry.name.endswith(MODEL_SUFFIXES):
                if not inside(self.root, entry):
                    raise ValueError(
                        f"--models all: {entry.name!r} in the model store leads out of it"
                    )
                found.append(StoredModel(model_name(entry.name), entry, entry.name))
        return found


def parse_models(words: Sequence[str], store: ModelStore | None) -> list[StoredModel]:
    """The models of ``--models``: ``NAME=PATH``, ``PATH`` (named after the file) or ``all``.

    A relative PATH is looked up in the store (or the working directory without one); an
    absolute one is used as it is (the operator's command line is trusted, a request is not).

    Raises:
        ValueError: a word names nothing, or two name the same model (a path that does not
            exist is the model's own load failure, reported with the others').
    """
    models: list[StoredModel] = []
    for word in words:
        if word == "all":
            if store is None:
                raise ValueError("--models all needs --model-store")
            models.extend(store.discover())
            continue
        name, sep, where = word.partition("=")
        if not sep:
            name, where = model_name(word), word
        if not name or not where:
            raise ValueError(f"--models {word!r}: expected NAME=PATH, PATH or all")
        path = Path(where)
        if not path.is_absolute():
            path = (store.root if store is not None else Path.cwd()) / path
        models.append(StoredModel(name, path, where if store is not None else None))
    names = [model.name for model in models]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"--models names {', '.join(duplicates)} more than once")
    return models
