"""The handler adapters: toolkit modules, TorchServe classes, MMS functions, default torch models.

Each test writes a model directory with real handler code (and, where needed, a real model) into
tmp_path, builds the handler with load_handler as the server does, loads it, and asserts on the
responses it gives.
"""

from __future__ import annotations

import io
import json
import textwrap
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from handlers.context import Context, HandlerStatusError
from handlers.loader import load_handler
from handlers.torchmodel import device_for, load_model
from serve.codecs import default_codecs
from serve.contract import (
    Handler,
    HandlerLoadError,
    Headers,
    InferenceRequest,
    InferenceResponse,
    LoadContext,
)
from serve.errors import BadRequestError, ModelError, NotAcceptableError, ServingError
from serve.model.directory import ModelDirectory
from serve.model.manifest import Manifest

ATTRS = "X-Amzn-SageMaker-Custom-Attributes"

# TorchScript is deprecated in torch 2.13 but still what many users ship: it must keep working
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:DeprecationWarning")


class ModelDir:
    """Writes a model directory; code/ goes on sys.path as the server would put it."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root = root
        self.manifest: dict[str, Any] = {}
        self._monkeypatch = monkeypatch
        monkeypatch.syspath_prepend(str(root))

    def write(self, name: str, source: str) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
        if path.parent.name == "code":
            self._monkeypatch.syspath_prepend(str(path.parent))
        return path

    def model(self) -> ModelDirectory:
        code = self.root / "code"
        manifest = Manifest.from_raw(self.manifest)
        return ModelDirectory(self.root, code if code.is_dir() else None, manifest, None)

    def handler(self, **kwargs: Any) -> Handler:
        return load_handler(self.model(), **kwargs)

    def loaded(self, batch_size: int = 1, **kwargs: Any) -> Handler:
        handler = self.handler(**kwargs)
        handler.load(self.load_context(batch_size, handler.options))
        return handler

    def load_context(
        self, batch_size: int = 1, options: Mapping[str, Any] | None = None
    ) -> LoadContext:
        return LoadContext(
            model_dir=self.root,
            manifest=self.manifest,
            gpu_id=None,
            batch_size=batch_size,
            codecs=default_codecs(),
            options=options or {},
        )


@pytest.fixture
def model_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModelDir:
    return ModelDir(tmp_path / "model", monkeypatch)


def request(
    body: bytes | str,
    content_type: str = "application/json",
    accept: str = "application/json",
    headers: Mapping[str, str] | None = None,
    request_id: str = "req-1",
) -> InferenceRequest:
    data = body.encode() if isinstance(body, str) else body
    return InferenceRequest(data, content_type, accept, Headers(headers or {}), request_id)


def answer(handler: Handler, req: InferenceRequest) -> InferenceResponse:
    (result,) = handler.handle([req])
    assert isinstance(result, InferenceResponse), result
    return result


def failure(handler: Handler, req: InferenceRequest) -> BaseException:
    (result,) = handler.handle([req])
    assert isinstance(result, BaseException), result
    return result


# --- SageMaker toolkit modules ------------------------------------------------------------------

TOOLKIT_FOUR = """
    import json

    def model_fn(model_dir):
        return {"scale": 2, "dir": model_dir}

    def input_fn(input_data, content_type):
        assert isinstance(input_data, str), type(input_data)
        assert content_type == "application/json", content_type
        return json.loads(input_data)

    def predict_fn(data, model):
        return [x * model["scale"] for x in data]

    def output_fn(prediction, accept):
        return json.dumps({"out": prediction, "accept": accept}), "application/json"
