"""What a batch transform job sends, against real servers: many records in one request (CSV
lines, JSON Lines, JSON documents one a line) answered one line per record in order by the
built-ins and the toolkit's default path; a bad record's ``line K: ``; the variables SageMaker
sets in a transform job; and ``/execution-parameters``."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests

from serve.archive.archiver import create_archive
from serve.archive.layout import ArchiveSpec
from tests.fixtures.builtin_models import TextModel, sentences, train_text_model
from tests.fixtures.modeldirs import model_dir
from tests.fixtures.models import DigitsModel
from tests.fixtures.server import ServerProcess, start_server

pytestmark = pytest.mark.slow

JSON = "application/json"
JSONL = "application/jsonlines"
CSV = "text/csv"
LABELS = ("negative", "positive")
LINE_ERROR = r"^line (\d+): "  # what deploy transform --local reads


def post(server: ServerProcess, body: str, content_type: str, accept: str) -> requests.Response:
    return requests.post(
        f"{server.url}/invocations",
        data=body.encode(),
        headers={"Content-Type": content_type, "Accept": accept},
        timeout=60,
    )


def answer_lines(response: requests.Response) -> list[str]:
    assert response.status_code == 200, response.text
    assert response.text.endswith("\n")
    return response.text.splitlines()


def error_message(response: requests.Response) -> str:
    assert 400 <= response.status_code < 500, response.text
    message: str = response.json()["error"]["message"]
    return message


def csv_line(*fields: str) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(fields)
    return out.getvalue()


# text_classifier: the sentiment model's handler, on a small trained text model


@pytest.fixture(scope="module")
def text_model(tmp_path_factory: pytest.TempPathFactory) -> TextModel:
    return train_text_model(tmp_path_factory.mktemp("text-model"))


TRANSFORM_ENV = {
    "SAGEMAKER_BATCH": "true",
    "SAGEMAKER_BATCH_STRATEGY": "MultiRecord",
    "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS": "40",
    "SAGEMAKER_MAX_PAYLOAD_IN_MB": "20",
}


@pytest.fixture(scope="module")
def text_server(
    text_model: TextModel, tmp_path_factory: pytest.TempPathFactory, engine: str
) -> Iterator[ServerProcess]:
    """The text classifier as a transform job starts it: with the variables SageMaker sets."""
    d = text_model.directory
    spec = ArchiveSpec(
        "text",
        serialized_file=d / "model.pt",
        model_file=d / "model.py",
        handler="text_classifier",
        extra_files=(d / "vocab.json", d / "index_to_name.json", d / "text_tokenizer.py"),
    )
    out = tmp_path_factory.mktemp("text-archive")
    (out / "config.json").write_text(json.dumps({"batch_size": 8, "max_batch_delay": 5}))
    spec = ArchiveSpec(**{**_fields(spec), "config_file": out / "config.json"})
    path = create_archive(spec, out)
    server = start_server(path, tmp_path_factory.mktemp("text-logs"), env=TRANSFORM_ENV)
    try:
        yield server
    finally:
        server.stop(10)


def _fields(spec: ArchiveSpec) -> dict[str, object]:
    return {name: getattr(spec, name) for name in spec.__slots__}


def expected_answers(text_model: TextModel, texts: list[str]) -> list[tuple[str, float]]:
    """Each text's label and score from the model run here, one text at a time."""
    probs = text_model.predict(texts)
    return [(LABELS[int(p.argmax())], float(p.max())) for p in probs]


def fifty_texts() -> list[str]:
    texts, _ = sentences(seed=3, count=50)
    # some with commas, which CSV quotes: the text is the field unquoted
    return [t.replace(" ", ", ", 1) if i % 5 == 0 else t for i, t in enumerate(texts)]


def test_fifty_csv_lines_answer_fifty_lines_in_order(
    text_server: ServerProcess, text_model: TextModel
) -> None:
    texts = fifty_texts()
    body = "\n".join(csv_line(t) for t in texts) + "\n"
    assert body.count('"') >= 20  # the texts with commas went quoted

    lines = answer_lines(post(text_server, body, CSV, JSON))

    assert len(lines) == 50
    got = [json.loads(line) for line in lines]
    expected = expected_answers(text_model, texts)
    assert [g["label"] for g in got] == [label for label, _ in expected]
    assert [g["score"] for g in got] == pytest.approx([s for _, s in expected], rel=1e-5)
    assert {label for label, _ in expected} == set(LABELS)  # a test that can tell them apart
    # and each line is what that record sent alone answers
    for index in (0, 5, 49):
        alone = post(text_server, csv_line(texts[index]) + "\n", CSV, JSON)
        assert alone.status_code == 200
        assert alone.json() == {
            "label": got[index]["label"],
            "score": pytest.approx(got[index]["score"]),
        }


