"""TorchServe's ``ts`` package, as far as handlers that do not subclass its handlers use it, for
when TorchServe is not installed (the plain image): ``ts.handler_utils.utils`` and
``ts.protocol.otf_message_handler`` with ``send_intermediate_predict_response``, and
``ts.context``.

:func:`install` puts a finder last on ``sys.meta_path``: an installed ``ts`` is always found
first; only when there is none does ``import ts`` find the package in this directory.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType

HERE = str(Path(__file__).parent)


class FallbackFinder(importlib.abc.MetaPathFinder):
    """Finds ``ts`` here; its submodules are then found in its own directory."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> ModuleSpec | None:
        if fullname != "ts":
            return None
        return importlib.machinery.PathFinder.find_spec(fullname, [HERE])


def install() -> None:
    """Make ``import ts`` find this package when no other ``ts`` is installed (idempotent)."""
    if not any(isinstance(finder, FallbackFinder) for finder in sys.meta_path):
        sys.meta_path.append(FallbackFinder())
