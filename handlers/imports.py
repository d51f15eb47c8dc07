"""Importing a user's file (handler module, model file, tokenizer) as a module of its own."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from handlers.contract import HandlerLoadError


def import_path(path: Path, source: str) -> ModuleType:
    """Import a file as a module named after its stem, registered in ``sys.modules``.

    Raises:
        HandlerLoadError: the file raised while importing (syntax error, missing import, ...).
    """
    name = path.stem
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise HandlerLoadError(f"{source}: cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    previous = sys.modules.get(name)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        _restore(name, previous)
        raise HandlerLoadError(f"{source}: import failed: {type(exc).__name__}: {exc}") from exc
    return module


def _restore(name: str, previous: ModuleType | None) -> None:
    if previous is None:
        sys.modules.pop(name, None)
    else:
        sys.modules[name] = previous
