"""Where a worker runs its model and how many torch threads it has (serve/runtime/devices.py),
seen from inside the handler of a real server: the trained digits model, loaded by the default
toolkit loader (TorchScript, on the worker's device), answering with what torch says."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import requests

from serve.process.cpus import available_cpus
from tests.fixtures.modeldirs import model_dir
from tests.fixtures.models import DigitsModel
from tests.fixtures.server import ServerProcess

Serve = Callable[..., ServerProcess]

# No model_fn: the default loader puts model.ts on the worker's device (cuda:N, or the CPU).
INFERENCE = """
import torch


def predict_fn(data, model):
    device = next(model.parameters()).device
    with torch.inference_mode():
        logits = model(data.to(device))
    return {
        "threads": torch.get_num_threads(),
        "device": str(device),
        "input_device": str(data.device),
        "cuda": torch.cuda.is_available(),
        "logits": logits.cpu().tolist(),
    }
"""


def _ask(server: ServerProcess, digits: DigitsModel) -> dict[str, object]:
    images = digits.images[:3]
    answer = requests.post(
        f"{server.url}/invocations",
        data=json.dumps(images.tolist()),
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    found: dict[str, object] = answer.json()
    np.testing.assert_allclose(found.pop("logits"), digits.predict(images), rtol=1e-4, atol=1e-4)
    return found


@pytest.mark.parametrize(("flag", "expected"), [(["--torch-threads", "1"], 1), ([], None)])
def test_torch_threads_and_the_device_a_worker_uses(
    serve_model: Serve,
    tmp_path: Path,
    digits: DigitsModel,
    flag: list[str],
    expected: int | None,
) -> None:
    directory = model_dir(tmp_path / "m", digits.directory, {"code/inference.py": INFERENCE})
    server = serve_model(directory, workers=1, args=flag)
    found = _ask(server, digits)
    # by default one worker gets every CPU this process may use
    assert found["threads"] == (expected if expected is not None else available_cpus())
    # the input tensor was made on the model's device; without CUDA both are the CPU
    assert found["input_device"] == found["device"]
    assert found["device"] == ("cuda:0" if found["cuda"] else "cpu")


def test_two_workers_share_the_cpus(
    serve_model: Serve, tmp_path: Path, digits: DigitsModel
) -> None:
    directory = model_dir(tmp_path / "m", digits.directory, {"code/inference.py": INFERENCE})
    server = serve_model(directory, workers=2)
    found = _ask(server, digits)
    assert found["threads"] == max(1, available_cpus() // 2)
