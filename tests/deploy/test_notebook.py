"""The notebooks run top to bottom (nbclient) against moto and a local server, with the real
examples (made by `make`), and are stored without outputs:

- notebooks/sentiment_end_to_end.ipynb: one archive, endpoints/sentiment.toml;
- notebooks/multi_model_end_to_end.ipynb: the multi-model endpoints/catalog.toml, both targets
  served locally and chosen with boto3's TargetModel, a third added to the live endpoint;
- notebooks/textgen_streaming.ipynb: the textgen example served locally, its answers streamed
  through boto3's invoke_endpoint_with_response_stream and `deploy invoke --stream`;
- notebooks/hosting_modes.ipynb: the sentiment example's batch transform run locally
  (`deploy transform --local --no-docker`), from a directory and from moto's S3, and an
  asynchronous invocation through `deploy local` on an [async] definition (boto3's
  invoke_endpoint_async, the answer and a failure in S3, `invoke --async --wait`).
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import nbclient
import nbformat
import pytest

from tests.deploy.conftest import AwsWorld, record_pushed_image
from tests.fixtures.server import REPO

NOTEBOOK = REPO / "notebooks" / "sentiment_end_to_end.ipynb"
MULTI_MODEL_NOTEBOOK = REPO / "notebooks" / "multi_model_end_to_end.ipynb"
TEXTGEN_NOTEBOOK = REPO / "notebooks" / "textgen_streaming.ipynb"
HOSTING_NOTEBOOK = REPO / "notebooks" / "hosting_modes.ipynb"


def _read(path: Path) -> Any:
    return nbformat.read(path, as_version=4)  # type: ignore[no-untyped-call]


@pytest.mark.parametrize(
    "path",
    [NOTEBOOK, MULTI_MODEL_NOTEBOOK, TEXTGEN_NOTEBOOK, HOSTING_NOTEBOOK],
    ids=lambda path: path.stem,
)
def test_notebook_is_stored_without_outputs(path: Path) -> None:
    notebook = _read(path)
    nbformat.validate(notebook)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None


@pytest.fixture
def project_endpoints(aws: AwsWorld, monkeypatch: pytest.MonkeyPatch) -> AwsWorld:
    """moto, for notebooks that deploy the project's own endpoints/*.toml: their image
    (`byoserve`) recorded as pushed."""
    monkeypatch.delenv("BYOSERVE_ENDPOINTS_DIR")
    record_pushed_image(aws, "byoserve")
    return aws


def run_notebook(path: Path) -> str:
    """Execute the notebook in its folder, as Jupyter would; returns all it printed."""
    notebook = _read(path)
    client = nbclient.NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()
    return "\n".join(
        str(output.get("text", "")) for cell in notebook.cells for output in cell.get("outputs", [])
    )


def _assert_all_deleted(aws: AwsWorld) -> None:
    sagemaker = aws.client("sagemaker")
    assert sagemaker.list_models()["Models"] == []
    assert sagemaker.list_endpoint_configs()["EndpointConfigs"] == []


@pytest.mark.slow
def test_notebook_runs_against_moto_and_a_local_server(
    project_endpoints: AwsWorld, monkeypatch: pytest.MonkeyPatch, sentiment_archive: Path
) -> None:
    monkeypatch.setenv("BYOSERVE_NOTEBOOK_ARCHIVE", str(sentiment_archive))
    text = run_notebook(NOTEBOOK)
    assert "'label': 'positive'" in text and "'label': 'negative'" in text
    assert "DRY-RUN sagemaker CreateEndpoint " in text
    assert "sentiment: InService" in text
    assert "endpoints left: []" in text
    _assert_all_deleted(project_endpoints)


@pytest.mark.slow
def test_multi_model_notebook_runs_against_moto_and_a_local_server(
    project_endpoints: AwsWorld,
    monkeypatch: pytest.MonkeyPatch,
    sentiment_archive: Path,
    digits_archive: Path,
) -> None:
    prebuilt = os.pathsep.join(map(str, (sentiment_archive, digits_archive)))
    monkeypatch.setenv("BYOSERVE_NOTEBOOK_ARCHIVES", prebuilt)
    text = run_notebook(MULTI_MODEL_NOTEBOOK)
    assert "TargetModel digits.tar.gz: build/digits.tar.gz" in text
    assert "sentiment.tar.gz says [{'label': 'positive'" in text
    assert "}, {'label': 'negative'" in text
    assert re.search(r"is a (\d); digits.tar.gz says \{'digit': \1, ", text), text
    assert "loaded: ['digits.tar.gz', 'sentiment.tar.gz']" in text
    prefix = f"s3://{project_endpoints.bucket}/models/catalog/"
    assert re.search(r'DRY-RUN sagemaker CreateModel .*"Mode": "MultiModel"', text)
    assert "catalog: InService" in text
    assert f"uploaded: {prefix}sentiment-v2.tar.gz" in text
    assert "3 archive(s) under the prefix (TargetModel)" in text  # status, before the delete
    for name in ("sentiment.tar.gz", "digits.tar.gz", "sentiment-v2.tar.gz"):
        assert project_endpoints.client("s3").head_object(
            Bucket=project_endpoints.bucket, Key=f"models/catalog/{name}"
        )
    assert "endpoints left: []" in text
    _assert_all_deleted(project_endpoints)


@pytest.fixture(scope="session")
def textgen_archive() -> Path:
    """build/textgen.tar.gz, the streaming example, made by `make` as users do."""
    subprocess.run(
        ["make", "-s", "build/textgen.tar.gz"], cwd=REPO, check=True, stdout=subprocess.DEVNULL
    )
    return REPO / "build" / "textgen.tar.gz"


@pytest.mark.slow
def test_textgen_notebook_streams_from_a_local_server(
    monkeypatch: pytest.MonkeyPatch, textgen_archive: Path
) -> None:
    monkeypatch.setenv("BYOSERVE_NOTEBOOK_ARCHIVE", str(textgen_archive))
    text = run_notebook(TEXTGEN_NOTEBOOK)
    assert re.search(r"\b60 pieces, 240 characters; the first after \d+ ms", text), text
    assert "60 JSON lines, first: " in text
    assert "the same text as plain: True" in text
    assert "refused: 400" in text and "temperature must be a number > 0" in text
    assert "the same text from the CLI: True" in text
    assert "local server exited with 0" in text


@pytest.mark.slow
def test_hosting_modes_notebook_transforms_and_invokes_asynchronously_locally(
    project_endpoints: AwsWorld, monkeypatch: pytest.MonkeyPatch, sentiment_archive: Path
) -> None:
    monkeypatch.setenv("BYOSERVE_NOTEBOOK_ARCHIVE", str(sentiment_archive))
    text = run_notebook(HOSTING_NOTEBOOK)
    assert "transform: 2 file(s), 5 records, 0 failed" in text
    assert "== monday.jsonl.out\npositive\nnegative\npositive\n" in text
    assert "== tuesday.jsonl.out\nnegative\n(blank)\npositive\n" in text
    assert "failed: wednesday.jsonl line 2: " in text and "exit status 3" in text
    bucket = project_endpoints.bucket
    assert f"s3://{bucket}/transform/out/wednesday.jsonl.out: ['positive', '-', 'negative']" in text
    assert f"s3://{bucket}/transform/out/monday.jsonl.out: " in text
    # asynchronous inference
    assert "status 202" in text
    output = re.search(r"output at (s3://\S+/sentiment-async/output/(\S+)\.out)", text)
    assert output, text
    assert "answer: [{'label': 'positive'" in text and "{'label': 'negative'" in text
    assert re.search(r"failure: .*\"code\":\"\w+\"", text), text
    assert "answers written: 0" in text
    assert re.search(r'failure: s3://\S+-error\.out\n\[\{"label": ?"positive"', text), text
    assert re.search(r"exit status 1: deploy: inference \S+ failed: ", text), text
    assert "local server exited with 0" in text
    key = output.group(1).removeprefix(f"s3://{bucket}/")
    assert project_endpoints.client("s3").head_object(Bucket=bucket, Key=key)
