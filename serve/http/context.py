"""What a route of the Flask app reaches during a request: the worker's registry, the
configuration, and the request's body read by the HTTP engine's rules."""

from __future__ import annotations

from flask import current_app, g, request

from serve.config import ServingConfig
from serve.http.invocation import read_body
from serve.runtime.registry import ModelRegistry


def registry() -> ModelRegistry:
    """The worker's model registry."""
    found: ModelRegistry = current_app.extensions["byoserve.registry"]
    return found


def config() -> ServingConfig:
    """The serving configuration."""
    found: ServingConfig = current_app.extensions["byoserve.config"]
    return found


def request_body(limit: int) -> bytes:
    """The current request's body, at most ``limit`` bytes, read as an invocation's is (framing
    errors and a body cut short are 400s: serve/http/invocation.py)."""
    rules = current_app.extensions["byoserve.body"]
    return read_body(request.environ, request.content_length, limit, rules, g.request_id)
