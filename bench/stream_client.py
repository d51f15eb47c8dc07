"""A client that times a streamed answer piece by piece: when each piece's last byte arrived.

It reads the chunked body with http.client's ``read1``, which returns what the socket has as
soon as it has it (never waiting to fill a buffer, as requests' ``iter_content`` does), and
counts pieces by their terminating newline, so pieces split or joined on the way count right.
"""

from __future__ import annotations

import http.client
import statistics
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

DELIMITER = b"\n"


@dataclass
class StreamTimes:
    """One stream: when it was asked for, and when each of its pieces was complete (seconds on
    ``time.perf_counter``'s clock)."""

    started: float
    pieces: list[float] = field(default_factory=list)

    def feed(self, data: bytes, now: float) -> None:
        """``data`` arrived at ``now``: each newline in it completes a piece."""
        self.pieces.extend([now] * data.count(DELIMITER))

    @property
    def first_piece_s(self) -> float:
        return self.pieces[0] - self.started

    @property
    def pieces_per_s(self) -> float:
        """Pieces a second from the first to the last (the intervals between them: n - 1)."""
        span = self.pieces[-1] - self.pieces[0]
        return (len(self.pieces) - 1) / span if span > 0 else 0.0


@dataclass(frozen=True)
class StreamSummary:
    """Medians over several streams."""

    streams: int
    first_piece_ms: float
    pieces_per_s: float

    @classmethod
    def of(cls, runs: Sequence[StreamTimes]) -> StreamSummary:
        return cls(
            len(runs),
            statistics.median(run.first_piece_s for run in runs) * 1000,
            statistics.median(run.pieces_per_s for run in runs),
        )


def read_stream(
    host: str, port: int, body: bytes, expected: int, start: threading.Barrier | None = None
) -> StreamTimes:
    """POST ``body`` to /invocations and time each piece of the answer; the connection is open
    before the clock starts (and before ``start``, when several streams start together).

    Raises:
        RuntimeError: the answer was not a 200 with ``expected`` pieces.
    """
    connection = http.client.HTTPConnection(host, port, timeout=60)
    try:
        connection.connect()
        if start is not None:
            start.wait()
        times = StreamTimes(time.perf_counter())
        connection.request(
            "POST",
            "/invocations",
            body,
            {"Content-Type": "application/json", "Accept": "application/octet-stream"},
        )
        response = connection.getresponse()
        if response.status != 200:
            raise RuntimeError(f"stream answered {response.status}: {response.read()[:200]!r}")
        while data := response.read1(65536):
            times.feed(data, time.perf_counter())
    finally:
        connection.close()
    if len(times.pieces) != expected:
        raise RuntimeError(f"stream gave {len(times.pieces)} pieces, not {expected}")
    return times


def read_streams(
    host: str, port: int, body: bytes, expected: int, streams: int
) -> list[StreamTimes]:
    """``streams`` streams asked for at the same moment, each read on its own thread."""
    if streams == 1:
        return [read_stream(host, port, body, expected)]
    start = threading.Barrier(streams)
    results: list[StreamTimes | BaseException] = [RuntimeError("no answer")] * streams

    def read(index: int) -> None:
        try:
            results[index] = read_stream(host, port, body, expected, start)
        except BaseException as exc:  # reported by the caller
            start.abort()
            results[index] = exc

    threads = [threading.Thread(target=read, args=(index,)) for index in range(streams)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return [result for result in results if isinstance(result, StreamTimes)]
