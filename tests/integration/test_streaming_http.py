"""Answers that stream, through the real server on both engines, over real sockets: each handler
style, each piece format, boto3's response stream, and the lifecycle (client gone, the per-piece
timeout, SIGTERM, several streams on one worker, back-pressure)."""

from __future__ import annotations

import concurrent.futures
import json
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from botocore.exceptions import ClientError, EventStreamError

from tests.fixtures import streaming
from tests.fixtures.chunks import BodyCutShortError, ChunkedResponse
from tests.fixtures.server import ServerProcess, runtime_client, start_server
from tests.fixtures.waiting import wait_until

Serve = Callable[..., ServerProcess]


def _toolkit_dir(root: Path) -> Path:
    (root / "code").mkdir(parents=True)
    (root / "code" / "inference.py").write_text(streaming.TOOLKIT)
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, engine: str) -> Iterator[ServerProcess]:
    """One worker serving the streaming toolkit module."""
    root = tmp_path_factory.mktemp("streams")
    process = start_server(_toolkit_dir(root / "model"), root / "logs")
    yield process
    process.stop(10)


def _wait_for(path: Path, limit: float = 20.0) -> dict[str, object]:
    wait_until(path.exists, limit, f"{path.name} written", every=0.01)
    loaded: dict[str, object] = json.loads(path.read_text())
    return loaded


def test_pieces_are_written_as_they_are_made(server: ServerProcess, tmp_path: Path) -> None:
    """The generator makes piece i only once the test has read piece i-1: a server that held a
    piece back would never see the next one made."""
    gate = tmp_path / "gate"
    gate.mkdir()
    body = {"n": 4, "gate": str(gate)}
    with ChunkedResponse(server.port, body, headers={"Accept": "text/plain"}) as response:
        assert response.status == 200
        assert response.chunked and "content-length" not in response.headers
        assert response.headers["content-type"].startswith("text/plain")
        for i in range(4):
            assert response.next_chunk() == f"piece{i} ".encode()
            (gate / str(i)).touch()
        assert response.next_chunk() is None


@pytest.mark.parametrize(
    ("accept", "dicts", "expected"),
    [
        ("text/plain", False, [b"piece0 ", b"piece1 ", b"piece2 "]),
        ("application/jsonlines", True, [b'{"i":0}\n', b'{"i":1}\n', b'{"i":2}\n']),
        ("text/event-stream", False, [b"data: piece%d \n\n" % i for i in range(3)]),
        ("text/event-stream", True, [b'data: {"i":%d}\n\n' % i for i in range(3)]),
    ],
)  # fmt: skip
def test_piece_format_follows_accept(
    server: ServerProcess, accept: str, dicts: bool, expected: list[bytes]
) -> None:
    body = {"n": 3, "dicts": dicts}
    with ChunkedResponse(server.port, body, headers={"Accept": accept}) as response:
        assert response.status == 200
        assert response.headers["content-type"].split(";")[0] == accept
        assert response.chunks() == expected


def test_streams_on_the_sagemaker_and_torchserve_routes(server: ServerProcess) -> None:
    for path in ("/endpoints/any/invocations", "/predictions/model"):
        with ChunkedResponse(server.port, {"n": 2}, path=path) as response:
            assert response.status == 200, path
            assert response.chunks() == [b"piece0 ", b"piece1 "], path


def test_a_failure_before_the_first_piece_is_an_error_answer(server: ServerProcess) -> None:
    response = requests.post(f"{server.url}/invocations", json={"fail_before": True}, timeout=10)
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "model_error"
    assert "no pieces for you" in response.json()["error"]["message"]


def test_a_failure_mid_stream_ends_the_body_without_its_last_chunk(
    server: ServerProcess,
) -> None:
    with ChunkedResponse(server.port, {"n": 5, "fail_after": 2}) as response:
        assert response.status == 200
        assert response.next_chunk() == b"piece0 "
        assert response.next_chunk() == b"piece1 "
        with pytest.raises(BodyCutShortError):
            response.next_chunk()
    log = _log_when(server, "broke after 2 pieces", "stream failed")
    assert log.count("failed: RuntimeError: broke after 2 pieces") == 1, log  # logged once
    assert "Traceback" in log
    assert "Application callable raised" not in log  # granian's own line is filtered


