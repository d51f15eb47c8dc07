"""notebooks/sentiment_end_to_end.ipynb runs top to bottom (nbclient) against moto and a local
server, with the real sentiment example (made by `make`), and is stored without outputs."""

from __future__ import annotations

from pathlib import Path

import nbclient
import nbformat
import pytest

from tests.deploy.conftest import AwsWorld
from tests.fixtures.server import REPO

NOTEBOOK = REPO / "notebooks" / "sentiment_end_to_end.ipynb"


def test_notebook_is_stored_without_outputs() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None


@pytest.mark.slow
def test_notebook_runs_against_moto_and_a_local_server(
    aws: AwsWorld, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sentiment_archive: Path
) -> None:
    from deploy.images import PushedImage, record_image

    # The notebook deploys the real endpoints/sentiment.toml, whose image is `byoserve`.
    monkeypatch.delenv("BYOSERVE_ENDPOINTS_DIR")
    monkeypatch.setenv("BYOSERVE_NOTEBOOK_ARCHIVE", str(sentiment_archive))
    record_image(
        PushedImage(
            "byoserve",
            "123456789012.dkr.ecr.us-east-1.amazonaws.com",
            "t",
            "sha256:" + "0" * 64,
            "byoserve:latest",
            "sha256:" + "1" * 64,
            "now",
        ),
        aws.build_dir / "images",
    )
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    client.execute()
    text = "\n".join(
        str(output.get("text", "")) for cell in notebook.cells for output in cell.get("outputs", [])
    )
    assert "'label': 'positive'" in text and "'label': 'negative'" in text
    assert "DRY-RUN sagemaker CreateEndpoint " in text
    assert "sentiment: InService" in text
    assert "endpoints left: []" in text
    sagemaker = aws.client("sagemaker")
    assert sagemaker.list_models()["Models"] == []
    assert sagemaker.list_endpoint_configs()["EndpointConfigs"] == []
