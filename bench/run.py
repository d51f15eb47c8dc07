"""`make bench`: serve the two benchmark models, load them with wrk, compare with the limit.

Usage: python bench/run.py        (BENCH_QUICK=1 for a short smoke run)

Writes bench/results/results.json and bench/results/chart.png and prints the table. Settings
(environment): BENCH_QUICK, BENCH_DURATION (s), BENCH_WARMUP (s), BENCH_CONNECTIONS,
BENCH_WORKERS (default: the server's own default, one per core), BENCH_SKIP_SWEEP=1, and
BENCH_GPU_ONLY=1 (`make bench-gpu`: only the GPU rows, on a machine with CUDA, written to
bench/results/gpu.json; no TorchServe, no Java, a few minutes), and BENCH_ONLY=stream (only the
streaming rows, bench/streaming.py, written to bench/results/stream.json; a minute and a half), or
BENCH_ONLY=transform (only the batch transform row, bench/transform.py, written to
bench/results/transform.json; a few minutes; needs build/sentiment.tar.gz, `make model`), or
BENCH_ONLY=load (only the load rows, bench/load.py: 64 and 256 connections beside TorchServe, and
the overload row; written to bench/results/load.json; about five minutes).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/run.py`

from bench.chart import draw_chart
from bench.limit import cpu_limit, gpu_forward_limit
from bench.load import (
    OVERLOAD_MODEL,
    load_verdicts,
    measure_overload,
    measure_served,
    print_load_tables,
)
from bench.peers import torchserve_loads
from bench.servers import byoserve_command, plain_command, running
from bench.streaming import measure_streaming, print_stream_table, stream_verdicts
from bench.transform import main as measure_transform_row
from bench.workloads import Workload, build_noop, build_workloads
from bench.wrk import LoadResult, require_wrk, run_wrk, write_script
from serve.process.cpus import available_cpus
from serve.process.probe import free_port

RESULTS = Path(__file__).resolve().parent / "results"
# The served settings the table reports: (batch size, delay ms) per model.
BATCHED = {"digit": (8, 2.0), "resnet18": (8, 5.0)}
SWEEP = [(1, 0.0)] + [(size, delay) for size in (4, 8, 16) for delay in (0.0, 2.0, 5.0)]
ENGINES = ("gunicorn", "granian")  # BYOSERVE_HTTP_ENGINE
TORCHSERVE_DELAY_MS = 10.0  # TorchServe's batching as benchmark.md measured it (batch 8 / 10 ms)
WIDE = 64  # the second connection count of the p99 rows
GPU_BATCH = 32  # on CUDA, served against the bare batched forward at this batch size
GPU_DELAY_MS = 5.0
COPIES = 4  # the multi-model row: the digit workload spread over this many loaded models
# cold_start_s: process start to the first 200 on /ping, at most this much after `import torch`.
TARGETS = {
    "digit_ratio": 0.75, "digit_p99_ms": 20.0, "resnet18_ratio": 0.95, "cold_start_s": 0.3,
    "gpu_ratio": 0.8,
}  # fmt: skip


@dataclass(frozen=True)
class Settings:
    quick: bool
    duration: float
    warmup: float
    sweep_duration: float
    limit_seconds: float
    connections: int
    cpus: int
    workers: int | None
    cold_starts: int
    sweep: bool
    gpu_only: bool
    only: str

    @classmethod
    def from_env(cls) -> Settings:
        quick = os.environ.get("BENCH_QUICK", "") == "1"
        workers = os.environ.get("BENCH_WORKERS")
        return cls(
            quick=quick,
            duration=float(os.environ.get("BENCH_DURATION", 3 if quick else 15)),
            warmup=float(os.environ.get("BENCH_WARMUP", 1 if quick else 3)),
            sweep_duration=3 if quick else 5,
            limit_seconds=2 if quick else 5,
            connections=int(os.environ.get("BENCH_CONNECTIONS", 16)),
            cpus=available_cpus(),
            workers=int(workers) if workers else None,
            cold_starts=1 if quick else 3,
            sweep=os.environ.get("BENCH_SKIP_SWEEP", "") != "1",
            gpu_only=os.environ.get("BENCH_GPU_ONLY", "") == "1",
            only=os.environ.get("BENCH_ONLY", ""),
        )


def load(
    url: str, script: Path, settings: Settings, duration: float, connections: int = 0
) -> LoadResult:
    """wrk POSTing to ``url`` (the full target), after a warm-up."""
    connections = connections or settings.connections
    run_wrk(url, script, settings.warmup, connections)
    return run_wrk(url, script, duration, connections)


def serve_and_load(
    work: Workload, script: Path, settings: Settings, log: Path, batch: int, delay_ms: float,
    duration: float, extra: tuple[str, ...] = (), engine: str = "gunicorn", connections: int = 0,
) -> LoadResult:  # fmt: skip
    args = ["--max-batch-size", str(batch), "--max-batch-delay-ms", str(delay_ms), *extra]
    args += ["--http-engine", engine]
    if settings.workers:
        args += ["--workers", str(settings.workers)]
    port = free_port()
    with running(byoserve_command(work.model_dir, port, args), port, log) as (url, _, _):
        return load(f"{url}/invocations", script, settings, duration, connections)


def multi_model_load(
    work: Workload, settings: Settings, scratch: Path, batch: int, delay: float
) -> LoadResult:
    """The same requests spread over ``COPIES`` models loaded from one model directory: each
    request names the next with X-Amzn-SageMaker-Target-Model."""
    names = tuple(f"{work.name}-{index}" for index in range(COPIES))
    script = write_script(scratch, work.payload, work.content_type, names)
    store = ["--model-store", str(work.model_dir.parent)]
    models = ["--models", *(f"{name}={work.model_dir.name}" for name in names)]
    log = scratch / f"{work.name}-multi.log"
    return serve_and_load(
        work, script, settings, log, batch, delay, settings.duration, (*store, *models)
    )


def plain_load(work: Workload, script: Path, settings: Settings, log: Path) -> LoadResult:
    port = free_port()
    workers = settings.workers or settings.cpus
    command = plain_command(work.model_dir, work.handler_file, work.handler_class, port, workers)
    env = {"OMP_NUM_THREADS": "1"}
    with running(command, port, log, env) as (url, _, _):
        return load(f"{url}/invocations", script, settings, settings.duration)


def torchserve_load(
    work: Workload, script: Path, settings: Settings, scratch: Path,
    batches: tuple[tuple[int, float], ...],
) -> list[tuple[str, str, LoadResult]]:  # fmt: skip
    """The real TorchServe at each (batch size, delay ms), as rows (kind, name, result)."""
    n = settings.workers or settings.cpus
    results = torchserve_loads(
        work, scratch, n, batches, lambda url: load(url, script, settings, settings.duration)
    )
    return [
        ("torchserve", f"TorchServe 0.12, {n} workers, 1 thread, batch {size}"
         + (f" / {delay:g} ms" if size > 1 else ""), result)
        for size, delay, result in results
    ]  # fmt: skip


def server_cost(
    noop: Workload, settings: Settings, scratch: Path, limit: float
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Each server answering digit requests with a handler that does no work: its own cost.

    A served request costs the server's part (``cpus / no-op rate`` core-seconds) plus the model
    path's (``cpus / limit``), so a server reaches at most ``rate / (rate + limit)`` of the limit.
    """
    script = write_script(scratch, noop.payload, noop.content_type)
    log = scratch / "noop.log"
    batch, delay = BATCHED["digit"]
    n = settings.workers or settings.cpus
    measured = [
        ("plain", f"plain gunicorn+Flask, {n} sync workers",
         plain_load(noop, script, settings, log)),
        *torchserve_load(noop, script, settings, scratch, ((batch, TORCHSERVE_DELAY_MS),)),
    ] + [
        (engine, f"byoserve {engine}, {n} workers, batch {batch} / {delay:g} ms",
         serve_and_load(noop, script, settings, log, batch, delay, settings.duration,
                        engine=engine))
        for engine in ENGINES
    ]  # fmt: skip
    rows = [row("digit", f"no-op: {name}", "overhead", result, 0.0) for _, name, result in measured]
    rates = {kind: result.requests_per_s for kind, _, result in measured}
    return rows, cost_analysis(rates, limit, settings.cpus)


