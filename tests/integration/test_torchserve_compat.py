"""TorchServe ``.mar`` archives, built by the real ``torch-model-archiver``, served unchanged.

The reference for each answer is what TorchServe itself would send: the handler's own ``handle()``
called in process with TorchServe's ``ts.context.Context`` and the payload decoded as TorchServe's
backend decodes it (JSON parsed). No Java: TorchServe's frontend never runs. Needs the test extra
packages ``torch-model-archiver`` and ``torchserve`` (installed with ``--no-deps``: ``BaseHandler``
imports without torchvision); handlers that need torchvision are tested in ``tests/compat``.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import model_archiver  # noqa: F401 - torch-model-archiver, in the test extra
import numpy as np
import pytest
import requests
import ts.torch_handler.base_handler  # noqa: F401 - TorchServe's Python package, no Java

from tests.fixtures.handler_styles import copy_handler
from tests.fixtures.models import DigitsModel
from tests.fixtures.server import ServerProcess, start_server

pytestmark = pytest.mark.slow


def torch_model_archiver(tmp_path: Path, *flags: str) -> Path:
    """Run the real ``torch-model-archiver`` CLI; returns the .mar it wrote."""
    script = Path(sys.executable).parent / "torch-model-archiver"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "model_archiver"]
    out = tmp_path / "mar"
    out.mkdir(exist_ok=True)
    subprocess.run([*command, *flags, "--export-path", str(out)], check=True, cwd=tmp_path)
    (mar,) = out.glob("*.mar")
    return mar


def reference(mar: Path, extract_to: Path, payloads: list[Any], entry: str) -> list[Any]:
    """What TorchServe answers: the handler's handle() in process, with TorchServe's Context."""
    from ts.context import Context, RequestProcessor

    with zipfile.ZipFile(mar) as archive:
        archive.extractall(extract_to)
    manifest = json.loads((extract_to / "MAR-INF" / "MANIFEST.json").read_text())
    context = Context(
        manifest["model"]["modelName"],
        str(extract_to),
        manifest,
        len(payloads),
        None,
        "0.12.0",
        metrics=mock.MagicMock(),
        model_yaml_config={},
    )
    context.request_processor = [RequestProcessor({}) for _ in payloads]
    sys.path.insert(0, str(extract_to))
    saved = {name: sys.modules.pop(name) for name in ("model",) if name in sys.modules}
    try:
        file_name, _, function = manifest["model"]["handler"].partition(":")
        function = function or ("" if entry else "handle")
        spec = importlib.util.spec_from_file_location(f"ref_{mar.stem}", extract_to / file_name)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        if function:
            handle = getattr(module, function)
            handle(None, context)
        else:
            service = getattr(module, entry)()
            service.initialize(context)
            handle = service.handle
        data = [{"body": payload} for payload in payloads]
        return list(json.loads(json.dumps(handle(data, context))))
    finally:
        sys.path.remove(str(extract_to))
        sys.modules.pop("model", None)
        sys.modules.update(saved)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[list[ServerProcess]]:
    servers: list[ServerProcess] = []
    yield servers
    for server in servers:
        server.stop(10)


def serve(mar: Path, tmp_path: Path, servers: list[ServerProcess], **kwargs: Any) -> ServerProcess:
    server = start_server(mar, tmp_path / "logs", **kwargs)
    servers.append(server)
    return server


def post_json(server: ServerProcess, payload: Any) -> requests.Response:
    return requests.post(f"{server.url}/invocations", json=payload, timeout=30)


def test_base_handler_subclass_eager_model(
    digits: DigitsModel, tmp_path: Path, served: list[ServerProcess]
) -> None:
    copy_handler("compat_digits.py", tmp_path / "digits_handler.py")
    mar = torch_model_archiver(
        tmp_path,
        "--model-name=digits",
        "--version=1.0",
        f"--serialized-file={digits.directory / 'model.pt'}",
        f"--model-file={digits.directory / 'model.py'}",
        f"--handler={tmp_path / 'digits_handler.py'}",
    )
    payloads = [image.tolist() for image in digits.images[:6]]
    expected = reference(mar, tmp_path / "ref", payloads, "DigitsHandler")
    server = serve(mar, tmp_path, served, args=["--max-batch-size", "4"])
    answers = [post_json(server, payload) for payload in payloads]
    assert [a.status_code for a in answers] == [200] * len(payloads)
    assert [a.json() for a in answers] == expected
    probs = digits.predict(np.asarray(digits.images[:6]))
    assert [e["digit"] for e in expected] == probs.argmax(1).tolist()


def test_mms_handle_function_torchscript(
    digits: DigitsModel, tmp_path: Path, served: list[ServerProcess]
) -> None:
    copy_handler("compat_mms_torchscript.py", tmp_path / "mms_entry.py")
    scripted = tmp_path / "digits.pt"
    scripted.write_bytes((digits.directory / "model.ts").read_bytes())
    mar = torch_model_archiver(
        tmp_path,
        "--model-name=digits-mms",
        "--version=1.0",
        f"--serialized-file={scripted}",
        f"--handler={tmp_path / 'mms_entry.py'}",  # a module-level handle(): MMS style
    )
    payloads = [image.tolist() for image in digits.images[10:14]]
    expected = reference(mar, tmp_path / "ref", payloads, "")
    server = serve(mar, tmp_path, served)
    assert [post_json(server, p).json() for p in payloads] == expected


def test_torchserve_default_image_classifier_name(
    tmp_path: Path, served: list[ServerProcess]
) -> None:
    """``--handler image_classifier`` (TorchServe's built-in) runs on ours, in TorchServe's
    answer format: ``{label: probability}`` for the top 5 classes."""
    import torch

    model = torch.nn.Sequential(
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(3, 6)
    )
    torch.manual_seed(0)
    scripted = tmp_path / "tiny.pt"
    torch.jit.script(model.eval()).save(str(scripted))
    names = {str(i): f"class{i}" for i in range(6)}
    (tmp_path / "index_to_name.json").write_text(json.dumps(names))
    mar = torch_model_archiver(
        tmp_path,
        "--model-name=tiny",
        "--version=1.0",
        f"--serialized-file={scripted}",
        "--handler=image_classifier",
        f"--extra-files={tmp_path / 'index_to_name.json'}",
    )
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (320, 240), (200, 30, 90)).save(buffer, format="PNG")
    server = serve(mar, tmp_path, served)
    response = requests.post(
        f"{server.url}/invocations",
        data=buffer.getvalue(),
        headers={"Content-Type": "image/png"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    assert isinstance(answer, dict) and len(answer) == 5
    assert set(answer) <= set(names.values())
    assert list(answer.values()) == sorted(answer.values(), reverse=True)
