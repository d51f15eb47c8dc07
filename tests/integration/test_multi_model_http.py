"""Many models in one server, over real HTTP with two workers: SageMaker's multi-model contract,
models of every handler style side by side with same-named files, loads and unloads under load,
the races between them, a killed worker, and memory handed back by unloads."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from tests.fixtures import multimodel
from tests.fixtures.models import DigitsModel
from tests.fixtures.server import ServerProcess, runtime_client
from tests.fixtures.waiting import wait_until

pytestmark = pytest.mark.slow

Serve = Callable[..., ServerProcess]
MME = {"SAGEMAKER_MULTI_MODEL": "true"}


def mme(serve_model: Serve, workers: int = 2, env: dict[str, str] | None = None) -> ServerProcess:
    """A server started as SageMaker starts a multi-model endpoint: no model, two workers."""
    return serve_model(None, workers=workers, env={**MME, **(env or {})})


def load(server: ServerProcess, name: str, url: Path | str, **fields: Any) -> requests.Response:
    body = {"model_name": name, "url": str(url), **fields}
    return requests.post(f"{server.url}/models", json=body, timeout=120)


def invoke(
    server: ServerProcess, name: str, image: Any, session: requests.Session | None = None
) -> requests.Response:
    return (session or requests).post(
        f"{server.url}/models/{name}/invoke",
        data=json.dumps(image),
        headers={"Content-Type": "application/json"},
        timeout=60,
    )


def error(response: requests.Response) -> dict[str, Any]:
    body: dict[str, Any] = response.json()["error"]
    assert "Traceback" not in body["message"]
    return body


@pytest.fixture
def image(digits: DigitsModel) -> Iterator[tuple[list[Any], int]]:
    """One held-out digit image (as JSON) and what the model says it is."""
    pixels = digits.images[0]
    yield pixels.tolist(), int(digits.predict(pixels[None]).argmax())


def answers_from_every_worker(
    server: ServerProcess, name: str, image: list[Any]
) -> dict[int, dict[str, Any]]:
    """One answer from each worker, once each reports the model loaded: connections held open
    are shared out evenly between workers, so the next new connection goes to one with fewer."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        pids = set(server.worker_pids())  # again each time: a worker just killed may linger
        workers = requests.get(f"{server.url}/models/{name}", timeout=10).json()["workers"]
        if {w["pid"] for w in workers if w["state"] == "loaded"} == pids:
            break
        time.sleep(0.05)
    answers: dict[int, dict[str, Any]] = {}
    sessions = []
    try:
        for _ in range(12):
            session = requests.Session()
            sessions.append(session)
            response = invoke(server, name, image, session)
            assert response.status_code == 200, response.text
            answers[response.json()["pid"]] = response.json()
            if set(answers) == pids:
                return answers
    finally:
        for session in sessions:
            session.close()
    raise AssertionError(f"{name}: answered by {sorted(answers)}, workers are {sorted(pids)}")


@dataclass
class Traffic:
    """What steady callers saw: the answers that were wrong, and how many they got."""

    failures: list[str] = field(default_factory=list)
    served: int = 0


@contextmanager
def steady_traffic(
    server: ServerProcess, names: list[str], image: tuple[list[Any], int]
) -> Iterator[Traffic]:
    """For the block, two callers per model keep invoking it on connections of their own; an
    answer other than a 200 from that model with the right digit is a failure."""
    pixels, digit = image
    traffic = Traffic()
    stop = threading.Event()

    def keep_invoking(name: str) -> None:
        with requests.Session() as session:
            while not stop.is_set():
                response = invoke(server, name, pixels, session)
                answer = response.json() if response.status_code == 200 else {}
                if (answer.get("tag"), answer.get("digit")) != (name, digit):
                    traffic.failures.append(f"{name}: {response.status_code} {response.text}")
                traffic.served += 1

    callers = [threading.Thread(target=keep_invoking, args=(n,)) for n in names for _ in "ab"]
    for caller in callers:
        caller.start()
    try:
        yield traffic
    finally:
        stop.set()
        for caller in callers:
            caller.join()