def test_csv_answers_as_csv_rows(text_server: ServerProcess, text_model: TextModel) -> None:
    texts = fifty_texts()[:10]
    body = "\n\n".join(csv_line(t) for t in texts)  # blank lines are not records
    response = post(text_server, body, CSV, CSV)
    assert response.headers["Content-Type"] == "text/csv; charset=utf-8"
    rows = list(csv.reader(answer_lines(response)))
    expected = expected_answers(text_model, texts)
    assert [row[0] for row in rows] == [label for label, _ in expected]
    assert [float(row[1]) for row in rows] == pytest.approx([s for _, s in expected], rel=1e-5)


@pytest.mark.parametrize("content_type", [JSONL, JSON])
def test_json_lines_answer_one_line_each(
    text_server: ServerProcess, text_model: TextModel, content_type: str
) -> None:
    texts = fifty_texts()[:12]
    records = [json.dumps(t) if i % 2 else json.dumps({"text": t}) for i, t in enumerate(texts)]
    body = "\n".join(records) + "\n"
    expected = [label for label, _ in expected_answers(text_model, texts)]

    as_jsonl = post(text_server, body, content_type, JSONL)
    as_json = post(text_server, body, content_type, JSON)

    assert as_jsonl.headers["Content-Type"] == JSONL
    assert [json.loads(line)["label"] for line in answer_lines(as_jsonl)] == expected
    # each line is what the record alone answers as JSON: a JSON Lines record is a list of one
    alone = [json.loads(line) for line in answer_lines(as_json)]
    labels = [a[0]["label"] if content_type == JSONL else a["label"] for a in alone]
    assert labels == expected


def test_one_json_document_is_one_request_as_ever(text_server: ServerProcess) -> None:
    texts = fifty_texts()[:3]
    response = post(text_server, json.dumps(texts, indent=2), JSON, JSON)
    assert response.status_code == 200
    assert [set(a) for a in response.json()] == [{"label", "score"}] * 3
    single = post(text_server, json.dumps(texts[0]), JSON, JSON)
    assert set(single.json()) == {"label", "score"}


@pytest.mark.parametrize(
    ("body", "content_type", "line", "status"),
    [
        ('"good"\n\n"fine"\n[1, 2]\n"nice"\n', JSONL, 4, 422),  # not texts
        ('"good"\n{"text": \n"nice"\n', JSONL, 2, 400),  # not JSON
        ('"good"\n"fine"\n\n\n{"x": 1}\n', JSON, 5, 422),
        ('{"text": \n"fine"\n', JSON, 1, 400),  # a bad first document
    ],
)
def test_a_bad_record_fails_its_request_naming_its_line(
    text_server: ServerProcess, body: str, content_type: str, line: int, status: int
) -> None:
    response = post(text_server, body, content_type, JSONL)
    assert response.status_code == status, response.text
    message = error_message(response)
    assert message.startswith(f"line {line}: "), message
    match = re.match(LINE_ERROR, message)
    assert match is not None and int(match.group(1)) == line


def test_the_transform_jobs_variables_are_honoured(text_server: ServerProcess) -> None:
    params = requests.get(f"{text_server.url}/execution-parameters", timeout=10).json()
    assert params == {
        "MaxConcurrentTransforms": 40,
        "BatchStrategy": "MULTI_RECORD",
        "MaxPayloadInMB": 20,
    }
    log = text_server.log()
    assert "batch transform job: BatchStrategy MULTI_RECORD, requests up to 20 MiB" in log
    assert "40 MaxConcurrentTransforms, 600 s per request" in log
    # MaxConcurrentTransforms requests at once: none is turned away
    body = "\n".join(csv_line(t) for t in fifty_texts()) + "\n"
    with ThreadPoolExecutor(40) as pool:
        statuses = list(
            pool.map(lambda _: post(text_server, body, CSV, JSONL).status_code, range(40))
        )
    assert statuses == [200] * 40


# digit: CSV rows of 64 pixels


@pytest.fixture(scope="module")
def digit_server(
    digits: DigitsModel, tmp_path_factory: pytest.TempPathFactory, engine: str
) -> Iterator[ServerProcess]:
    d = digits.directory
    spec = ArchiveSpec(
        "digits", serialized_file=d / "model.pt", model_file=d / "model.py", handler="digit"
    )
    path = create_archive(spec, tmp_path_factory.mktemp("digit-archive"))
    server = start_server(path, tmp_path_factory.mktemp("digit-logs"))
    try:
        yield server
    finally:
        server.stop(10)


