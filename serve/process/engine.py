"""The HTTP engine interface: what the server asks of the engine that serves it, whichever it is
(``BYOSERVE_HTTP_ENGINE``): gunicorn (serve/process/gunicorn_engine.py) or granian
(serve/process/granian_engine.py). What the two share lives in serve/process/sockets.py.

The composition root picks the engine once (:func:`engine_for`), has it check the settings, hands
its body rules to the app (serve/http/ names no engine) and has it serve.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from flask import Flask

from serve.config import HttpEngine, ServingConfig
from serve.http.invocation import BodyRules
from serve.process.granian_engine import GranianEngine
from serve.process.gunicorn_engine import GunicornEngine
from serve.runtime.registry import ModelRegistry


class Engine(Protocol):
    """An HTTP engine serving the app's WSGI application from worker processes."""

    @property
    def name(self) -> HttpEngine:
        """The engine's ``BYOSERVE_HTTP_ENGINE`` value."""

    @property
    def reads_chunked(self) -> bool:
        """Whether a chunked body reaches the app whole, or an error when cut short (where it
        cannot be told from a complete one, the app refuses it: 411)."""

    @property
    def malformed_body(self) -> tuple[type[BaseException], ...]:
        """The exceptions the engine raises while the app reads a body the client framed wrong
        (a bad chunk size): the client's mistake, a 400."""

    @property
    def body_rules(self) -> BodyRules:
        """:attr:`reads_chunked` and :attr:`malformed_body` as the app applies them, with the
        message of its 411."""

    def check(self, config: ServingConfig) -> None:
        """Refuse at start, in the master, what this engine cannot serve.

        Raises:
            ConfigError: naming the setting and why.
        """

    def run(self, app: Flask, registry: ModelRegistry, config: ServingConfig) -> str | None:
        """Serve ``app`` on every address of ``config`` until SIGTERM/SIGINT, starting
        ``registry`` in each worker; returns why the server could not start, or None."""


ENGINES: Mapping[HttpEngine, Engine] = {"gunicorn": GunicornEngine(), "granian": GranianEngine()}


def engine_for(config: ServingConfig) -> Engine:
    """The engine ``config.http_engine`` names."""
    return ENGINES[config.http_engine]
