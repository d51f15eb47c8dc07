"""The peers the bench serves its workloads with, beside byoserve: the real TorchServe 0.12
(bench/torchserve.py), tuned as benchmark.md's table tunes it (one torch thread per worker,
``OMP_NUM_THREADS=1``), on the torch build byoserve runs on.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from bench.torchserve import TorchServeError, torchserve
from bench.workloads import Workload
from bench.wrk import LoadResult

logger = logging.getLogger(__name__)

Load = Callable[[str], LoadResult]  # a URL to POST the workload's request to, under wrk


def archive(work: Workload, store: Path) -> str:
    """The workload as ``NAME.mar``, written by the real torch-model-archiver into ``store``."""
    directory = work.model_dir
    command = [
        str(Path(sys.executable).parent / "torch-model-archiver"),
        "--model-name", work.name,
        "--version", "1.0",
        "--handler", str(directory / work.handler_file),
        "--export-path", str(store),
        "--force",
    ]  # fmt: skip
    if (directory / "model.pt").exists():  # the no-op handler has no model
        command += ["--serialized-file", str(directory / "model.pt")]
    if (directory / "image_classifier.py").exists():
        command += ["--extra-files", str(directory / "image_classifier.py")]
    subprocess.run(command, check=True, capture_output=True)
    return f"{work.name}.mar"


def torchserve_loads(
    work: Workload, scratch: Path, workers: int, batches: Sequence[tuple[int, float]], load: Load
) -> list[tuple[int, float, LoadResult]]:
    """TorchServe serving ``work`` with ``workers`` workers at each (batch size, delay ms) in
    turn, each loaded by ``load``; one TorchServe, each setting registered as its own model and
    unregistered after its load (TorchServe's register API, as its batching docs do it)."""
    store = scratch / "torchserve-store"
    store.mkdir(exist_ok=True)
    mar = archive(work, store)
    results = []
    home = scratch / f"torchserve-{work.name}"
    with torchserve(store, home, workers=workers, env={"OMP_NUM_THREADS": "1"}) as server:
        for size, delay in batches:
            name = f"{work.name}-{size}"
            server.register(
                mar, model_name=name, batch_size=size, max_batch_delay=round(delay),
                initial_workers=workers, response_timeout=120,
            )  # fmt: skip
            results.append((size, delay, load(f"{server.inference_url}/predictions/{name}")))
            try:
                server.unregister(name)
            except TorchServeError as exc:
                # TorchServe 0.12 answers 500 ("Deque full") to an unregister while the model's
                # job queue is full, as after a load past it: the model stays, under a name of
                # its own, until the server stops.
                logger.warning("TorchServe kept %s: %s", name, str(exc).splitlines()[0])
    return results
