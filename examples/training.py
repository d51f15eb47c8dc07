"""What the example training scripts share: their command line and torch's settings for a
repeatable, fast CPU run.

The scripts run as ``python examples/NAME/train.py`` (the make targets and
tests/unit/test_examples.py), which puts only their own folder on ``sys.path``; each adds this
folder to import this module.
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch


def parse_training_args(description: str, argv: Sequence[str] | None) -> argparse.Namespace:
    """``--out`` (the model directory to write) and ``--seed`` (default 0)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", type=Path, required=True, help="output model directory")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def configure_torch(seed: int) -> None:
    """Fix every random source training touches and keep CPU training fast."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    # Adam drives many weights toward zero; denormal floats make CPU steps ~5x slower.
    torch.set_flush_denormal(True)
    # The models are tiny: a second thread gains nothing and spin-waits badly on a busy machine.
    torch.set_num_threads(1)
