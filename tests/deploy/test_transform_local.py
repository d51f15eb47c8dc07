"""``deploy transform --local --no-docker``: a real server on the sentiment example, a few
thousand records across several files, answers checked against the model run here (its
reference ``predict``), from a directory and from moto's S3, to both."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from deploy.batchlocal import InputObject, pack
from deploy.batchsettings import MIB, Settings, resolve
from deploy.transform import TransformJob
from tests.deploy.conftest import AwsWorld, Result
from tests.fixtures.server import REPO
from tests.unit.test_examples import load_example

JSONLINES = ("--content-type", "application/jsonlines", "--accept", "application/jsonlines")
MULTI = ("--split-type", "Line", "--batch-strategy", "MultiRecord", "--assemble-with", "Line")
SINGLE = ("--split-type", "Line", "--batch-strategy", "SingleRecord", "--assemble-with", "Line")
FILES = {"a.jsonl": 1200, "b.jsonl": 900, "nested/c.jsonl": 700}


@pytest.fixture
def sentiment(aws: AwsWorld, sentiment_archive: Path) -> str:
    """endpoints/sentiment.toml, the example's archive."""
    (aws.endpoints_dir / "sentiment.toml").write_text(f'[model]\narchive = "{sentiment_archive}"\n')
    return "sentiment"


def _texts(count: int, seed: int) -> list[str]:
    sentences = [
        line.split("\t", 1)[1]
        for line in (REPO / "examples/sentiment/data/heldout.tsv").read_text().splitlines()
    ]
    return [sentences[(i * 7 + seed) % len(sentences)] for i in range(count)]


def _lines(texts: list[str]) -> list[str]:
    """JSON Lines of ``texts``: strings and ``{"text": ...}`` objects, every 97th line blank."""
    lines = []
    for index, text in enumerate(texts):
        if index % 97 == 50:
            lines.append("")
        lines.append(json.dumps({"text": text} if index % 3 else text))
    return lines


@pytest.fixture
def records(tmp_path: Path) -> Path:
    """Several files of JSON Lines under one directory (one in a subdirectory)."""
    root = tmp_path / "records"
    for seed, (name, count) in enumerate(FILES.items()):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(_lines(_texts(count, seed))) + "\n")
    return root


@pytest.fixture(scope="module")
def predict() -> Callable[[list[str]], list[dict[str, Any]]]:
    """The example's reference inference, on the model directory the archive was made from."""
    module: ModuleType = load_example("sentiment/predict.py")
    return lambda texts: module.predict(REPO / "build" / "sentiment-model", texts)


def _expected(path: Path, predict: Callable[[list[str]], list[dict[str, Any]]]) -> list[Any]:
    """Per input line: the model's answer, or None for a blank line."""
    lines = path.read_text().splitlines()
    texts = [json.loads(line) for line in lines if line]
    texts = [text if isinstance(text, str) else text["text"] for text in texts]
    answers = iter(predict(texts))
    return [next(answers) if line else None for line in lines]


def _check(out: str, expected: list[Any], bad: frozenset[int] = frozenset()) -> None:
    got = out.split("\n")
    assert got[-1] == "" and len(got) - 1 == len(expected)  # one line per input line
    for number, (line, want) in enumerate(zip(got, expected, strict=False), start=1):
        if want is None or number in bad:
            assert line == "", number
            continue
        answer = json.loads(line)
        assert answer["label"] == want["label"], number
        assert answer["score"] == pytest.approx(want["score"], abs=1e-5), number


def _answers(path: Path) -> list[Any]:
    return [json.loads(line) if line else None for line in path.read_text().split("\n")]


def _run(cli: Callable[..., Result], name: str, src: str, dst: str, *flags: str) -> Result:
    return cli("transform", name, "--input", src, "--output", dst, "--local", "--no-docker", *flags)


def test_multi_record_from_a_directory_answers_every_line_in_order(
    sentiment: str,
    records: Path,
    tmp_path: Path,
    cli: Callable[..., Result],
    predict: Callable[[list[str]], list[dict[str, Any]]],
) -> None:
    out = tmp_path / "out"
    flags = (*JSONLINES, *MULTI, "--max-concurrent-transforms", "2")
    result = _run(cli, sentiment, str(records), str(out), *flags)
    assert result.code == 0, result.err
    total = sum(FILES.values())
    assert f"transform: 3 file(s), {total} records, 0 failed" in result.out
    assert "(MultiRecord, 2 at once, 6 MB)" in result.out
    for name in FILES:
        _check((out / f"{name}.out").read_text(), _expected(records / name, predict))


