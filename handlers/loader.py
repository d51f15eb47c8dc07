"""Find the user's handler in a model directory, import it, and adapt it to the handler protocol.

Discovery, first match wins: the manifest's ``model.handler`` (``file.py``, ``module``,
``module:function`` or a built-in name); the ``program`` (``SAGEMAKER_PROGRAM``);
``code/inference.py``; else the default handler (a TorchScript / torch.export / state_dict model
and the app's codecs). An import error in user code is reported, never replaced by a default.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from handlers.toolkit import DEFAULT_SOURCE, HANDLER_FUNCTIONS, ToolkitHandler
from handlers.torchmodel import find_serialized_file
from handlers.torchserve import FunctionHandler, TorchServeHandler
from handlers.tsfallback import install as install_ts_fallback
from serve.contract import Handler, HandlerLoadError
from serve.model.directory import ModelDirectory
from serve.model.namespace import ModelNamespace
from serve.model.paths import inside

logger = logging.getLogger(__name__)

Builtins = Mapping[str, Callable[[ModelDirectory, str], Handler]]
DEFAULT_PROGRAM = "inference.py"


def load_handler(
    model: ModelDirectory,
    *,
    program: str | None = None,
    builtins: Builtins | None = None,
    namespace: ModelNamespace | None = None,
) -> Handler:
    """Import and check the model's handler; call ``load`` on the result in each worker.

    Args:
        model: the prepared model directory.
        program: the entry script (``SAGEMAKER_PROGRAM``), e.g. ``"inference.py"``.
        builtins: built-in handler factories by name, for the manifest's ``model.handler``.
        namespace: the package the model's files are imported into; by default a new one
            searching ``code/`` then the root.

    Returns:
        The adapted handler, not yet loaded.

    Raises:
        HandlerLoadError: the named handler is missing, fails to import, or breaks its contract.
    """
    install_ts_fallback()  # TorchServe's streaming call, where TorchServe is not installed
    namespace = namespace or model_namespace(model)
    with namespace.bound():
        return _discover(model, program, builtins or {}, namespace)


def model_namespace(
    model: ModelDirectory, key: str = "", exclusive: bool = False
) -> ModelNamespace:
    """A new namespace for the model's files: ``code/``, then the root."""
    search = [path for path in (model.code_dir, model.root) if path is not None]
    return ModelNamespace(key or model.root.name, search, exclusive=exclusive)


def _discover(
    model: ModelDirectory, program: str | None, builtins: Builtins, namespace: ModelNamespace
) -> Handler:
    options = model_options(model)
    entry = model.manifest.handler
    if entry:
        return _from_manifest(model, entry, builtins, options, namespace)
    if program:
        path = _find_file(model, program if program.endswith(".py") else f"{program}.py")
        if path is None:
            raise HandlerLoadError(f"program {program!r}: no such file in {_places(model)}")
        return _adapt_file(model, path, options, namespace)
    if model.code_dir is not None and (model.code_dir / DEFAULT_PROGRAM).is_file():
        return _adapt_file(model, model.code_dir / DEFAULT_PROGRAM, options, namespace)
    find_serialized_file(model.root, model.manifest)  # checked here, not in every worker
    logger.info("no handler code in %s: using the default handler", model.root)
    return ToolkitHandler(None, DEFAULT_SOURCE, options)


def _adapt_file(
    model: ModelDirectory, path: Path, options: Mapping[str, Any], namespace: ModelNamespace
) -> Handler:
    source = _source(model, path)
    return adapt_module(namespace.import_file(path, source), source, options)


