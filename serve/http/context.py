"""What a route reaches during a request: the worker's registry and the configuration."""

from __future__ import annotations

from flask import current_app

from serve.config import ServingConfig
from serve.runtime.registry import ModelRegistry


def registry() -> ModelRegistry:
    """The worker's model registry."""
    found: ModelRegistry = current_app.extensions["byoserve.registry"]
    return found


def config() -> ServingConfig:
    """The serving configuration."""
    found: ServingConfig = current_app.extensions["byoserve.config"]
    return found


def too_large_message(length: int | None, limit: int) -> str:
    size = f"{length} bytes" if length is not None else "the request body"
    return f"{size} is over the {limit}-byte limit (set SAGEMAKER_MAX_REQUEST_SIZE to raise it)"
