"""A TorchServe handler that does no work: served, it measures the server's own cost per request."""

from __future__ import annotations

from typing import Any

ANSWER = {"class": 0, "probability": 1.0}


class NoopHandler:
    def initialize(self, context: Any) -> None:
        """Nothing to load."""

    def load(self, model_dir: str, gpu_id: int | None = None) -> None:
        """Nothing to load (the plain server's entry point)."""

    def classify(self, payloads: list[bytes | bytearray]) -> list[dict[str, Any]]:
        return [ANSWER for _ in payloads]

    def handle(self, data: list[dict[str, Any]], context: Any) -> list[dict[str, Any]]:
        return self.classify([row.get("data") or row.get("body") for row in data])
