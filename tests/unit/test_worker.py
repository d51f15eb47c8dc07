"""ConnectionShares: how workers tell each other how many connections they hold."""

from __future__ import annotations

import os
import time

import pytest

from serve.process import worker
from serve.process.worker import ConnectionShares


def test_slots_are_claimed_once_each() -> None:
    shares = ConnectionShares(3)
    assert shares.claim([]) == 0
    assert shares.claim([0]) == 1
    assert shares.claim([0, 2]) == 1  # the replacement of a worker takes over its slot
    assert shares.claim([0, 1, 2]) is None


def test_excess_is_counted_against_the_least_loaded_ready_sibling() -> None:
    shares = ConnectionShares(3)
    shares.publish(0, 5)
    shares.publish(1, 3)
    shares.publish(2, None)  # still loading: takes no share
    assert shares.excess(0) == 2
    assert shares.excess(1) == -2
    shares.publish(2, 1)
    assert shares.excess(0) == 4


def test_a_worker_alone_or_among_loading_ones_has_no_excess() -> None:
    shares = ConnectionShares(2)
    shares.publish(0, 9)
    shares.publish(1, None)
    assert shares.excess(0) == 0
    assert ConnectionShares(1).excess(0) == 0


def test_a_silent_sibling_is_not_waited_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker, "STALE_S", 0.05)
    shares = ConnectionShares(2)
    shares.publish(0, 4)
    shares.publish(1, 0)
    assert shares.excess(0) == 4
    time.sleep(0.1)
    shares.publish(0, 4)  # worker 0 is alive; worker 1 has not been heard from since
    assert shares.excess(0) == 0


def test_counts_are_shared_with_forked_children() -> None:
    shares = ConnectionShares(2)
    shares.publish(0, 0)
    pid = os.fork()
    if pid == 0:  # the child publishes; the parent must see it
        shares.publish(1, 7)
        os._exit(0)
    os.waitpid(pid, 0)
    assert shares.excess(1) == 7
