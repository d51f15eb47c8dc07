"""Tests that need TorchServe's torchvision-based handlers: run them in ``.venv-compat``
(torch, torchvision, torchserve, torch-model-archiver); elsewhere they are skipped."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "compat: needs torchvision and TorchServe's handlers (the .venv-compat venv)"
    )