def listed(server: ServerProcess) -> list[str]:
    names, token = [], None
    while True:
        params = {"limit": "2", **({"next_page_token": token} if token else {})}
        page = requests.get(f"{server.url}/models", params=params, timeout=10).json()
        names += [model["modelName"] for model in page["models"]]
        token = page.get("nextPageToken")
        if token is None:
            return names


def test_a_sagemaker_mme_session_with_three_handler_styles(
    tmp_path: Path, digits: DigitsModel, serve_model: Serve, image: tuple[list[Any], int]
) -> None:
    server = mme(serve_model)
    assert requests.get(f"{server.url}/ping", timeout=5).status_code == 200
    assert requests.get(f"{server.url}/models", timeout=5).json() == {"models": []}
    models = {
        "toolkit-a": "toolkit",
        "toolkit-b": "toolkit",
        "ts-a": "torchserve",
        "ts-b": "torchserve",
        "mms-a": "mms",
    }
    for name, style in models.items():
        url = multimodel.build(style, tmp_path / name, name, digits)
        response = load(server, name, url)
        assert response.status_code == 200, response.text
        assert response.json() == {
            "status": f'Model "{name}" Version: 1.0 registered with 2 initial workers'
        }
    pixels, digit = image
    for name in models:  # each runs its own code, with its own helper.py, in every worker
        for answer in answers_from_every_worker(server, name, pixels).values():
            assert (answer["tag"], answer["helper"], answer["digit"]) == (name, name, digit)
    assert listed(server) == sorted(models)
    described = requests.get(f"{server.url}/models/ts-a", timeout=5).json()
    assert described["modelName"] == "ts-a"
    assert described["modelUrl"] == str(tmp_path / "ts-a")
    assert [w["state"] for w in described["workers"]] == ["loaded", "loaded"]
    target = requests.post(
        f"{server.url}/invocations",
        data=json.dumps(pixels),
        headers={"Content-Type": "application/json", "X-Amzn-SageMaker-Target-Model": "mms-a"},
        timeout=10,
    )
    assert target.json()["tag"] == "mms-a"

    conflict = load(server, "ts-a", tmp_path / "ts-a")
    assert conflict.status_code == 409 and "already loaded" in error(conflict)["message"]
    assert load(server, "nope", tmp_path / "missing").status_code == 404
    assert requests.delete(f"{server.url}/models/nope", timeout=10).status_code == 404
    assert invoke(server, "nope", pixels).status_code == 404
    unnamed = requests.post(f"{server.url}/invocations", json=pixels, timeout=10)
    assert unnamed.status_code == 400 and "Target-Model" in error(unnamed)["message"]

    with steady_traffic(server, ["toolkit-a", "mms-a"], image) as traffic:
        time.sleep(0.3)
        assert requests.delete(f"{server.url}/models/ts-b", timeout=60).status_code == 200
        time.sleep(0.3)
    assert traffic.failures == []
    assert invoke(server, "ts-b", pixels).status_code == 404
    assert listed(server) == sorted(set(models) - {"ts-b"})
    assert requests.get(f"{server.url}/ping", timeout=5).status_code == 200


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("not json", '"model_name" and "url"'),
        ('["a list"]', '"model_name" and "url"'),
        ('{"model_name": "m"}', '"model_name" and "url"'),
        ('{"model_name": "m", "url": "/x", "batchsize": 2}', "unknown fields batchsize"),
        ('{"model_name": "m", "url": "/x", "batch_size": 0}', "batch_size must be"),
        ('{"model_name": "../m", "url": "/x"}', "must not start with / or hold .."),
    ],
)
def test_a_bad_load_request_is_400(serve_model: Serve, body: str, message: str) -> None:
    server = mme(serve_model, workers=1)
    response = requests.post(f"{server.url}/models", data=body, timeout=10)
    assert response.status_code == 400
    assert message in error(response)["message"]


