"""The baseline of benchmark.md: plain gunicorn + Flask, sync workers, one torch thread each,
one request at a time, the same handler code.

Run: python -m bench.plain_server MODEL_DIR HANDLER_FILE HANDLER_CLASS PORT WORKERS
"""

from __future__ import annotations

import importlib
import json
import sys
from typing import Any

from flask import Flask, Response, request
from gunicorn.app.base import BaseApplication


def create_app(model_dir: str, handler_file: str, handler_class: str) -> Flask:
    app = Flask("plain")
    state: dict[str, Any] = {}

    def classifier() -> Any:
        if "classifier" not in state:
            import torch

            torch.set_num_threads(1)
            sys.path.insert(0, model_dir)
            module = importlib.import_module(handler_file.removesuffix(".py"))
            instance = getattr(module, handler_class)()
            instance.load(model_dir)
            state["classifier"] = instance
        return state["classifier"]

    app.extensions["classifier"] = classifier

    @app.get("/ping")
    def ping() -> Response:
        classifier()
        return Response(status=200)

    @app.post("/invocations")
    def invocations() -> Response:
        answer = classifier().classify([request.get_data()])[0]
        return Response(json.dumps(answer), content_type="application/json")

    return app


class Plain(BaseApplication):  # type: ignore[misc]
    def __init__(self, app: Flask, port: int, workers: int) -> None:
        self.app, self.port, self.workers = app, port, workers
        super().__init__()

    def load_config(self) -> None:
        self.cfg.set("bind", [f"127.0.0.1:{self.port}"])
        self.cfg.set("workers", self.workers)
        self.cfg.set("worker_class", "sync")
        self.cfg.set("accesslog", None)
        self.cfg.set("control_socket_disable", True)
        # load in every worker before it serves, not at its first request
        self.cfg.set("post_worker_init", lambda worker: self.app.extensions["classifier"]())

    def load(self) -> Flask:
        return self.app


if __name__ == "__main__":
    model_dir, handler_file, handler_class, port, workers = sys.argv[1:6]
    Plain(create_app(model_dir, handler_file, handler_class), int(port), int(workers)).run()