def _log_when(server: ServerProcess, *needles: str, limit: float = 10.0) -> str:
    wait_until(
        lambda: all(needle in server.log() for needle in needles),
        limit,
        f"{needles} in the log",
        detail=server.log,
    )
    return server.log()


def test_boto3_response_stream_decodes_every_piece(server: ServerProcess) -> None:
    client = runtime_client(server.url, retries={"max_attempts": 0})
    answer = client.invoke_endpoint_with_response_stream(
        EndpointName="local",
        Body=json.dumps({"n": 4, "dicts": True}),
        ContentType="application/json",
        Accept="application/jsonlines",
    )
    assert answer["ContentType"] == "application/jsonlines"
    events = list(answer["Body"])
    assert events == [{"PayloadPart": {"Bytes": f'{{"i":{i}}}\n'.encode()}} for i in range(4)]


def test_boto3_response_stream_raises_the_error_mid_stream(server: ServerProcess) -> None:
    client = runtime_client(server.url, retries={"max_attempts": 0})
    body = json.dumps({"n": 5, "fail_after": 2})
    answer = client.invoke_endpoint_with_response_stream(
        EndpointName="local", Body=body, ContentType="application/json"
    )
    received = []
    with pytest.raises(EventStreamError) as raised:
        for event in answer["Body"]:
            received.append(event["PayloadPart"]["Bytes"])
    assert received == [b"piece0 ", b"piece1 "]
    assert raised.value.response["Error"]["Code"] == "ModelStreamError"
    assert "broke after 2 pieces" in raised.value.response["Error"]["Message"]


def test_boto3_response_stream_error_before_the_first_piece_is_a_model_error(
    server: ServerProcess,
) -> None:
    client = runtime_client(server.url, retries={"max_attempts": 0})
    with pytest.raises(ClientError) as raised:
        client.invoke_endpoint_with_response_stream(
            EndpointName="local", Body=b'{"fail_before": true}', ContentType="application/json"
        )
    assert isinstance(raised.value, client.exceptions.ModelError)
    assert raised.value.response["OriginalStatusCode"] == 500
    assert "no pieces for you" in raised.value.response["OriginalMessage"]


def test_boto3_response_stream_of_a_whole_answer_is_one_part(server: ServerProcess) -> None:
    client = runtime_client(server.url, retries={"max_attempts": 0})
    answer = client.invoke_endpoint_with_response_stream(
        EndpointName="local", Body=b'{"whole": true}', ContentType="application/json"
    )
    assert answer["ContentType"] == "application/json"
    assert [event["PayloadPart"]["Bytes"] for event in answer["Body"]] == [b'{"answer":42}']


def test_a_client_that_leaves_closes_the_generator(server: ServerProcess, tmp_path: Path) -> None:
    marker = tmp_path / "ended.json"
    response = ChunkedResponse(server.port, {"n": 400, "pause": 0.02, "marker": str(marker)})
    received = [response.next_chunk(), response.next_chunk()]
    assert received == [b"piece0 ", b"piece1 "]
    response.close()
    ended = _wait_for(marker)
    assert ended["how"] == "GeneratorExit"
    # within a piece of noticing: the one made when the client left, and at most the one in flight
    made = ended["made"]
    assert isinstance(made, int) and made <= len(received) + 3, ended
    # the worker is free: another stream is answered whole
    with ChunkedResponse(server.port, {"n": 2}) as again:
        assert again.chunks() == [b"piece0 ", b"piece1 "]
    metrics = requests.get(f"{server.url}/metrics", timeout=10).text
    assert re.search(
        r'byoserve_streams_total\{model="model",outcome="client_gone"\} [1-9]', metrics
    )


