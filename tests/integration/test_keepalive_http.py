"""The keep-alive worker (serve/process/worker.py) over real sockets: consecutive and pipelined
requests on one connection, a quiet connection handed back and served later, more connections than
threads, and an error answer that keeps its connection."""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fixtures.server import ServerProcess

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


# Answers with the worker's pid. The first worker to load is ready at once; the others take a
# few seconds, so the first one is alone when the client connects.
WHO = """
import os
import time


def model_fn(model_dir):
    try:
        os.close(os.open(os.path.join(model_dir, "first"), os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        time.sleep(3)
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


def test_connections_are_shared_out_evenly_between_workers(
    tmp_path: Path, serve_model: Callable[..., ServerProcess]
) -> None:
    (tmp_path / "who" / "code").mkdir(parents=True)
    (tmp_path / "who" / "code" / "inference.py").write_text(WHO)
    server = serve_model(tmp_path / "who", workers=2)
    time.sleep(0.2)  # the ready worker publishes its state within milliseconds of loading
    connections = [
        http.client.HTTPConnection("127.0.0.1", server.port, timeout=10) for _ in range(8)
    ]
    try:
        first = _served_by(connections)
        assert len(set(first)) == 1  # the other worker is still loading: it takes no connection
        deadline = time.monotonic() + 30
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