"""


def test_toolkit_four_functions(model_dir: ModelDir) -> None:
    model_dir.write("code/inference.py", TOOLKIT_FOUR)
    handler = model_dir.loaded()
    assert handler.source == "code/inference.py"
    assert handler.max_batch_size == 1

    response = answer(handler, request("[1, 2.5]", "application/json; charset=utf-8"))

    assert response.status == 200
    assert response.content_type == "application/json"
    assert json.loads(response.body_bytes()) == {"out": [2, 5.0], "accept": "application/json"}


def test_toolkit_batch_isolates_failures(model_dir: ModelDir) -> None:
    model_dir.write("code/inference.py", TOOLKIT_FOUR)
    handler = model_dir.loaded()

    good, bad = handler.handle([request("[1]"), request("[{}]")])

    assert isinstance(good, InferenceResponse)
    assert json.loads(good.body_bytes())["out"] == [2]
    assert isinstance(bad, ModelError)


def test_toolkit_transform_fn(model_dir: ModelDir) -> None:
    model_dir.write(
        "code/inference.py",
        """
        def model_fn(model_dir):
            return b"model:"

        def transform_fn(model, input_data, content_type, accept):
            assert isinstance(input_data, bytes)
            return model + input_data[::-1] + b"|" + content_type.encode() + b"|" + accept.encode()
        """,
    )
    handler = model_dir.loaded()

    response = answer(
        handler, request(b"abc", "application/octet-stream", accept="application/octet-stream")
    )

    assert response.content_type == "application/octet-stream"
    assert response.body_bytes() == b"model:cba|application/octet-stream|application/octet-stream"


def test_toolkit_user_output_gets_a_type_no_codec_knows(model_dir: ModelDir) -> None:
    model_dir.write(
        "code/inference.py",
        """
        def transform_fn(model, input_data, content_type, accept):
            return "<p>" + input_data + "</p>"

        def model_fn(model_dir):
            return None
        """,
    )
    handler = model_dir.loaded()

    response = answer(handler, request("1,2\n", "text/csv", accept="text/html, application/xml"))

    assert response.content_type == "text/html"
    assert response.body == "<p>1,2\n</p>"


def test_toolkit_context_arguments_and_custom_attributes(model_dir: ModelDir) -> None:
    model_dir.write(
        "code/inference.py",
        """
        ATTRS = "X-Amzn-SageMaker-Custom-Attributes"

        def model_fn(model_dir, context):
            return {"dir": context.system_properties["model_dir"], "name": context.model_name}

        def input_fn(input_data, content_type, context):
            return {"text": input_data, "attrs": context.get_request_header(0, ATTRS.lower())}

        def predict_fn(data, model, context):
            return {**data, **model, "id": context.get_request_id(0)}

        def output_fn(prediction, accept, context):
            context.set_response_header(0, ATTRS, "echo=" + prediction["attrs"])
            context.set_response_status(201, "Created", 0)
            context.set_response_content_type(0, "application/vnd.echo+json")
            return str(prediction)
        """,
    )
    handler = model_dir.loaded()

    response = answer(
        handler, request("hi", "text/plain", headers={ATTRS: "trace=7"}, request_id="abc")
    )

    assert response.status == 201
    assert response.content_type == "application/vnd.echo+json"
    assert response.headers == {ATTRS: "echo=trace=7"}
    body = response.body_bytes().decode()
    assert "'attrs': 'trace=7'" in body
    assert f"'dir': '{model_dir.root}'" in body
    assert "'name': 'model'" in body
    assert "'id': 'abc'" in body
    assert "'text': b'hi'" in body  # text/plain is not one of the toolkit's UTF-8 types


def test_toolkit_pre_model_and_warmup(model_dir: ModelDir) -> None:
    model_dir.write(
        "code/inference.py",
        """
        calls = []

        def pre_model_fn(model_dir):
            calls.append("pre")

        def model_fn(model_dir):
            calls.append("model")
            return len

        def model_warmup_fn(model_dir, model):
            calls.append("warmup:" + str(model(calls)))

        def predict_fn(data, model):
            return {"n": model(data), "calls": calls}
        """,
    )
    handler = model_dir.loaded()

    response = answer(handler, request("[1, 2, 3]"))

    assert json.loads(response.body_bytes()) == {"n": 3, "calls": ["pre", "model", "warmup:2"]}


def test_toolkit_mixing_transform_and_predict_is_rejected(model_dir: ModelDir) -> None:
    model_dir.write(
        "code/inference.py",
        """
        def transform_fn(model, data, content_type, accept):
            return data

        def predict_fn(data, model):
            return data
        """,
    )
    with pytest.raises(HandlerLoadError) as info:
        model_dir.handler()
    assert str(info.value) == (
        "code/inference.py defines transform_fn and predict_fn; use one or the other"
    )


def test_toolkit_wrong_arity_is_rejected(model_dir: ModelDir) -> None:
    model_dir.write("code/inference.py", "def input_fn(data):\n    return data\n")
    with pytest.raises(HandlerLoadError, match=r"code/inference.py: input_fn must take"):
        model_dir.handler()


def test_toolkit_user_exception_becomes_model_error(model_dir: ModelDir) -> None:
    model_dir.write(
        "code/inference.py",
        """
        def model_fn(model_dir):
            return None

        def predict_fn(data, model):
            raise ValueError("negative input: -1")
        """,
    )
    handler = model_dir.loaded()

    error = failure(handler, request("[-1]"))

    assert isinstance(error, ModelError)
    assert error.status_code == 500
    assert str(error) == "ValueError: negative input: -1"
    assert "Traceback" not in str(error)
    assert isinstance(error.__cause__, ValueError)


def test_toolkit_status_errors_pass_through(model_dir: ModelDir) -> None:
    model_dir.write(
        "code/inference.py",
        """
        from serve.errors import UnprocessableError

        class PredictionException(Exception):
            def __init__(self, message, error_code=500):
                self.message, self.error_code = message, error_code
                super().__init__(message)

            def __str__(self):
                return f"{self.message} : {self.error_code}"

        def model_fn(model_dir):
            return None

        def predict_fn(data, model):
            if data == "busy":
                raise PredictionException("try later", 503)
            raise UnprocessableError("need two fields")
        """,
    )
    handler = model_dir.loaded()

    busy, shaped = handler.handle([request('"busy"'), request("{}")])

    assert isinstance(busy, HandlerStatusError)
    assert (busy.status_code, str(busy)) == (503, "try later")
    assert isinstance(shaped, ServingError)
    assert (shaped.status_code, str(shaped)) == (422, "need two fields")


def test_toolkit_model_fn_failure_names_the_file(model_dir: ModelDir) -> None:
    model_dir.write(
        "code/inference.py",
        "def model_fn(model_dir):\n    raise ValueError('no weights here')\n",
    )
    handler = model_dir.handler()

    with pytest.raises(HandlerLoadError) as info:
        handler.load(model_dir.load_context())

    assert str(info.value) == "code/inference.py: model_fn failed: ValueError: no weights here"
    assert isinstance(info.value.__cause__, ValueError)


def scripted_linear(path: Path) -> torch.nn.Module:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2).eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(torch.jit.script(model), str(path))
    return model


def test_default_handler_serves_a_torchscript_model(model_dir: ModelDir) -> None:
    model = scripted_linear(model_dir.root / "model.pt")
    handler = model_dir.loaded()
    rows = [[0.5, -1.0, 2.0], [1.0, 2.0, 3.0]]

    response = answer(handler, request(json.dumps(rows)))

    assert response.status == 200
    assert response.content_type == "application/json"
    with torch.no_grad():
        expected = model(torch.tensor(rows)).numpy()
    np.testing.assert_allclose(json.loads(response.body_bytes()), expected, rtol=1e-6)


def test_default_handler_csv_in_npy_out(model_dir: ModelDir) -> None:
    scripted_linear(model_dir.root / "model.pt")
    handler = model_dir.loaded()

    response = answer(handler, request("1,2,3\n4,5,6\n", "text/csv", accept="application/x-npy"))

    assert response.content_type == "application/x-npy"
    assert np.load(io.BytesIO(response.body_bytes())).shape == (2, 2)


def test_default_handler_answers_one_line_per_record(model_dir: ModelDir) -> None:
    model = scripted_linear(model_dir.root / "model.pt")
    handler = model_dir.loaded()
    rows = [[0.5, -1.0, 2.0], [1.0, 2.0, 3.0], [0.0, 0.0, 1.0]]
    with torch.no_grad():
        expected = model(torch.tensor(rows)).numpy()
    csv_body = "\n\n".join(",".join(map(str, row)) for row in rows) + "\n"

    as_csv = answer(handler, request(csv_body, "text/csv", accept="text/csv"))
    as_json = answer(handler, request("\n".join(json.dumps([r]) for r in rows)))

    assert as_csv.content_type == "text/csv; charset=utf-8"
    got = np.loadtxt(io.StringIO(as_csv.body_bytes().decode()), delimiter=",", ndmin=2)
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    lines = as_json.body_bytes().decode().splitlines()
    np.testing.assert_allclose([json.loads(line)[0] for line in lines], expected, rtol=1e-6)
    bad = failure(handler, request("1,2,3\n\n1,2\n", "text/csv", accept="text/csv"))
    assert isinstance(bad, ServingError) and bad.status_code in (400, 422)
    assert str(bad).startswith("line 3: ")


COUNTING_PREDICT = """
import os

