"""Each model's files imported as modules of its own, so same-named files of two models coexist.

TorchServe, MMS and the SageMaker toolkit import a model's files by bare name (``inference``,
``handler``, ``model``) and get away with it because every model has a process of its own. A
byoserve worker holds many models, so each model's files become submodules of a package of its
own, ``byoserve_models.<key>``, whose search path is the model's ``code/`` directory, then its root.
How far that isolation goes:

- ``import x`` and ``from x import y`` written in a model's own files get that model's ``x`` when
  ``x`` is one of its files or packages, at load time and at request time, on any thread: each
  such module is executed with builtins of its own whose ``__import__`` looks in the model first.
- Code outside the model's files that imports one of them by bare name (TorchServe's
  ``BaseHandler`` calls ``importlib.import_module("model")`` for ``--model-file``; unpickling
  looks classes up by module name) gets the model's copy while it runs on a thread bound to the
  model (:meth:`ModelNamespace.bound`: the model's load and inference thread). Such a bare name
  stays in ``sys.modules`` only until :meth:`ModelNamespace.settle`, which the server calls after
  the load and after each batch; loads in one worker run one at a time, so two models' bare names
  never meet.
- Installed packages (site-packages, and whatever a model's ``requirements.txt`` installs) are
  shared: Python has one ``sys.modules`` and one version of a package per process.
- :meth:`ModelNamespace.close` removes the model's modules, so unloading frees them.

A namespace created ``exclusive`` (single-model mode) leaves bare names in place: nothing else can
claim them, and the model's directories are on ``sys.path`` as they always were.
"""

from __future__ import annotations

import builtins
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import itertools
import re
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

from serve.contract import HandlerLoadError

PACKAGE = "byoserve_models"
_original_import = builtins.__import__
_counter = itertools.count(1)
_bound = threading.local()


class _NamespacedLoader(importlib.abc.Loader):
    """Wraps a file loader so that the module runs with its namespace's builtins."""

    def __init__(self, loader: Any, namespace_builtins: dict[str, Any]) -> None:
        self._loader = loader
        self._builtins = namespace_builtins

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        module: ModuleType | None = self._loader.create_module(spec)
        return module

    def exec_module(self, module: ModuleType) -> None:
        module.__dict__["__builtins__"] = self._builtins
        self._loader.exec_module(module)

    def __getattr__(self, name: str) -> Any:  # get_source, get_data, resource readers...
        return getattr(self._loader, name)


class _AliasLoader(importlib.abc.Loader):
    """Answers a bare-name import with the bound model's own module."""

    def __init__(self, namespace: ModelNamespace) -> None:
        self._namespace = namespace

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return self._namespace.alias(spec.name)

    def exec_module(self, module: ModuleType) -> None:
        """Already executed under its own name."""


class _Finder(importlib.abc.MetaPathFinder):
    """Finds the submodules of every live namespace, and bare names for a bound thread."""

    def __init__(self) -> None:
        self.namespaces: dict[str, ModelNamespace] = {}

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname.startswith(PACKAGE + "."):
            namespace = self.namespaces.get(".".join(fullname.split(".", 2)[:2]))
            if namespace is None or fullname == namespace.name:
                return None
            spec = importlib.machinery.PathFinder.find_spec(fullname, path)
            if spec is not None and spec.loader is not None:
                spec.loader = _NamespacedLoader(spec.loader, namespace.builtins)
            return spec
        current: ModelNamespace | None = getattr(_bound, "namespace", None)
        if path is None and current is not None and current.is_local(fullname):
            return importlib.machinery.ModuleSpec(fullname, _AliasLoader(current))
        return None


_finder = _Finder()


def _install_finder() -> None:
    if _finder not in sys.meta_path:
        sys.meta_path.insert(0, _finder)
    if PACKAGE not in sys.modules:
        root = ModuleType(PACKAGE, "The models' own modules, one subpackage per model.")
        root.__path__ = []
        root.__spec__ = importlib.machinery.ModuleSpec(PACKAGE, None, is_package=True)
        sys.modules[PACKAGE] = root


