"""Shared fixtures: a trained digits model and a way to run the real server."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.models import DigitsModel, train_digits
from tests.fixtures.server import REPO, ServerProcess, start_server


@pytest.fixture(scope="session")
def digits(tmp_path_factory: pytest.TempPathFactory) -> DigitsModel:
    """A small CNN trained on scikit-learn's digits (about 2 s on 2 cores)."""
    return train_digits(tmp_path_factory.mktemp("digits-model"))


@pytest.fixture(scope="session")
def sentiment_archive() -> Path:
    """build/sentiment.tar.gz, the example the design card deploys, made by `make` as users do."""
    subprocess.run(
        ["make", "-s", "build/sentiment.tar.gz", "build/sentiment/model.tar.gz"],
        cwd=REPO,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return REPO / "build" / "sentiment.tar.gz"


@pytest.fixture
def serve_model(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Start real servers for the test; every one is stopped afterwards, pass or fail."""
    servers: list[ServerProcess] = []

    def start(model_dir: Path | str | None, **kwargs: Any) -> ServerProcess:
        server = start_server(model_dir, tmp_path / "logs", **kwargs)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop(10)


@pytest.fixture(scope="session")
def digits_archive() -> Path:
    """build/digits.tar.gz, the digits example served by the built-in ``digit`` handler."""
    subprocess.run(
        ["make", "-s", "build/digits.tar.gz"], cwd=REPO, check=True, stdout=subprocess.DEVNULL
    )
    return REPO / "build" / "digits.tar.gz"