def test_a_load_request_with_a_broken_chunked_body_is_400(serve_model: Serve, engine: str) -> None:
    """Refused, never loaded (granian refuses any chunked body, 411: serve/http/sagemaker.py)."""
    server = mme(serve_model, workers=1)
    head = (
        f"POST /models HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(head.encode() + b"zz\r\n{}\r\n0\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):  # the answer closes the connection
            answer += chunk
    status, code = (411, "length_required") if engine == "granian" else (400, "bad_request")
    assert answer.startswith(f"HTTP/1.1 {status} ".encode()), answer[:200]
    assert f'"code":"{code}"'.encode() in answer.replace(b" ", b"")
    assert "Traceback" not in server.log()
    assert listed(server) == []


def test_failed_loads_answer_with_the_reason_and_the_server_stays_healthy(
    tmp_path: Path, digits: DigitsModel, serve_model: Serve, image: tuple[list[Any], int]
) -> None:
    server = mme(serve_model)
    good = multimodel.build("toolkit", tmp_path / "good", "good", digits)
    assert load(server, "good", good).status_code == 200
    broken = multimodel.build(
        "toolkit", tmp_path / "broken", "broken", digits, {"fail": "weights are corrupt"}
    )
    response = load(server, "broken", broken)
    assert response.status_code == 500
    assert "weights are corrupt" in error(response)["message"]
    hungry = multimodel.build("toolkit", tmp_path / "hungry", "h", digits, {"memory_error": True})
    response = load(server, "hungry", hungry)
    assert response.status_code == 507
    assert "MemoryError" in error(response)["message"]
    pixels, digit = image
    with requests.Session() as session:  # one connection: one worker answers, and loads
        # A worker holding more connections than a sibling answers "Connection: close" to hand
        # one over (serve/process/worker.py), and connections the client has closed count until
        # the worker notices: ask again until the answer keeps the connection, so the load
        # reaches the worker that answered.
        deadline = time.monotonic() + 30
        while True:
            answered = invoke(server, "good", pixels, session)
            if answered.headers.get("Connection", "").lower() != "close":
                break
            assert time.monotonic() < deadline, "every answer closed the connection"
        spared = answered.json()["pid"]
        plan = {"kill_except": spared}
        killer = multimodel.build("toolkit", tmp_path / "killer", "k", digits, plan)
        response = session.post(
            f"{server.url}/models", json={"model_name": "killer", "url": str(killer)}
        )
    assert response.status_code == 507
    assert "died while loading" in error(response)["message"]
    server.wait_workers(2)
    assert listed(server) == ["good"]  # none of the failed ones stays, in any worker
    assert load(server, "broken-again", broken).status_code == 500  # and it can be retried
    everyone = multimodel.build("toolkit", tmp_path / "all", "all", digits, {"kill": True})
    with pytest.raises(requests.ConnectionError):  # the worker answering dies too
        load(server, "everyone", everyone)
    server.wait_workers(2, without=spared)
    assert listed(server) == ["good"]  # the master took it out: replacements do not load it
    for answer in answers_from_every_worker(server, "good", pixels).values():
        assert answer["digit"] == digit


def test_budgets_are_checked_before_loading(
    tmp_path: Path, digits: DigitsModel, serve_model: Serve
) -> None:
    budget = {"BYOSERVE_MEMORY_BUDGET_MB": "64", "BYOSERVE_MAX_MODELS": "2"}
    server = mme(serve_model, env=budget)
    marker = tmp_path / "loaded.txt"
    big = multimodel.build("toolkit", tmp_path / "big", "big", digits, {"marker": str(marker)})
    (big / "weights.bin").write_bytes(b"\0" * (40 * 2**20))  # 40 MiB in each of 2 workers
    response = load(server, "big", big)
    assert response.status_code == 507
    assert "BYOSERVE_MEMORY_BUDGET_MB" in error(response)["message"]
    assert not marker.exists()  # refused before any of its code ran
    for name in ("one", "two"):
        assert load(server, name, multimodel.build("mms", tmp_path / name, name, digits)).ok
    third = load(server, "three", multimodel.build("mms", tmp_path / "three", "3", digits))
    assert third.status_code == 507
    assert "maximum of 2 models" in error(third)["message"]
    assert requests.delete(f"{server.url}/models/one", timeout=60).ok
    assert load(server, "three", tmp_path / "three").ok


