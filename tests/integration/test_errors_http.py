"""Every error status over real HTTP: a JSON error, no traceback, and the server keeps serving."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from serve.process.granian_engine import GRANIAN_CHUNKED
from tests.fixtures import handler_styles as styles
from tests.fixtures.modeldirs import model_dir
from tests.fixtures.models import DigitsModel
from tests.fixtures.server import ServerProcess, start_server
from tests.fixtures.waiting import wait_until


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, digits: DigitsModel, engine: str
) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("errors")
    directory = model_dir(
        root / "m", digits.directory, {"code/inference.py": styles.TOOLKIT_ANY_CODEC}
    )
    process = start_server(directory, root / "logs", env={"SAGEMAKER_MAX_REQUEST_SIZE": "4096"})
    yield process
    process.stop(10)


def _check_error(response: requests.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json"
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code
    assert error["request_id"] == response.headers["X-Request-Id"]
    assert "Traceback" not in response.text and 'File "' not in response.text
    return error


CASES: list[tuple[str, str, dict[str, Any], int, str]] = [
    (
        "post",
        "/invocations",
        {"data": b"[[1, 2", "headers": {"Content-Type": "application/json"}},
        400,
        "bad_request",
    ),
    (
        "post",
        "/invocations",
        # ragged rows, taken whole (an npy answer; a JSON one reads each line alone)
        {"data": b"1,2\n3", "headers": {"Content-Type": "text/csv", "Accept": "application/x-npy"}},
        400,
        "bad_request",
    ),
    (
        "post",
        "/invocations",
        {"data": b"not an image", "headers": {"Content-Type": "image/png"}},
        400,
        "bad_request",
    ),
    ("get", "/no-such-route", {}, 404, "not_found"),
    ("get", "/invocations", {}, 405, "method_not_allowed"),
    (
        "post",
        "/invocations",
        {"json": [[0.0] * 64], "headers": {"Accept": "application/x-protobuf"}},
        406,
        "not_acceptable",
    ),
    (
        "post",
        "/invocations",
        {"data": b"[" + b"0.0," * 2000 + b"0]", "headers": {"Content-Type": "application/json"}},
        413,
        "payload_too_large",
    ),
    (
        "post",
        "/invocations",
        {"data": b"<xml/>", "headers": {"Content-Type": "application/xml"}},
        415,
        "unsupported_media_type",
    ),
    ("post", "/invocations", {"json": [[1.0, 2.0, 3.0]]}, 500, "model_error"),
]


@pytest.mark.parametrize(("method", "path", "kwargs", "status", "code"), CASES)
def test_error_statuses(
    server: ServerProcess,
    digits: DigitsModel,
    method: str,
    path: str,
    kwargs: dict[str, Any],
    status: int,
    code: str,
) -> None:
    response = getattr(requests, method)(f"{server.url}{path}", timeout=10, **kwargs)
    _check_error(response, status, code)
    healthy = requests.post(
        f"{server.url}/invocations", json=digits.images[:1].tolist(), timeout=10
    )
    assert healthy.status_code == 200


def test_chunked_body_over_the_limit_is_413(server: ServerProcess, engine: str) -> None:
    def chunks() -> Iterator[bytes]:
        yield b"["
        for _ in range(2000):
            yield b"0.0,"
        yield b"0]"

    response = requests.post(
        f"{server.url}/invocations",
        data=chunks(),
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    if engine == "granian":  # no chunked body is read there
        _check_error(response, 411, "length_required")
    else:
        _check_error(response, 413, "payload_too_large")


def test_inference_id_is_the_request_id(server: ServerProcess) -> None:
    response = requests.post(
        f"{server.url}/invocations",
        data=b"{",
        timeout=10,
        headers={"Content-Type": "application/json", "X-Amzn-SageMaker-Inference-Id": "my-id-1"},
    )
    assert _check_error(response, 400, "bad_request")["request_id"] == "my-id-1"
    assert "my-id-1" in server.log()


def test_timeout_is_504_and_503_before_the_model_loads(
    tmp_path: Path, serve_model: Callable[..., ServerProcess]
) -> None:
    directory = tmp_path / "slow"
    (directory / "code").mkdir(parents=True)
    (directory / "code" / "inference.py").write_text(styles.TOOLKIT_SLOW)
    (directory / "load_delay").write_text("3")
    server = serve_model(directory, args=["--timeout", "0.5"], wait=False)
    server_url = server.url
    deadline = time.monotonic() + 30  # the first answer; the model takes 3 s to load after it
    while True:
        assert server.alive(), f"the server exited:\n{server.log()}"
        assert time.monotonic() < deadline, f"no answer within 30 s:\n{server.log()}"
        try:
            response = requests.post(f"{server_url}/invocations", json={}, timeout=5)
            break
        except requests.ConnectionError:  # not listening yet
            time.sleep(0.02)
    _check_error(response, 503, "not_ready")
    assert requests.get(f"{server_url}/ping", timeout=2).status_code == 503
    server.wait_ready(30)
    crashed = requests.post(f"{server_url}/invocations", json={"crash": True}, timeout=10)
    message = _check_error(crashed, 500, "model_error")["message"]
    assert message == "RuntimeError: the model fell over"
    assert "Traceback" in server.log()  # the traceback goes to the log, not the caller
    assert requests.post(f"{server_url}/invocations", json={}, timeout=10).json() == {"slept": 0}
    slow = requests.post(f"{server_url}/invocations", json={"sleep": 2}, timeout=10)
    _check_error(slow, 504, "timeout")


# Requests whose framing is wrong, sent over a raw socket: answered with the JSON error body and
# "Connection: close", logged as the client's mistake (no ERROR, no traceback).
POST = b"POST /invocations HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
RAW_CASES: list[tuple[str, bytes, int, str, str]] = [
    (
        "malformed chunk size",
        POST + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n",
        400,
        "bad_request",
        "malformed request body",
    ),
    (
        "unknown transfer coding",
        POST + b"Transfer-Encoding: xchunked\r\n\r\n",
        501,
        "not_implemented",
        "Unsupported transfer coding",
    ),
    ("malformed request line", b"BLAH\r\n\r\n", 400, "bad_request", "request line"),
    (
        "header over the size limit",
        b"GET /ping HTTP/1.1\r\nHost: test\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n",
        431,
        "header_fields_too_large",
        "limit request headers",
    ),
]


def _raw_exchange(port: int, data: bytes, *, half_close: bool = False) -> bytes:
    """Send ``data`` on a new connection (then shut its sending side, if asked) and read all
    the server sends until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


