"""An asynchronous endpoint's large body (hundreds of MB) through a real server on each HTTP
engine: answered correctly, and what it costs the worker's memory measured.

The cost is the worker's peak resident memory (``VmHWM``) over what it held before the request
(``VmRSS``). Read whole by the engine and then copied, a body costs two or three times its size;
gathered through a temporary file (serve/http/spool.py) it costs itself once, plus a fixed
allowance for the pieces in flight and the allocator. The second request shows that the first
body was let go: were it still held, the second would cost twice.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.fixtures.server import ServerProcess, start_server

MIB = 1024 * 1024
BODY_MIB = 300
ALLOWANCE_MIB = 64
LIMIT = 1024 * MIB

DIGEST_HANDLER = """\
import hashlib
import json


def model_fn(model_dir):
    return None


def transform_fn(model, body, content_type, accept):
    digest = hashlib.sha256(body).hexdigest()
    return json.dumps({"length": len(body), "type": type(body).__name__, "sha256": digest})
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, engine: str) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("large")
    code = root / "model" / "code"
    code.mkdir(parents=True)
    (code / "inference.py").write_text(DIGEST_HANDLER)
    limits = {"SAGEMAKER_MAX_REQUEST_SIZE": str(LIMIT), "SAGEMAKER_MODEL_SERVER_TIMEOUT": "600"}
    process = start_server(root / "model", root / "logs", env=limits)
    yield process
    process.stop(10)


@pytest.fixture(scope="module")
def large_body(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A file of BODY_MIB MiB (sent from disk, so the test's own memory stays out of it) and
    its SHA-256."""
    path = tmp_path_factory.mktemp("body") / "body.bin"
    digest = hashlib.sha256()
    block = bytes(range(256)) * (MIB // 256)
    with path.open("wb") as out:
        for index in range(BODY_MIB):
            piece = index.to_bytes(4, "big") + block[4:]
            digest.update(piece)
            out.write(piece)
    return path, digest.hexdigest()


def _memory(pid: int) -> dict[str, int]:
    """The process's resident (VmRSS) and peak resident (VmHWM) memory, in MiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) // 1024
    return fields


def _post(server: ServerProcess, path: Path) -> dict[str, object]:
    with path.open("rb") as body:
        response = requests.post(
            f"{server.url}/invocations",
            data=body,
            headers={"Content-Type": "application/octet-stream"},
            timeout=300,
        )
    assert response.status_code == 200, response.text
    answer: dict[str, object] = response.json()
    return answer


def test_a_large_body_is_answered_and_costs_the_worker_about_one_copy(
    server: ServerProcess, large_body: tuple[Path, str]
) -> None:
    path, digest = large_body
    warm = requests.post(f"{server.url}/invocations", data=b"warm", timeout=60)
    assert warm.status_code == 200, warm.text
    (worker,) = server.worker_pids()
    before = _memory(worker)["VmRSS"]
    bound = 1.5 * BODY_MIB + ALLOWANCE_MIB
    for _ in range(2):
        answer = _post(server, path)
        assert answer == {"length": BODY_MIB * MIB, "type": "bytes", "sha256": digest}
        cost = _memory(worker)["VmHWM"] - before
        assert cost < bound, f"a {BODY_MIB} MiB body cost the worker {cost} MiB (bound {bound})"
    print(json.dumps({"body_mib": BODY_MIB, "peak_cost_mib": cost}))
