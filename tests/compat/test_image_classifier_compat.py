"""Our ``image_classifier`` built-in answers a TorchServe ``--handler image_classifier`` archive
exactly as TorchServe's own ``ts.torch_handler.image_classifier.ImageClassifier`` does.

TorchServe's handler needs torchvision, so this runs only where it is installed (``.venv-compat``).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from unittest import mock

import model_archiver  # noqa: F401 - run by `make test-compat`, in .venv-compat
import pytest
import requests
import torchvision  # noqa: F401

from tests.fixtures.server import start_server

pytestmark = [pytest.mark.compat, pytest.mark.slow]


def test_same_answer_as_torchserve_image_classifier(tmp_path: Path) -> None:
    import subprocess
    import sys
    import zipfile

    import torch
    from PIL import Image
    from ts.context import Context, RequestProcessor
    from ts.torch_handler.image_classifier import ImageClassifier

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 5, stride=4),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(16, 8),
    ).eval()
    torch.jit.script(model).save(str(tmp_path / "model.pt"))
    names = {str(i): f"class{i}" for i in range(8)}
    (tmp_path / "index_to_name.json").write_text(json.dumps(names))
    script = Path(sys.executable).parent / "torch-model-archiver"
    subprocess.run(
        [
            str(script),
            "--model-name=tiny",
            "--version=1.0",
            "--handler=image_classifier",
            f"--serialized-file={tmp_path / 'model.pt'}",
            f"--extra-files={tmp_path / 'index_to_name.json'}",
            f"--export-path={tmp_path}",
        ],
        check=True,
    )
    mar = tmp_path / "tiny.mar"
    extracted = tmp_path / "ref"
    with zipfile.ZipFile(mar) as archive:
        archive.extractall(extracted)
    manifest = json.loads((extracted / "MAR-INF" / "MANIFEST.json").read_text())
    context = Context(
        "tiny",
        str(extracted),
        manifest,
        1,
        None,
        "0.12.0",
        metrics=mock.MagicMock(),
        model_yaml_config={},
    )
    context.request_processor = [RequestProcessor({})]
    handler = ImageClassifier()
    handler.initialize(context)

    image = Image.new("RGB", (320, 200))
    image.putdata([(x % 256, (x * 7) % 256, (x * 13) % 256) for x in range(320 * 200)])
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    (expected,) = handler.handle([{"body": bytearray(buffer.getvalue())}], context)

    server = start_server(mar, tmp_path / "logs")
    try:
        response = requests.post(
            f"{server.url}/invocations",
            data=buffer.getvalue(),
            headers={"Content-Type": "image/png"},
            timeout=30,
        )
    finally:
        server.stop(10)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert list(answer) == list(expected)
    assert list(answer.values()) == pytest.approx(list(expected.values()), rel=1e-4, abs=1e-6)
