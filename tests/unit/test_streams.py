"""How pieces travel from the inference thread to the request thread (serve/runtime/streams.py),
and how the batch queue lets the inference thread turn to open streams between batches
(serve/runtime/batching.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from serve.contract import InferenceRequest, InferenceResponse
from serve.errors import InferenceTimeoutError
from serve.runtime.batching import BatchQueue, Pending, QueueClosedError, QueueFullError
from serve.runtime.streams import AHEAD, Channel
from tests.fixtures.streams import WAIT


class Calls:
    """A callback that counts its calls."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


def request(body: bytes = b"[1]") -> InferenceRequest:
    return InferenceRequest(body, "application/json", "application/json")


def in_thread(work: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    """Run ``work`` in a thread; its result (or exception) lands in the list."""
    result: list[Any] = []

    def run() -> None:
        try:
            result.append(work())
        except BaseException as exc:
            result.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, result


# Channel


def test_pieces_come_in_order_then_the_end() -> None:
    closed = Calls()
    channel = Channel(WAIT, on_closed=closed)
    for piece in (b"a", b"b", b"c"):
        channel.put(piece)
    channel.end()
    assert list(channel) == [b"a", b"b", b"c"]
    assert closed.count == 1
    channel.leave()  # the engine closes the body after the end: no second close
    assert closed.count == 1


def test_pieces_put_from_another_thread_arrive_as_put() -> None:
    channel = Channel(WAIT)
    taken: list[bytes] = []
    thread, _ = in_thread(lambda: taken.extend(channel))
    for index in range(50):
        channel.put(str(index).encode())
    channel.end()
    thread.join(WAIT)
    assert taken == [str(index).encode() for index in range(50)]


def test_a_failure_raises_the_error_after_the_pieces_before_it() -> None:
    closed = Calls()
    channel = Channel(WAIT, on_closed=closed)
    error = ValueError("broke at piece 2")
    channel.put(b"one")
    channel.fail(error)
    iterator = iter(channel)
    assert next(iterator) == b"one"
    with pytest.raises(ValueError) as raised:
        next(iterator)
    assert raised.value is error
    assert closed.count == 1
    channel.leave()
    assert closed.count == 1


def test_a_late_piece_raises_the_timeout_and_leaves_the_channel() -> None:
    closed = Calls()
    channel = Channel(0.05, on_closed=closed)
    channel.put(b"first")
    assert next(channel) == b"first"
    started = time.monotonic()
    with pytest.raises(InferenceTimeoutError) as late:
        next(channel)
    assert time.monotonic() - started >= 0.04
    assert "SAGEMAKER_MODEL_SERVER_TIMEOUT" in str(late.value)
    assert late.value.status_code == 504
    assert channel.left
    assert closed.count == 1
    channel.put(b"too late")  # the inference thread's later pieces are dropped
    assert not channel.full()
    channel.leave()
    assert closed.count == 1


def test_leaving_closes_once() -> None:
    closed = Calls()
    channel = Channel(WAIT, on_closed=closed)
    channel.put(b"a")
    channel.leave()
    channel.leave()
    channel.close()
    assert channel.left
    assert closed.count == 1


def test_taking_from_a_full_channel_makes_room() -> None:
    room = Calls()
    channel = Channel(WAIT, on_room=room)
    for index in range(AHEAD - 1):
        channel.put(b"%d" % index)
    assert not channel.full()
    channel.put(b"last")
    assert channel.full()
    assert room.count == 0
    assert next(channel) == b"0"
    assert room.count == 1 and not channel.full()
    assert next(channel) == b"1"  # it was not full: no call
    assert room.count == 1


# BatchQueue.gather


def test_gather_with_wait_zero_returns_at_once() -> None:
    queue = BatchQueue(8)
    thread, result = in_thread(lambda: queue.gather(4, 10.0, 0.0))
    thread.join(WAIT)
    assert result == [[]]


def test_gather_with_a_wait_takes_what_is_queued_without_the_batch_delay() -> None:
    """Streams wait for their next pieces: no batch fills for ``max_delay`` (here 30 s)."""
    queue = BatchQueue(8)
    first, _ = queue.put(request(b"[1]"))
    second, _ = queue.put(request(b"[2]"))
    thread, result = in_thread(lambda: queue.gather(4, 30.0, 0.0))
    thread.join(WAIT)
    assert not thread.is_alive(), "gather waited for the batch delay"
    assert result == [[first, second]]


def test_gather_with_a_wait_gives_up_after_it() -> None:
    queue = BatchQueue(8)
    started = time.monotonic()
    assert queue.gather(4, 0.0, 0.05) == []
    assert time.monotonic() - started >= 0.04


def test_wake_ends_a_waiting_gather() -> None:
    queue = BatchQueue(8)
    thread, result = in_thread(lambda: queue.gather(4, 0.0, 60.0))
    queue.wake()
    thread.join(WAIT)
    assert result == [[]]


def test_wake_does_not_end_a_gather_without_a_wait() -> None:
    queue = BatchQueue(8)
    queue.wake()
    pending, _ = queue.put(request())
    thread, result = in_thread(lambda: queue.gather(4, 0.0, None))
    thread.join(WAIT)
    assert result == [[pending]]


def test_gather_without_a_wait_waits_for_the_batch_delay() -> None:
    queue = BatchQueue(8)
    first, _ = queue.put(request())
    thread, result = in_thread(lambda: queue.gather(2, WAIT, None))
    second, _ = queue.put(request())
    thread.join(WAIT)
    assert result == [[first, second]]


def test_a_cancelled_request_is_skipped() -> None:
    queue = BatchQueue(8)
    gone, _ = queue.put(request(b"[1]"))
    kept, _ = queue.put(request(b"[2]"))
    queue.cancel(gone)
    assert queue.gather(4, 0.0, 0.0) == [kept]


def test_a_closed_queue_gathers_none_once_drained() -> None:
    queue = BatchQueue(8)
    pending, _ = queue.put(request())
    queue.close()
    with pytest.raises(QueueClosedError):
        queue.put(request())
    assert queue.gather(4, 0.0, None) == [pending]
    assert queue.gather(4, 0.0, None) is None


def test_open_streams_count_against_the_capacity() -> None:
    queue = BatchQueue(3)
    queue.put(request(), streaming=1)
    with pytest.raises(QueueFullError):
        queue.put(request(), streaming=2)
    pending, depth = queue.put(request(), streaming=1)
    assert depth == 1
    assert isinstance(pending, Pending)


def test_a_queued_request_is_its_own_sink() -> None:
    queue = BatchQueue(2)
    item = request()
    pending, _ = queue.put(item)
    assert item.sink is pending
    assert not pending.started


def test_the_first_pushed_piece_is_the_answer_and_the_rest_go_down_its_channel() -> None:
    opened: list[Channel] = []

    def open_channel() -> Channel:
        opened.append(Channel(WAIT))
        return opened[-1]

    queue = BatchQueue(2)
    pending, _ = queue.put(request(), open_channel)
    pending.send(InferenceResponse(b"first", "text/plain", status=201, headers={"X-Step": "1"}))
    assert pending.started and len(opened) == 1
    assert pending.done.acquire(timeout=0), "the first piece did not answer the request"
    answer = pending.response
    assert answer is not None and answer.body == b"first"
    assert answer.status == 201 and answer.headers == {"X-Step": "1"}
    assert answer.pieces is opened[0]
    pending.send(InferenceResponse(b"second", "text/plain", status=500, headers={"X-Step": "2"}))
    opened[0].end()
    assert list(opened[0]) == [b"second"]
    assert len(opened) == 1 and pending.response is answer
