"""Which device a worker uses and how many torch threads it runs."""

from __future__ import annotations

import importlib.util
import logging
import sys

logger = logging.getLogger(__name__)


def _torch_available() -> bool:
    return "torch" in sys.modules or importlib.util.find_spec("torch") is not None


def gpu_for_worker(worker_index: int) -> int | None:
    """Worker i uses GPU i mod n when CUDA is available, else None (CPU)."""
    if not _torch_available():
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    count = torch.cuda.device_count()
    gpu = worker_index % count
    torch.cuda.set_device(gpu)
    return gpu


def configure_torch(threads: int) -> None:
    """Give torch this worker's share of the cores, so workers do not fight over them."""
    if not _torch_available():
        return
    import torch

    torch.set_num_threads(threads)
    logger.debug("torch intra-op threads: %d", threads)
