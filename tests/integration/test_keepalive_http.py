"""The keep-alive worker (serve/process/worker.py) over real sockets: consecutive and pipelined
requests on one connection, a quiet connection handed back and served later, more connections than
threads, an error answer that keeps its connection, and the connections a stopping worker holds."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from serve.http.router import HEALTHY
from serve.process.worker import STOP_LINGER_S
from tests.fixtures import handler_styles as styles
from tests.fixtures.server import ServerProcess
from tests.fixtures.waiting import wait_until

pytestmark = pytest.mark.slow

ECHO = """
def model_fn(model_dir):
    return None


def transform_fn(model, body, content_type, accept):
    return body, "application/octet-stream"
"""


@pytest.fixture
def echo(tmp_path: Path) -> Path:
    (tmp_path / "echo" / "code").mkdir(parents=True)
    (tmp_path / "echo" / "code" / "inference.py").write_text(ECHO)
    return tmp_path / "echo"


def _post(body: bytes) -> bytes:
    return (
        b"POST /invocations HTTP/1.1\r\nHost: test\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


def _read_responses(sock: socket.socket, count: int) -> list[bytes]:
    """Read ``count`` HTTP responses (each with a Content-Length) from a raw socket."""
    data, bodies = b"", []
    sock.settimeout(10)
    while len(bodies) < count:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed after {len(bodies)} responses"
            data += chunk
        head, _, data = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        length = next(
            int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )  # fmt: skip
        while len(data) < length:
            data += sock.recv(65536)
        bodies.append(data[:length])
        data = data[length:]
    return bodies


def test_consecutive_requests_on_one_connection(
    echo: Path, serve_model: Callable[..., ServerProcess]
) -> None:
    server = serve_model(echo)
    with socket.create_connection(("127.0.0.1", server.port)) as sock:  # fails if ever closed
        for index in range(200):
            sock.sendall(_post(f"request {index}".encode()))
            assert _read_responses(sock, 1) == [f"request {index}".encode()]
            if index == 100:
                time.sleep(0.1)  # quiet for longer than the linger: back to the poller, then reused


def test_pipelined_requests_are_all_answered_in_order(
    echo: Path, serve_model: Callable[..., ServerProcess]
) -> None:
    server = serve_model(echo)
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"".join(_post(f"pipelined {i}".encode()) for i in range(5)))
        assert _read_responses(sock, 5) == [f"pipelined {i}".encode() for i in range(5)]


def test_more_connections_than_threads_are_all_served(
    echo: Path, serve_model: Callable[..., ServerProcess]
) -> None:
    server = serve_model(echo, args=["--threads", "2"], env={"BYOSERVE_QUEUE_SIZE": "8"})
    sockets = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(6)]
    try:
        for round_ in range(3):
            for index, sock in enumerate(sockets):
                sock.sendall(_post(f"{round_}-{index}".encode()))
            for index, sock in enumerate(sockets):
                assert _read_responses(sock, 1) == [f"{round_}-{index}".encode()]
    finally:
        for sock in sockets:
            sock.close()
    status = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    status.request("GET", "/execution-parameters")
    assert json.loads(status.getresponse().read())["MaxConcurrentTransforms"] >= 1


def test_an_error_answer_keeps_the_connection(
    echo: Path, serve_model: Callable[..., ServerProcess]
) -> None:
    """A 4xx answer does not end the connection: the next request on it is served."""
    server = serve_model(echo)
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    connection.request("POST", "/no-such-route", b"x")
    refused = connection.getresponse()
    assert refused.status == 404
    refused.read()
    connection.request("POST", "/invocations", b"y", {"Content-Type": "text/plain"})
    answered = connection.getresponse()
    assert (answered.status, answered.read()) == (200, b"y")
    connection.close()


# Answers with the worker's pid. The first worker to load is ready at once; the others load
# only once the test creates the file "release", so the first one is alone until then.
WHO = """
import os
import time


