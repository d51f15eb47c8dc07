"""The load rows (``BENCH_ONLY=load``, ``make bench-load``; issue 23, item 2): more connections
than the server answers at once, where a queue that refuses what it could do shows.

- resnet18 under :data:`CONNECTIONS` ["resnet18"] connections and digit under
  :data:`CONNECTIONS` ["digit"], batch 8 / 10 ms, 2 workers, defaults otherwise, on each engine
  and on TorchServe 0.12 at the same settings and connections (wrk): non-2xx, throughput, p50 and
  p99, and p99 against connections / throughput, the time a request waits when every connection
  has one waiting and they are answered in turn (target: every answer 2xx, p99 within
  :data:`P99_TARGET` of it).
- overload: resnet18 with a :data:`OVERLOAD_TIMEOUT` s timeout (short, so that ten times what it
  answers within it is a number of connections this machine can open) under
  :data:`OVERLOAD_FACTOR` times the connections it answers within the timeout: its 2xx throughput
  under 64 connections, on the same server, times the timeout. Loaded by bench/overload.py, which
  times the answered requests apart from the refusals and follows ``Retry-After-Ms`` (target:
  the excess refused 503 with Retry-After, the answered requests' p99 inside the timeout).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from bench.overload import overload
from bench.peers import torchserve_loads
from bench.servers import byoserve_command, running
from bench.workloads import Workload
from bench.wrk import LoadResult, run_wrk, write_script
from serve.process.probe import free_port

ENGINES = ("gunicorn", "granian")
WORKERS = 2
BATCH, DELAY_MS = 8, 10.0
CONNECTIONS = {"resnet18": 64, "digit": 256}
P99_TARGET = 1.5
OVERLOAD_MODEL = "resnet18"
OVERLOAD_TIMEOUT = 2.0
OVERLOAD_FACTOR = 10
CAPACITY_SECONDS = 5.0  # the throughput the overload's connections are computed from
OVERLOAD_THREADS = 1024  # request threads per worker: every connection's request waits in sight
MAX_OVERLOAD_CONNECTIONS = 1600  # under gunicorn's 1,000 connections a worker, times 2


def server_args(engine: str, extra: tuple[str, ...] = ()) -> list[str]:
    return [
        "--workers", str(WORKERS), "--max-batch-size", str(BATCH),
        "--max-batch-delay-ms", f"{DELAY_MS:g}", "--http-engine", engine, *extra,
    ]  # fmt: skip


def wrk_load(url: str, script: Path, warmup: float, duration: float, conns: int) -> LoadResult:
    run_wrk(url, script, warmup, conns)
    return run_wrk(url, script, duration, conns)


def served_row(model: str, system: str, connections: int, result: LoadResult) -> dict[str, Any]:
    """A row of the table: wrk's numbers, and p99 against connections / throughput."""
    in_turn_ms = 1000 * connections / result.requests_per_s if result.requests_per_s else 0.0
    ratio = result.p99_ms / in_turn_ms if in_turn_ms else 0.0
    return {
        "model": model, "system": system, "connections": connections, **result.as_dict(),
        "good_per_s": result.good_per_s, "in_turn_ms": in_turn_ms, "p99_vs_in_turn": ratio,
        "met": result.errors == 0 and ratio <= P99_TARGET,
    }  # fmt: skip


def measure_served(
    work: Workload, scratch: Path, warmup: float, duration: float
) -> list[dict[str, Any]]:
    """``work`` under its connections on each engine, then on TorchServe."""
    conns = CONNECTIONS[work.name]
    script = write_script(scratch, work.payload, work.content_type)
    rows = []
    for engine in ENGINES:
        port = free_port()
        command = byoserve_command(work.model_dir, port, server_args(engine))
        with running(command, port, scratch / f"load-{work.name}-{engine}.log") as (url, _, _):
            result = wrk_load(f"{url}/invocations", script, warmup, duration, conns)
        system = f"byoserve {engine}, {WORKERS} workers, batch {BATCH} / {DELAY_MS:g} ms"
        rows.append(served_row(work.name, system, conns, result))
    peers = torchserve_loads(
        work, scratch, WORKERS, ((BATCH, DELAY_MS),),
        lambda url: wrk_load(url, script, warmup, duration, conns),
    )  # fmt: skip
    for size, delay, result in peers:
        system = f"TorchServe 0.12, {WORKERS} workers, batch {size} / {delay:g} ms"
        rows.append(served_row(work.name, system, conns, result))
    return rows


