"""The model management APIs in one process, through the WSGI applications the engines serve:
SageMaker's multi-model routes on the serving port and TorchServe's management API on its own,
loading real model directories (a toolkit handler) from a model store."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from werkzeug.test import Client

from serve.bootstrap import build_server
from serve.config import ServingConfig
from serve.http.invocation import BodyRules
from serve.http.listeners import serving_app, side_apps
from serve.process.cpus import resolved
from serve.runtime.registry import ModelRegistry

HANDLER = textwrap.dedent(
    """
    def model_fn(model_dir):
        return open(f"{model_dir}/scale.txt").read().strip()

    def predict_fn(data, scale):
        return [value * int(scale) for value in data]
    """
)


def model_dir(store: Path, name: str, scale: int) -> Path:
    """A model directory with a toolkit handler that multiplies by ``scale``."""
    directory = store / name
    (directory / "code").mkdir(parents=True)
    (directory / "code" / "inference.py").write_text(HANDLER)
    (directory / "scale.txt").write_text(str(scale))
    return directory


@dataclass
class Served:
    serving: Client
    management: Client
    registry: ModelRegistry
    store: Path


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    store = tmp_path / "store"
    model_dir(store, "double", 2)
    model_dir(store, "triple", 3)
    settings = ServingConfig.from_env(
        {"SAGEMAKER_MULTI_MODEL": "true"},
        model_store=store,
        workers=1,
        metrics=False,
        install_requirements=False,
        management_address=("127.0.0.1", 1),
    )
    config = resolved(settings)
    app, registry = build_server(config, BodyRules())
    registry.start()
    (management,) = side_apps(config, registry, None, BodyRules()).values()
    yield Served(
        Client(serving_app(app, config, registry, None)), Client(management), registry, store
    )
    registry.stop()
    registry.shared.remove()


def invoke(client: Client, path: str, values: list[int], **headers: str) -> Any:
    response = client.post(path, data=json.dumps(values), content_type="application/json",
                           headers=headers)  # fmt: skip
    assert response.status_code == 200, response.data
    return response.get_json()


def test_sagemaker_loads_invokes_and_unloads_a_model(served: Served) -> None:
    client = served.serving
    url = str(served.store / "double")  # SageMaker's: where the model's files are
    loaded = client.post("/models", json={"model_name": "d", "url": url})
    assert loaded.status_code == 200, loaded.data
    assert [m["modelName"] for m in client.get("/models").get_json()["models"]] == ["d"]
    assert invoke(client, "/models/d/invoke", [1, 2]) == [2, 4]
    target = {"X-Amzn-SageMaker-Target-Model": "d"}
    assert invoke(client, "/invocations", [5], **target) == [10]
    again = client.post("/models", json={"model_name": "d", "url": url})
    assert again.status_code == 409
    assert client.delete("/models/d").status_code == 200
    gone = client.post("/models/d/invoke", json=[1])
    assert gone.status_code == 404


def test_torchserve_registers_describes_scales_and_unregisters(served: Served) -> None:
    manage, serving = served.management, served.serving
    registered = manage.post("/models?url=triple&model_name=t&synchronous=true&response_timeout=7")
    assert registered.status_code == 200, registered.data
    (described,) = manage.get("/models/t").get_json()
    assert described["modelName"] == "t" and described["responseTimeout"] == 7
    assert invoke(serving, "/predictions/t", [1]) == [3]
    scaled = manage.put("/models/t?min_worker=1&synchronous=true")
    assert scaled.status_code == 200, scaled.data
    missing = manage.get("/models/nothing")
    assert missing.status_code == 404
    assert missing.get_json()["type"] == "ModelNotFoundException"
    assert manage.delete("/models/t").status_code == 200
    assert serving.post("/predictions/t", json=[1]).status_code == 404


def status(response: Any, code: int = 200) -> str:
    """The ``status`` of a TorchServe status answer, which is all that answer holds."""
    assert response.status_code == code, response.data
    body = response.get_json()
    assert list(body) == ["status"], body
    return str(body["status"])


def ts_error(response: Any, code: int, kind: str) -> str:
    assert response.status_code == code, response.data
    body = response.get_json()
    assert body["code"] == code and body["type"] == kind, body
    return str(body["message"])


def test_torchserve_registration_answers(served: Served) -> None:
    manage = served.management
    # no initial_workers: TorchServe's 200 (synchronous is true unless the call says otherwise)
    plain = manage.post("/models?url=triple&model_name=t")
    assert status(plain) == 'Model "t" Version: 1.0 registered with 1 initial workers'
    assert invoke(served.serving, "/predictions/t", [1]) == [3]
    # values TorchServe's parser turns into its defaults instead of refusing
    for query in (
        "batch_size=dd&initial_workers=1",
        "batch_size=2&initial_workers=1&max_batch_delay=junk",
        "initial_workers=-1",
        "synchronous=-1",
        "startup_timeout=0",
        "response_timeout=-1&initial_workers=nan",
    ):
        answer = manage.post(f"/models?url=double&model_name=d&{query}")
        assert status(answer) == 'Model "d" Version: 1.0 registered with 1 initial workers', query
        assert invoke(served.serving, "/predictions/d", [1]) == [2]
        assert status(manage.delete("/models/d/?synchronous=true")) == 'Model "d" unregistered'
    empty = manage.post("/models?url=&model_name=x")
    assert ts_error(empty, 404, "ModelNotFoundException") == "empty url"
    runtime = manage.post("/models?url=double&model_name=d&runtime=python4")
    ts_error(runtime, 400, "BadRequestException")
    taken = manage.post("/models?url=nothing-there&model_name=t")
    ts_error(taken, 404, "ModelNotFoundException")
    again = manage.post("/models?url=triple&model_name=t")
    message = ts_error(again, 409, "ConflictStatusException")
    assert message == "Model version 1.0 is already registered for model t"


def test_torchserve_scale_answers(served: Served) -> None:
    manage = served.management
    assert manage.post("/models?url=triple&model_name=t").status_code == 200
    for query in (
        "min_worker=1",
        "min_worker=1&number_gpu=1",
        "number_gpu=10",
        "number_gpu=-1",
        "timeout=-1",
        "timeout=0",
        "",
        "min_worker=1&synchronous=Nan",
        "min_worker=nan&synchronous=nan",
        "min_worker=0",
        "min_worker=1&max_worker=1&synchronous=false",
    ):
        answer = manage.put(f"/models/t?{query}")
        assert status(answer, 202) == "Processing worker updates...", query
    synchronous = manage.put("/models/t?min_worker=1&synchronous=true")
    assert status(synchronous) == "Workers scaled to 1 for model: t"
    versioned = manage.put("/models/t/1.0?min_worker=1&synchronous=true")
    assert status(versioned) == "Workers scaled to 1 for model: t, version: 1.0"
    more = manage.put("/models/t?min_worker=3&max_worker=4&synchronous=true")
    assert status(more) == (
        "Workers scaled to 1 for model: t "
        "(every worker serves every model; min_worker=3 max_worker=4 recorded)"
    )
    (described,) = manage.get("/models/t").get_json()
    assert (described["requestedMinWorkers"], described["requestedMaxWorkers"]) == (3, 4)
    assert described["minWorkers"] == described["maxWorkers"] == 1
    for query in ("min_worker=2&max_worker=1", "max_worker=-1"):
        refused = manage.put(f"/models/t?{query}")
        assert ts_error(refused, 400, "BadRequestException") == (
            "max_worker cannot be less than min_worker."
        )
    negative = manage.put("/models/t?min_worker=-1")
    ts_error(negative, 400, "BadRequestException")
    version = manage.put("/models/t/0.0?min_worker=1&synchronous=true")
    message = ts_error(version, 404, "ModelVersionNotFoundException")
    assert message == "Model version: 0.0 does not exist for model: t"
    missing = manage.put("/models/t181?min_worker=1")
    assert ts_error(missing, 404, "ModelNotFoundException") == "Model not found: t181"
    default = manage.put("/models/t/1.0/set-default")
    assert status(default) == 'Default version successfully updated for model "t" to "1.0"'
    assert status(manage.delete("/models/t/1.0/")) == 'Model "t" unregistered'


def test_torchserve_list_pages_as_torchserve_does(served: Served) -> None:
    manage = served.management
    for name, url in (("a", "double"), ("b", "triple")):
        assert manage.post(f"/models?url={url}&model_name={name}").status_code == 200

    def names(query: str) -> tuple[list[str], str | None]:
        body = manage.get(f"/models?{query}").get_json()
        return [m["modelName"] for m in body["models"]], body.get("nextPageToken")

    assert names("limit=&next_page_token=") == (["a", "b"], None)
    assert names("limit=-1") == (["a", "b"], None)
    assert names("limit=1") == (["a"], "1")
    assert names("limit=1&next_page_token=1") == (["b"], "2")  # TorchServe's token at the end
    assert names("limit=1&next_page_token=-1") == (["a"], "1")
    assert names("next_page_token=12") == ([], None)
    assert names("limit=junk&next_page_token=junk") == (["a", "b"], None)


def test_torchserve_registers_with_a_handler_and_from_an_absolute_store_path(
    served: Served, tmp_path: Path
) -> None:
    manage, store = served.management, served.store
    archive = store / "hand"
    (archive / "MAR-INF").mkdir(parents=True)
    manifest = {"runtime": "python", "model": {"modelName": "hand", "handler": "a.py"}}
    (archive / "MAR-INF" / "MANIFEST.json").write_text(json.dumps(manifest))
    for letter in "ab":
        (archive / f"{letter}.py").write_text(
            f"def handle(data, context):\n    return None if data is None else [{letter!r}]\n"
        )
    registered = manage.post(f"/models?url={archive}&handler=b.py")
    assert status(registered) == 'Model "hand" Version: 1.0 registered with 1 initial workers'
    answer = served.serving.post("/predictions/hand", data=b"x")
    assert answer.status_code == 200 and answer.data == b"b", answer.data
    (described,) = manage.get("/models/hand").get_json()
    assert described["modelUrl"] == str(archive)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    for path in (outside, store):
        refused = manage.post(f"/models?url={path}&model_name=x")
        assert "model store" in ts_error(refused, 400, "BadRequestException")


def test_sagemaker_answers_as_the_toolkit_container(served: Served) -> None:
    client = served.serving
    url = str(served.store / "double")
    loaded = client.post("/models", json={"model_name": "d", "url": url})
    assert loaded.get_json() == {
        "status": 'Model "d" Version: 1.0 registered with 1 initial workers'
    }
    # a name already loaded is 409 before the url is looked at (the toolkit's own test)
    taken = client.post("/models", json={"model_name": "d", "url": "/nowhere"})
    assert taken.status_code == 409, taken.data
    unloaded = client.delete("/models/d")
    assert unloaded.status_code == 200 and unloaded.get_json() == {
        "status": 'Model "d" unregistered'
    }
    absent = client.post("/models", json={"model_name": "d", "url": "/nowhere"})
    assert absent.status_code == 404
