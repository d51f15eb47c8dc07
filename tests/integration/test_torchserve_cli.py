"""TorchServe's command line and config.properties, for real: ``serve --start`` in the background
and ``--foreground``, ``serve --stop``, with ``.mar`` files written by torch-model-archiver in a
model store, every address on a free port, and the pid file and logs in the test's own
directories (TMPDIR, the working directory)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from serve.dialect.daemon import PID_NAME
from serve.process.probe import pid_alive, ping
from tests.fixtures.server import REPO, free_port
from tests.fixtures.waiting import wait_until

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

BROKEN_IMPORT = """
raise RuntimeError("weights are corrupt")


def handle(data, context):
    return None
"""

LOUD = """
import json
import logging

logger = logging.getLogger(__name__)


def handle(data, context):
    if data is None:
        print("loud is ready")
        return None
    logger.info("a batch of %d\\nin two lines", len(data))
    return [json.dumps({"ok": True}) for _ in data]
"""

LOG_FILES = ("ts_log.log", "model_log.log", "access_log.log")
METRIC_FILES = ("ts_metrics.log", "model_metrics.log")
ISO8601 = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d,\d{3}"  # log4j2's %d{ISO8601}
LEVEL = r"\[(?:TRACE|DEBUG|INFO |WARN |ERROR|FATAL)\]"  # %-5p
SERVER_LINE = re.compile(rf"^{ISO8601} {LEVEL} (\S+) (\S+) - (.*)$")  # %t %c - %m
MODEL_LINE = re.compile(rf"^{ISO8601} {LEVEL} W-\d+-(?:(\S+)-)?std(?:out|err) MODEL_LOG - (.*)$")
PLAIN_LINE = re.compile(rf"^{ISO8601} - (.*)$")  # the access and metric logs
ACCESS = re.compile(r'^/[0-9a-f.:]+ "([A-Z]+) (\S+) HTTP/1\.1" (\d{3}) (\d+)$')
# TorchServe's frontend parser of metric lines (Metric.PATTERN)
METRIC = re.compile(
    r"\s*([\w\s]+)\.([\w\s]+):([0-9\-,.e]+)\|#([^|]*)(\|#type:([^|,]+))?\|#hostname:([^,]+),"
    r"([^,]+)(,(.*))?"
)

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
    and key_file.json go), with a temp directory of its own (where the pid file goes). Its
    ports are on loopback, where token authorization is off unless asked for
    (tests/integration/test_torchserve_auth.py checks it)."""

    work: Path
    temp: Path
    store: Path
    ports: dict[str, int]

    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
        return {**os.environ, "TMPDIR": str(self.temp), "PYTHONPATH": path, **self.extra_env}

    @property
    def pid_file(self) -> Path:
        return self.temp / PID_NAME

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports['inference']}"

    def command(self, args: tuple[str, ...]) -> list[str]:
        return [sys.executable, "-m", "serve", *args]

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

    def properties(
        self, extra: str = "", name: str = "config.properties", management_host: str = "127.0.0.1"
    ) -> str:
        """A config.properties in the working directory with every address on a free port."""
        text = (
            f"inference_address=http://127.0.0.1:{self.ports['inference']}\n"
            f"management_address=http://{management_host}:{self.ports['management']}\n"
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
    assert " serve.cli - stopped" in log.read_text()


@pytest.mark.slow
def test_foreground_serves_in_its_own_process_and_stop_ends_it(cli: TorchServeCli) -> None:
    archive(cli.store, "echo", ECHO, cli.work)
    config = cli.properties()
    args = ["--start", "--foreground", "--model-store", str(cli.store), "--models", "e=echo.mar"]
    server = cli.popen(*args, "--ts-config", config, log=cli.work / "foreground.log")

    def answering() -> bool:
        if cli.running_pid() is not None and ping(cli.url):
            return True
        assert server.poll() is None, (cli.work / "foreground.log").read_text()  # gave up
        return False

    try:
        wait_until(answering, 90, "an answer to /ping", every=0.1)
        assert cli.running_pid() == server.pid
        assert invoke(f"{cli.url}/models/e/invoke")["batch_size"] == 1
        stopped = cli.run("--stop")
        assert stopped.returncode == 0 and "has stopped" in stopped.stdout
        assert server.wait(30) == 0
        assert not cli.pid_file.exists()
        # TorchServe's files, and the console in the server log's shape
        logs = {path.name for path in (cli.work / "logs").iterdir()}
        assert logs == {*LOG_FILES, *METRIC_FILES}
        console = (cli.work / "foreground.log").read_text().splitlines()
        assert any(line.endswith(" serve.cli - stopped") for line in console)
        server_log = (cli.work / "logs" / "ts_log.log").read_text().splitlines()
        assert sorted(server_log) == sorted(console)  # the workers' lines may interleave otherwise
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
@pytest.mark.parametrize(
    ("code", "failure"),
    [(BROKEN, "handle(None, context) failed"), (BROKEN_IMPORT, "import failed")],
    ids=["handle", "import"],
)
def test_a_start_up_model_that_fails_stops_the_start_naming_it(
    cli: TorchServeCli, code: str, failure: str
) -> None:
    archive(cli.store, "echo", ECHO, cli.work)
    archive(cli.store, "broken", code, cli.work)
    config = cli.properties(name="mms.properties")
    args = ["--start", "--model-store", str(cli.store), "--models", "echo.mar", "broken.mar"]
    started = cli.run(*args, "--mms-config", config)
    assert started.returncode == 1
    log = cli.work / "logs" / "mms_log.log"
    said_last = started.stderr.strip().splitlines()[-1]
    assert re.fullmatch(
        rf"serve: cannot start: model broken( \(\S+\))?: broken\.py: {re.escape(failure)}: "
        rf"RuntimeError: weights are corrupt \(log: {re.escape(str(log))}\)",
        said_last,
    ), said_last
    assert started.stderr.count("cannot start") == 1
    assert "Traceback" not in started.stderr  # it is in the log, not said to the user
    assert "Traceback" in log.read_text()
    # in the model log as TorchServe's frontend writes a worker's output: a prefix on each line
    model_log = (cli.work / "logs" / "model_log.log").read_text().splitlines()
    assert all(MODEL_LINE.match(line) for line in model_log), model_log
    said = [line.split(" MODEL_LOG - ", 1)[1] for line in model_log]
    assert "Traceback (most recent call last):" in said
    assert "RuntimeError: weights are corrupt" in said
    assert not cli.pid_file.exists()
    assert not list(cli.temp.iterdir())  # the server ended and left nothing behind
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{cli.url}/ping", timeout=5)


def _parsed(path: Path, pattern: re.Pattern[str]) -> list[re.Match[str]]:
    lines = path.read_text().splitlines()
    matches = [pattern.match(line) for line in lines]
    assert lines and all(matches), f"{path.name}: {lines}"
    return [match for match in matches if match]


@pytest.mark.slow
def test_torchserves_log_files_in_its_line_shapes(cli: TorchServeCli) -> None:
    archive(cli.store, "loud", LOUD, cli.work)
    config = cli.properties()
    args = ["--start", "--model-store", str(cli.store), "--models", "loud.mar"]
    started = cli.run(*args, "--ts-config", config)
    assert started.returncode == 0, started.stderr
    management = f"http://127.0.0.1:{cli.ports['management']}"
    assert requests.post(f"{cli.url}/predictions/loud", json=[1], timeout=30).status_code == 200
    assert requests.get(f"{management}/models?limit=5", timeout=30).status_code == 200
    assert requests.get(f"{cli.url}/predictions/nobody", timeout=30).status_code == 404
    assert cli.run("--stop").returncode == 0
    logs = cli.work / "logs"
    assert {path.name for path in logs.iterdir()} == {*LOG_FILES, *METRIC_FILES}

    access = [ACCESS.match(line.group(1)) for line in _parsed(logs / "access_log.log", PLAIN_LINE)]
    assert all(access)
    requested = [line.group(1, 2, 3) for line in access if line and line.group(2) != "/ping"]
    # in any order: each line is written once its answer has gone, by the thread (or, for the
    # management port, the process) that served it, so the next request may be logged first
    assert sorted(requested) == sorted(
        [
            ("POST", "/predictions/loud", "200"),
            ("GET", "/models?limit=5", "200"),
            ("GET", "/predictions/nobody", "404"),
        ]
    )
    said = [(line.group(1), line.group(2)) for line in _parsed(logs / "model_log.log", MODEL_LINE)]
    assert ("loud", "loud is ready") in said  # the handler's print
    assert ("loud", "a batch of 1") in said and ("loud", "in two lines") in said  # its logger
    server = _parsed(logs / "ts_log.log", SERVER_LINE)
    loggers = {line.group(2) for line in server}
    assert {"serve.cli", "ACCESS_LOG", "MODEL_LOG", "TS_METRICS", "MODEL_METRICS"} <= loggers

    counters = [
        METRIC.fullmatch(line.group(1)) for line in _parsed(logs / "ts_metrics.log", PLAIN_LINE)
    ]
    assert all(counters)
    names = [(line.group(1), line.group(4)) for line in counters if line]
    assert names.count(("Requests4XX", "Level:Host")) == 1
    assert ("Requests2XX", "Level:Host") in names
    assert [name for name, _ in names].count("WorkerLoadTime") == 1
    model_metrics = _parsed(logs / "model_metrics.log", PLAIN_LINE)
    timed = [METRIC.fullmatch(line.group(1)) for line in model_metrics]
    assert [line.group(1, 2, 4) for line in timed if line] == [
        ("HandlerTime", "ms", "ModelName:loud,Level:Model"),
        ("PredictionTime", "ms", "ModelName:loud,Level:Model"),
    ]


@pytest.mark.slow
def test_log_location_and_metrics_location_move_the_files(cli: TorchServeCli) -> None:
    archive(cli.store, "echo", ECHO, cli.work)
    moved, metrics = cli.work / "moved", cli.work / "metrics"
    cli.extra_env = {"LOG_LOCATION": str(moved), "METRICS_LOCATION": str(metrics)}
    args = ["--start", "--model-store", str(cli.store), "--models", "echo.mar"]
    started = cli.run(*args, "--ts-config", cli.properties())
    assert started.returncode == 0, started.stderr
    assert f"log: {moved / 'ts_log.log'}" in started.stdout
    assert cli.run("--stop").returncode == 0
    assert {path.name for path in moved.iterdir()} == set(LOG_FILES)
    assert {path.name for path in metrics.iterdir()} == set(METRIC_FILES)
    assert not (cli.work / "logs").exists()

    cli.extra_env = {}
    config = cli.properties("log_location=elsewhere\n")
    started = cli.run(*args, "--ts-config", config)
    assert started.returncode == 0, started.stderr
    assert cli.run("--stop").returncode == 0
    assert {path.name for path in (cli.work / "elsewhere").iterdir()} == set(LOG_FILES)
    assert {path.name for path in (cli.work / "logs").iterdir()} == set(METRIC_FILES)


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