def test_single_record_gives_the_same_output_as_multi_record(
    sentiment: str, records: Path, tmp_path: Path, cli: Callable[..., Result]
) -> None:
    single, multi = tmp_path / "single", tmp_path / "multi"
    assert _run(cli, sentiment, str(records), str(single), *JSONLINES, *SINGLE).code == 0
    result = _run(cli, sentiment, str(records), str(multi), *JSONLINES, *MULTI)
    assert result.code == 0, result.err
    for name in FILES:
        one, many = (_answers(folder / f"{name}.out") for folder in (single, multi))
        assert len(one) == len(many)
        for a, b in zip(one, many, strict=True):
            assert (a is None) == (b is None)
            if a is not None and b is not None:
                assert a["label"] == b["label"] and a["score"] == pytest.approx(b["score"])


@pytest.mark.parametrize("to", ["s3", "directory"])
def test_input_from_s3_output_to_s3_or_a_directory(
    aws: AwsWorld,
    sentiment: str,
    records: Path,
    tmp_path: Path,
    cli: Callable[..., Result],
    predict: Callable[[list[str]], list[dict[str, Any]]],
    to: str,
) -> None:
    s3 = aws.client("s3")
    for name in FILES:
        s3.put_object(Bucket=aws.bucket, Key=f"batch/in/{name}", Body=(records / name).read_bytes())
    dst = f"s3://{aws.bucket}/batch/out" if to == "s3" else str(tmp_path / "out")
    result = _run(cli, sentiment, f"s3://{aws.bucket}/batch/in/", dst, *JSONLINES, *MULTI)
    assert result.code == 0, result.err
    for name in FILES:
        if to == "s3":
            key = f"batch/out/{name}.out"
            text = s3.get_object(Bucket=aws.bucket, Key=key)["Body"].read().decode()
        else:
            text = (tmp_path / "out" / f"{name}.out").read_text()
        _check(text, _expected(records / name, predict))


def test_a_bad_record_is_reported_by_file_and_line_and_the_others_answered(
    sentiment: str,
    records: Path,
    tmp_path: Path,
    cli: Callable[..., Result],
    predict: Callable[[list[str]], list[dict[str, Any]]],
) -> None:
    path = records / "b.jsonl"
    lines = path.read_text().split("\n")
    for number in (17, 400):
        lines[number - 1] = "5"  # a number, not a text
    path.write_text("\n".join(lines))
    out = tmp_path / "out"
    result = _run(cli, sentiment, str(records), str(out), *JSONLINES, *MULTI)
    assert result.code == 3
    assert "failed: b.jsonl line 17: " in result.out and "failed: b.jsonl line 400: " in result.out
    assert ", 2 failed," in result.out
    assert result.err.splitlines()[-1].startswith("deploy: 2 of 2800 records failed")
    path.write_text("\n".join('""' if x == "5" else x for x in lines))  # predictable text
    _check((out / "b.jsonl.out").read_text(), _expected(path, predict), bad=frozenset({17, 400}))
    _check((out / "a.jsonl.out").read_text(), _expected(records / "a.jsonl", predict))


def test_multi_record_packs_records_under_the_payload_limit() -> None:
    item = InputObject.split("x", b"aaaa\nbb\n\ncccccc\nd\n", "Line")
    assert item.records == [b"aaaa", b"bb", b"", b"cccccc", b"d"]
    assert list(pack(item, Settings("MultiRecord", 8, 1))) == [[0, 1], [3, 4]]
    assert list(pack(item, Settings("MultiRecord", 100, 1))) == [[0, 1, 3, 4]]
    assert list(pack(item, Settings("SingleRecord", 100, 1))) == [[0], [1], [3], [4]]


def test_flags_come_before_the_servers_parameters_then_the_defaults() -> None:
    job = TransformJob("in", "out", split_type="Line")
    reply = {"BatchStrategy": "MULTI_RECORD", "MaxPayloadInMB": 3, "MaxConcurrentTransforms": 4}
    assert resolve(job, reply) == Settings("MultiRecord", 3 * MIB, 4)
    assert resolve(job, {"BatchStrategy": "MultiRecord"}).strategy == "MultiRecord"
    assert resolve(job, {}) == Settings("SingleRecord", 6 * MIB, 1)
    given = TransformJob(
        "in", "out", split_type="Line", batch_strategy="SingleRecord", max_payload_mb=2,
        max_concurrent=8,
    )  # fmt: skip
    assert resolve(given, reply) == Settings("SingleRecord", 2 * MIB, 8)


DOUBLER = """\
import io
import json
import tarfile
import os


class RecordError(Exception):
    error_code = 400


def model_fn(model_dir):
    return None


def transform_fn(model, body, content_type, accept):
    lines = (body.decode() if isinstance(body, bytes) else body).split("\\n")
    with open(os.environ["REQUEST_LOG"], "a") as log:
        log.write(f"{len(lines)}\\n")
    answers = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            answers.append("")
            continue
        value = json.loads(line)
        if not isinstance(value, int):
            raise RecordError(f"line {number}: {line} is not a number")
        answers.append(json.dumps(value * 2))
    return "\\n".join(answers) + "\\n"
"""


