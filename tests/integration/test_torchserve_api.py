"""TorchServe's inference API (``/predictions``, ``/explanations``, ``/ping``, ``/api-description``)
and its management API on a port of its own, over real HTTP with two workers: register with
TorchServe's parameters, describe, scale, versions and ``set-default``, unregister, the
``allowed_urls`` rule, multipart uploads and query parameters reaching the handler, and
TorchServe's error shape."""

from __future__ import annotations

import http.server
import json
import threading
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.fixtures import multimodel
from tests.fixtures.models import DigitsModel
from tests.fixtures.server import ServerProcess, free_port

pytestmark = pytest.mark.slow

ECHO = '''
class Echo:
    """Answers what TorchServe's backend handed it: each key of the request dict, its type, and
    (text) its value; whether the request was an explanation, and the path after the version."""

    def initialize(self, context):
        self.initialized = True

    def handle(self, data, context):
        answers = []
        for index, row in enumerate(data):
            values = {}
            for key, value in row.items():
                if isinstance(value, (bytes, bytearray)):
                    value = bytes(value[:40]).decode("latin-1")
                values[key] = value
            answers.append({
                "types": {key: type(value).__name__ for key, value in row.items()},
                "values": values,
                "explain": context.get_request_header(index, "explain"),
                "url_path": context.get_request_header(index, "url_path"),
            })
        return answers
'''


def echo_model_dir(directory: Path, version: str = "1.0") -> Path:
    directory.mkdir(parents=True)
    (directory / "echo.py").write_text(ECHO)
    (directory / "MAR-INF").mkdir()
    model = {"modelName": "echo", "handler": "echo.py", "modelVersion": version}
    manifest = {"runtime": "python", "model": model}
    (directory / "MAR-INF" / "MANIFEST.json").write_text(json.dumps(manifest))
    return directory


def _versioned(directory: Path, tag: str, version: str, digits: DigitsModel) -> Path:
    multimodel.build("torchserve", directory, tag, digits)
    manifest_path = directory / "MAR-INF" / "MANIFEST.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["model"].update(modelName="tagged", modelVersion=version)
    manifest_path.write_text(json.dumps(manifest))
    return directory


@pytest.fixture
def store(tmp_path: Path, digits: DigitsModel) -> Path:
    store = tmp_path / "store"
    _versioned(store / "tagged-v1", "first", "1.0", digits)
    _versioned(store / "tagged-v2", "second", "2.0", digits)
    echo_model_dir(store / "echo")
    return store


class TorchServe:
    """A byoserve server with TorchServe's management API on a port of its own."""

    def __init__(self, server: ServerProcess, management: int, metrics: int) -> None:
        self.server = server
        self.url = server.url
        self.management = f"http://127.0.0.1:{management}"
        self.metrics = f"http://127.0.0.1:{metrics}"

    def register(self, **params: Any) -> requests.Response:
        return requests.post(f"{self.management}/models", params=params, timeout=120)


@pytest.fixture
def torchserve(store: Path, serve_model: Any) -> TorchServe:
    management, metrics = free_port(), free_port()
    server = serve_model(
        None,
        workers=2,
        args=[
            "--model-store",
            str(store),
            "--management-address",
            f"http://127.0.0.1:{management}",
            "--metrics-address",
            f"127.0.0.1:{metrics}",
        ],
    )
    return TorchServe(server, management, metrics)


