"""Built-in handlers, usable by name in a manifest with no user code.

``image_classifier``, ``text_classifier``, ``tensor`` and ``digit``; each takes a list of inputs
in one request and answers one output per input, and batches across requests. Their settings
come from the archive's config file (the manifest's ``model.configFile``) or ``options``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from handlers.builtins.base import BuiltinHandler
from handlers.builtins.digit import DigitClassifier
from handlers.builtins.image_classifier import ImageClassifier
from handlers.builtins.tensor import TensorHandler
from handlers.builtins.text_classifier import TextClassifier
from serve.contract import Handler, HandlerLoadError
from serve.model.directory import ModelDirectory

BuiltinFactory = Callable[[ModelDirectory, str], Handler]

__all__ = [
    "BuiltinFactory",
    "BuiltinHandler",
    "builtin_classes",
    "builtin_handlers",
    "check_builtin",
]


def builtin_classes() -> dict[str, type[BuiltinHandler]]:
    """A new name → class mapping of the built-in handlers."""
    classes: list[type[BuiltinHandler]] = [
        DigitClassifier,
        ImageClassifier,
        TensorHandler,
        TextClassifier,
    ]
    return {cls.name: cls for cls in classes}


def _factory(cls: type[BuiltinHandler]) -> BuiltinFactory:
    def build(model: ModelDirectory, name: str) -> Handler:
        from handlers.loader import model_options

        return cls(model, model_options(model))

    return build


def builtin_handlers() -> dict[str, BuiltinFactory]:
    """A new name → factory mapping of the built-in handlers."""
    return {name: _factory(cls) for name, cls in builtin_classes().items()}


def check_builtin(
    name: str, options: Mapping[str, Any], has_file: Callable[[str], bool]
) -> str | None:
    """What would stop built-in ``name`` from starting with these settings and files, or None.

    Args:
        name: the built-in's name.
        options: its settings (the archive's config file).
        has_file: whether the archive holds a file of that name (in ``code/`` or the root).
    """
    try:
        builtin_classes()[name].check(options, has_file)
    except HandlerLoadError as exc:
        return str(exc)
    return None
