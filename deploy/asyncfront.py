"""``deploy local`` for an asynchronous endpoint: SageMaker's asynchronous front, on this machine.

On SageMaker an asynchronous endpoint's container sees the ordinary ``/ping`` and
``/invocations``; SageMaker itself takes ``InvokeEndpointAsync``, queues the request, reads its
input from S3, calls the container, and writes the answer (or the failure) to S3. This module is
that part, so that boto3's ``invoke_endpoint_async`` (with ``endpoint_url=`` the front) works
against a local server exactly as against SageMaker:

- ``POST /endpoints/NAME/async-invocations`` (botocore's route and headers:
  ``X-Amzn-SageMaker-InputLocation``, ``-Content-Type``, ``-Accept``, ``-Custom-Attributes``,
  ``-Inference-Id``, ``-InvocationTimeoutSeconds``, ``-RequestTTLSeconds``,
  ``-S3OutputPathExtension``, ``-Filename``, or an inline body up to 128,000 bytes) answers
  202 at once: the body ``{"InferenceId": ...}`` and the headers
  ``X-Amzn-SageMaker-OutputLocation`` and ``X-Amzn-SageMaker-FailureLocation``;
- in the background (at most ``max_concurrent_invocations_per_instance`` at a time) it reads the
  input from S3, POSTs it to the server's ``/invocations``, and writes the answer to
  ``OUTPUT/INFERENCE_ID.out`` or the failure to ``FAILURE/INFERENCE_ID-error.out``; the server's
  answer must start within ``InvocationTimeoutSeconds``;
- ``/ping`` and ``/invocations`` go straight to the server.

The S3 client is boto3's, so ``AWS_ENDPOINT_URL`` points it at moto as it points every client.
The container knows nothing of S3 (serve/ never learns it).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from typing import Any

from flask import Flask, Response, request
from werkzeug.serving import WSGIRequestHandler, make_server

from deploy.asyncjobs import AsyncJob, JobRunner
from deploy.definitions import EndpointDefinition
from deploy.errors import DeployError
from deploy.local import LocalServer, LocalServerError
from deploy.s3paths import S3Path

logger = logging.getLogger(__name__)

HEADER = "X-Amzn-SageMaker-"
DEFAULT_CONCURRENCY = 4  # SageMaker picks its own when the definition sets none
MAX_INLINE_BODY = 128_000
DEFAULT_TTL, MIN_TTL, MAX_TTL = 21_600, 60, 21_600
PROXIED_HEADERS = ("Content-Type", "Accept", HEADER + "Custom-Attributes", HEADER + "Inference-Id")


class ValidationError(Exception):
    """A request SageMaker would refuse (400 ``ValidationError``)."""


@dataclass(frozen=True, slots=True)
class AsyncEndpoint:
    """What the front needs of an asynchronous definition: where outcomes go, and its limits."""

    name: str
    output: S3Path
    failure: S3Path
    invocation_timeout: int
    concurrency: int

    @classmethod
    def of(cls, definition: EndpointDefinition, bucket: str | None) -> AsyncEndpoint | None:
        """The definition's ``[async]`` table resolved (None when it has none).

        Raises:
            DefinitionError: no ``output_path`` and no bucket to put the default under.
        """
        table = definition.async_inference
        if table is None:
            return None
        name = definition.name
        return cls(
            name=name,
            output=S3Path.parse(table.output_prefix(bucket, name), "[async] output_path"),
            failure=S3Path.parse(table.failure_prefix(bucket, name), "[async] failure_path"),
            invocation_timeout=table.invocation_timeout,
            concurrency=table.max_concurrent_invocations_per_instance or DEFAULT_CONCURRENCY,
        )

    def shown(self) -> dict[str, Any]:
        """As a dry run shows it."""
        return {"output": str(self.output), "failure": str(self.failure),
                "invocation_timeout": self.invocation_timeout,
                "concurrency": self.concurrency}  # fmt: skip


def _refusal(message: str) -> Response:
    """A 400 in the shape botocore reads as ``ValidationError``."""
    body = json.dumps({"message": message})
    headers = {"X-Amzn-ErrorType": "ValidationError"}
    return Response(body, status=400, headers=headers, content_type="application/json")


def _bounded(name: str, default: int, low: int, high: int) -> int:
    raw = request.headers.get(HEADER + name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ValidationError(f"{name} must be a whole number of seconds, not {raw!r}") from exc
    if not low <= value <= high:
        raise ValidationError(f"{name} must be {low}-{high}, not {value}")
    return value


def _job(endpoint: AsyncEndpoint, name: str) -> AsyncJob:
    """The job of the request in hand, as SageMaker would accept it."""
    if name != endpoint.name:
        raise ValidationError(f"Endpoint {name} not found (this front serves {endpoint.name})")
    location = request.headers.get(HEADER + "InputLocation")
    inline = request.get_data(cache=False) if request.content_length else b""
    if location and inline:
        raise ValidationError("InputLocation and Body are mutually exclusive")
    if not location and not inline:
        raise ValidationError("give the input: InputLocation (s3://...) or an inline Body")
    if len(inline) > MAX_INLINE_BODY:
        raise ValidationError(f"an inline Body is at most {MAX_INLINE_BODY} bytes")
    inference_id = request.headers.get(HEADER + "Inference-Id") or str(uuid.uuid4())
    extension = request.headers.get(HEADER + "S3OutputPathExtension")
    output = endpoint.output.child(extension) if extension else endpoint.output
    failure = endpoint.failure.child(extension) if extension else endpoint.failure
    filename = request.headers.get(HEADER + "Filename") or f"{inference_id}.out"
    try:
        source = S3Path.parse(location, "InputLocation") if location else None
    except DeployError as exc:
        raise ValidationError(str(exc)) from exc
    return AsyncJob(
        inference_id=inference_id,
        source=source,
        inline=inline,
        content_type=request.headers.get(HEADER + "Content-Type", "application/octet-stream"),
        accept=request.headers.get(HEADER + "Accept"),
        custom_attributes=request.headers.get(HEADER + "Custom-Attributes"),
        output=output.child(filename),
        failure=failure.child(f"{inference_id}-error.out"),
        timeout=_bounded("InvocationTimeoutSeconds", endpoint.invocation_timeout, 1, 3600),
        ttl=_bounded("RequestTTLSeconds", DEFAULT_TTL, MIN_TTL, MAX_TTL),
        received=time.monotonic(),
    )


def create_front(endpoint: AsyncEndpoint, runner: JobRunner) -> Flask:
    """The front's Flask app: the asynchronous route, and the server's own routes proxied."""
    app = Flask("byoserve-async-front")

    @app.post("/endpoints/<name>/async-invocations")
    def invoke_async(name: str) -> Response:
        try:
            job = _job(endpoint, name)
        except ValidationError as exc:
            return _refusal(str(exc))
        runner.submit(job)
        headers = {HEADER + "OutputLocation": str(job.output),
                   HEADER + "FailureLocation": str(job.failure)}  # fmt: skip
        body = json.dumps({"InferenceId": job.inference_id})
        return Response(body, status=202, headers=headers, content_type="application/json")

    @app.post("/endpoints/<name>/invocations")
    def invoke(name: str) -> Response:
        return _refusal(f"Endpoint {name} is asynchronous: call InvokeEndpointAsync")

    @app.get("/ping")
    def ping() -> Response:
        return _proxied(runner.forward("GET", "/ping", b"", {}))

    @app.post("/invocations")
    def invocations() -> Response:
        headers = {key: request.headers[key] for key in PROXIED_HEADERS if key in request.headers}
        return _proxied(runner.forward("POST", "/invocations", request.get_data(), headers))

    return app


def _proxied(answer: tuple[int, bytes, dict[str, str]]) -> Response:
    status, body, headers = answer
    return Response(body, status=status, headers=headers)


class _QuietHandler(WSGIRequestHandler):
    """No access line per request: the jobs log what matters."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


