"""The overload row's client: many keep-alive connections POSTing one request for a while, each
answer timed and kept by its status, so that the answered requests' p99 is known apart from the
refusals' (wrk times them together).

A connection answered 503 waits what its ``Retry-After-Ms`` says before it asks again, as a
client that follows the header does; the refusals that carry both ``Retry-After`` and
``Retry-After-Ms`` are counted.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

HOST = "127.0.0.1"


@dataclass
class Tally:
    """What the connections saw: answered latencies (s), refusals, other statuses, failures."""

    answered: list[float] = field(default_factory=list)
    refused: int = 0
    refused_with_retry_after: int = 0
    retry_after_ms: list[int] = field(default_factory=list)
    other: dict[int, int] = field(default_factory=dict)
    failures: int = 0


@dataclass(frozen=True)
class OverloadResult:
    connections: int
    seconds: float
    tally: Tally

    def as_dict(self) -> dict[str, Any]:
        answered = sorted(self.tally.answered)
        waits = sorted(self.tally.retry_after_ms)
        return {
            "connections": self.connections,
            "seconds": self.seconds,
            "answered": len(answered),
            "answered_per_s": len(answered) / self.seconds,
            "p50_ms": 1000 * statistics.median(answered) if answered else 0.0,
            "p99_ms": 1000 * answered[int(0.99 * (len(answered) - 1))] if answered else 0.0,
            "refused_503": self.tally.refused,
            "refused_with_retry_after": self.tally.refused_with_retry_after,
            "retry_after_ms_median": statistics.median(waits) if waits else 0,
            "other_statuses": {str(k): v for k, v in sorted(self.tally.other.items())},
            "failures": self.tally.failures,
        }


def request_bytes(port: int, path: str, body: bytes, content_type: str) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    status = int((await reader.readline()).split()[1])
    headers: dict[str, str] = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers


async def _connection(port: int, request: bytes, deadline: float, tally: Tally) -> None:
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    while time.monotonic() < deadline:
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(HOST, port)
            assert reader is not None
            started = time.monotonic()
            writer.write(request)
            await writer.drain()
            status, headers = await _answer(reader)
        except (OSError, ValueError, IndexError, asyncio.IncompleteReadError):
            tally.failures += 1
            if writer is not None:
                writer.close()
            reader = writer = None
            continue
        if headers.get("connection", "").lower() == "close":
            writer.close()
            reader = writer = None
        if 200 <= status < 300:
            tally.answered.append(time.monotonic() - started)
        elif status == 503:
            tally.refused += 1
            retry = headers.get("retry-after-ms")
            if retry is not None and "retry-after" in headers:
                tally.refused_with_retry_after += 1
                tally.retry_after_ms.append(int(retry))
                await asyncio.sleep(int(retry) / 1000)
        else:
            tally.other[status] = tally.other.get(status, 0) + 1
    if writer is not None:
        writer.close()


async def _load(port: int, request: bytes, connections: int, seconds: float) -> Tally:
    tally = Tally()
    deadline = time.monotonic() + seconds
    await asyncio.gather(*(_connection(port, request, deadline, tally) for _ in range(connections)))
    return tally


def overload(
    port: int, path: str, body: bytes, content_type: str, connections: int, seconds: float
) -> OverloadResult:
    """``connections`` connections POSTing ``body`` to ``path`` for ``seconds``."""
    request = request_bytes(port, path, body, content_type)
    tally = asyncio.run(_load(port, request, connections, seconds))
    return OverloadResult(connections, seconds, tally)
