"""GET /metrics through Flask's test client, with the echo handler and a one-process observer."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from werkzeug.test import Client

from serve.observe.metrics import PrometheusObserver
from tests.fixtures.apps import AppModel, make_app
from tests.unit.test_app import EchoHandler, GatedHandler, make_client, overload


def sample(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` in Prometheus text format that carry ``labels``
    (whatever their other labels); 0 when there is none."""
    wanted = {f'{key}="{value}"' for key, value in labels.items()}
    total = 0.0
    for line in text.splitlines():
        match = re.fullmatch(r"([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)", line)
        if match is None or match.group(1) != name:
            continue
        if wanted <= set(filter(None, (match.group(2) or "").split(","))):
            total += float(match.group(3))
    return total


def observed_client(
    tmp_path: Path, handler: EchoHandler | None = None, **config: object
) -> tuple[Client, AppModel, PrometheusObserver]:
    observer = PrometheusObserver()
    test_client, model = make_app(handler or EchoHandler(), tmp_path, observer=observer, **config)
    return test_client, model, observer


@pytest.fixture
def client(tmp_path: Path) -> Iterator[Client]:
    test_client, runtime, _ = observed_client(tmp_path)
    yield test_client
    runtime.stop()


def metrics(client: Client) -> str:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    return response.get_data(as_text=True)


def test_requests_are_counted_by_route_and_status(client: Client) -> None:
    for _ in range(3):
        assert client.post("/invocations", json=[1]).status_code == 200
    assert client.post("/endpoints/x/invocations", json=[2]).status_code == 200
    assert client.get("/ping").status_code == 200
    bad = client.post("/invocations", data=b"{bad", content_type="application/json")
    assert bad.status_code == 400
    text = metrics(client)
    assert sample(text, "byoserve_requests_total", route="invocations", status="200") == 3
    assert sample(text, "byoserve_requests_total", route="endpoint_invocations", status="200") == 1
    assert sample(text, "byoserve_requests_total", route="ping", status="200") == 1
    assert sample(text, "byoserve_requests_total", route="invocations", status="400") == 1
    assert sample(text, "byoserve_errors_total", code="bad_request") == 1
    assert sample(text, "byoserve_request_duration_seconds_count", route="invocations") == 4


def test_scrapes_do_not_count_themselves(client: Client) -> None:
    first = metrics(client)
    second = metrics(client)
    assert sample(second, "byoserve_requests_total", route="metrics", status="200") == 0
    assert first.count("byoserve_requests_total{") == second.count("byoserve_requests_total{")


def test_batches_load_time_and_errors_are_recorded(client: Client) -> None:
    client.post("/invocations", json=[1])
    client.post("/invocations", json="boom")
    client.get("/nowhere")
    text = metrics(client)
    assert sample(text, "byoserve_batch_size_count") == 2
    assert sample(text, "byoserve_batch_size_bucket", le="1.0") == 2
    assert sample(text, "byoserve_model_load_seconds") > 0
    assert sample(text, "byoserve_errors_total", code="model_error") == 1
    assert sample(text, "byoserve_errors_total", code="not_found") == 1
    assert sample(text, "byoserve_requests_total", route="unmatched", status="404") == 1
    assert sample(text, "byoserve_queue_depth") == 0
    assert sample(text, "byoserve_ready_workers") == 1


def test_a_full_queue_is_counted_as_rejected(tmp_path: Path) -> None:
    handler = GatedHandler()
    test_client, runtime, _ = observed_client(tmp_path, handler, queue_size=1, threads=4)
    refused, *_ = overload(test_client, handler)
    assert refused.status_code == 503
    text = metrics(test_client)
    assert sample(text, "byoserve_rejected_total") == 1
    assert sample(text, "byoserve_errors_total", code="overloaded") == 1
    runtime.stop()


def test_metrics_answer_while_the_model_is_busy(tmp_path: Path) -> None:
    handler = GatedHandler()
    test_client, runtime, _ = observed_client(tmp_path, handler)
    scraper = Client(test_client.application)
    busy = threading.Thread(target=lambda: test_client.post("/invocations", json=[1]))
    busy.start()
    try:
        assert handler.entered.wait(30), "the request never reached the handler"
        assert scraper.get("/metrics").status_code == 200
        assert not handler.done.is_set()  # answered while the handler was still held
    finally:
        handler.release.set()
        busy.join(30)
        runtime.stop()


def test_metrics_are_404_without_an_observer(tmp_path: Path) -> None:
    test_client, runtime = make_client(EchoHandler(), tmp_path)
    assert test_client.get("/metrics").status_code == 404
    runtime.stop()


def test_multiprocess_dir_is_emptied_and_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prometheus_client import values

    from serve.observe.metrics import MULTIPROC_ENV, prepare_multiprocess_dir

    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    monkeypatch.setattr(values, "ValueClass", values.ValueClass)
    temporary, owned = prepare_multiprocess_dir(None)
    assert owned and temporary.is_dir()
    PrometheusObserver(temporary, owned=True).close()
    assert not temporary.exists()
    given = tmp_path / "given"
    given.mkdir()
    (given / "counter_1.db").write_bytes(b"stale")
    path, owned = prepare_multiprocess_dir(given)
    assert path == given and not owned and not list(given.glob("*.db"))
    observer = PrometheusObserver(path, owned=False)
    observer.close()
    assert given.exists()


def test_worker_connections_are_read_from_the_shares_at_each_scrape() -> None:
    from serve.process.worker import ConnectionShares

    shares = ConnectionShares(3)
    observer = PrometheusObserver()
    observer.track_connections(shares.held)
    shares.publish(0, 7)
    shares.publish(1, 9)
    shares.publish(2, None)  # loading: not shown
    text = observer.exposition()[0].decode()
    assert sample(text, "byoserve_worker_connections", slot="0") == 7
    assert sample(text, "byoserve_worker_connections", slot="1") == 9
    assert 'slot="2"' not in text
    shares.publish(0, 8)
    assert sample(observer.exposition()[0].decode(), "byoserve_worker_connections", slot="0") == 8