def test_concurrent_loads_of_one_name_and_a_load_racing_an_unload(
    tmp_path: Path, digits: DigitsModel, serve_model: Serve
) -> None:
    server = mme(serve_model)
    slow = multimodel.build("toolkit", tmp_path / "slow", "slow", digits, {"load_delay": 1.5})
    with ThreadPoolExecutor(2) as pool:
        statuses = sorted(pool.map(lambda _: load(server, "twin", slow).status_code, range(2)))
    assert statuses == [200, 409]

    with ThreadPoolExecutor(1) as pool:
        loading = pool.submit(load, server, "raced", slow)
        wait_until(lambda: "raced" in listed(server), 10, "raced listed", every=0.02)
        unloaded = requests.delete(f"{server.url}/models/raced", timeout=60)
        assert unloaded.status_code == 200
        raced = loading.result()
    assert raced.status_code == 409
    assert "unloaded before it finished loading" in error(raced)["message"]
    assert listed(server) == ["twin"]
    assert requests.get(f"{server.url}/models/raced", timeout=5).status_code == 404


def test_an_unload_lets_the_requests_in_flight_finish(
    tmp_path: Path, digits: DigitsModel, serve_model: Serve, image: tuple[list[Any], int]
) -> None:
    server = mme(serve_model)
    url = multimodel.build("toolkit", tmp_path / "m", "m", digits)
    assert load(server, "m", url).ok
    pixels, digit = image
    with ThreadPoolExecutor(4) as pool:
        slow = [pool.submit(invoke, server, "m", {"image": pixels, "sleep": 1.5}) for _ in range(4)]
        time.sleep(0.5)  # all four are in a worker's queue or running
        started = time.monotonic()
        unloaded = requests.delete(f"{server.url}/models/m", timeout=60)
        elapsed = time.monotonic() - started
        answers = [future.result() for future in slow]
    assert unloaded.status_code == 200
    assert elapsed >= 0.5  # it waited for them
    assert [(a.status_code, a.json()["digit"]) for a in answers] == [(200, digit)] * 4
    assert invoke(server, "m", pixels).status_code == 404


def test_loads_and_unloads_interleaved_with_load_on_other_models(
    tmp_path: Path, digits: DigitsModel, serve_model: Serve, image: tuple[list[Any], int]
) -> None:
    server = mme(serve_model)
    steady = ["steady-toolkit", "steady-ts"]
    for style, name in zip(("toolkit", "torchserve"), steady, strict=True):
        assert load(server, name, multimodel.build(style, tmp_path / name, name, digits)).ok
    pixels, _ = image
    with steady_traffic(server, steady, image) as traffic:
        for cycle in range(3):
            for style in multimodel.STYLES:
                name = f"{style}-{cycle}"
                url = multimodel.build(style, tmp_path / name, name, digits)
                assert load(server, name, url).status_code == 200
                assert invoke(server, name, pixels).json()["tag"] == name
            for style in multimodel.STYLES:
                deleted = requests.delete(f"{server.url}/models/{style}-{cycle}", timeout=60)
                assert deleted.status_code == 200
    assert traffic.failures == []
    assert traffic.served > 50
    assert listed(server) == sorted(steady)