def adapt_module(
    module: ModuleType, source: str, options: Mapping[str, Any] | None = None
) -> Handler:
    """Adapt a handler module by what it defines.

    Toolkit functions (``model_fn``, ``input_fn``, ...) make a toolkit handler; else a module-level
    ``handle`` function an MMS handler; else exactly one class with a ``handle`` method a
    TorchServe handler.

    Raises:
        HandlerLoadError: none of these, several handler classes, or a broken contract.
    """
    if any(getattr(module, name, None) is not None for name in HANDLER_FUNCTIONS):
        return ToolkitHandler(module, source, options)
    handle = getattr(module, "handle", None)
    if callable(handle) and not inspect.isclass(handle):
        return FunctionHandler(handle, source, options)
    classes = [
        obj
        for obj in vars(module).values()
        if inspect.isclass(obj)
        and obj.__module__ == module.__name__
        and callable(getattr(obj, "handle", None))
    ]
    if len(classes) == 1:
        return TorchServeHandler(classes[0], source, options)
    if classes:
        names = ", ".join(c.__name__ for c in classes)
        raise HandlerLoadError(
            f"{source} defines {len(classes)} classes with a handle method ({names}); expected one"
        )
    raise HandlerLoadError(
        f"{source} defines no handler: expected model_fn/input_fn/predict_fn/output_fn/"
        "transform_fn, a handle(data, context) function, or one class with a handle method"
    )


def model_options(model: ModelDirectory) -> dict[str, Any]:
    """Per-model settings: the manifest's ``options`` object, then its ``model.configFile``
    (TorchServe's ``model-config.yaml``: ``batchSize``, ``maxBatchDelay``, handler settings)."""
    options: dict[str, Any] = dict(model.manifest.options)
    if model.manifest.config_file:
        options.update(_read_config(model, model.manifest.config_file))
    return options


def _read_config(model: ModelDirectory, name: str) -> Mapping[str, Any]:
    path = _find_file(model, name)
    if path is None:
        raise HandlerLoadError(f"manifest model.configFile {name!r}: no such file")
    try:
        import yaml

        loaded = yaml.safe_load(path.read_text())
    except ImportError as exc:
        raise HandlerLoadError(f"{name}: reading it needs PyYAML (pip install pyyaml)") from exc
    except Exception as exc:
        raise HandlerLoadError(f"{name}: cannot be read: {type(exc).__name__}: {exc}") from exc
    if loaded is None:
        return {}
    if not isinstance(loaded, Mapping):
        raise HandlerLoadError(f"{name}: must hold a mapping of settings")
    return loaded


def _from_manifest(
    model: ModelDirectory,
    entry: str,
    builtins: Builtins,
    options: Mapping[str, Any],
    namespace: ModelNamespace,
) -> Handler:
    module_name, _, function = entry.partition(":")
    path = _find_file(model, module_name if module_name.endswith(".py") else f"{module_name}.py")
    if path is not None:
        source = _source(model, path)
        module = namespace.import_file(path, source)
    elif not function and entry in builtins:
        logger.info("using the built-in handler %s", entry)
        return builtins[entry](model, entry)
    elif not module_name.endswith(".py") and _installed(module_name):
        source = module_name
        module = _import_installed(module_name)
    else:
        names = ", ".join(sorted(builtins)) or "none"
        raise HandlerLoadError(
            f"manifest model.handler {entry!r}: no such file in {_places(model)}, "
            f"and no built-in handler of that name (built-ins: {names})"
        )
    if not function:
        return adapt_module(module, source, options)
    target = getattr(module, function, None)
    if not callable(target):
        raise HandlerLoadError(f"{source} has no function {function!r} (manifest model.handler)")
    return FunctionHandler(target, f"{source}:{function}", options)


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _import_installed(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except Exception as exc:
        raise HandlerLoadError(f"{name}: import failed: {type(exc).__name__}: {exc}") from exc


def _find_file(model: ModelDirectory, name: str) -> Path | None:
    """``name`` in the code dir, else in the root; never outside the model directory."""
    for base in (model.code_dir, model.root):
        if base is None:
            continue
        path = base / name
        if path.is_file() and inside(model.root, path):
            return path
    return None


def _places(model: ModelDirectory) -> str:
    return " or ".join(str(base) for base in (model.code_dir, model.root) if base is not None)


def _source(model: ModelDirectory, path: Path) -> str:
    try:
        return path.relative_to(model.root).as_posix()
    except ValueError:
        return str(path)
