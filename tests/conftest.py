"""Shared fixtures: a trained digits model and a way to run the real server; and the rule that a
skipped test fails the run (a test that cannot run here says what it needs and fails instead,
so a green run never hides one that did not run). A skip is allowed only for a missing GPU, and
its reason then says GPU."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.models import DigitsModel, train_digits
from tests.fixtures.server import REPO, ServerProcess, start_server

SKIPPED: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail") and "GPU" not in str(report.longrepr):
        SKIPPED.append(report.nodeid)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if SKIPPED:
        terminalreporter.write_line(
            f"{len(SKIPPED)} skipped, and a skip fails the run (only a missing GPU may skip): "
            + ", ".join(SKIPPED),
            red=True,
        )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if SKIPPED and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


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