def test_a_killed_worker_comes_back_with_the_same_models(
    tmp_path: Path, digits: DigitsModel, serve_model: Serve, image: tuple[list[Any], int]
) -> None:
    server = mme(serve_model)
    names = {f"{style}-k": style for style in multimodel.STYLES}
    for name, style in names.items():
        assert load(server, name, multimodel.build(style, tmp_path / name, name, digits)).ok
    server.wait_workers(2)
    victim = server.worker_pids()[0]
    os.kill(victim, signal.SIGKILL)
    server.wait_workers(2, without=victim)
    pixels, digit = image
    for name in names:
        answers = answers_from_every_worker(server, name, pixels)
        assert victim not in answers
        assert {answer["digit"] for answer in answers.values()} == {digit}
    assert listed(server) == sorted(names)


def rss(pids: list[int]) -> int:
    return sum(int(Path(f"/proc/{pid}/statm").read_text().split()[1]) for pid in pids) * (
        os.sysconf("SC_PAGE_SIZE")
    )


def thread_counts(pids: list[int]) -> list[int]:
    statuses = [Path(f"/proc/{pid}/status").read_text().splitlines() for pid in pids]
    return [
        int(next(n for n in lines if n.startswith("Threads:")).split()[1]) for lines in statuses
    ]


def test_fifty_load_unload_cycles_hand_the_memory_back(
    serve_model: Serve, digits_archive: Path
) -> None:
    server = mme(serve_model)
    server.wait_workers(2)
    pids = server.worker_pids()

    def cycle() -> None:
        assert load(server, "digits", digits_archive).status_code == 200
        assert requests.delete(f"{server.url}/models/digits", timeout=60).status_code == 200

    cycle()  # torch is imported on the first load; where the memory starts is after it
    started, threads = rss(pids), thread_counts(pids)
    for _ in range(50):
        cycle()
    ended = rss(pids)
    assert server.worker_pids() == pids
    assert ended <= started * 1.10, f"RSS {started / 2**20:.0f} -> {ended / 2**20:.0f} MiB"
    # no thread of a model outlives it (a couple more request threads may have been started)
    assert all(now <= before + 2 for now, before in zip(thread_counts(pids), threads, strict=True))


@pytest.fixture
def store(tmp_path: Path, digits: DigitsModel, digits_archive: Path) -> Path:
    """A model store: the digits example, a copy of it, and a toolkit model directory."""
    store = tmp_path / "store"
    store.mkdir()
    shutil.copy(digits_archive, store / "digits.tar.gz")
    shutil.copy(digits_archive, store / "spare.tar.gz")
    multimodel.build("toolkit", store / "team" / "scorer", "scorer", digits)
    return store


def test_target_model_through_boto3_with_a_model_store(
    store: Path, serve_model: Serve, digits: DigitsModel, image: tuple[list[Any], int]
) -> None:
    from botocore.exceptions import ClientError

    server = serve_model(
        None,
        workers=2,
        args=["--model-store", str(store), "--models", "digits=digits.tar.gz", "--max-models", "2"],
    )
    client = runtime_client(server.url)
    pixels, digit = image
    png = _png(digits.images[0])

    def ask(target: str, body: bytes, content_type: str) -> Any:
        response = client.invoke_endpoint(
            EndpointName="local", TargetModel=target, Body=body, ContentType=content_type
        )
        return json.loads(response["Body"].read())

    assert ask("digits.tar.gz", png, "image/png")["digit"] == digit  # by its store path
    assert ask("digits", png, "image/png")["digit"] == digit  # by its name
    scorer = ask("team/scorer", json.dumps(pixels).encode(), "application/json")  # loaded now
    assert (scorer["tag"], scorer["digit"]) == ("scorer", digit)
    assert listed(server) == ["digits", "team/scorer"]
    assert ask("spare.tar.gz", png, "image/png")["digit"] == digit  # the LRU (digits) goes
    assert listed(server) == ["spare.tar.gz", "team/scorer"]
    for target, status in (("../store/digits.tar.gz", 400), ("/etc/passwd", 400), ("no", 404)):
        with pytest.raises(ClientError) as failure:
            ask(target, png, "image/png")
        assert failure.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
    assert requests.post(f"{server.url}/models", json={}, timeout=5).status_code == 405


