"""Admission by expected wait: the arithmetic on a fake clock, the queue's refusals by cause, and
how a refusal is answered (Retry-After, Retry-After-Ms, retry_after_ms)."""

from __future__ import annotations

import time

import pytest

from serve.contract import InferenceRequest
from serve.errors import OverloadedError
from serve.http.errors import error_body
from serve.runtime.admission import SLACK, WEIGHT, Admission
from serve.runtime.batching import MEMORY, WAIT, BatchQueue, QueueFullError


def request(size: int = 1) -> InferenceRequest:
    return InferenceRequest(body=b"x" * size, content_type="application/octet-stream", accept="*/*")


def test_before_the_first_batch_everything_fits() -> None:
    admission = Admission(max_batch=8)
    assert not admission.measured
    assert admission.excess(10_000, 0.0, 0.001) == 0.0
    assert admission.wait(10_000, 0.0) == 0.0
    assert admission.drain(5) == 1.0


def test_the_wait_is_the_full_batches_ahead_after_the_running_one() -> None:
    admission = Admission(max_batch=8, delay=0.01)
    admission.batch_done(4, 0.1)  # the first measure sets the means: 25 ms a request
    assert (admission.batch_seconds, admission.batch_size) == (0.1, 4.0)
    assert admission.full_batch() == pytest.approx(0.2)
    assert admission.wait(16, 100.0) == pytest.approx(0.4)  # two full batches ahead
    assert admission.wait(15, 100.0) == pytest.approx(0.2)  # it joins the second
    admission.batch_started(100.0, 2)  # 50 ms of work
    assert admission.wait(16, 100.03) == pytest.approx(0.02 + 0.4)  # the rest of the running one
    assert admission.wait(0, 100.5) == 0.0  # overrunning its estimate: no rest counted
    # its own batch, counted full, and the delay; the timeout less its slack
    fits = 1.0 * (1 + SLACK)
    assert admission.excess(16, 100.03, fits) == pytest.approx(0.42 + 0.2 + 0.01 - 1.0)
    assert admission.excess(16, 100.03, 0.6 * (1 + SLACK)) == pytest.approx(0.03)


def test_an_idle_model_takes_a_request_whatever_its_means_say() -> None:
    admission = Admission(max_batch=8)
    admission.batch_done(8, 5.0)  # measured on a busy machine: a batch takes 5 s
    assert admission.excess(0, 0.0, 1.0) == 0.0  # nothing queued or running: served at once
    admission.forming = True  # a batch waits for more: its requests' estimate holds
    assert admission.excess(0, 0.0, 1.0) > 0.0
    admission.batch_started(0.0, 8)
    assert admission.excess(0, 0.0, 1.0) > 0.0
    assert admission.excess(1, 10.0, 1.0) > 0.0


def test_the_means_follow_the_batches() -> None:
    admission = Admission()
    admission.batch_done(1, 0.01)
    admission.batch_done(8, 0.05)
    assert admission.batch_size == pytest.approx(1 + WEIGHT * 7)
    assert admission.batch_seconds == pytest.approx(0.01 + WEIGHT * 0.04)
    assert admission.running_since is None


def test_open_streams_add_their_round_of_pieces_to_every_batch() -> None:
    admission = Admission(max_batch=4)
    admission.batch_done(4, 0.1)
    admission.round_done(0.5, streams=2)
    assert admission.wait(8, 0.0) == pytest.approx(2 * (0.1 + WEIGHT * 0.5))
    admission.round_done(0.0, streams=0)  # the last stream ended
    assert admission.wait(8, 0.0) == pytest.approx(0.2)


def test_drain_is_at_least_one_batch() -> None:
    admission = Admission(max_batch=4)
    admission.batch_done(4, 0.1)
    assert admission.drain(1) == pytest.approx(0.1)
    assert admission.drain(12) == pytest.approx(0.3)


def test_the_queue_admits_while_the_wait_fits_and_refuses_beyond() -> None:
    queue = BatchQueue(max_requests=1000)
    queue.admission.max_batch = 2
    queue.admission.batch_done(2, 0.1)  # 0.1 s a full batch of 2
    queue.admission.forming = True  # busy: the estimate holds from the first request
    admitted = 0
    with pytest.raises(QueueFullError) as refused:
        while True:
            queue.put(request(), timeout=1.0)
            admitted += 1
    # depth d waits d // 2 full batches, then its own: it fits 1 s less its slack (a tenth:
    # 1 / 1.1 s) while d // 2 + 1 <= 9, so d <= 17
    assert admitted == 18
    assert refused.value.cause == WAIT
    assert refused.value.retry_after == pytest.approx(1.0 - 1 / (1 + SLACK), abs=0.01)
    assert queue.expected_wait() == pytest.approx(0.9, abs=0.01)


def test_the_hard_bound_counts_requests_and_open_streams() -> None:
    queue = BatchQueue(max_requests=3)
    queue.put(request(), timeout=60.0)
    queue.put(request(), streaming=1, timeout=60.0)
    with pytest.raises(QueueFullError) as refused:
        queue.put(request(), timeout=60.0, streaming=1)
    assert refused.value.cause == MEMORY
    assert refused.value.retry_after == 1.0  # nothing measured yet


def test_the_hard_bound_counts_bytes_until_the_batch_takes_them() -> None:
    queue = BatchQueue(max_requests=100, max_bytes=1000)
    queue.put(request(600), timeout=60.0)
    with pytest.raises(QueueFullError) as refused:
        queue.put(request(600), timeout=60.0)
    assert refused.value.cause == MEMORY
    batch = queue.gather(8, 0.0)
    assert batch is not None and len(batch) == 1
    queue.put(request(600), timeout=60.0)  # taken by the batch: its bytes no longer wait


def test_a_refusal_says_when_to_come_back_in_seconds_and_milliseconds() -> None:
    soon = OverloadedError("busy", 0.0004)
    assert soon.headers == {"Retry-After": "1", "Retry-After-Ms": "1"}
    later = OverloadedError("busy", 2.3001)
    assert later.headers == {"Retry-After": "3", "Retry-After-Ms": "2301"}
    assert later.fields == {"retry_after_ms": 2301}
    body = error_body(503, later.code, later.message, "rid", fields=later.fields)
    assert b'"retry_after_ms":2301' in body and b'"code":"overloaded"' in body
    torchserve = error_body(503, later.code, later.message, "rid", True, later.fields)
    assert b'"retry_after_ms":2301' in torchserve


def test_admission_costs_microseconds() -> None:
    queue = BatchQueue(max_requests=1_000_000)
    queue.admission.batch_done(8, 0.001)
    requests = [request() for _ in range(10_000)]
    started = time.perf_counter()
    for each in requests:
        queue.put(each, timeout=60.0)
    per_put = (time.perf_counter() - started) / len(requests)
    assert per_put < 50e-6, f"{per_put * 1e6:.1f} us a put"