import numpy as np


def model_fn(model_dir):
    return os.path.join(model_dir, "calls")


def predict_fn(data, model):
    rows = np.asarray(data, dtype=np.float32)
    with open(model, "a") as calls:  # how many rows each call got, one line per call
        calls.write(f"{len(rows)}\\n")
    if rows.ndim != 2 or rows.shape[1] != 2:
        raise ValueError(f"expected rows of 2 numbers, got shape {rows.shape}")
    if len(rows) == 3:
        return rows.sum(axis=1)[:2]  # a model that drops a row: not one answer per record
    return rows.sum(axis=1, keepdims=True)
"""


def test_toolkit_records_are_predicted_as_one_batch_with_the_answers_of_each_alone(
    model_dir: ModelDir,
) -> None:
    """CSV and JSON Lines records go to predict_fn once, as SageMaker's toolkit reads them; each
    answer line is what the record gets alone. A failing batch, or one whose prediction is not
    one item per record, is run record by record, which names the failing line."""
    model_dir.write("code/inference.py", COUNTING_PREDICT)
    handler = model_dir.loaded()

    def calls() -> list[int]:
        path = model_dir.root / "calls"
        made = [int(line) for line in path.read_text().split()] if path.exists() else []
        path.unlink(missing_ok=True)
        return made

    rows = [[1, 2], [3, 4], [5, 6], [7, 8]]
    csv_body = "\n".join(f"{a},{b}" for a, b in rows) + "\n"

    batch = answer(handler, request(csv_body, "text/csv", accept="application/jsonlines"))
    assert calls() == [4]
    alone = [
        answer(handler, request(f"{a},{b}\n", "text/csv", accept="application/jsonlines"))
        .body_bytes()
        .rstrip(b"\n")
        for a, b in rows
    ]
    assert calls() == [1, 1, 1, 1]
    assert batch.body_bytes().splitlines() == alone == [b"[3.0]", b"[7.0]", b"[11.0]", b"[15.0]"]

    lines = "\n".join(json.dumps(row) for row in rows)
    as_lines = answer(handler, request(lines, "application/jsonlines", accept="text/csv"))
    assert calls() == [4] and as_lines.body_bytes() == b"3.0\n7.0\n11.0\n15.0\n"

    dropped = answer(handler, request("1,2\n3,4\n5,6\n", "text/csv", accept="text/csv"))
    assert calls() == [3, 1, 1, 1] and dropped.body_bytes() == b"3.0\n7.0\n11.0\n"

    bad = failure(handler, request("1,2\n3,4\n5,6,7\n8,9\n", "text/csv", accept="text/csv"))
    assert isinstance(bad, ServingError) and str(bad).startswith("line 3: "), bad


def test_default_handler_refuses_a_bad_accept_before_predicting(model_dir: ModelDir) -> None:
    scripted_linear(model_dir.root / "model.pt")
    handler = model_dir.loaded()

    error = failure(handler, request("[[1, 2]]", accept="application/xml"))

    assert isinstance(error, NotAcceptableError)  # not a shape error from the model


def test_default_handler_unknown_content_type_is_415(model_dir: ModelDir) -> None:
    scripted_linear(model_dir.root / "model.pt")
    handler = model_dir.loaded()
    assert isinstance(handler, Handler)

    error = failure(handler, request(b"x", "application/x-foo"))

    assert isinstance(error, ServingError) and error.status_code == 415


def test_default_handler_without_model_file_fails_when_found(model_dir: ModelDir) -> None:
    model_dir.root.mkdir(parents=True)  # in the master, before any worker loads anything
    with pytest.raises(HandlerLoadError, match=r"no model file in .*expected model.pt"):
        model_dir.handler()


# --- TorchServe handler classes ---------------------------------------------------------------

TORCHSERVE_CLASS = """
    import json

    class Helper:
        pass

    class EchoHandler:
        def __init__(self):
            self.initialized = False

        def initialize(self, context):
            props = context.system_properties
            self.model_dir = props["model_dir"]
            self.batch_size = props["batch_size"]
            self.initialized = True

        def preprocess(self, data):
            payloads = [row.get("data") or row.get("body") for row in data]
            return [x.hex() if isinstance(x, bytearray) else x for x in payloads]

        def inference(self, inputs):
            return [{"in": x, "batch": len(inputs)} for x in inputs]

        def postprocess(self, outputs):
            return outputs

        def handle(self, data, context):
            outputs = self.postprocess(self.inference(self.preprocess(data)))
            for idx, out in enumerate(outputs):
                kind = context.get_request_header(idx, "x-kind")
                if kind == "text":
                    context.set_response_content_type(idx, "text/plain")
                    outputs[idx] = "plain:" + json.dumps(out["in"])
                elif kind == "teapot":
                    context.set_response_status(418, "I'm a teapot", idx)
                    context.set_response_header(idx, "X-Why", "tea")
            return outputs