def _check_raw_error(
    received: bytes, status: int, code: str, *, closes: bool = True
) -> dict[str, Any]:
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    assert status_line.startswith(f"HTTP/1.1 {status} "), received[:300]
    headers = {name.lower(): value.strip() for name, _, value in (h.partition(":") for h in lines)}
    assert headers["content-type"] == "application/json"
    if closes:  # where a next request would start is unknown
        assert headers["connection"] == "close"
    assert int(headers["content-length"]) == len(body)
    error: dict[str, Any] = json.loads(body)["error"]
    assert error["code"] == code
    assert error["request_id"] == headers["x-request-id"] != ""
    return error


def _log_after(server: ServerProcess, offset: int, expected: str) -> str:
    """The server's log from ``offset`` on, once ``expected`` is in it."""
    wait_until(
        lambda: expected in server.log()[offset:],
        10,
        f"{expected!r} in the log",
        detail=lambda: server.log()[offset:],
    )
    return server.log()[offset:]


def _check_logged_as_the_clients_mistake(log: str) -> None:
    assert "Traceback" not in log and " ERROR " not in log, log


@pytest.mark.parametrize(
    ("data", "status", "code", "message"),
    [case[1:] for case in RAW_CASES],
    ids=[case[0] for case in RAW_CASES],
)
@pytest.mark.engines(
    "gunicorn",
    reason="granian's parser (hyper) answers these itself, before the app: the next test",
)
def test_what_gunicorn_parses_is_refused_as_json(
    server: ServerProcess, data: bytes, status: int, code: str, message: str
) -> None:
    offset = len(server.log())
    error = _check_raw_error(_raw_exchange(server.port, data), status, code)
    assert message in error["message"]
    _check_logged_as_the_clients_mistake(_log_after(server, offset, error["request_id"]))
    assert requests.get(f"{server.url}/ping", timeout=10).status_code == 200


@pytest.mark.engines("granian", reason="what granian's parser does; gunicorn's: the test before")
def test_what_granian_parses_is_refused(server: ServerProcess) -> None:
    """A chunked body is refused (411) before a byte of it is read: granian's WSGI input would end
    a malformed one without a word. What hyper refuses itself (an unknown transfer coding, a
    malformed request line, headers well over its 408 KB buffer) gets its bare 400/431 and a
    close. (A header block up to about twice the buffer can get through whole in the read that
    crosses it: measured, 30% of 500 KB ones were answered 200.)"""
    offset = len(server.log())
    malformed_chunk = RAW_CASES[0][1]
    received = _raw_exchange(server.port, malformed_chunk)
    error = _check_raw_error(received, 411, "length_required", closes=False)
    assert error["message"] == GRANIAN_CHUNKED
    huge_header = b"GET /ping HTTP/1.1\r\nHost: test\r\nX-Big: " + b"a" * 2_000_000 + b"\r\n\r\n"
    for data, status in [(RAW_CASES[1][1], 400), (RAW_CASES[2][1], 400), (huge_header, 431)]:
        head = _raw_exchange(server.port, data).partition(b"\r\n\r\n")[0].decode().lower()
        assert head.startswith(f"http/1.1 {status} ") and "\r\nconnection: close" in head, head
    assert requests.get(f"{server.url}/ping", timeout=10).status_code == 200
    _check_logged_as_the_clients_mistake(server.log()[offset:])


@pytest.mark.parametrize(
    ("framing", "closes"),
    [
        (b"Transfer-Encoding: chunked\r\n\r\n40\r\n[[0.0, 1.0", True),
        (b"Content-Length: 64\r\n\r\n[[0.0, 1.0", False),  # the client is gone anyway
    ],
    ids=["chunked", "content-length"],
)
def test_a_body_cut_short_by_the_client_is_a_400(
    server: ServerProcess, framing: bytes, closes: bool, engine: str
) -> None:
    """The client half-closes mid-body: its request is refused (400), never a 500; granian
    refuses a chunked body before reading it (411)."""
    offset = len(server.log())
    received = _raw_exchange(server.port, POST + framing, half_close=True)
    if engine == "granian" and b"chunked" in framing:
        error = _check_raw_error(received, 411, "length_required", closes=False)
        assert error["message"] == GRANIAN_CHUNKED
    else:
        error = _check_raw_error(received, 400, "bad_request", closes=closes)
        assert error["message"] == "the request body was cut short"
    _check_logged_as_the_clients_mistake(_log_after(server, offset, error["request_id"]))
    assert requests.get(f"{server.url}/ping", timeout=10).status_code == 200