def cost_analysis(noop_rates: dict[str, float], limit: float, cpus: int) -> dict[str, Any]:
    """Per server: its cost per request and the best ratio to ``limit`` that cost allows."""
    analysis: dict[str, Any] = {
        kind: {
            "noop_requests_per_s": rate,
            "server_us_per_request": cpus / rate * 1e6 if rate else 0.0,
            "best_ratio": rate / (rate + limit) if rate else 0.0,
        }
        for kind, rate in noop_rates.items()
    }
    analysis["model_us_per_request"] = cpus / limit * 1e6
    # rate / (rate + limit) >= target  <=>  server cost <= model cost * (1 - target) / target
    target = TARGETS["digit_ratio"]
    analysis["server_us_needed_for_target"] = (
        analysis["model_us_per_request"] * (1 - target) / target
    )
    return analysis


def print_server_cost(analysis: dict[str, Any]) -> None:
    print(
        "\nserver cost (digit requests, no-op handler): "
        + ", ".join(f"{kind} {a['server_us_per_request']:.0f} us"
                    for kind, a in analysis.items() if isinstance(a, dict))
        + f" of a core per request; the model path costs {analysis['model_us_per_request']:.0f} us"
        " in-process; so at most "
        + ", ".join(f"{kind} {a['best_ratio']:.2f}x"
                    for kind, a in analysis.items() if isinstance(a, dict))
        + f" of the limit; the {TARGETS['digit_ratio']}x target needs a server cost of at most"
        f" {analysis['server_us_needed_for_target']:.0f} us"
    )  # fmt: skip