"""


def test_torchserve_class_batch(model_dir: ModelDir) -> None:
    model_dir.write("handler.py", TORCHSERVE_CLASS)
    model_dir.manifest = {"model": {"modelName": "echo", "handler": "handler.py"}}
    handler = model_dir.loaded(batch_size=3)
    assert handler.source == "handler.py"
    assert handler.max_batch_size >= 3

    results = handler.handle(
        [
            request('{"a": 1}'),
            request("hello", "text/plain", headers={"X-Kind": "text"}),
            request(b"\x00\x01", "application/octet-stream", headers={"X-Kind": "teapot"}),
        ]
    )

    first, second, third = results
    assert isinstance(first, InferenceResponse)
    assert (first.status, first.content_type) == (200, "application/json")
    assert json.loads(first.body_bytes()) == {"in": {"a": 1}, "batch": 3}
    assert isinstance(second, InferenceResponse)
    assert (second.content_type, second.body) == ("text/plain", 'plain:"hello"')
    assert isinstance(third, InferenceResponse)
    assert (third.status, third.headers) == (418, {"X-Why": "tea"})
    assert json.loads(third.body_bytes()) == {"in": "0001", "batch": 3}


def test_torchserve_class_initialize_sees_load_context(model_dir: ModelDir) -> None:
    model_dir.write(
        "handler.py",
        """
        class Handler:
            def initialize(self, context):
                self.props = dict(context.system_properties)
                self.manifest = context.manifest

            def handle(self, data, context):
                return [{"props": self.props, "manifest": self.manifest} for _ in data]
        """,
    )
    model_dir.manifest = {"model": {"handler": "handler"}}
    handler = model_dir.loaded(batch_size=4)

    body = json.loads(answer(handler, request("{}")).body_bytes())

    assert body["props"]["model_dir"] == str(model_dir.root)
    assert body["props"]["batch_size"] == 4
    assert body["props"]["gpu_id"] is None
    assert body["manifest"] == {"model": {"handler": "handler"}}


def test_torchserve_result_serialization(model_dir: ModelDir) -> None:
    model_dir.write(
        "handler.py",
        """
        import numpy as np

        class Handler:
            def handle(self, data, context):
                return [
                    '{"already": "json"}',
                    "just text",
                    b"raw",
                    np.arange(3),
                ]
        """,
    )
    model_dir.manifest = {"model": {"handler": "handler.py"}}
    handler = model_dir.loaded(batch_size=4)

    results = handler.handle([request("{}") for _ in range(4)])

    shapes = [(r.content_type, r.body_bytes()) for r in results if isinstance(r, InferenceResponse)]
    assert shapes == [
        ("application/json", b'{"already": "json"}'),
        ("text/plain; charset=utf-8", b"just text"),
        ("application/octet-stream", b"raw"),
        ("application/json", b"[0, 1, 2]"),
    ]


def test_torchserve_malformed_json_fails_only_its_request(model_dir: ModelDir) -> None:
    model_dir.write(
        "handler.py",
        """
        class Handler:
            def handle(self, data, context):
                return [row["body"] for row in data]
        """,
    )
    model_dir.manifest = {"model": {"handler": "handler.py"}}
    handler = model_dir.loaded(batch_size=2)

    bad, good = handler.handle([request("{oops"), request("[1]")])

    assert isinstance(bad, BadRequestError)
    assert isinstance(good, InferenceResponse)
    assert good.body == "[1]"


def test_torchserve_wrong_result_count_fails_the_batch(model_dir: ModelDir) -> None:
    model_dir.write(
        "handler.py",
        """
        class Handler:
            def handle(self, data, context):
                return ["only one"]
        """,
    )
    model_dir.manifest = {"model": {"handler": "handler.py"}}
    handler = model_dir.loaded(batch_size=2)

    with pytest.raises(ModelError, match="handle returned 1 results for 2 requests"):
        handler.handle([request("1"), request("2")])


def test_torchserve_prediction_exception_status(model_dir: ModelDir) -> None:
    model_dir.write(
        "handler.py",
        """
        class PredictionException(Exception):
            def __init__(self, message, error_code=500):
                self.message, self.error_code = message, error_code
                super().__init__(message)

        class Handler:
            def handle(self, data, context):
                raise PredictionException("too many tokens", 413)
        """,
    )
    model_dir.manifest = {"model": {"handler": "handler.py"}}
    handler = model_dir.loaded()

    error = failure(handler, request("{}"))

    assert isinstance(error, ServingError)
    assert (error.status_code, str(error)) == (413, "too many tokens")


def test_two_handler_classes_are_rejected(model_dir: ModelDir) -> None:
    model_dir.write(
        "handler.py",
        """
        class A:
            def handle(self, data, context):
                return data

        class B:
            def handle(self, data, context):
                return data
        """,
    )
    model_dir.manifest = {"model": {"handler": "handler.py"}}
    with pytest.raises(HandlerLoadError, match=r"handler.py defines 2 classes .*\(A, B\)"):
        model_dir.handler()


def test_torchserve_class_contract_checked_at_construction(model_dir: ModelDir) -> None:
    model_dir.write(
        "handler.py",
        """
        class NeedsArgs:
            def __init__(self, path):
                self.path = path

            def handle(self, data, context):
                return data
        """,
    )
    model_dir.manifest = {"model": {"handler": "handler.py"}}
    with pytest.raises(HandlerLoadError, match=r"handler.py: NeedsArgs\(\) must be callable"):
        model_dir.handler()


def test_module_without_a_handler_is_rejected(model_dir: ModelDir) -> None:
    model_dir.write("code/inference.py", "X = 1\n")
    with pytest.raises(HandlerLoadError, match=r"code/inference.py defines no handler"):
        model_dir.handler()


# --- Multi Model Server functions ---------------------------------------------------------------

MMS_MODULE = """
    calls = []

    def handle(data, context):
        if data is None:
            calls.append(("init", context.system_properties["batch_size"]))
            return None
        calls.append(("batch", len(data)))
        return [
            {"echo": row["data"], "calls": list(calls), "id": context.get_request_id(i)}
            for i, row in enumerate(data)
        ]
