"""The built-in handlers in process: inputs, batching, failure isolation, settings."""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image, PngImagePlugin

from handlers.builtins import builtin_handlers, check_builtin
from handlers.builtins.image_classifier import center_crop, resize_shorter
from serve.codecs import CodecRegistry, default_codecs
from serve.contract import Handler, HandlerLoadError, InferenceRequest, LoadContext
from serve.errors import ServingError
from serve.model.directory import prepare_model_dir
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

JSON = "application/json"
NPY = "application/x-npy"


def make_handler(
    directory: Path,
    name: str,
    files: Mapping[str, Path],
    options: Mapping[str, Any] | None = None,
    model: Mapping[str, Any] | None = None,
    codecs: CodecRegistry | None = None,
) -> Handler:
    """A model directory with ``files`` and a manifest naming built-in ``name``, loaded with
    ``codecs`` (the default ones when None)."""
    directory.mkdir(parents=True, exist_ok=True)
    for target, source in files.items():
        (directory / target).parent.mkdir(parents=True, exist_ok=True)
        (directory / target).write_bytes(source.read_bytes())
    manifest = {
        "model": {"handler": name, **(model or {})},
        "options": dict(options or {}),
        "archiverVersion": "byoserve-test",
    }
    (directory / "MAR-INF").mkdir(exist_ok=True)
    (directory / "MAR-INF" / "MANIFEST.json").write_text(json.dumps(manifest))
    prepared = prepare_model_dir(directory, install_requirements=False)
    handler = builtin_handlers()[name](prepared, name)
    codecs = default_codecs() if codecs is None else codecs
    handler.load(LoadContext(directory, prepared.manifest.raw, None, 16, codecs))
    return handler


def request(body: bytes | str, content_type: str, accept: str = JSON) -> InferenceRequest:
    data = body.encode() if isinstance(body, str) else body
    return InferenceRequest(data, content_type, accept)


def answer(handler: Handler, *requests: InferenceRequest) -> list[Any]:
    """Decoded JSON bodies, or the exception, one per request."""
    results = handler.handle(list(requests))
    assert len(results) == len(requests)
    return [
        r if isinstance(r, BaseException) else json.loads(r.body_bytes().decode()) for r in results
    ]


@pytest.fixture(scope="module")
def image_model(tmp_path_factory: pytest.TempPathFactory) -> ImageModel:
    return train_image_model(tmp_path_factory.mktemp("image-model"))


@pytest.fixture(scope="module")
def text_model(tmp_path_factory: pytest.TempPathFactory) -> TextModel:
    return train_text_model(tmp_path_factory.mktemp("text-model"))


def test_builtin_names() -> None:
    assert sorted(builtin_handlers()) == ["digit", "image_classifier", "tensor", "text_classifier"]


# digit


@pytest.fixture(scope="module")
def digit_handler(digits: DigitsModel, tmp_path_factory: pytest.TempPathFactory) -> Handler:
    files = {
        "model.pt": digits.directory / "model.pt",
        "code/model.py": digits.directory / "model.py",
    }
    return make_handler(
        tmp_path_factory.mktemp("digit"), "digit", files, model={"modelFile": "code/model.py"}
    )


def expected_digits(digits: DigitsModel, images: np.ndarray) -> tuple[list[int], np.ndarray]:
    probs = torch.softmax(torch.from_numpy(digits.predict(images)), 1).numpy()
    return probs.argmax(1).tolist(), probs.max(1)


def test_digit_array_forms_agree_with_the_model(
    digit_handler: Handler, digits: DigitsModel
) -> None:
    images = digits.images[:4]
    best, top = expected_digits(digits, images)
    one, batch, raw, flat = answer(
        digit_handler,
        request(json.dumps(images[0].tolist()), JSON),
        request(npy(images), NPY),
        request(npy((images * 16).round().astype(np.int64)), NPY),  # scikit-learn's 0-16
        request(json.dumps(images.reshape(4, 64).tolist()), JSON),
    )
    assert one == {"digit": best[0], "probability": pytest.approx(top[0], rel=1e-5)}
    assert [r["digit"] for r in batch] == best
    assert [r["probability"] for r in batch] == pytest.approx(top.tolist(), rel=1e-5)
    assert [r["digit"] for r in raw] == best
    assert [r["digit"] for r in flat] == best