class ModelNamespace:
    """The package one model's files are imported into.

    Args:
        key: the model's name, used (sanitised) in the package name for readable tracebacks.
        search: the directories the model's modules are found in, first match wins
            (``code/``, then the model root).
        exclusive: the only model in this process: bare names it imports stay in ``sys.modules``.
    """

    def __init__(self, key: str, search: Sequence[Path], exclusive: bool = False) -> None:
        _install_finder()
        slug = re.sub(r"\W", "_", key)[:40] or "model"
        self.name = f"{PACKAGE}.m{next(_counter)}_{slug}"
        self.search = [str(path) for path in search]
        self.exclusive = exclusive
        self.builtins: dict[str, Any] = {**vars(builtins), "__import__": self._import}
        self._local: dict[str, bool] = {}
        self._aliases: dict[str, ModuleType] = {}
        package = ModuleType(self.name, f"modules of model {key!r}")
        package.__path__ = list(self.search)
        package.__spec__ = importlib.machinery.ModuleSpec(self.name, None, is_package=True)
        package.__spec__.submodule_search_locations = list(self.search)
        sys.modules[self.name] = package
        _finder.namespaces[self.name] = self

    def is_local(self, top: str) -> bool:
        """Whether ``top`` is a module or regular package in the model's directories."""
        found = self._local.get(top)
        if found is None:
            try:
                spec = importlib.machinery.PathFinder.find_spec(top, self.search)
            except (ImportError, ValueError):
                spec = None
            # a directory without __init__.py (data, MAR-INF) would be a namespace package: not
            # a module of the model's, as on sys.path, where a real package elsewhere wins
            found = spec is not None and spec.loader is not None and spec.origin is not None
            self._local[top] = found
        return found

    def import_file(self, path: Path, source: str) -> ModuleType:
        """Import one of the model's files; a file in a search directory by its stem, so that
        ``import stem`` elsewhere in the model gets the same module.

        Raises:
            HandlerLoadError: the file raised while importing (syntax error, missing import, ...).
        """
        name = f"{self.name}.{path.stem}"
        try:
            if str(path.parent) in self.search and path.stem.isidentifier():
                return importlib.import_module(name)
            existing = sys.modules.get(name)
            if existing is not None and getattr(existing, "__file__", None) == str(path):
                return existing
            return self._import_outside_search(name, path)
        except HandlerLoadError:
            raise
        except Exception as exc:
            sys.modules.pop(name, None)
            raise HandlerLoadError(f"{source}: import failed: {type(exc).__name__}: {exc}") from exc

    def _import_outside_search(self, name: str, path: Path) -> ModuleType:
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise HandlerLoadError(f"{path.name}: cannot be imported as a Python module")
        spec.loader = _NamespacedLoader(spec.loader, self.builtins)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module

    def alias(self, bare: str) -> ModuleType:
        """The model's module ``bare``, for a bare-name import made on a bound thread."""
        module = importlib.import_module(f"{self.name}.{bare}")
        self._aliases[bare] = module
        return module

    @contextmanager
    def bound(self) -> Iterator[ModelNamespace]:
        """Bind the namespace to the current thread for the block (bare names resolve to it)."""
        previous = getattr(_bound, "namespace", None)
        _bound.namespace = self
        try:
            yield self
        finally:
            _bound.namespace = previous
            self.settle()

    def bind_thread(self) -> None:
        """Bind the namespace to the current thread for the rest of its life (the inference
        thread of the model)."""
        _bound.namespace = self

    def settle(self) -> None:
        """Take the bare names this model's code imported through a bound thread back out of
        ``sys.modules`` (not for an exclusive namespace)."""
        if not self._aliases or self.exclusive:
            return
        for bare, module in self._aliases.items():
            if sys.modules.get(bare) is module:
                del sys.modules[bare]
        self._aliases.clear()

    def close(self) -> None:
        """Forget the model's modules: out of ``sys.modules`` and the import caches."""
        self.exclusive = False
        self.settle()
        prefix = self.name + "."
        for key in [k for k in sys.modules if k == self.name or k.startswith(prefix)]:
            del sys.modules[key]
        for directory in self.search:
            sys.path_importer_cache.pop(directory, None)
        _finder.namespaces.pop(self.name, None)
        importlib.invalidate_caches()

    def _import(
        self,
        name: str,
        globals: dict[str, Any] | None = None,
        locals: dict[str, Any] | None = None,
        fromlist: Sequence[str] | None = (),
        level: int = 0,
    ) -> ModuleType:
        if level == 0 and name and self.is_local(name.partition(".")[0]):
            full = f"{self.name}.{name}"
            if fromlist:
                module: ModuleType = _original_import(full, globals, locals, fromlist, 0)
                return module
            _original_import(full, globals, locals, (), 0)
            return sys.modules[f"{self.name}.{name.partition('.')[0]}"]
        imported: ModuleType = _original_import(name, globals, locals, fromlist, level)
        return imported


def current_namespace() -> ModelNamespace | None:
    """The namespace bound to this thread, if any."""
    namespace: ModelNamespace | None = getattr(_bound, "namespace", None)
    return namespace


def import_file(path: Path, source: str) -> ModuleType:
    """Import a model's file (handler, model class, tokenizer) in the model's namespace: the one
    bound to this thread, else a namespace of the file's own directory (handlers used directly,
    outside a server).

    Raises:
        HandlerLoadError: the file raised while importing.
    """
    namespace = current_namespace() or ModelNamespace(path.stem, [path.parent])
    return namespace.import_file(path, source)