def test_four_streams_on_one_worker_make_progress_together(server: ServerProcess) -> None:
    """Each of 4 streams has its first piece before any of them has its last."""
    firsts: list[float] = []
    lasts: list[float] = []
    lock = threading.Lock()

    def stream(tag: int) -> list[bytes]:
        with ChunkedResponse(server.port, {"n": 10, "pause": 0.03, "text": f"s{tag}-"}) as r:
            pieces = [r.next_chunk()]
            with lock:
                firsts.append(time.monotonic())
            pieces += r.chunks()
            with lock:
                lasts.append(time.monotonic())
            return [piece for piece in pieces if piece is not None]

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(stream, range(4)))
    for tag, pieces in enumerate(results):
        assert pieces == [f"s{tag}-{i} ".encode() for i in range(10)]
    assert max(firsts) < min(lasts), "a stream waited for another to finish"


def test_ping_and_metrics_answer_while_a_stream_is_open(
    server: ServerProcess, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    gate.mkdir()
    with ChunkedResponse(server.port, {"n": 2, "gate": str(gate)}) as open_stream:
        assert open_stream.next_chunk() == b"piece0 "
        # the generator now waits for the gate, holding the model's inference thread
        assert requests.get(f"{server.url}/ping", timeout=5).status_code == 200
        metrics = requests.get(f"{server.url}/metrics", timeout=5).text
        assert 'byoserve_streams_open{model="model"} 1.0' in metrics
        (gate / "0").touch()
        assert open_stream.chunks() == [b"piece1 "]


def test_the_timeout_bounds_each_piece_not_the_stream(serve_model: Serve, tmp_path: Path) -> None:
    server = serve_model(
        _toolkit_dir(tmp_path / "model"), env={"SAGEMAKER_MODEL_SERVER_TIMEOUT": "2"}
    )
    # 8 pieces, 0.5 s apart: 4 s in all, twice the timeout, each piece well within it
    with ChunkedResponse(server.port, {"n": 8, "pause": 0.5}) as slow:
        assert slow.chunks() == [f"piece{i} ".encode() for i in range(8)]
    # a piece that does not come within the timeout ends the stream as a failure
    with ChunkedResponse(server.port, {"n": 3, "stall_after": 1, "stall": 6}) as stalled:
        assert stalled.next_chunk() == b"piece0 "
        with pytest.raises(BodyCutShortError):
            stalled.next_chunk()
    _log_when(server, "no piece within 2 s", "stream failed")


def test_a_first_piece_too_late_is_a_timeout_and_leaves_nothing_open(
    serve_model: Serve, tmp_path: Path
) -> None:
    server = serve_model(
        _toolkit_dir(tmp_path / "model"),
        env={"SAGEMAKER_MODEL_SERVER_TIMEOUT": "1", "BYOSERVE_QUEUE_SIZE": "2"},
    )
    marker = tmp_path / "ended.json"
    late = {"n": 3, "stall_after": 0, "stall": 2, "marker": str(marker)}
    answers: list[requests.Response] = []

    def answered_late() -> bool:
        """A late stream's answer; while the one before it still runs past the timeout, the
        model is stuck and a request is refused at once (serve/runtime/health.py)."""
        answer = requests.post(f"{server.url}/invocations", json=late, timeout=10)
        if answer.status_code == 503:
            assert "is stuck" in answer.json()["error"]["message"], answer.text
            assert answer.headers["Retry-After"] == "1"
            return False
        answers.append(answer)
        return True

    for _ in range(2):
        wait_until(answered_late, 20, "a late stream's answer")
        assert answers[-1].status_code == 504, answers[-1].text
    # the late streams were dropped (their generator closed), not left counting as open
    assert _wait_for(marker)["how"] == "GeneratorExit"
    deadline = time.monotonic() + 20
    while (answer := requests.post(f"{server.url}/invocations", json={"n": 1})).status_code != 200:
        assert time.monotonic() < deadline, answer.text
        time.sleep(0.1)
    metrics = requests.get(f"{server.url}/metrics", timeout=10).text
    assert 'byoserve_streams_open{model="model"} 0.0' in metrics


def test_open_streams_count_against_the_queue_bound(serve_model: Serve, tmp_path: Path) -> None:
    server = serve_model(_toolkit_dir(tmp_path / "model"), env={"BYOSERVE_QUEUE_SIZE": "2"})
    streams = [ChunkedResponse(server.port, {"n": 300, "pause": 0.02}) for _ in range(2)]
    try:
        for stream in streams:
            assert stream.next_chunk() == b"piece0 "
        refused = requests.post(f"{server.url}/invocations", json={"n": 1}, timeout=10)
        assert refused.status_code == 503, refused.text
        assert refused.headers["Retry-After"]
    finally:
        for stream in streams:
            stream.close()
    # once their clients are gone the streams end, and requests are taken again
    deadline = time.monotonic() + 20
    while (
        answer := requests.post(f"{server.url}/invocations", json={"n": 1}, timeout=10)
    ).status_code == 503:
        assert time.monotonic() < deadline, "the closed streams still count"
        time.sleep(0.05)
    assert answer.status_code == 200 and answer.text == "piece0 "


def test_sigterm_lets_a_stream_finish_within_the_graceful_timeout(
    serve_model: Serve, tmp_path: Path
) -> None:
    server = serve_model(_toolkit_dir(tmp_path / "model"), env={"BYOSERVE_GRACEFUL_TIMEOUT": "20"})
    with ChunkedResponse(server.port, {"n": 6, "pause": 0.3}) as response:
        assert response.next_chunk() == b"piece0 "
        server.proc.send_signal(signal.SIGTERM)
        assert response.chunks() == [f"piece{i} ".encode() for i in range(1, 6)]
    assert server.wait_exit(30) == 0


def test_sigterm_ends_a_stream_longer_than_the_graceful_timeout(
    serve_model: Serve, tmp_path: Path
) -> None:
    """It ends 1 s before the graceful timeout is up, as a failure: logged, counted, and the body
    cut short (not merely cut when the worker is killed)."""
    server = serve_model(_toolkit_dir(tmp_path / "model"), env={"BYOSERVE_GRACEFUL_TIMEOUT": "3"})
    with ChunkedResponse(server.port, {"n": 400, "pause": 0.1}) as response:
        assert response.next_chunk() == b"piece0 "
        server.proc.send_signal(signal.SIGTERM)
        with pytest.raises(BodyCutShortError):
            response.chunks()
    server.wait_exit(30)
    log = server.log()
    assert "ending 1 open streams: the server is stopping" in log, log
    assert "stream failed" in log


@pytest.mark.parametrize("module", ["ts.handler_utils.utils", "ts.protocol.otf_message_handler"])
def test_a_torchserve_batch_of_four_streams(
    serve_model: Serve, tmp_path: Path, module: str
) -> None:
    root = tmp_path / "model"
    (root / "MAR-INF").mkdir(parents=True)
    (root / "MAR-INF" / "MANIFEST.json").write_text(json.dumps(streaming.TORCHSERVE_MANIFEST))
    (root / "stream_handler.py").write_text(streaming.TORCHSERVE.format(module=module))
    server = serve_model(root, args=["--max-batch-size", "4", "--max-batch-delay-ms", "2000"])
    names = ["a", "b", "c", "d"]

    def call(name: str) -> tuple[int, dict[str, str], list[bytes]]:
        headers = {"Content-Type": "text/plain"}
        with ChunkedResponse(
            server.port, name.encode(), path="/predictions/streams", headers=headers
        ) as response:
            return response.status, response.headers, response.chunks()

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = dict(zip(names, pool.map(call, names), strict=True))
    for name, (status, headers, chunks) in results.items():
        assert status == 200
        assert headers["x-batch-size"] == "4"  # one batch of 4, each its own pieces
        assert b"".join(chunks) == f"{name}:0 {name}:1 {name}:2 {name}:last".encode()
        assert len(chunks) == 4


def test_an_mms_handle_function_streams(serve_model: Serve, tmp_path: Path) -> None:
    root = tmp_path / "model"
    (root / "MAR-INF").mkdir(parents=True)
    (root / "MAR-INF" / "MANIFEST.json").write_text(json.dumps(streaming.MMS_MANIFEST))
    (root / "stream_service.py").write_text(streaming.MMS)
    server = serve_model(root)
    headers = {"Content-Type": "application/octet-stream"}
    with ChunkedResponse(server.port, b"x", path="/predictions/streams", headers=headers) as r:
        assert r.status == 200
        assert r.chunks() == [b"x-one ", b"x-two ", b"x-done"]