def ts_error(response: requests.Response, status: int, kind: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == status and body["type"] == kind, body
    assert "Traceback" not in body["message"]
    return str(body["message"])


def test_register_predict_describe_scale_unregister(torchserve: TorchServe) -> None:
    ping = requests.get(f"{torchserve.url}/ping", timeout=10)
    assert ping.status_code == 200 and ping.json() == {"status": "Healthy"}

    response = torchserve.register(
        url="tagged-v1",
        batch_size=4,
        max_batch_delay=50,
        initial_workers=1,
        synchronous="true",
    )
    assert response.status_code == 200, response.text
    assert response.json() == {
        "status": 'Model "tagged" Version: 1.0 registered with 2 initial workers'
    }
    image = json.dumps([[0.0] * 8] * 8).encode()
    # curl -T sends PUT with no Content-Type; the handler parses the bytes itself
    answer = requests.put(f"{torchserve.url}/predictions/tagged", data=image, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.json()["tag"] == "first"

    described = requests.get(f"{torchserve.management}/models/tagged", timeout=10).json()
    assert len(described) == 1
    model = described[0]
    assert model["modelName"] == "tagged" and model["modelVersion"] == "1.0"
    assert model["modelUrl"] == "tagged-v1"
    assert (model["batchSize"], model["maxBatchDelay"]) == (4, 50)
    assert model["minWorkers"] == model["maxWorkers"] == 2
    assert sorted(worker["status"] for worker in model["workers"]) == ["READY", "READY"]

    scaled = requests.put(
        f"{torchserve.management}/models/tagged", params={"min_worker": 3}, timeout=10
    )
    assert scaled.status_code == 202 and scaled.json() == {"status": "Processing worker updates..."}
    waited = requests.put(
        f"{torchserve.management}/models/tagged/",
        params={"min_worker": 3, "synchronous": "true", "number_gpu": 1},
        timeout=10,
    )
    assert waited.status_code == 200 and waited.json() == {
        "status": "Workers scaled to 2 for model: tagged "
        "(every worker serves every model; min_worker=3 max_worker=3 recorded)"
    }
    described = requests.get(f"{torchserve.management}/models/tagged", timeout=10).json()
    assert described[0]["requestedMinWorkers"] == 3

    listed = requests.get(f"{torchserve.management}/models", timeout=10).json()
    assert listed == {"models": [{"modelName": "tagged", "modelUrl": "tagged-v1"}]}
    assert torchserve.register(url="tagged-v1", synchronous="true").status_code == 409

    gone = requests.delete(
        f"{torchserve.management}/models/tagged/", params={"synchronous": "true"}, timeout=60
    )
    assert gone.json() == {"status": 'Model "tagged" unregistered'}
    missing = requests.post(f"{torchserve.url}/predictions/tagged", data=image, timeout=10)
    assert ts_error(missing, 404, "ModelNotFoundException") == "Model not found: tagged"


def test_versions_and_set_default(torchserve: TorchServe) -> None:
    for url in ("tagged-v1", "tagged-v2"):
        assert torchserve.register(url=url, synchronous="true").status_code == 200
    image = json.dumps([[0.0] * 8] * 8).encode()

    def tag(path: str) -> str:
        response = requests.post(f"{torchserve.url}/predictions/{path}", data=image, timeout=30)
        assert response.status_code == 200, response.text
        return str(response.json()["tag"])

    assert (tag("tagged"), tag("tagged/1.0"), tag("tagged/2.0")) == ("first", "first", "second")
    every = requests.get(f"{torchserve.management}/models/tagged/all", timeout=10).json()
    assert [(m["modelVersion"], m["isDefault"]) for m in every] == [("1.0", True), ("2.0", False)]

    default = requests.put(f"{torchserve.management}/models/tagged/2.0/set-default", timeout=10)
    assert default.status_code == 200, default.text
    assert tag("tagged") == "second"
    refused = requests.delete(f"{torchserve.management}/models/tagged/2.0", timeout=10)
    assert ts_error(refused, 400, "BadRequestException") == "Can't remove default version: 2.0"
    assert requests.delete(f"{torchserve.management}/models/tagged/1.0", timeout=60).ok
    old = requests.post(f"{torchserve.url}/predictions/tagged/1.0", data=image, timeout=10)
    message = ts_error(old, 404, "ModelVersionNotFoundException")
    assert message == "Model version: 1.0 does not exist for model: tagged"
    assert tag("tagged") == "second"


def test_request_dict_form_fields_query_parameters_and_explanations(
    torchserve: TorchServe,
) -> None:
    assert torchserve.register(url="echo", synchronous="true").status_code == 200
    png = b"\x89PNG\r\n\x1a\n fake"
    form = requests.post(
        f"{torchserve.url}/predictions/echo?threshold=0.5",
        files=[("data", ("0.png", png, "image/png")), ("meta", (None, b"note"))],
        timeout=30,
    )
    assert form.status_code == 200, form.text
    answer = form.json()
    assert answer["types"] == {"threshold": "bytearray", "meta": "bytearray", "data": "bytearray"}
    assert answer["values"]["threshold"] == "0.5" and answer["values"]["meta"] == "note"
    assert answer["values"]["data"].startswith("\x89PNG") and answer["explain"] == "False"

    posted = requests.post(
        f"{torchserve.url}/explanations/echo", json={"text": "hello"}, timeout=30
    ).json()
    assert posted["types"] == {"body": "dict", "data": "dict"} and posted["explain"] == "True"
    text = requests.put(
        f"{torchserve.url}/predictions/echo",
        data="hello",
        headers={"Content-Type": "text/plain"},
        timeout=30,
    ).json()
    assert text["values"]["body"] == "hello"
    broken = requests.post(
        f"{torchserve.url}/predictions/echo",
        data=b"no boundary",
        headers={"Content-Type": "multipart/form-data"},
        timeout=30,
    )
    assert ts_error(broken, 400, "BadRequestException").startswith("multipart/form-data")


def test_the_path_after_the_version_reaches_the_handler_as_url_path(
    torchserve: TorchServe,
) -> None:
    """TorchServe's test_url_path.py, and its vLLM handler's routes: the segment after the model
    is the version; what follows is the ``url_path`` header, with no leading slash."""
    registered = torchserve.register(url="echo", batch_size=2, max_batch_delay=500,
                                     synchronous="true")  # fmt: skip
    assert registered.status_code == 200, registered.text

    def echoed(path: str, method: str = "POST") -> dict[str, Any]:
        response = requests.request(
            method, f"{torchserve.url}/{path}", json={"prompt": "Hello world"}, timeout=30
        )
        assert response.status_code == 200, response.text
        return dict(response.json())

    first = echoed("predictions/echo/1.0/v1/chat/completion", "GET")
    assert (first["url_path"], first["explain"]) == ("v1/chat/completion", "False")
    explained = echoed("explanations/echo/1.0/v1/completions/")
    assert (explained["url_path"], explained["explain"]) == ("v1/completions", "True")
    assert echoed("predictions/echo")["url_path"] == ""
    assert echoed("predictions/echo/1.0")["url_path"] == ""
    paths = ["v1/chat/completion", "v1/completion"]
    with ThreadPoolExecutor(max_workers=2) as pool:
        answers = list(pool.map(lambda p: echoed(f"predictions/echo/1.0/{p}"), paths))
    assert [answer["url_path"] for answer in answers] == paths

    unversioned = requests.post(f"{torchserve.url}/predictions/echo/v1/chat", timeout=10)
    message = ts_error(unversioned, 404, "ModelVersionNotFoundException")
    assert message == "Model version: v1 does not exist for model: echo"
    unknown = requests.post(f"{torchserve.url}/predictions/nothing/1.0/v1/chat", timeout=10)
    assert ts_error(unknown, 404, "ModelNotFoundException") == "Model not found: nothing"


def test_descriptions_metrics_port_and_refusals(torchserve: TorchServe) -> None:
    for base in (torchserve.url, torchserve.management):
        described = requests.get(f"{base}/api-description", timeout=10).json()
        assert described["openapi"].startswith("3.") and described["paths"]
        options = requests.options(f"{base}/", timeout=10)
        assert options.status_code == 200 and options.json()["paths"] == described["paths"]
    inference = requests.get(f"{torchserve.url}/api-description", timeout=10).json()
    assert "/predictions/{model_name}" in inference["paths"]
    metrics = requests.get(f"{torchserve.metrics}/metrics", timeout=10)
    assert metrics.status_code == 200 and "byoserve" in metrics.text
    assert requests.get(f"{torchserve.metrics}/ping", timeout=10).status_code == 404

    escape = torchserve.register(url="../store/echo", synchronous="true")
    assert "not allowed" in ts_error(escape, 400, "BadRequestException")
    remote = torchserve.register(url="http://example.com/echo.mar", synchronous="true")
    assert "allowed_urls" in ts_error(remote, 403, "ForbiddenException")
    absent = torchserve.register(url="nothing.mar", synchronous="true")
    ts_error(absent, 404, "ModelNotFoundException")
    empty = torchserve.register(url="", model_name="x")
    assert ts_error(empty, 404, "ModelNotFoundException") == "empty url"
    no_url = torchserve.register(model_name="x")
    assert ts_error(no_url, 400, "BadRequestException") == "Parameter url is required."
    unknown = requests.get(f"{torchserve.management}/models/none", timeout=10)
    assert ts_error(unknown, 404, "ModelNotFoundException") == "Model not found: none"


@pytest.fixture
def remote_archive(tmp_path: Path) -> Iterator[str]:
    """An echo model as a .mar served over HTTP by a server of its own."""
    served = tmp_path / "remote"
    source = echo_model_dir(tmp_path / "echo-src", version="3.0")
    served.mkdir()
    with zipfile.ZipFile(served / "remote-echo.mar", "w") as archive:
        for path in sorted(source.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(source).as_posix())
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/remote-echo.mar"
    httpd.shutdown()


def test_allowed_urls_and_a_disabled_model_api(
    store: Path, serve_model: Any, remote_archive: str
) -> None:
    management = free_port()
    server = serve_model(
        None,
        workers=1,
        args=["--model-store", str(store), "--management-address", f"127.0.0.1:{management}"],
        env={"BYOSERVE_ALLOWED_URLS": r"http://127\.0\.0\.1:\d+/.*\.mar"},
    )
    base = f"http://127.0.0.1:{management}"
    response = requests.post(
        f"{base}/models", json={"url": remote_archive, "synchronous": True}, timeout=120
    )
    assert response.status_code == 200, response.text
    assert "Version: 3.0" in response.json()["status"]
    assert (store / "remote-echo.mar").is_file()
    answer = requests.post(f"{server.url}/predictions/echo/3.0", data=b"x", timeout=30)
    assert answer.status_code == 200 and answer.json()["values"]["body"] == "x"

    locked_port = free_port()
    serve_model(
        None,
        workers=1,
        args=["--model-store", str(store), "--management-address", f"127.0.0.1:{locked_port}"],
        env={"BYOSERVE_ENABLE_MODEL_API": "false"},
    )
    locked = f"http://127.0.0.1:{locked_port}"
    refused = requests.post(f"{locked}/models", params={"url": "echo"}, timeout=10)
    assert "enable_model_api" in ts_error(refused, 405, "MethodNotAllowedException")
    assert requests.get(f"{locked}/models", timeout=10).json() == {"models": []}


def test_invocations_accepts_put_and_model_name(torchserve: TorchServe) -> None:
    assert torchserve.register(url="echo", synchronous="true").status_code == 200
    put = requests.put(f"{torchserve.url}/invocations", data=b"abc", timeout=30)
    assert put.status_code == 200 and put.json()["values"]["body"] == "abc"
    named = requests.post(
        f"{torchserve.url}/invocations", params={"model_name": "echo"}, data=b"x", timeout=30
    )
    assert named.status_code == 200, named.text
