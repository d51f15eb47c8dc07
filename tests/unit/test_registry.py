"""The pieces of the model registry without servers: the store, start-up model specs, names,
out-of-memory detection, and the shared set's outcomes when workers fail or models are withdrawn."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from serve.errors import BadRequestError, ModelNotFoundError
from serve.model.store import ModelStore, StoredModel, check_name, parse_models
from serve.runtime.inference import out_of_memory
from serve.runtime.shared import LOADED, LOADING, HeldModel, SharedModels, WorkerReport


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    root = tmp_path / "store"
    (root / "team" / "scorer").mkdir(parents=True)
    (root / "digits.tar.gz").write_bytes(b"x")
    (root / "legacy.mar").write_bytes(b"x")
    (root / ".byoserve-extracted-digits").mkdir()
    (root / "notes.txt").write_text("not a model")
    (tmp_path / "outside").mkdir()
    (root / "escape").symlink_to(tmp_path / "outside")
    return ModelStore(root)


@pytest.mark.parametrize("name", ["../x", "/etc/passwd", "team/../../x", "", "a\x00b", "escape"])
def test_a_store_path_that_leaves_the_store_is_refused(store: ModelStore, name: str) -> None:
    with pytest.raises(BadRequestError):
        store.resolve(name)


def test_store_paths_resolve_and_all_lists_the_models(store: ModelStore) -> None:
    assert store.resolve("team/scorer") == store.root / "team" / "scorer"
    with pytest.raises(ModelNotFoundError):
        store.resolve("missing.tar.gz")
    with pytest.raises(ValueError, match="'escape' in the model store leads out of it"):
        store.discover()  # a link out of the store: refused, as resolve() refuses it
    (store.root / "escape").unlink()
    (store.root / "inside").symlink_to(store.root / "team")  # a link within the store is fine
    assert store.discover() == [
        StoredModel("digits", store.root / "digits.tar.gz", "digits.tar.gz"),
        StoredModel("inside", store.root / "inside", "inside"),
        StoredModel("legacy", store.root / "legacy.mar", "legacy.mar"),
        StoredModel("team", store.root / "team", "team"),
    ]


def test_models_flag_names_paths_and_all(store: ModelStore, tmp_path: Path) -> None:
    given = parse_models(["d=digits.tar.gz", "legacy.mar", str(tmp_path / "x.tgz")], store)
    assert given == [
        StoredModel("d", store.root / "digits.tar.gz", "digits.tar.gz"),
        StoredModel("legacy", store.root / "legacy.mar", "legacy.mar"),
        StoredModel("x", tmp_path / "x.tgz", str(tmp_path / "x.tgz")),
    ]
    with pytest.raises(ValueError, match="leads out of it"):
        parse_models(["all"], store)
    (store.root / "escape").unlink()
    assert [m.name for m in parse_models(["all"], store)] == ["digits", "legacy", "team"]
    with pytest.raises(ValueError, match="more than once"):
        parse_models(["digits.tar.gz", "digits=legacy.mar"], store)
    with pytest.raises(ValueError, match="needs --model-store"):
        parse_models(["all"], None)
    with pytest.raises(ValueError, match="expected NAME=PATH"):
        parse_models(["=x"], store)


@pytest.mark.parametrize("name", ["m1", "a/b.tar.gz", "8f3a9c0e1d"])
def test_model_names_as_sagemaker_sends_them(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", " m", "../m", "/m", "a\nb", "x" * 513])
def test_bad_model_names_are_refused(name: str) -> None:
    with pytest.raises(BadRequestError):
        check_name(name)


def test_out_of_memory_is_recognised() -> None:
    assert out_of_memory(MemoryError())
    assert out_of_memory(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    wrapped = ValueError("model_fn failed")
    wrapped.__cause__ = MemoryError()
    assert out_of_memory(wrapped)
    assert not out_of_memory(RuntimeError("weights are corrupt"))


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True,
                          capture_output=True, text=True)  # fmt: skip
    return int(done.stdout)


@pytest.fixture
def shared(tmp_path: Path) -> SharedModels:
    (tmp_path / "shared").mkdir()
    return SharedModels(tmp_path / "shared")


def test_editing_versions_the_set_and_keeps_why_a_model_was_withdrawn(
    shared: SharedModels,
) -> None:
    with shared.editing() as desired:
        spec = desired.add("m", "/models/m", aliases=("m.tar.gz",))
    with shared.editing():
        pass  # nothing changed: nothing written
    assert shared.read().version == 1
    assert shared.read().find("m.tar.gz") == spec
    with shared.editing() as desired:
        assert desired.remove("m", spec.generation + 1) is None  # another generation: kept
        assert desired.remove("m", spec.generation, 507, "out of memory") == spec
    withdrawn = shared.read().withdrawn["m"]
    assert (withdrawn.generation, withdrawn.status, withdrawn.error) == (1, 507, "out of memory")


def test_a_dead_workers_load_is_withdrawn_by_the_master(shared: SharedModels) -> None:
    with shared.editing() as desired:
        spec = desired.add("m", "/models/m")
    pid = _dead_pid()
    shared.publish(WorkerReport(pid, False, (HeldModel("m", spec.generation, LOADING),)))
    shared.forget(pid)
    assert "m" not in shared.read().models
    outcome = shared.await_loaded(spec, time.monotonic() + 1, [])
    assert (outcome.ok, outcome.status, outcome.abandoned) == (False, 507, False)
    assert "died while loading" in outcome.error
    assert not list(shared.directory.glob(f"worker-{pid}.*"))


def test_a_worker_that_vanishes_before_it_loaded_fails_the_load(shared: SharedModels) -> None:
    with shared.editing() as desired:
        spec = desired.add("m", "/models/m")
    pid = _dead_pid()  # alive when the load began, gone before it reported the model loaded
    outcome = shared.await_loaded(spec, time.monotonic() + 1, [pid])
    assert (outcome.ok, outcome.status) == (False, 507)


def test_a_load_completes_when_every_live_worker_reports_it(shared: SharedModels) -> None:
    import os

    with shared.editing() as desired:
        spec = desired.add("m", "/models/m")
    shared.publish(WorkerReport(os.getpid(), True, (HeldModel("m", spec.generation, LOADED),)))
    assert shared.await_loaded(spec, time.monotonic() + 1, [os.getpid()]).ok
    with shared.editing() as desired:
        desired.remove("m")
    outcome = shared.await_loaded(spec, time.monotonic() + 1, [])
    assert (outcome.status, outcome.abandoned) == (409, True)
    report = json.loads((shared.directory / f"worker-{os.getpid()}.json").read_text())
    assert report["models"][0]["state"] == LOADED