def pixel_rows(images: np.ndarray) -> list[str]:
    """Rows of 64 pixels in scikit-learn's 0-16, as a digits CSV holds them."""
    return [",".join(str(round(float(v) * 16)) for v in image.ravel()) for image in images]


def test_digit_csv_rows_answer_one_line_each(
    digit_server: ServerProcess, digits: DigitsModel
) -> None:
    images = digits.images[:30]
    expected = digits.predict(images).argmax(1).tolist()
    body = "\n".join(pixel_rows(images)) + "\n"

    as_csv = [row.split(",") for row in answer_lines(post(digit_server, body, CSV, CSV))]
    as_jsonl = [json.loads(line) for line in answer_lines(post(digit_server, body, CSV, JSONL))]

    assert [int(row[0]) for row in as_csv] == [a["digit"] for a in as_jsonl]
    agree = np.mean(np.array([a["digit"] for a in as_jsonl]) == np.array(expected))
    assert agree >= 0.9  # pixels rounded to 0-16, as the digits data set holds them
    assert all(0 < float(row[1]) <= 1 for row in as_csv)


def test_digit_bad_row_names_its_line(digit_server: ServerProcess, digits: DigitsModel) -> None:
    rows = pixel_rows(digits.images[:4])
    rows[2] = "a,b,c"  # not pixels
    response = post(digit_server, "\n".join(rows) + "\n", CSV, JSONL)
    assert response.status_code == 422
    assert error_message(response).startswith("line 3: ")


# the toolkit's default path: the user module defines model_fn and predict_fn only

INFERENCE = """
import torch


def model_fn(model_dir):
    return torch.jit.load(f"{model_dir}/model.ts").eval()


def predict_fn(data, model):
    with torch.no_grad():
        return model(data.reshape(-1, 8, 8))
"""


@pytest.fixture(scope="module")
def toolkit_server(
    digits: DigitsModel, tmp_path_factory: pytest.TempPathFactory, engine: str
) -> Iterator[ServerProcess]:
    source = tmp_path_factory.mktemp("toolkit-source")
    (source / "model.ts").write_bytes((digits.directory / "model.ts").read_bytes())
    directory = model_dir(
        tmp_path_factory.mktemp("toolkit") / "model", source, {"code/inference.py": INFERENCE}
    )
    server = start_server(directory, tmp_path_factory.mktemp("toolkit-logs"))
    try:
        yield server
    finally:
        server.stop(10)


def test_toolkit_default_path_answers_one_line_per_record(
    toolkit_server: ServerProcess, digits: DigitsModel
) -> None:
    images = digits.images[:20].astype(np.float32)
    expected = digits.predict(images)
    body = "\n".join(",".join(repr(float(v)) for v in image.ravel()) for image in images)

    as_csv = answer_lines(post(toolkit_server, body, CSV, CSV))
    as_json = answer_lines(post(toolkit_server, body, CSV, JSON))

    np.testing.assert_allclose(
        np.array([[float(v) for v in row.split(",")] for row in as_csv]),
        expected,
        rtol=1e-4,
        atol=1e-5,
    )
    np.testing.assert_allclose(
        np.array([json.loads(line)[0] for line in as_json]), expected, rtol=1e-4, atol=1e-5
    )
    jsonl = "\n".join(json.dumps(image.ravel().tolist()) for image in images[:5])
    lines = answer_lines(post(toolkit_server, jsonl, JSONL, JSONL))
    np.testing.assert_allclose(
        np.array([json.loads(line) for line in lines]), expected[:5], rtol=1e-4, atol=1e-5
    )


@pytest.mark.parametrize(
    ("bad", "status"),
    [('["a", "b"]', 422), ('{"pixels": ', 400)],  # not numbers; not JSON
)
def test_toolkit_bad_record_names_its_line(
    toolkit_server: ServerProcess, bad: str, status: int
) -> None:
    rows = [json.dumps([0.5] * 64)] * 3 + [bad, json.dumps([0.5] * 64)]
    response = post(toolkit_server, "\n".join(rows), JSONL, JSONL)
    assert response.status_code == status
    assert error_message(response).startswith("line 4: ")


def test_execution_parameters_without_a_transform_job(toolkit_server: ServerProcess) -> None:
    params = requests.get(f"{toolkit_server.url}/execution-parameters", timeout=10).json()
    assert params == {
        "MaxConcurrentTransforms": 1,
        "BatchStrategy": "MULTI_RECORD",
        "MaxPayloadInMB": 6,
    }
    assert "batch transform job" not in toolkit_server.log()
