"""granian's connection share-out (serve/process/shareout.py) on real sockets: counting a
process's connections on a port, how many answers close theirs, and which answers may."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest

from serve.process import shareout
from serve.process.shareout import ShareOut, handing_over, held_connections
from serve.process.worker import ConnectionShares


class Listener:
    """A listening socket on loopback and the connections it accepted from clients here."""

    def __init__(self, stack: ExitStack) -> None:
        self.stack = stack
        self.sock = stack.enter_context(socket.create_server(("127.0.0.1", 0)))
        self.port: int = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self.clients: list[socket.socket] = []

    def connect(self, count: int) -> None:
        for _ in range(count):
            client = socket.create_connection(("127.0.0.1", self.port))
            self.clients.append(self.stack.enter_context(client))
            self.accepted.append(self.stack.enter_context(self.sock.accept()[0]))


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as stack:
        yield stack


def test_the_connections_held_on_a_port_are_counted(stack: ExitStack) -> None:
    """Accepted connections on the port count; the listener, the client ends (another local
    port) and another port's connections do not; a closed one stops counting."""
    served, other = Listener(stack), Listener(stack)
    served.connect(5)
    other.connect(2)
    known: dict[int, bool] = {}
    assert held_connections(served.port, known) == 5
    assert held_connections(served.port, known) == 5  # from what it knew
    assert held_connections(other.port) == 2
    served.accepted.pop().close()
    assert held_connections(served.port, known) == 4
    assert sum(known.values()) == 4  # a closed socket is forgotten


def test_many_connections_are_counted(stack: ExitStack) -> None:
    served = Listener(stack)
    served.connect(256)
    assert held_connections(served.port) == 256


def _shareouts(stack: ExitStack, split: tuple[int, int]) -> tuple[ShareOut, ShareOut]:
    """Two workers' share-outs in one process: each counts the connections of its own port."""
    shares = ConnectionShares(2)
    outs = []
    for slot, count in enumerate(split):
        listener = Listener(stack)
        listener.connect(count)
        outs.append(ShareOut(shares, slot, listener.port, lambda: True))
    return outs[0], outs[1]


def test_half_the_excess_is_handed_over_then_the_siblings_count_again(
    stack: ExitStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shareout, "PERIOD_S", 0.0)  # the siblings' next count is late enough
    few, many = _shareouts(stack, (5, 11))
    assert few.count() == 5
    assert many.count() == 11
    assert few.to_close == 0
    assert many.to_close == 3  # 3 moved to the sibling would make 8/8
    assert [many.take_one() for _ in range(4)] == [True, True, True, False]
    many.count()
    assert many.to_close == 0  # the sibling's count may not hold the moved ones yet
    few.count()
    many.count()
    assert many.to_close == 3  # nothing moved meanwhile: again


def test_a_split_within_one_hands_nothing_over(stack: ExitStack) -> None:
    even, odd = _shareouts(stack, (7, 8))
    even.count()
    odd.count()
    assert (even.to_close, odd.to_close) == (0, 0)
    assert not odd.take_one()


def test_a_loading_worker_takes_no_share_and_hands_nothing_over(stack: ExitStack) -> None:
    few, many = _shareouts(stack, (1, 6))
    loading = True
    few.ready = lambda: not loading
    few.count()
    many.count()
    assert many.to_close == 0  # its only sibling is loading: nowhere to go
    loading = False
    few.count()
    many.count()
    assert many.to_close == 2
    many.ready = lambda: False  # while loading itself, it keeps what it has
    many.count()
    many.count()
    assert many.to_close == 0


def _answer(shareout: ShareOut, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The headers sent for an answer with ``headers`` through :func:`handing_over`."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        start_response("200 OK", headers)
        return [b"ok"]

    sent: list[tuple[str, str]] = []

    def start_response(status: str, given: list[tuple[str, str]], exc_info: Any = None) -> None:
        sent.extend(given)

    handing_over(app, shareout)({}, start_response)
    return sent


def test_only_whole_answers_close_and_only_as_many_as_are_to_move(stack: ExitStack) -> None:
    few, many = _shareouts(stack, (2, 6))
    few.count()
    many.count()
    assert many.to_close == 2
    whole = [("Content-Type", "text/plain"), ("Content-Length", "2")]
    streamed = [("Content-Type", "text/plain")]
    close = ("Connection", "close")
    assert close not in _answer(many, streamed)  # a stream is never cut short
    assert close in _answer(many, whole)
    assert close in _answer(many, whole)
    assert close not in _answer(many, whole)
    assert close not in _answer(few, whole)