def test_first_requests_for_one_target_at_once_load_it_once(
    store: Path, serve_model: Serve, digits: DigitsModel, image: tuple[list[Any], int]
) -> None:
    server = serve_model(None, workers=2, args=["--model-store", str(store)])
    client = runtime_client(server.url)
    png = _png(digits.images[0])

    def ask(_: int) -> int:
        response = client.invoke_endpoint(
            EndpointName="local", TargetModel="spare.tar.gz", Body=png, ContentType="image/png"
        )
        return int(json.loads(response["Body"].read())["digit"])

    with ThreadPoolExecutor(6) as pool:
        assert list(pool.map(ask, range(6))) == [image[1]] * 6
    assert listed(server) == ["spare.tar.gz"]
    assert server.log().count("model spare.tar.gz loaded in every worker") == 1


def _png(pixels: np.ndarray) -> bytes:
    from tests.fixtures.modeldirs import png

    return png(pixels)


def test_startup_models_from_the_environment_and_failures_named(
    tmp_path: Path, digits: DigitsModel, digits_archive: Path, serve_model: Serve
) -> None:
    store = tmp_path / "store"
    store.mkdir()
    shutil.copy(digits_archive, store / "digits.tar.gz")
    multimodel.build("mms", store / "scorer", "scorer", digits)
    server = serve_model(
        None, env={"BYOSERVE_MODEL_STORE": str(store), "BYOSERVE_MODELS": "all"}, workers=1
    )
    assert listed(server) == ["digits", "scorer"]
    multimodel.build("toolkit", store / "broken", "b", digits, {"fail": "weights are corrupt"})
    (store / "bad" / "code").mkdir(parents=True)
    (store / "bad" / "code" / "inference.py").write_text("def model_fn(:\n")
    failing = serve_model(
        None,
        args=["--model-store", str(store), "--models", "bad=bad", "gone.tar.gz", "digits.tar.gz"],
        wait=False,
    )
    assert failing.wait_exit(60) != 0
    log = failing.log()
    assert "model bad (" in log and "SyntaxError" in log
    assert "model gone (" in log and "does not exist" in log
    broken = serve_model(
        None, args=["--model-store", str(store), "--models", "broken", "scorer"], wait=False
    )
    assert broken.wait_exit(60) != 0
    assert (
        "model broken: code/inference.py: model_fn failed: RuntimeError: weights are corrupt"
        in (broken.log())
    )


def test_metrics_and_logs_name_the_model(
    tmp_path: Path, digits: DigitsModel, serve_model: Serve, image: tuple[list[Any], int]
) -> None:
    from tests.unit.test_metrics import sample

    server = mme(serve_model, workers=1)
    for name in ("alpha", "beta"):
        url = multimodel.build("mms", tmp_path / name, name, digits)
        assert load(server, name, url, batch_size=4, max_batch_delay=100).ok
    pixels, _ = image
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: invoke(server, "alpha", pixels), range(8)))
    assert invoke(server, "beta", [[1.0]]).status_code == 500
    text = requests.get(f"{server.url}/metrics", timeout=5).text
    assert sample(text, "byoserve_requests_total", route="invoke_model", model="alpha") == 8
    assert sample(text, "byoserve_batch_size_count", model="alpha") < 8  # batched, as registered
    assert sample(text, "byoserve_errors_total", model="beta", code="model_error") == 1
    assert sample(text, "byoserve_model_workers", model="beta") == 1
    assert sample(text, "byoserve_model_events_total", model="alpha", event="loaded") == 1
    assert requests.delete(f"{server.url}/models/alpha", timeout=30).ok
    text = requests.get(f"{server.url}/metrics", timeout=5).text
    assert sample(text, "byoserve_model_events_total", model="alpha", event="unloaded") == 1
    log = server.log()
    assert "model alpha loaded from service.py:handle in" in log
    assert re.search(r"ERROR serve\.runtime\.inference \[beta\]: request \w+ failed", log)
    assert "model alpha unloaded in" in log
