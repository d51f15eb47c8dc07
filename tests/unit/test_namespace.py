"""Each model's files in a namespace of their own: same-named files of two models side by side."""

from __future__ import annotations

import gc
import importlib
import sys
import threading
import weakref
from pathlib import Path

from serve.model.namespace import ModelNamespace

INFERENCE = """
import helper
from pkg.inner import VALUE


def who():
    import helper as again  # a request-time import
    return helper.TAG, again.TAG, VALUE
"""


def _model(root: Path, tag: str) -> Path:
    (root / "code").mkdir(parents=True)
    (root / "code" / "inference.py").write_text(INFERENCE)
    (root / "code" / "helper.py").write_text(f"TAG = {tag!r}\n")
    (root / "pkg").mkdir()
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "inner.py").write_text(f"VALUE = 'v-{tag}'\n")
    (root / "model.py").write_text(f"class Net:\n    TAG = {tag!r}\n")
    (root / "data").mkdir()  # a directory that is not a package: never a module of the model's
    return root


def _namespace(root: Path, tag: str) -> ModelNamespace:
    return ModelNamespace(tag, [root / "code", root])


def test_two_models_with_the_same_file_names_run_their_own_code(tmp_path: Path) -> None:
    roots = {tag: _model(tmp_path / tag, tag) for tag in ("a", "b")}
    spaces = {tag: _namespace(root, tag) for tag, root in roots.items()}
    modules = {
        tag: spaces[tag].import_file(root / "code" / "inference.py", "inference.py")
        for tag, root in roots.items()
    }
    assert modules["a"].who() == ("a", "a", "v-a")
    assert modules["b"].who() == ("b", "b", "v-b")
    answers: list[tuple[str, str, str]] = []
    thread = threading.Thread(target=lambda: answers.append(modules["a"].who()))
    thread.start()
    thread.join()
    assert answers == [("a", "a", "v-a")]  # from any thread
    assert not {"helper", "inference", "pkg", "model", "data"} & set(sys.modules)
    assert not spaces["a"].is_local("data")


def test_bare_names_resolve_to_the_bound_model_and_are_settled_after(tmp_path: Path) -> None:
    spaces = {tag: _namespace(_model(tmp_path / tag, tag), tag) for tag in ("a", "b")}
    for tag, space in spaces.items():
        with space.bound():  # as TorchServe's BaseHandler imports its model file
            found = importlib.import_module("model").Net.TAG
        assert found == tag
        assert "model" not in sys.modules
    exclusive = ModelNamespace("only", [tmp_path / "a"], exclusive=True)
    with exclusive.bound():
        module = importlib.import_module("model")
    assert sys.modules.pop("model") is module  # the only model keeps its bare names


def test_close_forgets_the_modules_so_they_can_be_freed(tmp_path: Path) -> None:
    root = _model(tmp_path / "a", "a")
    space = _namespace(root, "a")
    module = space.import_file(root / "code" / "inference.py", "inference.py")
    name = space.name
    reference = weakref.ref(module)
    space.close()
    del module, space
    gc.collect()
    assert reference() is None
    assert not [key for key in sys.modules if key.startswith(name)]
