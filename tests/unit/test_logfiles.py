"""TorchServe's log files: each line in the shape of its log4j2 pattern (read by the regexes
below, taken from those patterns), the model log's lines, the access and metric lines."""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from werkzeug.test import Client
from werkzeug.wrappers import Response

from serve.observe.access import AccessLog, access_logged, request_line
from serve.observe.logfiles import (
    ACCESS_LOG,
    LINE_LOGGERS,
    MODEL_LOG,
    LogFiles,
    ModelLogFormatter,
    TorchServeFormatter,
    configure_log_files,
    log_files_on,
)
from serve.observe.logs import log_model
from serve.observe.metriclines import MetricLines, metric_line

ISO8601 = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d,\d{3}"
LEVEL = r"\[(?:TRACE|DEBUG|INFO |WARN |ERROR|FATAL)\]"
# %d{ISO8601} [%-5p] %t %c - %m%n
SERVER_LINE = re.compile(rf"^{ISO8601} {LEVEL} (\S+) (\S+) - (.*)$")
# %d{ISO8601} - %m%n
PLAIN_LINE = re.compile(rf"^{ISO8601} - (.*)$")
# /127.0.0.1:53680 "POST /predictions/mnist HTTP/1.1" 200 12
ACCESS = re.compile(r'^/[0-9a-f.:]+ "(GET|POST|PUT|DELETE) (\S+) HTTP/1\.[01]" (\d{3}) (\d+)$')
# TorchServe's own parser of metric lines (frontend Metric.PATTERN)
METRIC = re.compile(
    r"\s*([\w\s]+)\.([\w\s]+):([0-9\-,.e]+)\|#([^|]*)(\|#type:([^|,]+))?\|#hostname:([^,]+),"
    r"([^,]+)(,(.*))?"
)


def _record(message: str, level: int = logging.INFO, **extra: Any) -> logging.LogRecord:
    record = logging.LogRecord("serve.cli", level, __file__, 1, message, (), None)
    record.__dict__.update(extra)
    return record


def test_a_server_line_has_log4j2s_pattern() -> None:
    line = TorchServeFormatter().format(_record("serving echo", logging.WARNING))
    match = SERVER_LINE.match(line)
    assert match is not None, line
    assert line.split(" ")[1] == "[WARN" and match.group(2) == "serve.cli"
    assert match.group(3) == "serving echo"


def test_every_line_of_a_traceback_is_prefixed() -> None:
    try:
        raise RuntimeError("weights are corrupt")
    except RuntimeError:
        record = logging.LogRecord(
            "serve.runtime", logging.ERROR, __file__, 1, "load failed", (), sys.exc_info()
        )
    lines = TorchServeFormatter().format(record).splitlines()
    assert len(lines) > 3
    assert all(SERVER_LINE.match(line) for line in lines), lines
    assert lines[1].endswith(" - Traceback (most recent call last):")
    assert lines[-1].endswith(" - RuntimeError: weights are corrupt")


def test_a_thread_name_with_spaces_stays_one_word() -> None:
    line = TorchServeFormatter().format(_record("x", threadName="Thread-3 (work)"))
    match = SERVER_LINE.match(line)
    assert match is not None and match.group(1) == "Thread-3_(work)"


def test_a_model_line_names_the_worker_stream_and_model_log() -> None:
    formatter = ModelLogFormatter()
    out = formatter.format(_record("loaded", model="echo", process=41))
    err = formatter.format(_record("careful", logging.WARNING, model="echo", process=41))
    for line, stream in ((out, "stdout"), (err, "stderr")):
        match = SERVER_LINE.match(line)
        assert match is not None, line
        assert match.group(1) == f"W-41-echo-{stream}" and match.group(2) == MODEL_LOG


def test_a_metric_line_is_what_torchserve_parses() -> None:
    line = metric_line("Requests2XX", "Count", 1, [("Level", "Host")], "myhost")
    match = METRIC.fullmatch(line)
    assert match is not None, line
    assert match.group(1, 2, 3, 4, 7) == ("Requests2XX", "Count", "1.0", "Level:Host", "myhost")
    assert re.fullmatch(r"timestamp:\d{10}", match.group(8))


def test_the_request_line_is_nettys() -> None:
    environ = {
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": "53680",
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/predictions/mnist",
        "QUERY_STRING": "a=1",
        "SERVER_PROTOCOL": "HTTP/1.1",
    }
    assert request_line(environ) == '/127.0.0.1:53680 "POST /predictions/mnist?a=1 HTTP/1.1"'
    environ["RAW_URI"] = "/predictions/mnist?a=%31"  # the target as sent (gunicorn)
    assert request_line(environ).endswith(' "POST /predictions/mnist?a=%31 HTTP/1.1"')