def model_fn(model_dir):
    try:
        os.close(os.open(os.path.join(model_dir, "first"), os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        deadline = time.monotonic() + 120
        while not os.path.exists(os.path.join(model_dir, "release")):
            if time.monotonic() > deadline:
                raise RuntimeError("the test never released this worker")
            time.sleep(0.02)
    return None


def transform_fn(model, body, content_type, accept):
    return str(os.getpid()), "text/plain"
"""


def _served_by(connections: list[http.client.HTTPConnection]) -> list[str]:
    pids = []
    for connection in connections:  # http.client reconnects when told "Connection: close"
        connection.request("POST", "/invocations", b"x", {"Content-Type": "text/plain"})
        response = connection.getresponse()
        assert response.status == 200
        pids.append(response.read().decode())
    return pids


@pytest.mark.engines(
    "gunicorn",
    reason="a gunicorn worker takes no connection while it loads; granian's workers accept while "
    "they load (/ping 503): the test after this one shares connections out on both",
)
def test_connections_are_shared_out_evenly_between_workers(
    tmp_path: Path, serve_model: Callable[..., ServerProcess]
) -> None:
    (tmp_path / "who" / "code").mkdir(parents=True)
    (tmp_path / "who" / "code" / "inference.py").write_text(WHO)
    server = serve_model(tmp_path / "who", workers=2)
    connections = [
        http.client.HTTPConnection("127.0.0.1", server.port, timeout=10) for _ in range(8)
    ]
    try:
        first = _served_by(connections)
        assert len(set(first)) == 1  # the other worker is still loading: it takes no connection
        (tmp_path / "who" / "release").touch()
        deadline = time.monotonic() + 60
        while True:  # once it is ready, the busy worker hands connections over
            pids = _served_by(connections)
            counts = sorted(pids.count(pid) for pid in set(pids))
            if counts == [4, 4] or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert counts == [4, 4]
        assert _served_by(connections) == pids  # and then they stay where they are
    finally:
        for connection in connections:
            connection.close()


PID = """
import os


def model_fn(model_dir):
    return None


def transform_fn(model, body, content_type, accept):
    return str(os.getpid()), "text/plain"
"""


def _metric(connection: http.client.HTTPConnection, name: str) -> dict[str, float]:
    """The samples of ``name`` on /metrics, by their labels, scraped over ``connection``."""
    connection.request("GET", "/metrics")
    response = connection.getresponse()
    assert response.status == 200
    samples = {}
    for line in response.read().decode().splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            labels, _, value = line[len(name) :].rpartition(" ")
            samples[labels] = float(value)
    return samples


def test_keep_alive_connections_end_up_shared_out_evenly(
    tmp_path: Path, serve_model: Callable[..., ServerProcess]
) -> None:
    """16 keep-alive connections to 2 ready workers: whatever split the kernel (granian) or the
    accept race (gunicorn) gives them, the workers hand surplus ones over until each holds 8,
    every request is answered 200 on the way, and byoserve_worker_connections shows the split."""
    (tmp_path / "pid" / "code").mkdir(parents=True)
    (tmp_path / "pid" / "code" / "inference.py").write_text(PID)
    server = serve_model(tmp_path / "pid", workers=2)
    connections = [
        http.client.HTTPConnection("127.0.0.1", server.port, timeout=10) for _ in range(16)
    ]
    try:
        deadline = time.monotonic() + 60
        while _metric(connections[0], "byoserve_ready_workers").get("", 0) < 2:
            assert time.monotonic() < deadline, "the second worker never became ready"
            time.sleep(0.05)
        while True:  # http.client reconnects after "Connection: close", as wrk does
            pids = _served_by(connections)
            split = sorted(pids.count(pid) for pid in set(pids))
            shown = sorted(_metric(connections[0], "byoserve_worker_connections").values())
            if split == [8, 8] and shown == [8, 8]:
                break
            assert time.monotonic() < deadline, f"split {split}, shown {shown}"
        assert _served_by(connections) == pids  # and then they stay where they are
    finally:
        for connection in connections:
            connection.close()


PING = b"GET /ping HTTP/1.1\r\nHost: test\r\n\r\n"


def _exchange(sock: socket.socket, request: bytes) -> tuple[int, str, bytes]:
    """Send one request, read its response: status, Connection header, body."""
    sock.sendall(request)
    return _answer(sock)


def _answer(sock: socket.socket) -> tuple[int, str, bytes]:
    response = http.client.HTTPResponse(sock)  # raises if the connection is closed or reset
    response.begin()
    return response.status, response.getheader("Connection", ""), response.read()


def _wait_refused(port: int, within: float) -> None:
    """Until a new connection is refused (the worker closed its listener)."""

    def refused() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except ConnectionRefusedError:
            return True
        return False

    wait_until(refused, within, "new connections refused after SIGTERM", every=0.01)


@pytest.mark.engines(
    "gunicorn",
    reason="gunicorn's keep-alive worker answers on the connections it holds while it drains; "
    "granian closes the idle ones at once (the test after this one)",
)
def test_a_stopping_worker_answers_on_the_connections_it_holds(
    tmp_path: Path, serve_model: Callable[..., ServerProcess]
) -> None:
    """After SIGTERM new connections are refused, the request in flight finishes, and a request
    sent meanwhile on a connection already open is answered with "Connection: close" (also
    after the linger, while the one in flight lasts); no connection is reset."""
    (tmp_path / "slow" / "code").mkdir(parents=True)
    (tmp_path / "slow" / "code" / "inference.py").write_text(styles.TOOLKIT_SLOW)
    server = serve_model(tmp_path / "slow", env={"BYOSERVE_GRACEFUL_TIMEOUT": "20"})
    sockets = [socket.create_connection(("127.0.0.1", server.port), timeout=20) for _ in range(4)]
    busy, early, late, idle = sockets
    try:
        for sock in sockets:
            assert _exchange(sock, PING) == (200, "keep-alive", HEALTHY)
        busy.sendall(_post(b'{"sleep": 6}'))
        stopped = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        _wait_refused(server.port, within=3.0)
        assert _exchange(early, PING) == (200, "close", HEALTHY)
        early.close()
        time.sleep(max(0.0, stopped + STOP_LINGER_S + 0.5 - time.monotonic()))
        assert _exchange(late, _post(b'{"sleep": 0}')) == (200, "close", b'{"slept": 0}')
        late.close()
        assert _answer(busy) == (200, "close", b'{"slept": 6}')
        busy.close()
        assert server.wait_exit(20) == 0
        assert time.monotonic() - stopped < 20
        assert idle.recv(1) == b""  # closed in order, after the drain: no reset
    finally:
        for sock in sockets:
            sock.close()
    assert "Traceback" not in server.log()


@pytest.mark.engines("granian", reason="granian's drain; gunicorn's is the test before this one")
def test_granian_closes_idle_connections_at_once_and_finishes_the_one_in_flight(
    tmp_path: Path, serve_model: Callable[..., ServerProcess]
) -> None:
    """After SIGTERM granian closes its idle keep-alive connections in order (no reset: a client
    opens a new one, which is refused while this server stops), and answers the request in flight
    with "Connection: close"."""
    (tmp_path / "slow" / "code").mkdir(parents=True)
    (tmp_path / "slow" / "code" / "inference.py").write_text(styles.TOOLKIT_SLOW)
    server = serve_model(tmp_path / "slow", env={"BYOSERVE_GRACEFUL_TIMEOUT": "20"})
    sockets = [socket.create_connection(("127.0.0.1", server.port), timeout=20) for _ in range(3)]
    busy, *idle = sockets
    try:
        for sock in sockets:
            assert _exchange(sock, PING)[0] == 200
        started = tmp_path / "started"
        busy.sendall(_post(json.dumps({"sleep": 4, "started": str(started)}).encode()))
        wait_until(started.exists, 20, "the request reaching the model", every=0.01)
        stopped = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        _wait_refused(server.port, within=3.0)
        for sock in idle:
            assert sock.recv(1) == b""  # closed in order: a reset would raise
        assert time.monotonic() - stopped < 3
        assert _answer(busy) == (200, "close", b'{"slept": 4}')
        assert server.wait_exit(20) == 0
    finally:
        for sock in sockets:
            sock.close()
    assert "Traceback" not in server.log()
