"""The batch transform row (issue 21, item 7): ``deploy transform --local`` on the sentiment
example, against the same server answering the same packed requests through wrk.

One server (``python -m serve`` on ``build/sentiment.tar.gz``, with the ``SAGEMAKER_*``
environment ``deploy transform --local`` gives it) answers both clients, warmed up first:

- the job, run by :func:`deploy.batchlocal.run_job` (what ``deploy transform --local
  --no-docker`` runs once its own server answers ``/ping``) on :data:`FILES` files of
  :data:`RECORDS` JSON Lines each (the example's held-out sentences in turn), MultiRecord with
  ``MaxPayloadInMB`` :data:`PAYLOAD_MB` and :data:`CONCURRENCY` requests at once: its records a
  second, from the first request to the last ``.out`` written (reading, packing, splitting the
  answers and writing included);
- wrk POSTing the job's first packed request (the same bytes, :func:`deploy.batchlocal.pack`)
  over :data:`CONCURRENCY` connections for :data:`WRK_SECONDS`: requests a second times the
  records in the request;
- SingleRecord, the same job one record a request, on :data:`SINGLE_RECORDS` records.

The three alternate, :data:`ROUNDS` times, so that each meets the same share of a busy machine;
medians are reported. Targets: MultiRecord at least 0.8x wrk, and at least 5x SingleRecord.
"""

from __future__ import annotations

import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

from bench.servers import REPO, byoserve_command, running
from bench.wrk import run_wrk, write_script
from deploy.batchio import DirectoryStore
from deploy.batchlocal import InputObject, pack, run_job
from deploy.batchsettings import MIB, Settings, server_environment
from deploy.transform import TransformJob
from serve.process.probe import free_port

ARCHIVE = REPO / "build" / "sentiment.tar.gz"
FILES = 12
RECORDS = 20_000
SINGLE_RECORDS = 3_000
PAYLOAD_MB = 1
CONCURRENCY = 2
ROUNDS = 3
WRK_SECONDS = 20.0
CONTENT_TYPE = "application/jsonlines"
TARGETS = {"transform_vs_wrk": 0.8, "multi_vs_single": 5.0}


def write_records(folder: Path, files: int, records: int) -> Path:
    """``files`` files of ``records`` JSON Lines under ``folder``."""
    heldout = REPO / "examples" / "sentiment" / "data" / "heldout.tsv"
    sentences = [line.split("\t", 1)[1] for line in heldout.read_text().splitlines()]
    folder.mkdir(parents=True)
    for index in range(files):
        lines = (json.dumps(sentences[(i + index) % len(sentences)]) for i in range(records))
        (folder / f"part-{index}.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def _job(strategy: str) -> TransformJob:
    return TransformJob(
        "in", "out", CONTENT_TYPE, CONTENT_TYPE, "Line", strategy, PAYLOAD_MB, CONCURRENCY, "Line"
    )


def run_transform(url: str, scratch: Path, source: Path, strategy: str) -> float:
    """The job ``deploy transform --local`` runs once its server answers: every file of
    ``source`` through :func:`deploy.batchlocal.run_job`; its records a second."""
    inputs = DirectoryStore(source)
    output = DirectoryStore(scratch / f"out-{strategy}")
    summary = run_job(_job(strategy), url, inputs, inputs.names(), output)
    if summary.failures:
        raise SystemExit(f"bench: {len(summary.failures)} records failed: {summary.failures[0]}")
    return summary.records_per_s


def packed_script(scratch: Path, source: Path) -> tuple[Path, int]:
    """A wrk script POSTing the job's first packed request; and its records."""
    item = InputObject.split("part-0.jsonl", (source / "part-0.jsonl").read_bytes(), "Line")
    batch = next(pack(item, Settings("MultiRecord", PAYLOAD_MB * MIB, CONCURRENCY)))
    payload = scratch / "packed.jsonl"
    payload.write_bytes(b"\n".join(item.records[i] for i in batch))
    script = write_script(scratch, payload, CONTENT_TYPE)
    script.write_text(script.read_text() + f'wrk.headers["Accept"] = "{CONTENT_TYPE}"\n')
    return script, len(batch)


def run_client(url: str, script: Path, records: int, seconds: float) -> float:
    """wrk over ``CONCURRENCY`` connections; records a second."""
    result = run_wrk(f"{url}/invocations", script, seconds, CONCURRENCY, threads=1)
    if result.errors:
        raise SystemExit(f"bench: wrk saw {result.errors} errors")
    return result.requests_per_s * records


def measure_transform(scratch: Path, quick: bool) -> dict[str, Any]:
    """The row: medians over alternating rounds, and the verdicts."""
    files = 2 if quick else FILES
    source = write_records(scratch / "records", files, RECORDS)
    single = write_records(scratch / "single", 1, SINGLE_RECORDS)
    script, per_request = packed_script(scratch, source)
    multi, client, one = [], [], []
    port = free_port()
    env = server_environment(_job("MultiRecord"))
    with running(byoserve_command(ARCHIVE, port), port, scratch / "server.log", env) as served:
        url = served[0]
        run_client(url, script, per_request, 3.0)  # warm-up
        for _ in range(1 if quick else ROUNDS):
            multi.append(run_transform(url, scratch, source, "MultiRecord"))
            client.append(run_client(url, script, per_request, 5.0 if quick else WRK_SECONDS))
            one.append(run_transform(url, scratch, single, "SingleRecord"))
    row = {
        "records": files * RECORDS,
        "records_per_request": per_request,
        "concurrency": CONCURRENCY,
        "payload_mb": PAYLOAD_MB,
        "transform_multi_records_per_s": statistics.median(multi),
        "client_records_per_s": statistics.median(client),
        "transform_single_records_per_s": statistics.median(one),
        "rounds": {"multi": multi, "client": client, "single": one},
    }
    row["transform_vs_wrk"] = row["transform_multi_records_per_s"] / row["client_records_per_s"]
    row["multi_vs_single"] = (
        row["transform_multi_records_per_s"] / row["transform_single_records_per_s"]
    )
    row["verdicts"] = {
        name: {"value": round(row[name], 3), "target": target, "met": row[name] >= target}
        for name, target in TARGETS.items()
    }
    return row


def main(quick: bool) -> dict[str, Any]:
    """Measure in a scratch directory; print the row."""
    with tempfile.TemporaryDirectory(prefix="byoserve-bench-transform-") as tmp:
        row = measure_transform(Path(tmp), quick)
    print(
        f"transform --local MultiRecord: {row['transform_multi_records_per_s']:.0f} records/s; "
        f"wrk, same packed requests ({row['records_per_request']} records): "
        f"{row['client_records_per_s']:.0f} records/s; SingleRecord: "
        f"{row['transform_single_records_per_s']:.0f} records/s"
    )
    for name, verdict in row["verdicts"].items():
        print(f"target {name}: {'met' if verdict['met'] else 'NOT met'} {verdict}")
    return row