def test_digit_image_any_size_and_inverted(digit_handler: Handler, digits: DigitsModel) -> None:
    image = digits.images[0]
    best, _ = expected_digits(digits, image[None])
    light = encode_image(digit_image(image, 32).convert("L"))
    dark_on_light = encode_image(digit_image(1 - image, 32).convert("L"))
    mnist_sized = json.dumps(np.kron(image, np.ones((28 // 4, 28 // 4)))[:28, :28].tolist())
    results = answer(
        digit_handler,
        request(light, "image/png"),
        request(dark_on_light, "image/png"),
        request(mnist_sized, JSON),
    )
    assert [r["digit"] for r in results[:2]] == [best[0], best[0]]
    assert set(results[2]) == {"digit", "probability"}


def test_digit_bad_input_fails_alone(digit_handler: Handler, digits: DigitsModel) -> None:
    good = request(json.dumps(digits.images[0].tolist()), JSON)
    results = digit_handler.handle(
        [
            good,
            request(b"not a png", "image/png"),
            request(json.dumps([1, 2, 3]), JSON),
            request(npy(np.zeros((2, 2, 2, 2))), NPY),
            request("{", JSON),
            request(b"x", "application/x-what"),
            good,
        ]
    )
    statuses = [getattr(r, "status_code", getattr(r, "status", None)) for r in results]
    assert statuses == [200, 400, 422, 422, 400, 415, 200]


def upscaled(images: np.ndarray, size: int = 28) -> np.ndarray:
    """8x8 digits box-resampled to ``size`` x ``size``, as the handler resizes them."""
    from PIL import Image

    return np.stack(
        [
            np.asarray(
                Image.fromarray(i.astype(np.float32), mode="F").resize(
                    (size, size), Image.Resampling.BOX
                ),
                dtype=np.float32,
            )
            for i in images
        ]
    )


@pytest.fixture(scope="module")
def mnist_style_model(digits: DigitsModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 28x28 CNN trained on scikit-learn's digits upscaled to 28x28, saved as TorchScript."""
    from sklearn.datasets import load_digits

    torch.manual_seed(0)
    data = load_digits()
    x = torch.from_numpy(upscaled(data.images / 16.0)[:, None])
    y = torch.from_numpy(data.target)
    net = mnist_style_net()
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(4):
        for batch in torch.randperm(len(x)).split(64):
            optimiser.zero_grad()
            torch.nn.functional.cross_entropy(net(x[batch]), y[batch]).backward()
            optimiser.step()
    path = tmp_path_factory.mktemp("mnist-style") / "model.ts"
    torch.jit.script(net.eval()).save(str(path))
    return path


def test_digit_finds_a_28x28_model_input_size(
    mnist_style_model: Path, digits: DigitsModel, tmp_path: Path
) -> None:
    handler = make_handler(tmp_path, "digit", {"model.ts": mnist_style_model})  # no input_size
    images = digits.images[:20]
    model = torch.jit.load(str(mnist_style_model))
    with torch.inference_mode():
        expected = model(torch.from_numpy(upscaled(images)[:, None])).argmax(1).tolist()
    eight, full_size = answer(
        handler,
        request(npy(images), NPY),
        request(json.dumps(upscaled(images[:1])[0].tolist()), JSON),
    )
    assert [r["digit"] for r in eight] == expected
    assert np.mean(np.array(expected) == digits.labels[:20]) >= 0.8  # and it reads digits
    assert full_size["digit"] == expected[0]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {},
            r"^digit: input_size: the model accepts neither 8x8 nor 28x28 inputs \(8x8: .+; "
            r"28x28: .+\); set input_size",
        ),
        ({"input_size": 12}, r"^digit: setting input_size=12: the model does not accept 12x12"),
    ],
)
def test_digit_model_that_fits_no_input_size_is_refused(
    tmp_path: Path, options: dict[str, Any], message: str
) -> None:
    torch.jit.script(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(100, 10))).save(
        str(tmp_path / "model.ts")
    )  # takes 10x10 digits only
    with pytest.raises(HandlerLoadError, match=message):
        make_handler(tmp_path / "m", "digit", {"model.ts": tmp_path / "model.ts"}, options)


def test_digit_configured_input_size_that_does_not_fit_is_refused_with_a_hint(
    mnist_style_model: Path, tmp_path: Path
) -> None:
    with pytest.raises(HandlerLoadError, match=r"input_size=8: .*; it accepts 28x28"):
        make_handler(tmp_path, "digit", {"model.ts": mnist_style_model}, {"input_size": 8})


# tensor


class RowsAndBatch(torch.nn.Module):
    """Answers each row's sum and the size of the batch it ran in."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = x.flatten(1).sum(1, keepdim=True)
        return torch.cat([total, torch.full_like(total, x.shape[0])], 1)


@pytest.fixture(scope="module")
def tensor_handler(tmp_path_factory: pytest.TempPathFactory) -> Handler:
    directory = tmp_path_factory.mktemp("tensor-src")
    torch.jit.script(RowsAndBatch()).save(str(directory / "model.ts"))
    return make_handler(
        tmp_path_factory.mktemp("tensor"), "tensor", {"model.ts": directory / "model.ts"}
    )


def test_tensor_batches_requests_of_one_shape(tensor_handler: Handler) -> None:
    a, b = np.ones((2, 3)), np.full((1, 3), 2.0)
    odd = np.ones((1, 4))
    results = answer(
        tensor_handler,
        request(json.dumps(a.tolist()), JSON),
        request(npy(b), NPY),
        request(npy(odd), NPY),
        request("1,1,1\n", "text/csv"),
    )
    assert results[0] == [[3.0, 4.0], [3.0, 4.0]]  # ran with 4 rows: 2 + 1 + 1
    assert results[1] == [[6.0, 4.0]]
    assert results[2] == [[4.0, 1.0]]  # another shape: its own batch
    assert results[3] == [[3.0, 4.0]]


def test_tensor_answers_as_accept_asks(tensor_handler: Handler) -> None:
    body = json.dumps({"instances": [[1, 2], [3, 4]]})
    as_npy, as_csv, as_npz = tensor_handler.handle(
        [
            request(body, JSON, NPY),
            request(body, JSON, "text/csv"),
            request(body, JSON, "application/x-npz"),
        ]
    )
    assert not isinstance(as_npy, BaseException) and as_npy.content_type == NPY
    # the three requests ran as one batch of 6 rows
    np.testing.assert_array_equal(np.load(io.BytesIO(as_npy.body_bytes())), [[3, 6], [7, 6]])
    assert not isinstance(as_csv, BaseException)
    assert as_csv.body_bytes().decode() == "3.0,6.0\n7.0,6.0\n"
    assert not isinstance(as_npz, BaseException)
    npz = np.load(io.BytesIO(as_npz.body_bytes()))
    np.testing.assert_array_equal(npz["arr_0"], [[3, 6], [7, 6]])
    (refused,) = tensor_handler.handle([request(body, JSON, "image/png")])
    assert isinstance(refused, ServingError) and refused.status_code == 406


def test_tensor_model_failure_fails_only_that_request(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    torch.jit.script(torch.nn.Linear(3, 2)).save(str(source / "model.ts"))
    handler = make_handler(tmp_path / "m", "tensor", {"model.ts": source / "model.ts"})
    good = request(json.dumps([[1, 2, 3]]), JSON)
    results = handler.handle([good, request(json.dumps([[1, 2]]), JSON), good])
    assert [getattr(r, "status_code", getattr(r, "status", 0)) for r in results] == [200, 422, 200]
    assert "cannot use this input" in str(results[1])
    scalar, words = handler.handle([request("3", JSON), request("a,b\n", "text/csv")])
    assert isinstance(scalar, ServingError) and scalar.status_code == 422
    assert isinstance(words, ServingError) and words.status_code == 422


def test_tensor_answers_thousands_of_csv_records_one_line_each(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    torch.manual_seed(0)
    linear = torch.nn.Linear(3, 2).eval()
    torch.jit.script(linear).save(str(source / "model.ts"))
    handler = make_handler(tmp_path / "m", "tensor", {"model.ts": source / "model.ts"})
    rows = np.random.default_rng(0).normal(size=(3000, 3)).round(3)
    body = "\n".join(",".join(map(str, row)) for row in rows) + "\n"
    with torch.inference_mode():
        expected = linear(torch.tensor(rows, dtype=torch.float32)).numpy()

    as_csv, as_jsonl = handler.handle(
        [request(body, "text/csv", "text/csv"), request(body, "text/csv", "application/jsonlines")]
    )

    assert not isinstance(as_csv, BaseException) and not isinstance(as_jsonl, BaseException)
    got = np.loadtxt(io.StringIO(as_csv.body_bytes().decode()), delimiter=",", ndmin=2)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    lines = as_jsonl.body_bytes().decode().splitlines()
    np.testing.assert_allclose([json.loads(line) for line in lines], expected, rtol=1e-5, atol=1e-6)
    bad = body.split("\n")
    bad[2001] = "1,2"  # a record the model cannot take, on line 2002
    (failed,) = handler.handle([request("\n".join(bad), "text/csv", "text/csv")])
    assert isinstance(failed, ServingError) and failed.status_code == 422
    assert failed.message.startswith("line 2002: the model cannot use this input")


# image_classifier


def make_image_handler(
    image_model: ImageModel, directory: Path, codecs: CodecRegistry | None = None
) -> Handler:
    d = image_model.directory
    files = {n: d / n for n in ("model.pt", "index_to_name.json")} | {
        "code/model.py": d / "model.py"
    }
    model = {"modelFile": "code/model.py"}
    return make_handler(directory, "image_classifier", files, IMAGE_CONFIG, model, codecs)


@pytest.fixture(scope="module")
def image_handler(image_model: ImageModel, tmp_path_factory: pytest.TempPathFactory) -> Handler:
    return make_image_handler(image_model, tmp_path_factory.mktemp("image"))


def test_image_classifier_top_k_in_every_form(
    image_handler: Handler, image_model: ImageModel
) -> None:
    images = image_model.images[:3]
    probs = image_model.predict(images)
    png = encode_image(images[0])
    pixels = np.stack([np.asarray(i) for i in images])
    one, from_npy, from_b64, raw = answer(
        image_handler,
        request(png, "image/png"),
        request(npy(pixels), NPY),
        request(json.dumps([base64.b64encode(encode_image(i)).decode() for i in images]), JSON),
        request(png, "application/octet-stream"),
    )
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    top = np.argsort(-probs[0])[:3]
    assert [c["label"] for c in one] == [names[i] for i in top]
    assert [c["probability"] for c in one] == pytest.approx(probs[0][top].tolist(), rel=1e-5)
    assert [r[0]["label"] for r in from_npy] == [names[i] for i in probs.argmax(1)]
    assert from_b64 == from_npy
    assert raw == one


def test_image_classifier_rejects_bad_images(image_handler: Handler) -> None:
    broken, wrong_shape, not_b64 = image_handler.handle(
        [
            request(b"\x89PNG broken", "image/png"),
            request(npy(np.zeros((2, 3, 4, 5, 6), dtype=np.uint8)), NPY),
            request(json.dumps("not base64!"), JSON),
        ]
    )
    assert [getattr(r, "status_code", 0) for r in (broken, wrong_shape, not_b64)] == [400, 422, 400]


def test_image_classifier_holds_every_image_form_to_the_apps_pixel_budget(
    image_model: ImageModel, tmp_path: Path
) -> None:
    codecs = default_codecs(max_image_pixels=15 * 16)  # the images are 16 x 16
    handler = make_image_handler(image_model, tmp_path, codecs)
    png = encode_image(image_model.images[0])
    results = handler.handle(
        [
            request(png, "image/png"),
            request(png, "application/octet-stream"),
            request(json.dumps(base64.b64encode(png).decode()), JSON),
            request(npy(np.asarray(image_model.images[0])), NPY),  # pixels: no header to trust
        ]
    )
    assert [getattr(r, "status_code", 200) for r in results] == [413, 413, 413, 200]
    assert all("BYOSERVE_MAX_IMAGE_PIXELS" in str(r) for r in results[:3])


def test_torchvision_style_resize_and_crop() -> None:
    from PIL import Image

    image = Image.new("RGB", (300, 200))
    resized = resize_shorter(image, 256)
    assert resized.size == (384, 256)
    assert center_crop(resized, 224).size == (224, 224)
    assert center_crop(Image.new("L", (10, 5)), 8).size == (8, 8)


def test_image_classifier_torchserve_format(image_model: ImageModel, tmp_path: Path) -> None:
    d = image_model.directory
    files = {n: d / n for n in ("model.pt", "model.py", "index_to_name.json")}
    handler = make_handler(
        tmp_path / "m",
        "image_classifier",
        files,
        {**IMAGE_CONFIG, "output_format": "torchserve"},
        model={"modelFile": "model.py"},
    )
    (result,) = answer(handler, request(encode_image(image_model.images[0]), "image/png"))
    assert isinstance(result, dict) and len(result) == 3
    assert all(isinstance(p, float) for p in result.values())


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, r"crop_size=224, color_mode='RGB': the model does not accept the 3x224x224 inputs"),
        (
            {"crop_size": 16, "color_mode": "L"},
            r"crop_size=16, color_mode='L': .* the 1x16x16 inputs",
        ),
    ],
)
def test_image_classifier_settings_that_do_not_fit_the_model_are_refused(
    tmp_path: Path, options: dict[str, Any], message: str
) -> None:
    fixed = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 10))
    torch.jit.script(fixed).save(str(tmp_path / "model.ts"))  # takes 3x16x16 images only
    with pytest.raises(HandlerLoadError, match=r"^image_classifier: settings " + message):
        make_handler(
            tmp_path / "m", "image_classifier", {"model.ts": tmp_path / "model.ts"}, options
        )


# PNGs decoded by libspng (plain 8-bit ones) answer as they did when Pillow decoded them


def png_through_pillow(image: Image.Image) -> bytes:
    """The image as a PNG the built-ins decode with Pillow: a text chunk keeps libspng off it."""
    text = PngImagePlugin.PngInfo()
    text.add_text("Comment", "decoded by Pillow")
    out = io.BytesIO()
    image.save(out, format="PNG", pnginfo=text)
    return out.getvalue()


def test_digit_answers_alike_from_libspng_and_pillow(
    digit_handler: Handler, digits: DigitsModel
) -> None:
    images = [
        digit_image(pixels, size)
        for pixels, size in zip(digits.images[:8], [8, 28] * 4, strict=True)
    ]
    forms = [image.convert("L") for image in images] + images  # grayscale and RGB PNGs
    libspng = answer(digit_handler, *(request(encode_image(i), "image/png") for i in forms))
    pillow = answer(digit_handler, *(request(png_through_pillow(i), "image/png") for i in forms))
    assert libspng == pillow
    best, _ = expected_digits(digits, digits.images[:8])
    assert [r["digit"] for r in libspng[:8]] == best


def test_image_classifier_answers_alike_from_libspng_and_pillow(
    image_handler: Handler, image_model: ImageModel
) -> None:
    images = image_model.images[:4]
    plain = [encode_image(i) for i in images] + [encode_image(images[0].convert("RGBA"))]
    through_pillow = [png_through_pillow(i) for i in images] + [
        png_through_pillow(images[0].convert("RGBA"))
    ]
    one_by_one = answer(image_handler, *(request(b, "image/png") for b in plain))
    assert one_by_one == answer(image_handler, *(request(b, "image/png") for b in through_pillow))
    as_base64 = json.dumps([base64.b64encode(b).decode() for b in plain])
    raw = [request(b, "application/octet-stream") for b in plain]
    assert answer(image_handler, request(as_base64, JSON), *raw) == [one_by_one, *one_by_one]


def test_digit_broken_png_is_400_as_before(digit_handler: Handler, digits: DigitsModel) -> None:
    png = encode_image(digit_image(digits.images[0], 28).convert("L"))
    idat = png.index(b"IDAT") + 4
    corrupt = bytearray(png)
    corrupt[idat + 6] ^= 0xFF  # inside the compressed pixels, the CRC made right again
    struct.pack_into(">I", corrupt, len(png) - 16, zlib.crc32(corrupt[idat - 4 : len(png) - 16]))
    results = digit_handler.handle(
        [request(png[:50], "image/png"), request(bytes(corrupt), "image/png")]
    )
    assert [getattr(r, "status_code", 200) for r in results] == [400, 400]
    assert all(getattr(r, "message", "") == "malformed image payload" for r in results)


# text_classifier


@pytest.fixture(scope="module")
def text_handler(text_model: TextModel, tmp_path_factory: pytest.TempPathFactory) -> Handler:
    d = text_model.directory
    names = ("model.pt", "vocab.json", "index_to_name.json", "text_tokenizer.py")
    files = {n: d / n for n in names} | {"code/model.py": d / "model.py"}
    return make_handler(
        tmp_path_factory.mktemp("text"),
        "text_classifier",
        files,
        model={"modelFile": "code/model.py"},
    )


TEXTS = ["A wonderful, great film.", "Boring and awful acting.", "The plot was dull."]


def test_text_classifier_every_form(text_handler: Handler, text_model: TextModel) -> None:
    probs = text_model.predict(TEXTS)
    expected = [
        {"label": ["negative", "positive"][i], "score": pytest.approx(float(p[i]), rel=1e-5)}
        for i, p in zip(probs.argmax(1), probs, strict=True)
    ]
    lines = (
        "\n".join(json.dumps(t) for t in TEXTS[:2]) + "\n" + json.dumps({"text": TEXTS[2]}) + "\n"
    )
    plain, one, many, wrapped, text = answer(
        text_handler,
        request(TEXTS[0], "text/plain; charset=utf-8"),
        request(json.dumps(TEXTS[0]), JSON),
        request(json.dumps(TEXTS), JSON),
        request(json.dumps({"inputs": TEXTS}), JSON),
        request(json.dumps({"text": TEXTS[0]}), JSON),
    )
    assert plain == one == text == expected[0]
    assert many == wrapped == expected
    # several JSON Lines are batch transform's records: each answered on its line as if alone
    (jsonl,) = text_handler.handle([request(lines, "application/jsonlines")])
    assert not isinstance(jsonl, BaseException)
    assert [json.loads(line) for line in jsonl.body_bytes().splitlines()] == [[e] for e in expected]
    assert expected[0]["label"] == "positive" and expected[1]["label"] == "negative"


def test_text_classifier_jsonlines_answer_and_bad_input(text_handler: Handler) -> None:
    (lines,) = text_handler.handle([request(json.dumps(TEXTS), JSON, "application/jsonlines")])
    assert not isinstance(lines, BaseException)
    assert len(lines.body_bytes().decode().splitlines()) == 3
    numbers, obj, empty = answer(
        text_handler,
        request("[1, 2]", JSON),
        request('{"x": 1}', JSON),
        request(json.dumps([""]), JSON),
    )
    assert isinstance(numbers, ServingError) and numbers.status_code == 422
    assert isinstance(obj, ServingError) and obj.status_code == 422
    assert set(empty[0]) == {"label", "score"}  # an empty text still gets an answer


def test_text_classifier_padded_model(text_model: TextModel, tmp_path: Path) -> None:
    d = text_model.directory
    names = ("vocab.json", "index_to_name.json")
    files = {n: d / n for n in names} | {"model.ts": d / "padded.ts"}
    handler = make_handler(tmp_path / "m", "text_classifier", files, {"tokenizer": "words"})
    results = answer(handler, request(json.dumps(TEXTS), JSON))[0]
    assert [r["label"] for r in results] == ["positive", "negative", "negative"]


# settings


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("image_classifier", {"topk": 0}, r"topk=0: expected an integer of at least 1"),
        ("image_classifier", {"mean": [0.5, 0.5]}, r"mean=\[0.5, 0.5\]: expected a list of 1 or 3"),
        ("image_classifier", {"color_mode": "CMYK"}, r"color_mode='CMYK': expected one of RGB, L"),
        ("digit", {"invert": "yes"}, r"invert='yes'"),
        ("digit", {"flatten": "true"}, r"flatten='true': expected true or false"),
        ("tensor", {"dtype": "int8"}, r"dtype='int8'"),
        ("text_classifier", {"tokenizer": "bert"}, r"tokenizer='bert': expected a .py file"),
        ("text_classifier", {}, r"no vocabulary 'vocab.json' in the archive"),
        ("text_classifier", {"vocab": "v.json"}, r"no vocabulary 'v.json'"),
    ],
)
def test_bad_settings_are_named(name: str, options: dict[str, Any], message: str) -> None:
    problem = check_builtin(name, options, lambda file: False)
    assert problem is not None
    assert problem.startswith(f"{name}: ")
    import re

    assert re.search(message, problem), problem


def test_missing_vocabulary_stops_the_load(tmp_path: Path, text_model: TextModel) -> None:
    with pytest.raises(HandlerLoadError, match=r"no vocabulary 'vocab\.json'"):
        make_handler(tmp_path, "text_classifier", {"model.pt": text_model.directory / "model.pt"})
