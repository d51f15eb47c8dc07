"""TorchServe's command line and config.properties, for real: ``serve --start`` in the background
and ``--foreground``, ``serve --stop``, with ``.mar`` files written by torch-model-archiver in a
model store, every address on a free port, and the pid file and logs in the test's own
directories (TMPDIR, the working directory)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from serve.dialect.daemon import PID_NAME
from serve.process.probe import pid_alive, ping
from tests.fixtures.server import REPO, free_port

ECHO = """
import json
import os


def handle(data, context):
    if data is None:
        return None
    answer = {"batch_size": context.system_properties["batch_size"], "pid": os.getpid()}
    return [json.dumps(answer) for _ in data]
"""

BROKEN = """
def handle(data, context):
    raise RuntimeError("weights are corrupt")
"""

MODELS_JSON = """models={\\
  "echo": {\\
    "1.0": {\\
        "defaultVersion": true,\\
        "marName": "echo.mar",\\
        "minWorkers": 1,\\
        "batchSize": 4,\\
        "maxBatchDelay": 50\\
    }\\
  }\\
}
"""


def archive(store: Path, name: str, handler: str, work: Path) -> Path:
    """A .mar written by torch-model-archiver, as TorchServe users have them."""
    source = work / f"{name}.py"
    source.write_text(handler)
    archiver = shutil.which("torch-model-archiver", path=str(Path(sys.executable).parent))
    assert archiver is not None, "torch-model-archiver is a test dependency"
    flags = ["--model-name", name, "--version", "1.0", "--handler", str(source)]
    subprocess.run([archiver, *flags, "--export-path", str(store)], check=True, cwd=work)
    return store / f"{name}.mar"


@dataclass
class TorchServeCli:
    """``python -m serve ...`` run as a user runs ``torchserve``: in ``work`` (where ./logs
    and key_file.json go), with a temp directory of its own (where the pid file goes).

    As TorchServe's own tests start it (``test_utils.start_torchserve``), ``--start`` gets
    ``--disable-token-auth`` unless ``token_auth`` (tests/integration/test_torchserve_auth.py
    checks token authorization)."""

    work: Path
    temp: Path
    store: Path
    ports: dict[str, int]
    token_auth: bool = False

    @property
    def env(self) -> dict[str, str]:
        path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
        return {**os.environ, "TMPDIR": str(self.temp), "PYTHONPATH": path}

    @property
    def pid_file(self) -> Path:
        return self.temp / PID_NAME

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports['inference']}"

    def command(self, args: tuple[str, ...]) -> list[str]:
        off = "--start" in args and not self.token_auth
        return [sys.executable, "-m", "serve", *args, *(["--disable-token-auth"] if off else [])]

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        command = self.command(args)
        return subprocess.run(
            command, cwd=self.work, env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def popen(self, *args: str, log: Path) -> subprocess.Popen[bytes]:
        with log.open("wb") as out:
            return subprocess.Popen(
                self.command(args),
                cwd=self.work,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def properties(self, extra: str = "", name: str = "config.properties") -> str:
        """A config.properties in the working directory with every address on a free port."""
        text = (
            f"inference_address=http://127.0.0.1:{self.ports['inference']}\n"
            f"management_address=http://127.0.0.1:{self.ports['management']}\n"
            f"metrics_address: http://127.0.0.1:{self.ports['metrics']}\n"
            "default_workers_per_model=1\n" + extra
        )
        (self.work / name).write_text(text)
        return name

    def running_pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if pid_alive(pid) else None


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[TorchServeCli]:
    work, temp, store = tmp_path / "work", tmp_path / "tmp", tmp_path / "store"
    for directory in (work, temp, store):
        directory.mkdir()
    ports = {"inference": free_port(), "management": free_port(), "metrics": free_port()}
    cli = TorchServeCli(work, temp, store, ports)
    yield cli
    pid = cli.running_pid()  # a server a failed test left behind: the one this test started
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if pid_alive(pid):
            os.killpg(pid, signal.SIGKILL)


def invoke(url: str) -> dict[str, int]:
    response = requests.post(url, json=[1, 2], timeout=30)
    assert response.status_code == 200, response.text
    answer: dict[str, int] = response.json()
    return answer


@pytest.mark.slow
def test_start_serves_the_mar_in_the_background_until_stop(cli: TorchServeCli) -> None:
    archive(cli.store, "echo", ECHO, cli.work)
    config = cli.properties("async_logging=true\nvmargs=-Xmx4g\n" + MODELS_JSON)
    args = ["--start", "--ncs", "--model-store", "../store", "--models", "echo.mar"]
    started = cli.run(*args, "--ts-config", config)
    assert started.returncode == 0, started.stderr
    log = cli.work / "logs" / "ts_log.log"
    assert f"log: {log}" in started.stdout
    notes = [line for line in started.stderr.splitlines() if "do not apply" in line]
    assert len(notes) == 2  # one for the file's keys, one for the flags
    assert notes[0].endswith(
        "config.properties: ignored, they do not apply here: "
        "async_logging, vmargs, models.marName, models.minWorkers"
    )
    assert notes[1].endswith("ignored, they do not apply here: --ncs")
    pid = cli.running_pid()
    assert pid is not None and log.exists()

    assert requests.get(f"{cli.url}/ping", timeout=10).status_code == 200
    answer = invoke(f"{cli.url}/invocations")
    assert answer["batch_size"] == 4  # batchSize of the models JSON
    assert answer["pid"] != pid  # a worker of the server answered
    assert invoke(f"{cli.url}/models/echo/invoke")["batch_size"] == 4
    models = requests.get(f"{cli.url}/models", timeout=10).json()["models"]
    assert [model["modelName"] for model in models] == ["echo"]

    again = cli.run(*args, "--ts-config", config)
    assert again.returncode == 1
    assert again.stderr.strip().splitlines()[-1] == (
        f"serve: byoserve is already running (pid {pid}); stop it with serve --stop"
    )

    stopped = cli.run("--stop")
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout.strip() == "byoserve has stopped."
    assert not pid_alive(pid)
    assert not cli.pid_file.exists()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{cli.url}/ping", timeout=5)
    assert "serve.cli: stopped" in log.read_text()


@pytest.mark.slow
def test_foreground_serves_in_its_own_process_and_stop_ends_it(cli: TorchServeCli) -> None:
    archive(cli.store, "echo", ECHO, cli.work)
    config = cli.properties()
    args = ["--start", "--foreground", "--model-store", str(cli.store), "--models", "e=echo.mar"]
    server = cli.popen(*args, "--ts-config", config, log=cli.work / "foreground.log")
    try:
        deadline = time.monotonic() + 90
        while cli.running_pid() is None or not ping(cli.url):
            assert server.poll() is None, (cli.work / "foreground.log").read_text()
            assert time.monotonic() < deadline, "no answer to /ping"
            time.sleep(0.1)
        assert cli.running_pid() == server.pid
        assert invoke(f"{cli.url}/models/e/invoke")["batch_size"] == 1
        stopped = cli.run("--stop")
        assert stopped.returncode == 0 and "has stopped" in stopped.stdout
        assert server.wait(30) == 0
        assert not cli.pid_file.exists()
        assert not (cli.work / "logs").exists()  # the foreground writes to its own output
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


@pytest.mark.engines("gunicorn", reason="starts no server")
def test_stop_with_none_running_says_so(cli: TorchServeCli) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    cli.pid_file.write_text(f"{gone.pid}\n")  # a stale pid file: its process has ended
    for _ in range(2):
        stopped = cli.run("--stop", timeout=60)
        assert stopped.returncode == 0
        assert stopped.stdout.strip() == "byoserve is not currently running."
        assert not cli.pid_file.exists()


@pytest.mark.slow
def test_a_start_up_model_that_fails_stops_the_start_naming_it(cli: TorchServeCli) -> None:
    archive(cli.store, "echo", ECHO, cli.work)
    archive(cli.store, "broken", BROKEN, cli.work)
    config = cli.properties(name="mms.properties")
    args = ["--start", "--model-store", str(cli.store), "--models", "echo.mar", "broken.mar"]
    started = cli.run(*args, "--mms-config", config)
    assert started.returncode == 1
    log = cli.work / "logs" / "mms_log.log"
    assert started.stderr.strip().splitlines()[-1] == (
        "serve: cannot start: model broken: broken.py: handle(None, context) failed: "
        f"RuntimeError: weights are corrupt (log: {log})"
    )
    assert started.stderr.count("cannot start") == 1
    assert "Traceback" not in started.stderr  # it is in the log, not said to the user
    assert "Traceback" in log.read_text()
    assert not cli.pid_file.exists()
    assert not list(cli.temp.iterdir())  # the server ended and left nothing behind
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{cli.url}/ping", timeout=5)


@pytest.mark.engines("gunicorn", reason="starts no server")
def test_an_unknown_key_is_refused_in_one_line(cli: TorchServeCli) -> None:
    config = cli.properties("job_queue_size=10\nbatch_size=4\n")
    started = cli.run("--start", "--model-store", str(cli.store), "--ts-config", config)
    assert started.returncode == 2
    assert started.stderr.strip().splitlines() == [
        "serve: configuration error: config.properties: unknown key batch_size "
        "(not a TorchServe or MMS setting)"
    ]
    assert cli.running_pid() is None and not (cli.work / "logs").exists()


@pytest.mark.engines("gunicorn", reason="starts no server")
def test_a_bad_value_is_refused_naming_the_file_and_key(cli: TorchServeCli) -> None:
    config = cli.properties("job_queue_size=x\n")
    started = cli.run("--start", "--model-store", str(cli.store), "--ts-config", config)
    assert started.returncode == 2
    (line,) = started.stderr.strip().splitlines()
    assert line.startswith("serve: configuration error: config.properties: job_queue_size='x': ")


@pytest.mark.engines("gunicorn", reason="starts no server")
def test_version_as_torchserve_prints_it(cli: TorchServeCli) -> None:
    shown = cli.run("-v", timeout=60)
    assert shown.returncode == 0
    assert shown.stdout.startswith("byoserve version ")
