"""``invoke --stream``: boto3's ``InvokeEndpointWithResponseStream`` against a stub runtime.

The stub is a real HTTP server on a free loopback port that answers
``POST /endpoints/<name>/invocations-response-stream`` as SageMaker's runtime does: a chunked
body of AWS event-stream messages, encoded here by hand from the format (12-byte prelude with
its CRC32, string headers, payload, CRC32 of the message), decoded by boto3 in the client.
The endpoint's name picks the stub's behaviour.
"""

from __future__ import annotations

import binascii
import json
import os
import queue
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.deploy.conftest import Result
from tests.fixtures.server import REPO

PIECES = (b"Once ", b"upon ", b"a time")
WAIT = 60.0  # seconds: a bound on waits for events that come at once when all is well


def _header(name: str, value: str) -> bytes:
    """One event-stream header of type 7 (string)."""
    encoded, text = name.encode(), value.encode()
    return struct.pack("!B", len(encoded)) + encoded + struct.pack("!BH", 7, len(text)) + text


def event_message(headers: dict[str, str], payload: bytes) -> bytes:
    """An AWS event-stream message: prelude (total and headers length, their CRC32), headers,
    payload, CRC32 of everything before it."""
    encoded = b"".join(_header(name, value) for name, value in headers.items())
    total = 12 + len(encoded) + len(payload) + 4
    prelude = struct.pack("!II", total, len(encoded))
    prelude += struct.pack("!I", binascii.crc32(prelude))
    message = prelude + encoded + payload
    return message + struct.pack("!I", binascii.crc32(message))


def payload_part(data: bytes) -> bytes:
    headers = {
        ":message-type": "event",
        ":event-type": "PayloadPart",
        ":content-type": "application/octet-stream",
    }
    return event_message(headers, data)


def model_stream_error(message: str) -> bytes:
    headers = {
        ":message-type": "exception",
        ":exception-type": "ModelStreamError",
        ":content-type": "application/json",
    }
    body = json.dumps({"Message": message, "ErrorCode": "ModelError"}).encode()
    return event_message(headers, body)


@dataclass
class Stub:
    """What the stub server saw and the events a test steers it with."""

    url: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)
    first_sent: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    rest_sent: threading.Event = field(default_factory=threading.Event)


