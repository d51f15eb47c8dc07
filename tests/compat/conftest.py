"""Tests that need TorchServe's torchvision-based handlers: run them in ``.venv-compat``
(torch, torchvision, torchserve, torch-model-archiver) with ``make test-compat``; the main run
leaves this folder out (``--ignore=tests/compat`` in pyproject.toml)."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "compat: needs torchvision and TorchServe's handlers (the .venv-compat venv)"
    )
