"""TorchServe's and MMS's documented workflows, replayed end to end with only the program name
changed (``torchserve`` and ``multi-model-server`` become ``serve``): their real archivers,
``serve --start``/``--stop`` with their flags and config files, ``curl`` (``-T`` sends PUT) and
``requests`` as the tutorials' clients, the management API for register, scale and unregister, and
an MMS tgz deployed as SageMaker leaves it in ``/opt/ml/model``, answered through boto3.

The commands are those of the tutorials this product was conceived from (../shared/seeds/: the
MNIST TorchServe tutorial, the "b4" batch tutorial with its config.properties and management calls,
MMS's archiver). They run on TorchServe's default ports (8080, 8081, 8082), as the tutorials do.
The expected answers are the handler's own code run in this process on the same inputs.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import shlex
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import torch
from PIL import Image

from tests.fixtures.handler_styles import MMS_SERVICE, copy_handler
from tests.fixtures.models import DigitsModel
from tests.fixtures.server import runtime_client
from tests.integration.test_real_archivers import mms_archiver  # noqa: F401 - a fixture

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
INFERENCE, MANAGEMENT = "http://127.0.0.1:8080", "http://127.0.0.1:8081"


def run(command: str, cwd: Path, env: dict[str, str] | None = None, check: bool = True) -> str:
    """A tutorial's command line: ``torchserve``/``multi-model-server`` run ``serve``, the
    archivers run the real ones, ``curl`` is curl."""
    words = shlex.split(command)
    programs = {
        "torchserve": str(BIN / "serve"),
        "multi-model-server": str(BIN / "serve"),
        "torch-model-archiver": str(BIN / "torch-model-archiver"),
    }
    words[0] = programs.get(words[0], words[0])
    done = subprocess.run(words, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    if check and done.returncode != 0:
        raise AssertionError(f"{command}: exit {done.returncode}\n{done.stdout}\n{done.stderr}")
    return done.stdout


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A tutorial's working directory; the server it starts is stopped afterwards."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # where serve --start keeps its pid file
    # The tutorials predate token authorization and send no key: on loopback, none is asked for
    yield tmp_path
    run("torchserve --stop", tmp_path, check=False)


def _png(pixels: np.ndarray, size: int = 28) -> bytes:
    image = Image.fromarray((pixels * 255).astype(np.uint8), mode="L").resize((size, size))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _module(path: Path, name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_mnist_tutorial(work: Path, digits: DigitsModel) -> None:
    (work / "mnist_model.py").write_text((digits.directory / "model.py").read_text())
    (work / "mnist_sd.pt").write_bytes((digits.directory / "model.pt").read_bytes())
    copy_handler("mnist_tutorial.py", work / "mnist_handler.py")
    (work / "model_store").mkdir()
    for index in range(10):
        (work / f"{index}.png").write_bytes(_png(digits.images[index]))

    run(
        "torch-model-archiver --model-name mnist --version 1.0 --model-file mnist_model.py "
        "--serialized-file mnist_sd.pt --export-path ./model_store --handler mnist_handler.py -f",
        work,
    )
    assert (work / "model_store" / "mnist.mar").is_file()
    run("torchserve --start --ncs --model-store model_store --models mnist.mar", work)
    assert json.loads(run("curl -s http://localhost:8080/ping", work)) == {"status": "Healthy"}

    handler = _module(work / "mnist_handler.py", "mnist_handler_reference")
    reference = handler.MNISTDigitClassifier()
    reference.device = torch.device("cpu")
    for index in range(10):
        answer = run(f"curl -s http://127.0.0.1:8080/predictions/mnist -T {index}.png", work)
        rows = [{"body": bytearray((work / f"{index}.png").read_bytes())}]
        expected = reference.postprocess(digits.module(reference.preprocess(rows)))
        assert json.loads(answer) == expected[0], (index, answer)

    models = json.loads(run("curl -s http://localhost:8081/models", work))
    assert models == {"models": [{"modelName": "mnist", "modelUrl": "mnist.mar"}]}
    described = json.loads(run("curl -s http://localhost:8081/models/mnist", work))
    assert described[0]["modelVersion"] == "1.0" and described[0]["loadedAtStartup"] is True
    run('curl -s -X PUT "http://localhost:8081/models/mnist?min_worker=2"', work)
    gone = json.loads(run("curl -s -X DELETE http://localhost:8081/models/mnist", work))
    assert gone == {"status": 'Model "mnist" unregistered'}
    missing = json.loads(run("curl -s http://127.0.0.1:8080/predictions/mnist -T 0.png", work))
    assert missing == {
        "code": 404,
        "type": "ModelNotFoundException",
        "message": "Model not found: mnist",
    }

    run("torchserve --stop", work)
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{INFERENCE}/ping", timeout=5)


def test_b4_batch_tutorial(work: Path, digits: DigitsModel) -> None:
    (work / "cache").mkdir()
    (work / "cache" / "b4.pt").write_bytes((digits.directory / "model.ts").read_bytes())
    copy_handler("b4_tutorial.py", work / "handler.py")
    (work / "config.properties").write_text(
        "async_logging=true\nvmargs=-Dlog4j.configuration=log4j.properties\n"
    )
    (work / "model-store").mkdir()
    run(
        "torch-model-archiver --model-name b4 --version 1.0 "
        "--serialized-file cache/b4.pt --handler handler.py --export-path model-store",
        work,
    )
    started = subprocess.run(
        "$SERVE --start --model-store model-store --ts-config config.properties > /dev/null",
        shell=True,
        cwd=work,
        env={**os.environ, "SERVE": str(BIN / "serve")},
        timeout=300,
    )
    assert started.returncode == 0
    deleted = run("curl -s -X DELETE http://localhost:8081/models/b4", work)
    assert json.loads(deleted)["type"] == "ModelNotFoundException"  # nothing registered yet
    registered = run(
        'curl -s -X POST "localhost:8081/models?model_name=b4&url=b4.mar&batch_size=4'
        '&max_batch_delay=1000&initial_workers=1&synchronous=true"',
        work,
    )
    assert json.loads(registered)["status"].startswith('Model "b4" Version: 1.0 registered with')

    images = [digits.images[index] for index in range(8)]
    buffers = []
    for image in images:  # as the tutorial's client: np.save into a buffer, requests.post it
        output = io.BytesIO()
        np.save(output, image)
        output.seek(0, 0)
        buffers.append(output)
    with ThreadPoolExecutor(max_workers=8) as executor:
        responses = list(
            executor.map(
                lambda buffer: requests.post(f"{INFERENCE}/predictions/b4", buffer, timeout=60),
                buffers,
            )
        )
    answers = [response.json() for response in responses]
    model = torch.jit.load(str(work / "cache" / "b4.pt"))
    batch = torch.from_numpy(np.stack(images).astype(np.float32))
    with torch.no_grad():
        expected = ((model(batch).softmax(1) + model(batch.flip(2)).softmax(1)) / 2).argmax(1)
    assert [answer["class"] for answer in answers] == expected.tolist()
    sizes = [answer["batch"] for answer in answers]
    assert max(sizes) > 1 and all(size <= 4 for size in sizes), sizes

    described = json.loads(run("curl -s http://localhost:8081/models/b4", work))[0]
    assert (described["batchSize"], described["maxBatchDelay"]) == (4, 1000)
    run('curl -s -X PUT "http://localhost:8081/models/b4?min_worker=1&max_worker=2"', work)
    unregistered = json.loads(run("curl -s -X DELETE http://localhost:8081/models/b4", work))
    assert unregistered == {"status": 'Model "b4" unregistered'}
    run("torchserve --stop", work)


def test_mms_archive_started_locally_then_deployed_as_sagemaker_extracts_it(
    work: Path,
    digits: DigitsModel,
    mms_archiver: tuple[list[str], dict[str, str]],  # noqa: F811
    serve_model: Any,
) -> None:
    archiver, environ = mms_archiver
    model_path = work / "digits"
    model_path.mkdir()
    (model_path / "digit_service.py").write_text(MMS_SERVICE)
    (model_path / "model.ts").write_bytes((digits.directory / "model.ts").read_bytes())
    (work / "model_store").mkdir()
    mms = shlex.join(archiver)
    run(
        f"{mms} --model-name digits --model-path digits --handler digit_service:handle "
        "--export-path model_store",
        work,
        env=environ,
    )
    (work / "config.properties").write_text(
        "inference_address=http://127.0.0.1:8080\nmanagement_address=http://127.0.0.1:8081\n"
        "default_workers_per_model=1\n"
    )
    run(
        "multi-model-server --start --mms-config config.properties --model-store model_store "
        "--models digits=digits.mar",
        work,
    )
    (work / "input.json").write_text(json.dumps(digits.images[0].tolist()))
    answer = run(
        "curl -s -X POST http://127.0.0.1:8080/predictions/digits "
        "-H 'Content-Type: application/json' -T input.json",
        work,
    )
    expected = int(digits.predict(digits.images[:1]).argmax())
    assert json.loads(answer) == {"digit": expected}
    run("multi-model-server --stop", work)

    run(
        f"{mms} --model-name digits --model-path digits --handler digit_service:handle "
        "--export-path model_store --archive-format tgz -f",
        work,
        env=environ,
    )
    extracted = work / "opt" / "ml" / "model"  # SageMaker extracts model.tar.gz here
    extracted.mkdir(parents=True)
    with tarfile.open(work / "model_store" / "digits.tar.gz") as archive:
        archive.extractall(extracted, filter="data")
    assert [entry.name for entry in extracted.iterdir()] == ["digits"]  # one directory down
    server = serve_model(extracted, workers=1)
    client = runtime_client(server.url)
    response = client.invoke_endpoint(
        EndpointName="digits",
        ContentType="application/json",
        Body=json.dumps(digits.images[0].tolist()).encode(),
    )
    assert json.loads(response["Body"].read()) == {"digit": expected}