@pytest.fixture
def doubler(aws: AwsWorld, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """endpoints/doubler.toml: a toolkit model doubling each number, naming a bad record's line
    in a 400 as the contract says; every request's record count goes to the returned file."""
    archive = tmp_path / "doubler.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        data = DOUBLER.encode()
        info = tarfile.TarInfo("code/inference.py")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    (aws.endpoints_dir / "doubler.toml").write_text(f'[model]\narchive = "{archive}"\n')
    log = tmp_path / "requests.log"
    monkeypatch.setenv("REQUEST_LOG", str(log))
    return log


def test_a_line_named_in_a_4xx_fails_that_record_alone(
    doubler: Path, tmp_path: Path, cli: Callable[..., Result]
) -> None:
    src = tmp_path / "numbers"
    src.mkdir()
    lines = [str(n) for n in range(1, 11)]
    lines[3], lines[7] = '"four"', '"eight"'
    (src / "n.txt").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    flags = ("--max-concurrent-transforms", "1", "--content-type", "text/plain")
    result = _run(cli, "doubler", str(src), str(out), *MULTI, *flags)
    assert result.code == 3
    assert 'failed: n.txt line 4: "four" is not a number' in result.out
    assert 'failed: n.txt line 8: "eight" is not a number' in result.out
    assert (out / "n.txt.out").read_text() == "2\n4\n6\n\n10\n12\n14\n\n18\n20\n"
    # the request, then the records either side of line 4, then either side of line 8
    assert sorted(map(int, doubler.read_text().split()), reverse=True) == [10, 6, 3, 3, 2]


def test_split_type_none_sends_each_object_whole(
    doubler: Path, tmp_path: Path, cli: Callable[..., Result]
) -> None:
    src = tmp_path / "numbers"
    src.mkdir()
    (src / "a.txt").write_text("1\n2\n3")
    (src / "b.txt").write_text("5")
    out = tmp_path / "out"
    result = _run(cli, "doubler", str(src), str(out), "--content-type", "text/plain")
    assert result.code == 0, result.err
    assert (out / "a.txt.out").read_text() == "2\n4\n6\n"
    assert (out / "b.txt.out").read_text() == "10\n"
    assert sorted(map(int, doubler.read_text().split())) == [1, 3]


def test_a_missing_input_is_one_line_before_any_server_starts(
    doubler: Path, tmp_path: Path, cli: Callable[..., Result]
) -> None:
    missing = tmp_path / "nowhere"
    result = _run(cli, "doubler", str(missing), str(tmp_path / "out"))
    assert result.code == 1
    assert result.err == f"deploy: --input {missing}: no such file or directory\n"
    assert not doubler.exists()  # no request was made


FLAKY = DOUBLER.replace(
    "    answers = []\n",
    """    answers = []
    first = os.environ["REQUEST_LOG"] + ".seen"
    if not os.path.exists(first):
        open(first, "w").close()
        raise RuntimeError("the first request fails")
""",
)


def test_a_5xx_is_retried_as_sagemaker_retries(
    doubler: Path, aws: AwsWorld, tmp_path: Path, cli: Callable[..., Result]
) -> None:
    archive = tmp_path / "flaky.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("code/inference.py")
        info.size = len(FLAKY.encode())
        tar.addfile(info, io.BytesIO(FLAKY.encode()))
    (aws.endpoints_dir / "flaky.toml").write_text(f'[model]\narchive = "{archive}"\n')
    src = tmp_path / "numbers"
    src.mkdir()
    (src / "n.txt").write_text("1\n2\n3\n")
    result = _run(cli, "flaky", str(src), str(tmp_path / "out"), *MULTI)
    assert result.code == 0, result.out + result.err
    assert (tmp_path / "out" / "n.txt.out").read_text() == "2\n4\n6\n"
    assert doubler.read_text().split() == ["3", "3"]  # the 500, then the retry


def test_dry_run_local_prints_the_plan_and_starts_nothing(
    doubler: Path, tmp_path: Path, cli: Callable[..., Result]
) -> None:
    result = _run(cli, "doubler", str(tmp_path), str(tmp_path / "out"), *MULTI, "--dry-run")
    assert result.code == 0, result.err
    assert result.out.startswith("DRY-RUN local transform ")
    assert '"SAGEMAKER_BATCH": "true"' in result.out
    assert '"SAGEMAKER_BATCH_STRATEGY": "MULTI_RECORD"' in result.out
    assert not (tmp_path / "out").exists() and not doubler.exists()
