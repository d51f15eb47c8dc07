"""Which device a worker uses and how many torch threads it runs."""

from __future__ import annotations

import importlib.util
import logging
import os
import sys

logger = logging.getLogger(__name__)


def _torch_available() -> bool:
    return "torch" in sys.modules or importlib.util.find_spec("torch") is not None


def gpu_count() -> int:
    """How many GPUs torch sees (0 without torch or CUDA)."""
    if not _torch_available():
        return 0
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


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


def configure_torch(threads: int, allow_pickled: bool = False) -> None:
    """Give torch this worker's share of the cores, so workers do not fight over them. With
    ``allow_pickled`` (BYOSERVE_ALLOW_PICKLED_MODELS=true), a handler's own ``torch.load(path)``
    unpickles whole objects as it did before torch 2.6 made ``weights_only=True`` the default
    (torch reads TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD at every call that does not set it)."""
    if not _torch_available():
        return
    import torch

    if allow_pickled:
        os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"

    torch.set_num_threads(threads)
    logger.debug("torch intra-op threads: %d", threads)
