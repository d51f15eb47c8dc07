"""The no-op server cost of this checkout against another's, measured in alternating rounds on
the same machine: what a refactor of the request path did to it.

Usage: python bench/compare.py OTHER_CHECKOUT [ROUNDS]   (BENCH_DURATION, BENCH_WARMUP, ...
as for bench/run.py; both engines)

Each round serves the no-op handler (the digit requests, batch 8 / 2 ms, as `make bench`'s server
cost rows do) from each checkout in turn, on each engine, and prints the cost per request in
microseconds of a core; alternating spreads the machine's drift over both. The other checkout
needs the same dependencies (it runs with this venv's Python), e.g. `git worktree add`.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/compare.py`

from bench.run import BATCHED, ENGINES, Settings, load
from bench.servers import REPO, byoserve_command, running
from bench.workloads import Workload, build_noop, build_workloads
from bench.wrk import require_wrk, write_script
from serve.process.probe import free_port


def cost_us(checkout: Path, noop: Workload, script: Path, settings: Settings, engine: str) -> float:
    """Microseconds of a core per no-op request served from ``checkout`` by ``engine``."""
    batch, delay = BATCHED["digit"]
    args = ["--max-batch-size", str(batch), "--max-batch-delay-ms", str(delay)]
    args += ["--http-engine", engine]
    port = free_port()
    log = script.parent / f"{checkout.name}-{engine}.log"
    with running(byoserve_command(noop.model_dir, port, args), port, log, cwd=checkout) as served:
        result = load(f"{served[0]}/invocations", script, settings, settings.duration)
    if result.errors:
        raise RuntimeError(f"{checkout} on {engine}: {result.errors} errors; see {log}")
    return settings.cpus / result.requests_per_s * 1e6


def main() -> int:
    require_wrk()
    other = Path(sys.argv[1]).resolve()
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    settings = Settings.from_env()
    costs: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-compare-") as tmp:
        scratch = Path(tmp)
        noop = build_noop(scratch / "models", build_workloads(scratch / "models")["digit"])
        script = write_script(scratch, noop.payload, noop.content_type)
        for _ in range(rounds):
            for engine in ENGINES:
                for name, checkout in (("this", REPO), ("other", other)):
                    cost = cost_us(checkout, noop, script, settings, engine)
                    costs.setdefault((engine, name), []).append(cost)
                    print(f"{engine:8} {name:5} {cost:5.0f} us", flush=True)
    for (engine, name), values in sorted(costs.items()):
        runs = ", ".join(f"{value:.0f}" for value in values)
        median = statistics.median(values)
        print(f"{engine:8} {name:5} median {median:5.0f} us of a core per request ({runs})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
