"""Built-in handlers, usable by name in a manifest with no user code."""

from __future__ import annotations

from collections.abc import Callable

from handlers.contract import Handler
from serve.modeldir import ModelDirectory

BuiltinFactory = Callable[[ModelDirectory, str], Handler]


def builtin_handlers() -> dict[str, BuiltinFactory]:
    """A new name → factory mapping of the built-in handlers."""
    return {}