def measure_overload(
    work: Workload, scratch: Path, warmup: float, duration: float
) -> list[dict[str, Any]]:
    """On each engine: the throughput under 64 connections, then ten times the connections
    that throughput answers within the timeout."""
    script = write_script(scratch, work.payload, work.content_type)
    rows = []
    for engine in ENGINES:
        port = free_port()
        threads = OVERLOAD_THREADS
        extra = ("--timeout", f"{OVERLOAD_TIMEOUT:g}", "--threads", str(threads))
        command = byoserve_command(work.model_dir, port, server_args(engine, extra))
        log = scratch / f"overload-{engine}.log"
        with running(command, port, log) as (url, _, _):
            measured = wrk_load(f"{url}/invocations", script, warmup, CAPACITY_SECONDS, 64)
            capacity = max(1, math.floor(measured.good_per_s * OVERLOAD_TIMEOUT))
            conns = min(OVERLOAD_FACTOR * capacity, MAX_OVERLOAD_CONNECTIONS)
            result = overload(
                port, "/invocations", work.body(), work.content_type, conns, duration
            ).as_dict()
        p99_s = result["p99_ms"] / 1000
        rows.append({
            "model": work.name,
            "system": f"byoserve {engine}, {WORKERS} workers, batch {BATCH} / {DELAY_MS:g} ms, "
            f"timeout {OVERLOAD_TIMEOUT:g} s, {threads} threads",
            "capacity_per_s": measured.good_per_s, "answerable_connections": capacity,
            **result,
            "met": result["refused_503"] > 0
            and result["refused_with_retry_after"] == result["refused_503"]
            and not result["other_statuses"] and p99_s <= OVERLOAD_TIMEOUT,
        })  # fmt: skip
    return rows


def print_load_tables(served: list[dict[str, Any]], overloaded: list[dict[str, Any]]) -> None:
    print("\nload: batch 8 / 10 ms, 2 workers (wrk)")
    print(f"| {'model':8} | {'system':48} | {'conns':>5} | {'2xx/s':>7} | {'non-2xx':>8} | "
          f"{'p50 ms':>7} | {'p99 ms':>7} | {'conns/thr ms':>12} | {'p99 / it':>8} |")  # fmt: skip
    for r in served:
        print(f"| {r['model']:8} | {r['system']:48} | {r['connections']:5d} | "
              f"{r['good_per_s']:7.0f} | {r['errors']:8d} | {r['p50_ms']:7.1f} | "
              f"{r['p99_ms']:7.1f} | {r['in_turn_ms']:12.1f} | "
              f"{r['p99_vs_in_turn']:8.2f} |")  # fmt: skip
    print(f"\noverload: {OVERLOAD_MODEL}, {OVERLOAD_FACTOR}x the connections answerable within "
          f"the timeout (bench/overload.py)")  # fmt: skip
    for r in overloaded:
        print(f"  {r['system']}: capacity {r['capacity_per_s']:.0f}/s x {OVERLOAD_TIMEOUT:g} s "
              f"= {r['answerable_connections']} conns; under {r['connections']}: "
              f"{r['answered']} answered ({r['answered_per_s']:.0f}/s, p50 {r['p50_ms']:.0f} ms, "
              f"p99 {r['p99_ms']:.0f} ms), {r['refused_503']} x 503 "
              f"({r['refused_with_retry_after']} with Retry-After, median Retry-After-Ms "
              f"{r['retry_after_ms_median']}), other {r['other_statuses']}, "
              f"failures {r['failures']}")  # fmt: skip


def load_verdicts(served: list[dict[str, Any]], overloaded: list[dict[str, Any]]) -> dict[str, Any]:
    byoserve = [r for r in served if r["system"].startswith("byoserve")]
    return {
        "load_all_2xx_p99_within_1.5x": {
            "met": bool(byoserve) and all(r["met"] for r in byoserve),
            "rows": {f"{r['model']}: {r['system']}": r["met"] for r in byoserve},
        },
        "overload_refused_with_retry_after": {
            "met": bool(overloaded) and all(r["met"] for r in overloaded),
            "rows": {r["system"]: r["met"] for r in overloaded},
        },
    }
