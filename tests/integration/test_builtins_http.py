"""Each built-in handler, archived with ``serve archive`` and served by the real server, over HTTP
with each content type it accepts; its answers match the model run in process."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator

import numpy as np
import pytest
import requests
import torch
from PIL import Image

from serve.archive.archiver import create_archive
from serve.archive.layout import ArchiveSpec
from tests.fixtures.builtin_models import (
    IMAGE_CONFIG,
    ImageModel,
    TextModel,
    digit_image,
    encode_image,
    mnist_style_net,
    train_image_model,
    train_text_model,
)
from tests.fixtures.models import DigitsModel
from tests.fixtures.payloads import npy
from tests.fixtures.server import ServerProcess, start_server

pytestmark = pytest.mark.slow

JSON = "application/json"
NPY = "application/x-npy"


def serve_archive(
    tmp: pytest.TempPathFactory, spec: ArchiveSpec, config: dict[str, object] | None = None
) -> Iterator[ServerProcess]:
    out = tmp.mktemp(f"{spec.model_name}-archive")
    if config is not None:
        (out / "config.json").write_text(json.dumps(config))
        spec = ArchiveSpec(**{**_fields(spec), "config_file": out / "config.json"})
    path = create_archive(spec, out)
    server = start_server(path, tmp.mktemp(f"{spec.model_name}-logs"))
    try:
        yield server
    finally:
        server.stop(10)


def _fields(spec: ArchiveSpec) -> dict[str, object]:
    return {name: getattr(spec, name) for name in spec.__slots__}


def post(
    server: ServerProcess, body: bytes | str, content_type: str, accept: str = JSON
) -> requests.Response:
    data = body.encode() if isinstance(body, str) else body
    headers = {"Content-Type": content_type, "Accept": accept}
    return requests.post(f"{server.url}/invocations", data=data, headers=headers, timeout=30)


# digit: a state_dict with its model file under code/


@pytest.fixture(scope="module")
def digit_server(
    digits: DigitsModel, tmp_path_factory: pytest.TempPathFactory, engine: str
) -> Iterator[ServerProcess]:
    d = digits.directory
    spec = ArchiveSpec(
        "digits",
        serialized_file=d / "model.pt",
        model_file=d / "model.py",
        handler="digit",
    )
    yield from serve_archive(tmp_path_factory, spec, {"batch_size": 8, "max_batch_delay": 5})


def test_digit_round_trip(digit_server: ServerProcess, digits: DigitsModel) -> None:
    images = digits.images[:5]
    probs = torch.softmax(torch.from_numpy(digits.predict(images)), 1).numpy()
    response = post(digit_server, npy(images), NPY)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == JSON
    assert [r["digit"] for r in response.json()] == probs.argmax(1).tolist()
    assert [r["probability"] for r in response.json()] == pytest.approx(probs.max(1), rel=1e-5)
    one = post(digit_server, json.dumps(images[0].tolist()), JSON).json()
    assert one["digit"] == int(probs[0].argmax())


@pytest.mark.parametrize(
    ("form", "content_type"),
    [
        ("png", "image/png"),
        ("jpeg", "image/jpeg"),
        ("inverted-png", "image/png"),
        ("json", JSON),
        ("json-batch", JSON),
        ("npy", NPY),
        ("csv", "text/csv"),
    ],
)
def test_digit_content_types(
    digit_server: ServerProcess, digits: DigitsModel, form: str, content_type: str
) -> None:
    image = digits.images[7]
    expected = int(digits.predict(image[None]).argmax())
    bodies: dict[str, bytes | str] = {
        "png": encode_image(digit_image(image, 24)),
        "jpeg": encode_image(digit_image(image, 64), "JPEG"),
        "inverted-png": encode_image(digit_image(1 - image, 24)),
        "json": json.dumps(image.tolist()),
        "json-batch": json.dumps([image.tolist(), image.tolist()]),
        "npy": npy(image.astype(np.float32)),
        "csv": ",".join(str(v) for v in image.ravel()) + "\n",
    }
    response = post(digit_server, bodies[form], content_type)
    assert response.status_code == 200, response.text
    answer = response.json()
    digits_found = [a["digit"] for a in answer] if isinstance(answer, list) else [answer["digit"]]
    assert set(digits_found) == {expected}


def test_digit_bad_input(digit_server: ServerProcess) -> None:
    assert post(digit_server, b"not an image", "image/png").status_code == 400
    assert post(digit_server, json.dumps([1, 2, 3]), JSON).status_code == 422
    assert post(digit_server, b"hi", "application/x-unknown").status_code == 415


# digit: an MNIST-style TorchScript model (28x28 inputs) archived without input_size


def test_digit_finds_the_input_size_of_a_28x28_model_and_refuses_one_that_fits_none(
    digits: DigitsModel, tmp_path_factory: pytest.TempPathFactory
) -> None:
    source = tmp_path_factory.mktemp("mnist-style")
    net = torch.jit.script(mnist_style_net(channels=4))
    net.save(str(source / "model.ts"))
    big = np.asarray(digit_image(digits.images[3], 28).convert("L"))  # 28x28, light on dark
    with torch.inference_mode():
        logits = net(torch.from_numpy(big.astype(np.float32) / 255)[None, None])
    expected = torch.softmax(logits, 1)[0]
    spec = ArchiveSpec("mnist", serialized_file=source / "model.ts", handler="digit")
    for server in serve_archive(tmp_path_factory, spec):  # no config file: no input_size
        response = post(server, encode_image(Image.fromarray(big)), "image/png")
        assert response.status_code == 200, response.text
        assert response.json() == {
            "digit": int(expected.argmax()),
            "probability": pytest.approx(float(expected.max()), rel=1e-5),
        }
        assert post(server, npy(digits.images[:2]), NPY).status_code == 200  # 8x8, resized
        assert "the model takes 28x28 digits" in server.log()

    torch.jit.script(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(100, 10))).save(
        str(source / "tiny.ts")
    )  # 10x10 digits only
    spec = ArchiveSpec("tiny", serialized_file=source / "tiny.ts", handler="digit")
    path = create_archive(spec, tmp_path_factory.mktemp("tiny-archive"))
    refused = start_server(path, tmp_path_factory.mktemp("tiny-logs"), wait=False)
    try:
        assert refused.wait_exit(60) != 0
    finally:
        refused.stop(5)
    assert "input_size: the model accepts neither 8x8 nor 28x28 inputs" in refused.log()


# tensor: TorchScript, answers as Accept asks


@pytest.fixture(scope="module")
def tensor_server(
    digits: DigitsModel, tmp_path_factory: pytest.TempPathFactory, engine: str
) -> Iterator[ServerProcess]:
    spec = ArchiveSpec("tensor", serialized_file=digits.directory / "model.ts", handler="tensor")
    yield from serve_archive(tmp_path_factory, spec)


@pytest.mark.parametrize(
    ("content_type", "accept"),
    [
        (JSON, JSON),
        (JSON, NPY),
        (NPY, "text/csv"),
        ("application/x-npz", JSON),
        ("text/csv", NPY),
        (NPY, "application/jsonlines"),
    ],
)
def test_tensor_content_types(
    tensor_server: ServerProcess, digits: DigitsModel, content_type: str, accept: str
) -> None:
    images = digits.images[:3].astype(np.float32)
    expected = digits.predict(images)
    npz = io.BytesIO()
    np.savez(npz, x=images)
    bodies: dict[str, bytes | str] = {
        JSON: json.dumps({"instances": images.tolist()}),
        NPY: npy(images),
        "application/x-npz": npz.getvalue(),
        "text/csv": "\n".join(",".join(str(v) for v in row) for row in images.reshape(3, 64)),
    }
    if content_type == "text/csv":  # rows of 64: the model takes (N, 8, 8); CSV gives (N, 64)
        response = post(tensor_server, bodies[content_type], content_type, accept)
        assert response.status_code == 422, response.text
        return
    response = post(tensor_server, bodies[content_type], content_type, accept)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].split(";")[0] == accept
    if accept == NPY:
        got = np.load(io.BytesIO(response.content))
    elif accept == "text/csv":
        got = np.loadtxt(io.StringIO(response.text), delimiter=",", ndmin=2)
    elif accept == "application/jsonlines":
        got = np.array([json.loads(line) for line in response.text.splitlines()])
    else:
        got = np.array(response.json())
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_tensor_not_acceptable(tensor_server: ServerProcess, digits: DigitsModel) -> None:
    response = post(tensor_server, npy(digits.images[:1]), NPY, "image/png")
    assert response.status_code == 406


# image_classifier: a CNN trained on digits drawn as RGB images


@pytest.fixture(scope="module")
def image_model(tmp_path_factory: pytest.TempPathFactory) -> ImageModel:
    return train_image_model(tmp_path_factory.mktemp("image-model"))


@pytest.fixture(scope="module")
def image_server(
    image_model: ImageModel, tmp_path_factory: pytest.TempPathFactory, engine: str
) -> Iterator[ServerProcess]:
    d = image_model.directory
    spec = ArchiveSpec(
        "images",
        serialized_file=d / "model.pt",
        model_file=d / "model.py",
        handler="image_classifier",
        extra_files=(d / "index_to_name.json",),
    )
    yield from serve_archive(tmp_path_factory, spec, IMAGE_CONFIG)


@pytest.mark.parametrize("form", ["png", "jpeg", "bmp", "x-image", "octet", "npy", "npz", "b64"])
def test_image_classifier_content_types(
    image_server: ServerProcess, image_model: ImageModel, form: str
) -> None:
    image = image_model.images[3]
    probs = image_model.predict([image])[0]
    top = np.argsort(-probs)[:3]
    names = json.loads((image_model.directory / "index_to_name.json").read_text())
    npz = io.BytesIO()
    np.savez(npz, a=np.asarray(image), b=np.asarray(image))
    requests_by_form: dict[str, tuple[bytes | str, str]] = {
        "png": (encode_image(image), "image/png"),
        "jpeg": (encode_image(image, "JPEG"), "image/jpeg"),
        "bmp": (encode_image(image, "BMP"), "image/bmp"),
        "x-image": (encode_image(image), "application/x-image"),
        "octet": (encode_image(image), "application/octet-stream"),
        "npy": (npy(np.asarray(image)), NPY),
        "npz": (npz.getvalue(), "application/x-npz"),
        "b64": (json.dumps([base64.b64encode(encode_image(image)).decode()]), JSON),
    }
    body, content_type = requests_by_form[form]
    response = post(image_server, body, content_type)
    assert response.status_code == 200, response.text
    answer = response.json()
    classes = answer if isinstance(answer[0], dict) else answer[0]
    assert len(classes) == 3
    assert classes[0]["label"] == names[str(top[0])]
    if form != "jpeg":  # lossy
        assert [c["label"] for c in classes] == [names[str(i)] for i in top]
        assert [c["probability"] for c in classes] == pytest.approx(probs[top], rel=1e-4)
    if form == "npz":
        assert answer[0] == answer[1]


def test_image_classifier_bad_image(image_server: ServerProcess) -> None:
    assert post(image_server, b"GIF89a broken", "image/gif").status_code == 400
    assert post(image_server, npy(np.zeros((2, 2, 2, 2, 2))), NPY).status_code == 422


# text_classifier: the archive's own tokenizer and vocabulary


@pytest.fixture(scope="module")
def text_model(tmp_path_factory: pytest.TempPathFactory) -> TextModel:
    return train_text_model(tmp_path_factory.mktemp("text-model"))


@pytest.fixture(scope="module")
def text_server(
    text_model: TextModel, tmp_path_factory: pytest.TempPathFactory, engine: str
) -> Iterator[ServerProcess]:
    d = text_model.directory
    spec = ArchiveSpec(
        "text",
        serialized_file=d / "model.pt",
        model_file=d / "model.py",
        handler="text_classifier",
        extra_files=(d / "vocab.json", d / "index_to_name.json", d / "text_tokenizer.py"),
    )
    yield from serve_archive(tmp_path_factory, spec)


TEXTS = ["What a wonderful, delightful film!", "Tedious and boring.", "The acting was superb."]


@pytest.mark.parametrize("form", ["plain", "json-string", "json-list", "json-inputs", "jsonlines"])
def test_text_classifier_content_types(
    text_server: ServerProcess, text_model: TextModel, form: str
) -> None:
    probs = text_model.predict(TEXTS)
    expected = [
        {
            "label": ["negative", "positive"][int(p.argmax())],
            "score": pytest.approx(float(p.max()), rel=1e-5),
        }
        for p in probs
    ]
    bodies: dict[str, tuple[str, str]] = {
        "plain": (TEXTS[0], "text/plain; charset=utf-8"),
        "json-string": (json.dumps(TEXTS[0]), JSON),
        "json-list": (json.dumps(TEXTS), JSON),
        "json-inputs": (json.dumps({"inputs": TEXTS}), JSON),
        "jsonlines": ("\n".join(json.dumps(t) for t in TEXTS) + "\n", "application/jsonlines"),
    }
    body, content_type = bodies[form]
    response = post(text_server, body, content_type)
    assert response.status_code == 200, response.text
    if form == "jsonlines":  # batch transform's records: each line what it alone answers
        lines = [json.loads(line) for line in response.text.splitlines()]
        assert lines == [[e] for e in expected]
    else:
        assert response.json() == (expected[0] if form in ("plain", "json-string") else expected)
    assert [e["label"] for e in expected] == ["positive", "negative", "positive"]


def test_text_classifier_jsonlines_out_and_errors(text_server: ServerProcess) -> None:
    response = post(text_server, json.dumps(TEXTS), JSON, "application/jsonlines")
    assert response.status_code == 200
    assert [json.loads(line)["label"] for line in response.text.splitlines()] == [
        "positive",
        "negative",
        "positive",
    ]
    assert post(text_server, "[1, 2]", JSON).status_code == 422
    assert post(text_server, b"\xff\xfe", "text/plain").status_code == 400
