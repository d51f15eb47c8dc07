"""`make soak`: the digits example at saturation for a while; requests, errors, memory growth.

Usage: python bench/soak.py [SECONDS [ENGINE]]   (default 300 s on gunicorn; `make soak` runs
each engine in turn, `make test` for 60 s each)

Serves build/digits.tar.gz (the `digit` built-in, two workers, batch 8 / 2 ms) under wrk
(2 threads, 16 connections) after a warm-up, and reports the requests answered, the non-2xx
answers and socket errors, and how much each worker's resident memory grew from the end of the
warm-up. Exits 1 when there were errors or a worker grew by more than 10%.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/soak.py`

from bench.models import digit_png
from bench.servers import byoserve_command, running
from bench.wrk import run_wrk, write_script
from serve.process.probe import free_port

ARCHIVE = Path(__file__).resolve().parents[1] / "build" / "digits.tar.gz"
WARMUP_S = 5
MAX_GROWTH = 0.10


def worker_rss(master: int) -> dict[int, int]:
    """Resident bytes of each worker (child) of ``master``."""
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    page = 4096
    return {
        int(pid): int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * page for pid in children
    }


def main(seconds: int, engine: str = "gunicorn") -> int:
    if not ARCHIVE.exists():
        raise SystemExit(f"soak: {ARCHIVE} is missing (make model builds it)")
    with tempfile.TemporaryDirectory(prefix="byoserve-soak-") as tmp:
        scratch = Path(tmp)
        payload = scratch / "digit.png"
        payload.write_bytes(digit_png())
        script = write_script(scratch, payload, "image/png")
        port = free_port()
        args = ["--workers", "2", "--max-batch-size", "8", "--max-batch-delay-ms", "2"]
        args += ["--http-engine", engine]
        command = byoserve_command(ARCHIVE, port, args)
        with running(command, port, scratch / "soak.log") as (url, _, master):
            run_wrk(f"{url}/invocations", script, WARMUP_S)
            before = worker_rss(master)
            result = run_wrk(f"{url}/invocations", script, seconds)
            after = worker_rss(master)
    growth = {pid: (after.get(pid, 0) - rss) / rss for pid, rss in before.items()}
    print(
        f"soak ({engine}): {seconds} s, {result.requests} requests "
        f"({result.requests_per_s:.0f}/s), {result.non_2xx} non-2xx, "
        f"{result.socket_errors} socket errors, p99 "
        f"{result.p99_ms:.1f} ms; worker RSS "
        + ", ".join(
            f"{before[pid] / 2**20:.0f} -> {after.get(pid, 0) / 2**20:.0f} MiB ({growth[pid]:+.1%})"
            for pid in before
        )
    )
    replaced = set(before) != set(after)
    if result.errors or replaced or any(g > MAX_GROWTH for g in growth.values()):
        print(f"soak ({engine}): FAILED (errors, a worker replaced, or memory growth over 10%)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(
        main(
            int(sys.argv[1]) if len(sys.argv) > 1 else 300,
            sys.argv[2] if len(sys.argv) > 2 else "gunicorn",
        )
    )