def _handler(stub: Stub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            stub.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
            endpoint = self.path.split("/")[2]
            if endpoint == "refused":
                self._refuse()
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/vnd.amazon.eventstream")
            self.send_header("X-Amzn-SageMaker-Content-Type", "text/plain")
            self.send_header("X-Amzn-SageMaker-Custom-Attributes", "pieces=3")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self._chunk(payload_part(PIECES[0]))
            stub.first_sent.set()
            if endpoint == "paced":  # the rest only once the test saw the first piece printed
                stub.release.wait(WAIT)
            if endpoint == "failing":
                self._chunk(model_stream_error("the generator raised RuntimeError: boom"))
            elif endpoint == "broken":  # the body ends without its terminating chunk
                self.close_connection = True
                return
            else:
                for piece in PIECES[1:]:
                    self._chunk(payload_part(piece))
            stub.rest_sent.set()
            self.wfile.write(b"0\r\n\r\n")

        def _chunk(self, data: bytes) -> None:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

        def _refuse(self) -> None:
            answer = json.dumps(
                {
                    "Message": "Received client error (400) from primary with message "
                    '"prompt must be\na string\n"',  # the container's body, lines and all
                    "OriginalStatusCode": 400,
                    "OriginalMessage": "prompt must be a string",
                }
            ).encode()
            self.send_response(424)
            self.send_header("x-amzn-ErrorType", "ModelError")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


class QuietServer(ThreadingHTTPServer):
    """A client may hang up before the stub has written all (boto3 stops reading at an error
    event): that is no error of the test, and its traceback must not reach a later test's
    captured stderr."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


@pytest.fixture
def stub() -> Iterator[Stub]:
    state = Stub()
    server = QuietServer(("127.0.0.1", 0), _handler(state))
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_stream_prints_every_piece_and_sends_the_runtime_headers(
    stub: Stub, cli: Callable[..., Result]
) -> None:
    result = cli(
        "invoke", "textgen", "--stream", "--endpoint-url", stub.url, "--body", '{"seed": 7}',
        "--accept", "text/plain", "--custom-attributes", "trace=1",
    )  # fmt: skip
    assert result.code == 0, result.err
    assert result.out == "Once upon a time\n"
    assert result.err == "custom attributes: pieces=3\n"
    (sent,) = stub.requests
    assert sent["path"] == "/endpoints/textgen/invocations-response-stream"
    assert sent["headers"]["Content-Type"] == "application/json"
    assert sent["headers"]["X-Amzn-SageMaker-Accept"] == "text/plain"
    assert sent["headers"]["X-Amzn-SageMaker-Custom-Attributes"] == "trace=1"
    assert "Authorization" not in sent["headers"]  # unsigned: a local server needs no keys
    assert sent["body"] == b'{"seed": 7}'


def test_stream_error_event_fails_in_one_line_after_the_pieces(
    stub: Stub, cli: Callable[..., Result]
) -> None:
    result = cli("invoke", "failing", "--stream", "--endpoint-url", stub.url, "--body", "{}")
    assert result.code != 0
    assert result.out == "Once \n"  # what came before the error, its line ended
    assert result.err == (
        "deploy: failing stream failed: ModelStreamError: the generator raised RuntimeError: boom\n"
    )


def test_stream_refused_before_the_first_piece_is_a_model_error(
    stub: Stub, cli: Callable[..., Result]
) -> None:
    result = cli("invoke", "refused", "--stream", "--endpoint-url", stub.url, "--body", "{}")
    assert result.code != 0 and result.out == ""
    assert result.err == (
        "deploy: refused answered 400: ModelError: Received client error (400) from primary "
        'with message "prompt must be a string "\n'
    )


def test_stream_that_breaks_off_fails(stub: Stub, cli: Callable[..., Result]) -> None:
    result = cli("invoke", "broken", "--stream", "--endpoint-url", stub.url, "--body", "{}")
    assert result.code != 0
    assert result.out == "Once \n"
    assert result.err.startswith("deploy: broken stream broke off: ")
    assert result.err.count("\n") == 1


def test_stream_with_a_target_model_is_refused_without_a_request(
    stub: Stub, cli: Callable[..., Result]
) -> None:
    result = cli(
        "invoke", "catalog", "--stream", "--target-model", "digits.tar.gz",
        "--endpoint-url", stub.url, "--body", "{}",
    )  # fmt: skip
    assert result.code != 0 and result.out == ""
    assert result.err == (
        "deploy: --stream cannot go to a --target-model: multi-model endpoints do not stream\n"
    )
    assert stub.requests == []


def _read_into(fd: int, chunks: queue.Queue[bytes]) -> None:
    while data := os.read(fd, 4096):
        chunks.put(data)
    chunks.put(b"")


def test_stream_prints_each_piece_as_it_arrives(stub: Stub) -> None:
    """The CLI in a process of its own, its stdout a pipe with Python's buffering on: the first
    piece is on it while the stub still holds back the rest."""
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "deploy", "invoke", "paced", "--stream",
         "--endpoint-url", stub.url, "--body", "{}"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**environment, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        chunks: queue.Queue[bytes] = queue.Queue()
        reader = threading.Thread(target=_read_into, args=(proc.stdout.fileno(), chunks))
        reader.daemon = True
        reader.start()
        printed = b""
        while printed != PIECES[0]:
            chunk = chunks.get(timeout=WAIT)
            assert chunk, f"the CLI ended before printing the first piece: {printed!r}"
            printed += chunk
        assert not stub.rest_sent.is_set()
        stub.release.set()
        while chunk := chunks.get(timeout=WAIT):
            printed += chunk
        assert proc.wait(WAIT) == 0
        assert printed == b"".join(PIECES) + b"\n"
    finally:
        stub.release.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_stream_dry_run_shows_the_streaming_call(cli: Callable[..., Result]) -> None:
    result = cli(
        "invoke", "textgen", "--stream", "--endpoints-dir", str(REPO / "endpoints"),
        "--region", "us-east-1", "--dry-run", "--accept", "text/plain", "--body", "{}",
    )  # fmt: skip
    assert result.code == 0, result.err
    assert "sagemaker-runtime InvokeEndpointWithResponseStream " in result.out + result.err
    assert '"Accept": "text/plain"' in result.out + result.err


def test_stream_to_a_multi_model_endpoint_is_refused(cli: Callable[..., Result]) -> None:
    result = cli(
        "invoke", "catalog", "--stream", "--endpoints-dir", str(REPO / "endpoints"),
        "--region", "us-east-1", "--dry-run", "--body", "{}",
    )  # fmt: skip
    assert result.code != 0
    assert result.err == "deploy: catalog is a multi-model endpoint: it cannot stream\n"