def cold_start(work: Workload, settings: Settings, log: Path, engine: str) -> float:
    times = []
    for _ in range(settings.cold_starts):
        port = free_port()
        command = byoserve_command(work.model_dir, port, ["--http-engine", engine])
        with running(command, port, log) as (_, seconds, _):
            times.append(seconds)
    return statistics.median(times)


def row(model: str, system: str, kind: str, result: LoadResult, limit: float) -> dict[str, Any]:
    return {
        "model": model,
        "system": system,
        "kind": kind,
        **result.as_dict(),
        "requests_per_s": result.good_per_s,  # 2xx only
        "ratio": result.good_per_s / limit if limit else 0.0,
        "label": f"{model}: {system}",
    }


def measure_model(
    work: Workload, settings: Settings, scratch: Path, gpu: bool
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    script = write_script(scratch, work.payload, work.content_type)
    log = scratch / f"{work.name}.log"
    batch, delay = BATCHED[work.name]
    n = settings.workers or settings.cpus
    limits = measure_limits(work, settings, batch)
    served = [("plain", f"plain gunicorn+Flask, {n} sync workers",
               plain_load(work, script, settings, log))]  # fmt: skip
    served += torchserve_load(
        work, script, settings, scratch, ((1, 0.0), (batch, TORCHSERVE_DELAY_MS))
    )
    for engine in ENGINES:
        for size, wait in ((1, 0.0), (batch, delay)):
            result = serve_and_load(
                work, script, settings, log, size, wait, settings.duration, engine=engine
            )
            name = f"byoserve {engine}, {n} workers, batch {size}" + (
                f" / {wait:g} ms" if size > 1 else ""
            )
            served.append(("byoserve", name, result))
        result = serve_and_load(
            work, script, settings, log, batch, delay, settings.duration, engine=engine,
            connections=WIDE,
        )  # fmt: skip
        name = f"byoserve {engine}, {n} workers, batch {batch} / {delay:g} ms, {WIDE} conns"
        served.append(("wide", name, result))
    if work.name == "digit":
        result = multi_model_load(work, settings, scratch, batch, delay)
        name = f"byoserve, {n} workers, {COPIES} models, batch {batch} / {delay:g} ms"
        served.append(("multi", name, result))
    # Measured again after the load: on a noisy machine the higher reading is the fairer limit.
    again = measure_limits(work, settings, batch)
    limits = {name: max(rate, again[name]) for name, rate in limits.items()}
    limit = max(limits.values())
    rows = [
        row(work.name, f"in-process limit, {settings.cpus} procs x 1 thread, {name}", "limit",
            LoadResult(rate, 0, 0, 0, 0, 0), limit)
        for name, rate in limits.items()
    ]  # fmt: skip
    rows += [row(work.name, name, kind, result, limit) for kind, name, result in served]
    if gpu:
        rows += measure_gpu(work, settings, scratch)
    return limits, rows


def measure_limits(work: Workload, settings: Settings, batch: int) -> dict[str, float]:
    return {
        f"batch {size}": cpu_limit(work, size, settings.cpus, settings.limit_seconds)
        for size in (1, batch)
    }


def measure_gpu(work: Workload, settings: Settings, scratch: Path) -> list[dict[str, Any]]:
    """On CUDA, each engine's served throughput at batch ``GPU_BATCH`` against the bare batched
    forward at the same batch size (the input already on the device), on every GPU.

    Each worker gets twice a batch of connections, so that a batch can fill while the one before
    runs, and request threads enough that its queue (half of them) holds twice that: the kernel
    hands connections to granian's workers unevenly, so a worker can hold more than its share.
    """
    script = write_script(scratch, work.payload, work.content_type)
    log = scratch / f"{work.name}-gpu.log"
    bare = gpu_forward_limit(work, GPU_BATCH, settings.limit_seconds)
    n = settings.workers or settings.cpus
    per_worker = 2 * GPU_BATCH
    rows = [row(work.name, f"GPU bare forward, batch {GPU_BATCH}", "limit",
                LoadResult(bare, 0, 0, 0, 0, 0), bare)]  # fmt: skip
    for engine in ENGINES:
        result = serve_and_load(
            work, script, settings, log, GPU_BATCH, GPU_DELAY_MS, settings.duration,
            ("--threads", str(4 * per_worker)), engine=engine, connections=per_worker * n,
        )  # fmt: skip
        name = (f"byoserve {engine} on GPU, batch {GPU_BATCH} / {GPU_DELAY_MS:g} ms,"
                f" {per_worker * n} conns")  # fmt: skip
        rows.append(row(work.name, name, "gpu", result, bare))
    return rows


def sweep(work: Workload, settings: Settings, scratch: Path, limit: float) -> list[dict[str, Any]]:
    script = write_script(scratch, work.payload, work.content_type)
    rows = []
    for size, delay in SWEEP:
        result = serve_and_load(
            work, script, settings, scratch / "sweep.log", size, delay, settings.sweep_duration
        )
        rows.append({**row(work.name, f"batch {size} / {delay:g} ms", "byoserve", result, limit),
                     "batch": size, "delay_ms": delay})  # fmt: skip
    return rows


def import_torch_seconds(times: int) -> float:
    """``python -c "import torch"`` from start to end, the median of ``times`` runs."""
    runs = []
    for _ in range(times):
        started = time.monotonic()
        subprocess.run([sys.executable, "-c", "import torch"], check=True)
        runs.append(time.monotonic() - started)
    return statistics.median(runs)


def verdicts(rows: list[dict[str, Any]], cold: float, torch_s: float) -> dict[str, Any]:
    """Each target met or not; when not, the best configuration and what it fell short on."""

    def served(model: str) -> list[dict[str, Any]]:
        return [r for r in rows if r["model"] == model and r["kind"] == "byoserve"]

    plain_resnet = next(r for r in rows if r["model"] == "resnet18" and r["kind"] == "plain")
    resnet_p99 = plain_resnet["p99_ms"]  # no worse than one request at a time
    return {
        **gpu_verdicts(rows),
        "digit": _verdict(served("digit"), TARGETS["digit_ratio"], TARGETS["digit_p99_ms"]),
        "resnet18": _verdict(served("resnet18"), TARGETS["resnet18_ratio"], resnet_p99),
        "cold_start": {
            "seconds": cold,
            "import_torch_s": torch_s,
            "over_import_torch_s": cold - torch_s,
            "met": cold - torch_s <= TARGETS["cold_start_s"],
        },
    }


def gpu_verdicts(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per model with GPU rows: the best engine's served throughput against the bare forward."""
    models = dict.fromkeys(r["model"] for r in rows if r["kind"] == "gpu")
    return {
        f"{model}_gpu": _verdict(
            [r for r in rows if r["model"] == model and r["kind"] == "gpu"],
            TARGETS["gpu_ratio"],
            None,
        )
        for model in models
    }


def _verdict(
    candidates: list[dict[str, Any]], ratio: float, p99_ms: float | None
) -> dict[str, Any]:
    """The best row within the p99 bound (else the best row at all), and whether it meets both
    (``p99_ms`` None: no bound)."""
    within = [r for r in candidates if p99_ms is None or r["p99_ms"] <= p99_ms]
    best = max(within or candidates, key=lambda r: r["ratio"], default=None)
    if best is None:
        return {"best": None, "met": False}
    return {
        "best": best["system"], "ratio": best["ratio"], "p99_ms": best["p99_ms"],
        "ratio_needed": ratio, "p99_ms_allowed": p99_ms,
        "met": best["ratio"] >= ratio and (p99_ms is None or best["p99_ms"] <= p99_ms),
    }  # fmt: skip


def print_table(rows: list[dict[str, Any]], title: str) -> None:
    print(f"\n{title}")
    print(f"| {'model':8} | {'system / config':52} | {'req/s':>8} | {'p50 ms':>7} | "
          f"{'p99 ms':>7} | {'errors':>6} | {'x limit':>7} |")  # fmt: skip
    print(f"|{'-' * 10}|{'-' * 54}|{'-' * 10}|{'-' * 9}|{'-' * 9}|{'-' * 8}|{'-' * 9}|")
    for r in rows:
        timing = (f"{r['p50_ms']:7.1f} | {r['p99_ms']:7.1f} | {r['errors']:6d}"
                  if r["kind"] != "limit" else f"{'-':>7} | {'-':>7} | {'-':>6}")  # fmt: skip
        ratio = f"{r['ratio']:7.2f}" if r["kind"] != "overhead" else f"{'-':>7}"
        print(f"| {r['model']:8} | {r['system']:52} | {r['requests_per_s']:8.0f} | {timing} | "
              f"{ratio} |")  # fmt: skip


def machine(settings: Settings, gpu: bool) -> dict[str, Any]:
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text()
                .splitlines() if line.startswith("model name")), platform.processor())  # fmt: skip
    return {
        "cpus": settings.cpus, "cpu": cpu, "python": platform.python_version(),
        "torch": torch.__version__, "gpu": torch.cuda.get_device_name(0) if gpu else None,
        "quick": settings.quick, "duration_s": settings.duration,
        "connections": settings.connections,
    }  # fmt: skip


