"""Each handler style people already have, served unchanged by the real server over HTTP."""

from __future__ import annotations

import concurrent.futures
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import requests

from tests.fixtures import handler_styles as styles
from tests.fixtures.modeldirs import mar, model_dir, png
from tests.fixtures.models import DigitsModel
from tests.fixtures.server import ServerProcess

Serve = Callable[..., ServerProcess]


def test_sagemaker_toolkit_inference_py(
    tmp_path: Path, digits: DigitsModel, serve_model: Serve
) -> None:
    directory = model_dir(
        tmp_path / "m", digits.directory, {"code/inference.py": styles.TOOLKIT_INFERENCE}
    )
    server = serve_model(directory)
    images = digits.images[:5]
    response = requests.post(
        f"{server.url}/invocations",
        data=json.dumps(images.tolist()),
        headers={
            "Content-Type": "application/json",
            "X-Amzn-SageMaker-Custom-Attributes": "trace=7",
        },
        timeout=10,
    )
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["X-Amzn-SageMaker-Custom-Attributes"] == "echo=trace=7"
    expected = digits.predict(images)
    np.testing.assert_allclose(response.json()["logits"], expected, rtol=1e-4, atol=1e-4)
    assert response.json()["predictions"] == expected.argmax(1).tolist()


def test_torchserve_mar_with_a_handler_class_batches(
    tmp_path: Path, digits: DigitsModel, serve_model: Serve
) -> None:
    source = model_dir(
        tmp_path / "src",
        digits.directory,
        {"digit_handler.py": styles.TORCHSERVE_HANDLER},
        manifest=styles.TORCHSERVE_MANIFEST,
    )
    archive = mar(source, tmp_path / "digits.mar")
    server = serve_model(archive, args=["--max-batch-size", "8", "--max-batch-delay-ms", "50"])
    bodies = [png(image) for image in digits.images[:16]]

    def call(body: bytes) -> requests.Response:
        return requests.post(
            f"{server.url}/invocations",
            data=body,
            headers={"Content-Type": "image/png"},
            timeout=10,
        )

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(call, bodies))
    assert all(answer.status_code == 200 for answer in answers), [a.text for a in answers]
    got = [answer.json()["digit"] for answer in answers]
    assert got == digits.predict(digits.images[:16]).argmax(1).tolist()


def test_multi_model_server_handle_function(
    tmp_path: Path, digits: DigitsModel, serve_model: Serve
) -> None:
    directory = model_dir(
        tmp_path / "m",
        digits.directory,
        {"digit_service.py": styles.MMS_SERVICE},
        manifest=styles.MMS_MANIFEST,
    )
    server = serve_model(directory)
    image = digits.images[0]
    response = requests.post(f"{server.url}/invocations", json=image.tolist(), timeout=10)
    assert response.status_code == 200, response.text
    assert response.json() == {"digit": int(digits.predict(image[None]).argmax())}


def test_no_handler_code_uses_the_toolkit_defaults(
    tmp_path: Path, digits: DigitsModel, serve_model: Serve
) -> None:
    directory = tmp_path / "m"
    directory.mkdir()
    (directory / "model.pt").write_bytes((digits.directory / "model.ts").read_bytes())
    server = serve_model(directory)
    images = digits.images[:3]
    response = requests.post(f"{server.url}/invocations", json=images.tolist(), timeout=10)
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(response.json(), digits.predict(images), rtol=1e-4, atol=1e-4)