@pytest.fixture
def log_files(tmp_path: Path) -> Iterator[LogFiles]:
    """TorchServe's files configured in this process, everything put back afterwards."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level, sys.stdout, sys.stderr
    named = {name: logging.getLogger(name) for name in (*LINE_LOGGERS, MODEL_LOG)}
    levels = {name: (logger.handlers[:], logger.level) for name, logger in named.items()}
    log_model("")
    files = LogFiles(tmp_path / "logs", tmp_path / "metrics")
    yield files
    for handler in [*root.handlers, *(h for logger in named.values() for h in logger.handlers)]:
        handler.close()
    root.handlers[:], root.level, sys.stdout, sys.stderr = saved
    for name, (handlers, level) in levels.items():
        named[name].handlers[:], named[name].level = handlers, level
    log_model("")


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_the_files_are_created_at_start_where_they_are_told(log_files: LogFiles) -> None:
    assert not log_files_on()
    configure_log_files(log_files, logging.INFO)
    assert log_files_on()
    names = {path.name for path in log_files.logs.iterdir()}
    assert names == {"ts_log.log", "model_log.log", "access_log.log"}
    metrics = {path.name for path in log_files.metrics.iterdir()}
    assert metrics == {"ts_metrics.log", "model_metrics.log"}


def test_a_models_lines_and_its_output_go_to_the_model_log(log_files: LogFiles) -> None:
    configure_log_files(log_files, logging.INFO)

    def work() -> None:
        log_model("echo")
        logging.getLogger("user.handler").info("compiled\nwith inductor")
        print("printed by the handler")
        print("to stderr", file=sys.stderr)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    logging.getLogger("serve.cli").info("the server's own")
    model = _lines(log_files.logs / "model_log.log")
    parsed = [SERVER_LINE.match(line) for line in model]
    assert all(parsed), model
    assert [match.group(3) for match in parsed if match] == [
        "compiled",
        "with inductor",
        "printed by the handler",
        "to stderr",
    ]
    assert {match.group(2) for match in parsed if match} == {MODEL_LOG}
    assert model[-1].split(" ")[1:3] == ["[WARN", "]"]
    server = _lines(log_files.logs / "ts_log.log")
    assert all(SERVER_LINE.match(line) for line in server), server
    assert server[0].endswith(" user.handler - compiled") and len(server) == 5


def test_access_and_counter_lines(log_files: LogFiles) -> None:
    configure_log_files(log_files, logging.WARNING)

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        status = 404 if environ["PATH_INFO"] == "/missing" else 200
        return Response("x", status=status)(environ, start_response)

    logged = access_logged(app)
    assert isinstance(logged, AccessLog)
    client = Client(logged)
    peer = {"REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": "53680"}
    with client.post("/predictions/echo", data=b"1", environ_base=peer) as answer:
        assert answer.status_code == 200
        assert not (log_files.logs / "access_log.log").read_text()  # not before it is sent
    with client.get("/missing", environ_base=peer) as answer:
        assert answer.status_code == 404
    MetricLines("myhost").handler_call("echo", 0.01234)
    access = [PLAIN_LINE.match(line) for line in _lines(log_files.logs / "access_log.log")]
    requests = [ACCESS.match(match.group(1)) for match in access if match]
    assert [match.group(1, 2, 3) for match in requests if match] == [
        ("POST", "/predictions/echo", "200"),
        ("GET", "/missing", "404"),
    ]
    counters = [PLAIN_LINE.match(line) for line in _lines(log_files.metrics / "ts_metrics.log")]
    names = [METRIC.fullmatch(match.group(1)) for match in counters if match]
    assert [match.group(1) for match in names if match] == ["Requests2XX", "Requests4XX"]
    model = [PLAIN_LINE.match(line) for line in _lines(log_files.metrics / "model_metrics.log")]
    timed = [METRIC.fullmatch(match.group(1)) for match in model if match]
    assert [match.group(1, 2, 3, 4) for match in timed if match] == [
        ("HandlerTime", "ms", "12.34", "ModelName:echo,Level:Model"),
        ("PredictionTime", "ms", "12.34", "ModelName:echo,Level:Model"),
    ]
    # written whatever the server's level (WARNING here), and into the server log too
    assert sum(f" {ACCESS_LOG} - " in line for line in _lines(log_files.server_path)) == 2


def test_without_the_files_the_app_is_served_as_is() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> Any:
        return []

    assert not log_files_on()
    assert access_logged(app) is app


def test_the_metric_lines_observer_hands_every_event_on(log_files: LogFiles) -> None:
    from serve.observe.metriclines import MetricLinesObserver, with_metric_lines
    from serve.observe.metrics import PrometheusObserver

    prometheus = PrometheusObserver()
    assert with_metric_lines(prometheus) is prometheus  # no log files: nothing added
    configure_log_files(log_files, logging.INFO)
    observer = with_metric_lines(prometheus)
    assert isinstance(observer, MetricLinesObserver)
    observer.model_loaded("echo", 1.5, 0)
    observer.batch_done("echo", 2, 0.25)
    observer.request_done("invocations", 200, 0.3, None, "echo")
    exposition = observer.exposition()
    assert exposition is not None
    text = exposition[0].decode()
    for sample in (
        'byoserve_model_load_seconds{model="echo"} 1.5',
        'byoserve_batch_size_count{model="echo"} 1.0',
        'byoserve_requests_total{model="echo",route="invocations",status="200"} 1.0',
    ):
        assert sample in text
    server = _lines(log_files.metrics / "ts_metrics.log")
    assert len(server) == 1 and " - WorkerLoadTime.Milliseconds:1500.0|#WorkerName:W-" in server[0]
    model = _lines(log_files.metrics / "model_metrics.log")
    assert [line.split(" - ")[1].split("|")[0] for line in model] == [
        "HandlerTime.ms:250.0",
        "PredictionTime.ms:250.0",
    ]