def main() -> int:
    import torch

    settings = Settings.from_env()
    if settings.only:
        only = {"stream": stream_main, "transform": transform_main, "load": load_main}.get(
            settings.only
        )
        return only(settings) if only else _unknown_only(settings)
    require_wrk()
    gpu = torch.cuda.is_available()
    if settings.gpu_only:
        return gpu_main(settings) if gpu else _no_gpu()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="byoserve-bench-") as tmp:
        scratch = Path(tmp)
        workloads = build_workloads(scratch / "models")
        rows: list[dict[str, Any]] = []
        limits: dict[str, dict[str, float]] = {}
        for work in workloads.values():
            limits[work.name], model_rows = measure_model(work, settings, scratch, gpu)
            rows += model_rows
        colds = {
            engine: cold_start(workloads["digit"], settings, scratch / "cold.log", engine)
            for engine in ENGINES
        }
        cold = min(colds.values())
        torch_s = import_torch_seconds(settings.cold_starts)
        digit_limit = max(limits["digit"].values())
        noop = build_noop(scratch / "models", workloads["digit"])
        cost_rows, cost = server_cost(noop, settings, scratch, digit_limit)
        swept = sweep(workloads["digit"], settings, scratch, digit_limit) if settings.sweep else []
        streaming, stream_rows = measure_streaming(scratch, ENGINES, settings.quick)
        loaded = load_rows(workloads, settings, scratch)
    result = {
        "machine": machine(settings, gpu), "limits": limits, "rows": rows, "sweep": swept,
        "server_cost": {"rows": cost_rows, **cost},
        "cold_start_s": cold, "cold_start_by_engine_s": colds, "import_torch_s": torch_s,
        "streaming": {**streaming, "rows": [r.as_dict() for r in stream_rows]},
        "load": loaded, "targets": TARGETS,
        "verdicts": {
            **verdicts(rows, cold, torch_s), **stream_verdicts(stream_rows), **loaded["verdicts"],
        },
        "elapsed_s": time.monotonic() - started,
    }  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "results.json").write_text(json.dumps(result, indent=2))
    draw_chart(rows, RESULTS / "chart.png", f"byoserve bench, {settings.cpus} CPUs, "
               f"{settings.connections} connections (ratio to the in-process limit)")  # fmt: skip
    m = result["machine"]
    print_table(rows, f"machine: {m['cpus']} CPUs ({m['cpu']}), torch {m['torch']}, "
                f"gpu: {m['gpu']}, wrk {settings.connections} connections")  # fmt: skip
    print_table(cost_rows, "server cost: digit requests answered by a handler that does no work")
    print_server_cost(cost)
    if swept:
        print_table(swept, "batching sweep (digit)")
    print(
        "\ncold start (digit, process start to first 200 on /ping): "
        + ", ".join(f"{engine} {seconds:.2f} s" for engine, seconds in colds.items())
        + f"; python -c 'import torch': {torch_s:.2f} s"
    )
    print_stream_table(stream_rows, streaming)
    print_load_tables(loaded["rows"], loaded["overload"])
    for name, verdict in result["verdicts"].items():
        print(f"target {name}: {'met' if verdict['met'] else 'NOT met'} {verdict}")
    print(f"\nwrote {RESULTS / 'results.json'} and {RESULTS / 'chart.png'}")
    return 0