"""


def test_mms_module_handle(model_dir: ModelDir) -> None:
    model_dir.write("code/inference.py", MMS_MODULE)
    handler = model_dir.loaded(batch_size=2)

    first, second = handler.handle([request("[1]", request_id="a"), request('"x"', request_id="b")])

    assert isinstance(first, InferenceResponse) and isinstance(second, InferenceResponse)
    assert json.loads(first.body_bytes()) == {
        "echo": [1],
        "calls": [["init", 2], ["batch", 2]],
        "id": "a",
    }
    assert json.loads(second.body_bytes())["echo"] == "x"


def test_mms_init_failure_is_a_load_error(model_dir: ModelDir) -> None:
    model_dir.write(
        "code/inference.py",
        """
        def handle(data, context):
            raise RuntimeError("cannot find weights")
        """,
    )
    handler = model_dir.handler()
    assert isinstance(handler, Handler)
    with pytest.raises(HandlerLoadError) as info:
        handler.load(model_dir.load_context())
    assert str(info.value) == (
        "code/inference.py: handle(None, context) failed: RuntimeError: cannot find weights"
    )


def test_manifest_module_function(model_dir: ModelDir) -> None:
    model_dir.write(
        "custom_entry.py",
        """
        def handle(data, context):
            raise AssertionError("not this one")

        def serve(data, context):
            if data is None:
                return None
            return [{"served": row["body"]} for row in data]
        """,
    )
    model_dir.manifest = {"model": {"handler": "custom_entry:serve"}}
    handler = model_dir.loaded()

    assert handler.source == "custom_entry.py:serve"
    assert json.loads(answer(handler, request("7")).body_bytes()) == {"served": 7}


def test_manifest_missing_function(model_dir: ModelDir) -> None:
    model_dir.write("custom_entry2.py", "def handle(data, context):\n    return data\n")
    model_dir.manifest = {"model": {"handler": "custom_entry2:nope"}}
    with pytest.raises(HandlerLoadError, match=r"custom_entry2.py has no function 'nope'"):
        model_dir.handler()


def test_manifest_builtin_handler(model_dir: ModelDir) -> None:
    model_dir.root.mkdir(parents=True)
    seen: list[tuple[Path, str]] = []

    class Builtin:
        source = "builtin:echo"
        max_batch_size = 1
        options: Mapping[str, Any] = {}

        def load(self, context: LoadContext) -> None: ...

        def handle(self, requests: Any) -> list[Any]:
            return []

    def make(model: ModelDirectory, name: str) -> Handler:
        seen.append((model.root, name))
        return Builtin()

    model_dir.manifest = {"model": {"handler": "echo"}}
    handler = model_dir.handler(builtins={"echo": make})
    assert handler.source == "builtin:echo"
    assert seen == [(model_dir.root, "echo")]

    model_dir.manifest = {"model": {"handler": "image_classifier"}}
    with pytest.raises(HandlerLoadError, match=r"no built-in handler .*built-ins: echo"):
        model_dir.handler(builtins={"echo": make})


def test_syntax_error_names_the_file(model_dir: ModelDir) -> None:
    model_dir.write("code/inference.py", "def model_fn(model_dir)\n    return 1\n")
    with pytest.raises(HandlerLoadError, match=r"^code/inference.py: import failed: SyntaxError"):
        model_dir.handler()


def test_import_error_is_reported_not_replaced(model_dir: ModelDir) -> None:
    scripted_linear(model_dir.root / "model.pt")
    model_dir.write("code/inference.py", "import no_such_module_here\n")
    with pytest.raises(HandlerLoadError, match=r"ModuleNotFoundError: .*no_such_module_here"):
        model_dir.handler()


def test_sibling_modules_import(model_dir: ModelDir) -> None:
    model_dir.write("code/sibling_helpers_x.py", "def double(x):\n    return 2 * x\n")
    model_dir.write(
        "code/inference.py",
        """
        from sibling_helpers_x import double

        def model_fn(model_dir):
            return double

        def predict_fn(data, model):
            return model(data)
        """,
    )
    handler = model_dir.loaded()
    assert json.loads(answer(handler, request("21")).body_bytes()) == 42


def test_program_lookup(model_dir: ModelDir) -> None:
    model_dir.write("code/inference.py", "def handle(data, context):\n    return data\n")
    model_dir.write(
        "code/serve_me.py",
        """
        def model_fn(model_dir):
            return "serve_me"

        def predict_fn(data, model):
            return model
        """,
    )
    model_dir.write("root_prog.py", "def model_fn(model_dir):\n    return 'r'\n")

    assert model_dir.handler().source == "code/inference.py"
    assert model_dir.handler(program="serve_me.py").source == "code/serve_me.py"
    assert model_dir.handler(program="root_prog").source == "root_prog.py"
    handler = model_dir.loaded(program="serve_me")
    assert json.loads(answer(handler, request("1")).body_bytes()) == "serve_me"
    with pytest.raises(HandlerLoadError, match=r"program 'missing.py': no such file"):
        model_dir.handler(program="missing.py")


def test_manifest_wins_over_program(model_dir: ModelDir) -> None:
    model_dir.write("code/inference.py", "def model_fn(model_dir):\n    return 1\n")
    model_dir.write("ts_handler.py", "def handle(data, context):\n    return data\n")
    model_dir.manifest = {"model": {"handler": "ts_handler.py"}}
    assert model_dir.handler(program="inference.py").source == "ts_handler.py"


def test_options_from_manifest_and_config_file(model_dir: ModelDir) -> None:
    model_dir.write("ts_handler2.py", "def handle(data, context):\n    return data\n")
    model_dir.write("model-config.yaml", "batchSize: 8\nmaxBatchDelay: 50\nthreshold: 0.5\n")
    model_dir.manifest = {
        "model": {"handler": "ts_handler2.py", "configFile": "model-config.yaml"},
        "options": {"batch_size": 4},
    }
    handler = model_dir.handler()
    assert dict(handler.options) == {
        "batch_size": 4,
        "batchSize": 8,
        "maxBatchDelay": 50,
        "threshold": 0.5,
    }


# --- the context object ---------------------------------------------------------------------------


def test_context_methods(model_dir: ModelDir) -> None:
    model_dir.root.mkdir(parents=True)
    load = model_dir.load_context(batch_size=2, options={"threshold": 0.5})
    ctx = Context(load, [request("1", headers={"X-A": "1"}, request_id="r0"), request("2")])

    assert ctx.request_ids == {0: "r0", 1: "req-1"}
    assert ctx.get_request_header(0, "x-a") == "1"
    assert ctx.get_all_request_header(0) == {"X-A": "1"}
    assert ctx.request_processor[0].get_request_property("X-a") == "1"
    assert ctx.model_yaml_config == {"threshold": 0.5}
    ctx.set_all_response_status(503, "busy")
    ctx.set_response_status(200, "", 1)
    assert ctx.get_response_status(0) == (503, "busy")
    assert ctx.get_response_status(1) == (200, "")
    ctx.set_response_content_type(1, "text/csv")
    assert ctx.get_response_content_type(1) == "text/csv"
    assert ctx.get_response_content_type(0) is None
    ctx.metrics.add_time("InferenceTime", 3.2, None, "ms")
    ctx.metrics.add_metric("x", 1, "count").add_or_update(2)


# --- default torch model loading --------------------------------------------------------------


class TinyNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.fc(x))


TINY_NET_FILE = """
    import torch

    class TinyNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(3, 2)

        def forward(self, x):
            return torch.relu(self.fc(x))
