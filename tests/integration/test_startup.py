"""Start-up failures: every setting checked the same way from a flag as from a variable, each
failure said in one line and said once, nothing left behind, relative paths as given."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest
import requests

from tests.fixtures.modeldirs import model_dir
from tests.fixtures.models import DigitsModel
from tests.fixtures.server import REPO, free_port, run_serve, start_server

pytestmark = pytest.mark.slow


def serve(args: list[str], tmp_path: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``python -m serve ARGS`` to its end, with a temp dir of its own (to see what it leaves)."""
    scratch = tmp_path / "tmp"
    scratch.mkdir(exist_ok=True)
    return run_serve(args, timeout=timeout, temp_dir=scratch)


@pytest.mark.parametrize(
    ("flag", "value", "expected"),
    [
        ("--port", "70000", "between 1 and 65535"),
        ("--timeout", "-5", "more than zero"),
        ("--timeout", "nan", "more than zero"),
        ("--max-request-size", "-1", "at least 1"),
        ("--max-batch-delay-ms", "-3", "zero or more"),
        ("--host", "999.1.1.1", "an IP address or a host name"),
        ("--workers", "0", "at least 1"),
        ("--memory-budget-mb", "lots", "could not convert"),
    ],
)
def test_a_bad_flag_stops_the_start_in_one_line_naming_it(
    tmp_path: Path, flag: str, value: str, expected: str
) -> None:
    result = serve(["--model-dir", "/nonexistent", flag, value], tmp_path, timeout=20)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"serve: configuration error: {flag}={value!r}: ")
    assert expected in line


def test_an_address_nobody_can_listen_on_is_one_line(tmp_path: Path, digits: DigitsModel) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = serve(["--model-dir", str(digits.directory), "--port", str(port)], tmp_path)
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert f"cannot listen on 0.0.0.0:{port}" in line and "Address already in use" in line


def test_a_model_directory_with_nothing_to_serve_stops_in_the_master(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = serve(["--model-dir", str(tmp_path / "empty"), "--workers", "2"], tmp_path)
    assert result.returncode == 1
    (line,) = [line for line in result.stderr.splitlines() if "ERROR" in line]
    assert "cannot start: no model file in" in line
    assert "Booting worker" not in result.stderr  # found before any worker was forked
    assert not list((tmp_path / "tmp").iterdir())


def test_a_model_that_fails_in_every_worker_is_said_once_and_leaves_nothing(
    tmp_path: Path, digits: DigitsModel
) -> None:
    failing = "def model_fn(model_dir):\n    raise RuntimeError('weights are corrupt')\n"
    directory = model_dir(tmp_path / "m", digits.directory, {"code/inference.py": failing})
    args = ["--model-dir", str(directory), "--workers", "2", "--port", str(free_port())]
    result = serve(args, tmp_path)
    assert result.returncode == 1
    assert result.stderr.count("failed to load") == 1  # the traceback once, not per worker
    assert result.stderr.count("cannot start") == 1
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .endswith(
            "cannot start: model model: code/inference.py: model_fn failed: "
            "RuntimeError: weights are corrupt"
        )
    )
    assert "HaltServer" not in result.stderr
    assert not list((tmp_path / "tmp").iterdir())  # no metrics or model-set directory left


HANDLER = """
import json


def handle(data, context):
    if data is None:
        return None
    return [json.dumps({"model_dir": context.system_properties["model_dir"]}) for _ in data]
"""


def test_a_relative_model_directory_is_resolved_once(tmp_path: Path, digits: DigitsModel) -> None:
    directory = model_dir(
        tmp_path / "work" / "models" / "m",
        digits.directory,
        {"service.py": HANDLER, "code/requirements.txt": "numpy\n"},
        manifest={"model": {"modelName": "m", "handler": "service:handle"}},
    )
    server = start_server(
        Path("models/m"), tmp_path / "logs", cwd=tmp_path / "work", env={"PYTHONPATH": str(REPO)}
    )
    try:
        answer = requests.post(f"{server.url}/invocations", json=[1], timeout=10).json()
        assert answer == {"model_dir": str(directory)}
        assert "Could not open requirements file" not in server.log()
    finally:
        server.stop(10)
