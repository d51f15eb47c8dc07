"""Every content type in and every Accept out, through the real server and the default codecs."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import requests
from PIL import Image

from tests.fixtures import handler_styles as styles
from tests.fixtures.modeldirs import model_dir, png
from tests.fixtures.models import DigitsModel
from tests.fixtures.payloads import npy
from tests.fixtures.server import ServerProcess, start_server
from tests.unit.test_codecs import (
    jpeg_declaring,
    npy_declaring,
    npy_with_header,
    npz_of,
    png_declaring,
)


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, digits: DigitsModel, engine: str
) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("codecs")
    directory = model_dir(
        root / "m", digits.directory, {"code/inference.py": styles.TOOLKIT_ANY_CODEC}
    )
    process = start_server(directory, root / "logs")
    yield process
    process.stop(10)


def _npz(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, x=array)
    return buffer.getvalue()


def _jpeg(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray((image * 255).astype(np.uint8)).resize((32, 32)).save(
        buffer, format="JPEG", quality=95
    )
    return buffer.getvalue()


Encoder = Callable[[np.ndarray], bytes]
REQUEST_CODECS: dict[str, Encoder] = {
    "application/json": lambda a: json.dumps(a.tolist()).encode(),
    "application/json; charset=utf-8": lambda a: json.dumps(a.tolist()).encode(),
    "application/jsonlines": lambda a: "".join(
        json.dumps(r) + "\n" for r in a.reshape(-1, 64).tolist()
    ).encode(),
    "text/csv": lambda a: "\n".join(
        ",".join(map(str, r)) for r in a.reshape(-1, 64).tolist()
    ).encode(),
    "text/csv; charset=utf-8": lambda a: "\n".join(
        ",".join(map(str, r)) for r in a.reshape(-1, 64).tolist()
    ).encode(),
    "application/x-npy": npy,
    "application/x-npz": _npz,
    "text/plain": lambda a: " ".join(map(str, a.ravel().tolist())).encode(),
    "application/octet-stream": lambda a: a.astype(np.float32).tobytes(),
    "image/png": lambda a: png(a[0]),
    "image/jpeg": lambda a: _jpeg(a[0]),
    "application/x-image": lambda a: png(a[0], size=28),
}


@pytest.mark.parametrize("content_type", list(REQUEST_CODECS))
def test_each_request_content_type(
    server: ServerProcess, digits: DigitsModel, content_type: str
) -> None:
    images = digits.images[:1].astype(np.float32)
    response = requests.post(
        f"{server.url}/invocations",
        data=REQUEST_CODECS[content_type](images),
        headers={"Content-Type": content_type},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    probabilities = np.asarray(response.json())
    assert probabilities.shape == (1, 10)
    expected = int(digits.predict(images).argmax())
    if not content_type.startswith(("image/", "application/x-image")):
        assert int(probabilities.argmax()) == expected


RESPONSE_DECODERS: dict[str, Callable[[bytes], Any]] = {
    "application/json": lambda b: np.asarray(json.loads(b)),
    "application/jsonlines": lambda b: np.asarray([json.loads(line) for line in b.splitlines()]),
    "text/csv": lambda b: np.loadtxt(io.StringIO(b.decode()), delimiter=",", ndmin=2),
    "application/x-npy": lambda b: np.load(io.BytesIO(b)),
    "application/x-npz": lambda b: next(iter(np.load(io.BytesIO(b)).values())),
}


@pytest.mark.parametrize("accept", list(RESPONSE_DECODERS))
def test_each_accept(server: ServerProcess, digits: DigitsModel, accept: str) -> None:
    images = digits.images[:2]
    response = requests.post(
        f"{server.url}/invocations",
        json=images.tolist(),
        headers={"Accept": accept},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].split(";")[0] == accept
    values = RESPONSE_DECODERS[accept](response.content).reshape(2, 10)
    assert values.argmax(1).tolist() == digits.predict(images).argmax(1).tolist()


def test_accept_q_values_and_wildcards(server: ServerProcess, digits: DigitsModel) -> None:
    body = json.dumps(digits.images[:1].tolist())
    cases = {
        "application/json;q=0.1, text/csv;q=0.9": "text/csv",
        "*/*": "application/json",
        "text/*;q=0.8, application/x-npy;q=0.2": "text/csv",
    }
    for accept, expected in cases.items():
        response = requests.post(
            f"{server.url}/invocations",
            data=body,
            headers={"Content-Type": "application/json", "Accept": accept},
            timeout=10,
        )
        assert response.status_code == 200, (accept, response.text)
        assert response.headers["Content-Type"].split(";")[0] == expected, accept


HUGE = (100_000, 100_000)  # 80 GB of float64
CLIENT_ERRORS: dict[str, tuple[str, bytes, int, str]] = {
    "npy header": ("application/x-npy", npy_with_header("{'shape': (3,"), 400, "bad_request"),
    "npy shape": ("application/x-npy", npy_declaring(HUGE), 400, "bad_request"),
    "npz shape": ("application/x-npz", npz_of({"x.npy": npy_declaring(HUGE)}), 400, "bad_request"),
    "png pixels": ("image/png", png_declaring(), 413, "payload_too_large"),
    "jpeg pixels": ("image/jpeg", jpeg_declaring(), 413, "payload_too_large"),
}


def test_malformed_arrays_and_image_bombs_are_4xx_and_the_server_keeps_serving(
    server: ServerProcess, digits: DigitsModel
) -> None:
    workers, logged = server.worker_pids(), len(server.log())
    for case, (content_type, body, status, code) in CLIENT_ERRORS.items():
        response = requests.post(
            f"{server.url}/invocations",
            data=body,
            headers={"Content-Type": content_type},
            timeout=10,
        )
        assert response.status_code == status, (case, response.text)
        error = response.json()["error"]
        assert set(error) == {"code", "message", "request_id"} and error["code"] == code, case
        assert "Traceback" not in response.text and 'File "' not in response.text
    response = requests.post(
        f"{server.url}/invocations", json=digits.images[:1].tolist(), timeout=10
    )
    assert response.status_code == 200, response.text
    assert server.worker_pids() == workers
    assert "Traceback" not in server.log()[logged:]
