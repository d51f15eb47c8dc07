"""notebooks/async_local.ipynb runs top to bottom (nbclient, as tests/deploy/test_notebook.py runs
the others) against moto and a local server behind the asynchronous front, and is stored without
outputs."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from tests.deploy.conftest import AwsWorld
from tests.deploy.test_notebook import run_notebook
from tests.fixtures.server import REPO

NOTEBOOK = REPO / "notebooks" / "async_local.ipynb"


def test_async_notebook_is_stored_without_outputs() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)  # type: ignore[no-untyped-call]
    nbformat.validate(notebook)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None


@pytest.mark.slow
def test_async_notebook_runs_against_moto_and_a_local_server(
    aws: AwsWorld, monkeypatch: pytest.MonkeyPatch, sentiment_archive: Path
) -> None:
    monkeypatch.setenv("BYOSERVE_NOTEBOOK_ARCHIVE", str(sentiment_archive))
    text = run_notebook(NOTEBOOK)
    assert "status 202" in text
    output = re.search(r"output at (s3://\S+/sentiment-async/output/(\S+)\.out)", text)
    assert output, text
    assert "answer: [{'label': 'positive'" in text and "{'label': 'negative'" in text
    assert re.search(r"failure: .*\"code\":\"\w+\"", text), text
    assert "answers written: 0" in text
    assert re.search(r'failure: s3://\S+-error\.out\n\[\{"label": ?"positive"', text), text
    assert re.search(r"exit status 1: deploy: inference \S+ failed: ", text), text
    assert "local server exited with 0" in text
    key = output.group(1).removeprefix(f"s3://{aws.bucket}/")
    assert aws.client("s3").head_object(Bucket=aws.bucket, Key=key)
