"""Clients and handlers as TorchServe and MMS users wrote them: an MMS tutorial's boto3 client
sending ``application/text``, a numpy body posted with no Content-Type (``requests.post(url,
buffer)``), and a handler written before torch 2.6 whose own ``torch.load`` unpickles a whole
module, which works with BYOSERVE_ALLOW_PICKLED_MODELS=true and otherwise stops the start naming
that setting."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from tests.fixtures.server import run_serve, runtime_client

pytestmark = pytest.mark.slow

NPY_HANDLER = '''
import io

import numpy as np


class NumpyEcho:
    """As in a TorchServe tutorial: np.load(io.BytesIO(body)) of what requests.post sent."""

    def initialize(self, context):
        pass

    def handle(self, data, context):
        answers = []
        for row in data:
            body = row.get("data") or row.get("body")
            array = np.load(io.BytesIO(body))
            answers.append({"type": type(body).__name__, "shape": list(array.shape),
                            "sum": float(array.sum())})
        return answers
'''

PICKLED_HANDLER = '''
import os

import torch


class Pickled:
    """A handler written before torch 2.6: torch.load(path) of a whole pickled module."""

    def initialize(self, context):
        model_dir = context.system_properties["model_dir"]
        self.model = torch.load(os.path.join(model_dir, "whole.pt"))
        self.model.eval()

    def handle(self, data, context):
        rows = [torch.tensor(row["body"], dtype=torch.float32) for row in data]
        with torch.no_grad():
            return self.model(torch.stack(rows)).tolist()
'''

NET = """
import torch


class Doubler(torch.nn.Module):
    def forward(self, x):
        return x * 2
"""


def _model_dir(directory: Path, handler: str, source: str) -> Path:
    directory.mkdir(parents=True)
    (directory / handler).write_text(source)
    (directory / "MAR-INF").mkdir()
    manifest = {"runtime": "python", "model": {"modelName": directory.name, "handler": handler}}
    (directory / "MAR-INF" / "MANIFEST.json").write_text(json.dumps(manifest))
    return directory


def test_mms_client_sends_application_text(sentiment_archive: Path, serve_model: Any) -> None:
    server = serve_model(sentiment_archive, workers=1)
    client = runtime_client(server.url)
    for content_type in ("application/text", "text/markdown; charset=utf-8"):
        response = client.invoke_endpoint(
            EndpointName="sentiment",
            ContentType=content_type,
            Body=b"This is an amazing movie, I loved it.",
        )
        answer = json.loads(response["Body"].read())
        assert answer["label"] == "positive", (content_type, answer)


def test_numpy_body_without_content_type(tmp_path: Path, serve_model: Any) -> None:
    server = serve_model(_model_dir(tmp_path / "npy", "npy_handler.py", NPY_HANDLER), workers=1)
    buffer = io.BytesIO()
    np.save(buffer, np.arange(12, dtype=np.float32).reshape(3, 4))
    buffer.seek(0)
    response = requests.post(f"{server.url}/predictions/npy", buffer, timeout=30)
    assert response.status_code == 200, response.text
    assert "Content-Type" not in response.request.headers
    assert response.json() == {"type": "bytearray", "shape": [3, 4], "sum": 66.0}


@pytest.fixture
def pickled_model(tmp_path: Path) -> Path:
    """A model directory whose handler torch.load()s a whole pickled module (class in net.py)."""
    directory = _model_dir(tmp_path / "pickled", "pickled_handler.py", PICKLED_HANDLER)
    (directory / "net.py").write_text(NET)
    script = (
        "import sys, torch; sys.path.insert(0, sys.argv[1]); import net; "
        "torch.save(net.Doubler(), sys.argv[1] + '/whole.pt')"
    )
    subprocess.run([sys.executable, "-c", script, str(directory)], check=True)
    return directory


def test_pickled_models_need_the_opt_in(pickled_model: Path, serve_model: Any) -> None:
    refused = run_serve(["--model-dir", str(pickled_model), "--workers", "1"], timeout=120)
    assert refused.returncode != 0
    assert "BYOSERVE_ALLOW_PICKLED_MODELS=true" in refused.stderr
    assert "Traceback" not in refused.stderr.split("cannot start")[-1]

    server = serve_model(pickled_model, workers=1, env={"BYOSERVE_ALLOW_PICKLED_MODELS": "true"})
    response = requests.put(f"{server.url}/predictions/pickled", json=[1.5, -2.0], timeout=30)
    assert response.status_code == 200, response.text
    assert response.json() == [3.0, -4.0]