@contextlib.contextmanager
def fronted(
    server: AbstractContextManager[LocalServer], endpoint: AsyncEndpoint, port: int, s3: Any
) -> Iterator[LocalServer]:
    """Start ``server``, then the front on ``port`` in front of it; yields the front (its URL is
    the one boto3 is given). On exit the front stops taking requests, queued jobs are dropped,
    and the server stops (a job in flight then fails)."""
    try:  # bound before the server starts: a port in use fails at once, in one line
        listener = socket.create_server(("127.0.0.1", port))
    except OSError as exc:
        why = os.strerror(exc.errno) if exc.errno else str(exc)
        raise LocalServerError(f"cannot listen on port {port}: {why}") from exc
    with listener, server as backend:
        runner = JobRunner(backend.url, s3, endpoint.concurrency)
        http = make_server(
            "127.0.0.1", port, create_front(endpoint, runner), threaded=True,
            request_handler=_QuietHandler, fd=listener.fileno(),
        )  # fmt: skip
        thread = threading.Thread(target=http.serve_forever, name="byoserve-async-front")
        thread.start()
        logger.info("asynchronous: answers to %s, failures to %s", endpoint.output,
                    endpoint.failure)  # fmt: skip
        try:
            yield replace(
                backend,
                url=f"http://127.0.0.1:{port}",
                alive=lambda: backend.alive() and thread.is_alive(),
            )
        finally:
            http.shutdown()
            http.server_close()
            thread.join()
            runner.close()
