"""The in-process limit: the handler's decode + preprocess + forward + softmax (and the JSON of
the answer), no HTTP, one process per core with one torch thread each."""

from __future__ import annotations

import importlib
import json
import multiprocessing as mp
import sys
import time
from typing import Any

from bench.workloads import Workload


def _classifier(workload: Workload, gpu_id: int | None = None) -> Any:
    sys.path.insert(0, str(workload.model_dir))
    module = importlib.import_module(workload.handler_file.removesuffix(".py"))
    classifier = getattr(module, workload.handler_class)()
    classifier.load(str(workload.model_dir), gpu_id)
    return classifier


def _loop(workload: Workload, batch: int, seconds: float, start: Any, out: Any) -> None:
    import torch

    torch.set_num_threads(1)
    classifier = _classifier(workload)
    payloads = [workload.body()] * batch
    for _ in range(3):
        classifier.classify(payloads)
    start.wait()
    done = 0
    began = time.perf_counter()
    while (elapsed := time.perf_counter() - began) < seconds:
        for answer in classifier.classify(payloads):
            json.dumps(answer)
        done += batch
    out.put(done / elapsed)


def cpu_limit(workload: Workload, batch: int, processes: int, seconds: float) -> float:
    """Requests/s of ``processes`` processes, each one torch thread, looping at ``batch``."""
    context = mp.get_context("spawn")  # no fork of a parent that has used torch threads
    start = context.Barrier(processes)
    out = context.Queue()
    workers = [
        context.Process(target=_loop, args=(workload, batch, seconds, start, out))
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    rates = [out.get(timeout=seconds + 300) for _ in workers]
    for worker in workers:
        worker.join()
    return float(sum(rates))


def gpu_forward_limit(workload: Workload, batch: int, seconds: float) -> float:
    """Images/s of the bare batched forward on every GPU (input already on the device)."""
    import torch

    total = 0.0
    for gpu in range(torch.cuda.device_count()):
        classifier = _classifier(workload, gpu)
        inputs = classifier.preprocess([workload.body()] * batch)
        for _ in range(5):
            classifier.inference(inputs)
        torch.cuda.synchronize(gpu)
        done = 0
        began = time.perf_counter()
        while time.perf_counter() - began < seconds:
            classifier.inference(inputs)
            done += batch
        torch.cuda.synchronize(gpu)
        total += done / (time.perf_counter() - began)
    return total