def gpu_main(settings: Settings) -> int:
    """BENCH_GPU_ONLY=1: the GPU rows alone, for a machine lent for minutes."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="byoserve-bench-") as tmp:
        scratch = Path(tmp)
        rows = [
            r for work in build_workloads(scratch / "models").values()
            for r in measure_gpu(work, settings, scratch)
        ]  # fmt: skip
    result: dict[str, Any] = {
        "machine": machine(settings, True), "rows": rows, "targets": TARGETS,
        "verdicts": gpu_verdicts(rows), "elapsed_s": time.monotonic() - started,
    }  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "gpu.json").write_text(json.dumps(result, indent=2))
    m = result["machine"]
    print_table(rows, f"machine: {m['cpus']} CPUs, gpu: {m['gpu']}, torch {m['torch']}")
    for name, verdict in result["verdicts"].items():
        print(f"target {name}: {'met' if verdict['met'] else 'NOT met'} {verdict}")
    print(f"\nwrote {RESULTS / 'gpu.json'}")
    return 0


def stream_main(settings: Settings) -> int:
    """BENCH_ONLY=stream: the streaming rows alone (no wrk, no TorchServe)."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="byoserve-bench-") as tmp:
        streaming, rows = measure_streaming(Path(tmp), ENGINES, settings.quick)
    result: dict[str, Any] = {
        "machine": machine(settings, False), "streaming": streaming,
        "rows": [r.as_dict() for r in rows], "verdicts": stream_verdicts(rows),
        "elapsed_s": time.monotonic() - started,
    }  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "stream.json").write_text(json.dumps(result, indent=2))
    m = result["machine"]
    print(f"machine: {m['cpus']} CPUs ({m['cpu']}), torch {m['torch']}")
    print_stream_table(rows, streaming)
    for name, verdict in result["verdicts"].items():
        print(f"target {name}: {'met' if verdict['met'] else 'NOT met'} {verdict}")
    print(f"\nwrote {RESULTS / 'stream.json'}")
    return 0


