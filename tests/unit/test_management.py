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