"""


def tiny_net() -> TinyNet:
    torch.manual_seed(1)
    return TinyNet().eval()


def assert_same_outputs(loaded: Any, reference: torch.nn.Module) -> None:
    x = torch.randn(4, 3)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x), reference(x))


def test_load_model_torchscript(tmp_path: Path) -> None:
    reference = scripted_linear(tmp_path / "model.pt")
    loaded = load_model(tmp_path, {})
    assert isinstance(loaded, torch.jit.ScriptModule)
    assert not loaded.training
    assert_same_outputs(loaded, reference)


def test_load_model_eager_state_dict(model_dir: ModelDir) -> None:
    reference = tiny_net()
    model_dir.write("model.py", TINY_NET_FILE)
    torch.save(reference.state_dict(), model_dir.root / "weights.pth")
    model_dir.manifest = {"model": {"serializedFile": "weights.pth", "modelFile": "model.py"}}

    loaded = load_model(model_dir.root, model_dir.manifest, device=device_for(None))

    assert type(loaded).__name__ == "TinyNet"
    assert not loaded.training
    assert_same_outputs(loaded, reference)


def test_load_model_export_program(tmp_path: Path) -> None:
    reference = tiny_net()
    batch = torch.export.Dim("batch")
    program = torch.export.export(reference, (torch.randn(2, 3),), dynamic_shapes={"x": {0: batch}})
    torch.export.save(program, str(tmp_path / "model.pt2"))

    assert_same_outputs(load_model(tmp_path, {}), reference)


def test_load_model_pickled_needs_opt_in(tmp_path: Path) -> None:
    reference = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.ReLU()).eval()
    torch.save(reference, tmp_path / "model.pth")

    with pytest.raises(HandlerLoadError, match="BYOSERVE_ALLOW_PICKLED_MODELS=true"):
        load_model(tmp_path, {})
    assert_same_outputs(load_model(tmp_path, {}, allow_pickled=True), reference)


def test_load_model_state_dict_without_model_file(tmp_path: Path) -> None:
    torch.save(tiny_net().state_dict(), tmp_path / "model.pt")
    with pytest.raises(HandlerLoadError, match=r"model.pt holds a state_dict .*model.py"):
        load_model(tmp_path, {})


def test_load_model_two_module_classes(model_dir: ModelDir) -> None:
    model_dir.write(
        "model.py", TINY_NET_FILE + "\n    class Other(torch.nn.Module):\n        pass\n"
    )
    torch.save(tiny_net().state_dict(), model_dir.root / "model.pt")
    with pytest.raises(HandlerLoadError) as info:
        load_model(model_dir.root, {})
    assert str(info.value) == "model.py defines 2 nn.Module classes (TinyNet, Other); expected one"


def test_load_model_several_candidates(tmp_path: Path) -> None:
    scripted_linear(tmp_path / "a.pt")
    scripted_linear(tmp_path / "b.pt")
    with pytest.raises(HandlerLoadError, match=r"several model files \(a.pt, b.pt\)"):
        load_model(tmp_path, {})


def test_headers_from_pairs_are_read_when_first_looked_at() -> None:
    read: list[str] = []

    def pairs() -> Iterator[tuple[str, str]]:
        read.append("read")
        yield from [("Content-Type", "text/csv"), ("X-Amzn-SageMaker-Custom-Attributes", "a=1")]

    headers = Headers(pairs())
    assert read == []
    assert headers["content-type"] == "text/csv"
    assert "X-AMZN-SAGEMAKER-CUSTOM-ATTRIBUTES" in headers
    assert list(headers) == ["Content-Type", "X-Amzn-SageMaker-Custom-Attributes"]
    assert read == ["read"]