def load_rows(workloads: dict[str, Workload], settings: Settings, scratch: Path) -> dict[str, Any]:
    """The load rows (bench/load.py): each model under its connections beside TorchServe, then
    the overload row."""
    served = [
        row
        for name in ("resnet18", "digit")
        for row in measure_served(workloads[name], scratch, settings.warmup, settings.duration)
    ]
    overloaded = measure_overload(
        workloads[OVERLOAD_MODEL], scratch, settings.warmup, settings.duration
    )
    return {"rows": served, "overload": overloaded, "verdicts": load_verdicts(served, overloaded)}


def load_main(settings: Settings) -> int:
    """BENCH_ONLY=load: the load rows alone (bench/load.py), about five minutes."""
    started, load_before = time.monotonic(), os.getloadavg()
    require_wrk()
    with tempfile.TemporaryDirectory(prefix="byoserve-bench-") as tmp:
        scratch = Path(tmp)
        loaded = load_rows(build_workloads(scratch / "models"), settings, scratch)
    load_average = os.getloadavg()
    result = {
        "machine": {**machine(settings, False), "load_average_before": load_before,
                    "load_average": load_average},
        **loaded, "elapsed_s": time.monotonic() - started,
    }  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "load.json").write_text(json.dumps(result, indent=2))
    print_load_tables(loaded["rows"], loaded["overload"])
    for name, verdict in loaded["verdicts"].items():
        print(f"target {name}: {'met' if verdict['met'] else 'NOT met'} {verdict}")
    print(f"load average at the start: {load_before[0]:.1f}, at the end: "
          f"{load_average[0]:.1f} {load_average[1]:.1f} {load_average[2]:.1f}")  # fmt: skip
    print(f"\nwrote {RESULTS / 'load.json'}")
    return 0


def transform_main(settings: Settings) -> int:
    """BENCH_ONLY=transform: the batch transform row alone (bench/transform.py), a few minutes."""
    started = time.monotonic()
    require_wrk()
    row = measure_transform_row(settings.quick)
    load = os.getloadavg()
    result = {
        "machine": {**machine(settings, False), "load_average": load}, "transform": row,
        "elapsed_s": time.monotonic() - started,
    }  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "transform.json").write_text(json.dumps(result, indent=2))
    print(f"load average at the end: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    print(f"\nwrote {RESULTS / 'transform.json'}")
    return 0


def _unknown_only(settings: Settings) -> int:
    print(
        f"bench: BENCH_ONLY={settings.only!r}: the rows that run alone are 'stream', "
        "'transform', 'load'"
    )
    return 2


def _no_gpu() -> int:
    print("bench: BENCH_GPU_ONLY=1 needs a CUDA device (torch.cuda.is_available() is false)")
    return 2


if __name__ == "__main__":
    sys.exit(main())
