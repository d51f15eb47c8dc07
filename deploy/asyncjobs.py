"""The asynchronous front's jobs (deploy/asyncfront.py): one accepted request each, run in the
background as SageMaker runs it: input from S3 (or the request's inline body), a POST to the
server's ``/invocations``, the answer to S3, or the failure to S3.

What a failure object holds: the server's own error answer when it refused the request (its JSON
error body, as it sent it), else one sentence saying what went wrong (the input could not be
read, no answer within ``InvocationTimeoutSeconds``, the request expired in the queue).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import requests
from botocore.exceptions import BotoCoreError, ClientError

from deploy.s3paths import S3Path

logger = logging.getLogger(__name__)

PIECE = 1024 * 1024  # the input goes to the server in pieces this size
CONNECT_TIMEOUT = 10.0
ANSWER_HEADERS = ("Content-Type", "X-Amzn-SageMaker-Custom-Attributes", "X-Request-Id")


class JobFailedError(Exception):
    """The job failed; the message is what its failure object says."""


@dataclass(frozen=True, slots=True)
class AsyncJob:
    """One accepted asynchronous request."""

    inference_id: str
    source: S3Path | None  # None: the request's inline body
    inline: bytes
    content_type: str
    accept: str | None
    custom_attributes: str | None
    output: S3Path
    failure: S3Path
    timeout: int  # InvocationTimeoutSeconds
    ttl: int  # RequestTTLSeconds
    received: float  # monotonic

    def headers(self) -> dict[str, str]:
        """The headers of the request to the server, as SageMaker sends them."""
        headers = {"Content-Type": self.content_type,
                   "X-Amzn-SageMaker-Inference-Id": self.inference_id}  # fmt: skip
        if self.accept:
            headers["Accept"] = self.accept
        if self.custom_attributes:
            headers["X-Amzn-SageMaker-Custom-Attributes"] = self.custom_attributes
        return headers


class _SizedPieces:
    """An S3 object's body as pieces of known total length: requests sends it with its
    Content-Length (not chunked, which not every HTTP engine of the server reads), a piece at a
    time, so a 1 GB input is never held whole here."""

    def __init__(self, body: Any, length: int) -> None:
        self.body = body
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[bytes]:
        yield from self.body.iter_chunks(PIECE)


class JobRunner:
    """Runs jobs against the server at ``url``, ``concurrency`` at a time; ``s3`` is a boto3
    client."""

    def __init__(self, url: str, s3: Any, concurrency: int) -> None:
        self.url = url
        self.s3 = s3
        self.pool = ThreadPoolExecutor(concurrency, thread_name_prefix="byoserve-async")

    def submit(self, job: AsyncJob) -> None:
        """Queue ``job``; it runs when a slot is free."""
        self.pool.submit(self.run, job)

    def close(self) -> None:
        """Drop the queued jobs; those in flight end with the server."""
        self.pool.shutdown(wait=False, cancel_futures=True)

    def forward(
        self, method: str, path: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, bytes, dict[str, str]]:
        """One request straight to the server: its status, body and headers worth passing on."""
        response = requests.request(method, self.url + path, data=body, headers=headers,
                                    timeout=(CONNECT_TIMEOUT, None))  # fmt: skip
        kept = {key: response.headers[key] for key in ANSWER_HEADERS if key in response.headers}
        return response.status_code, response.content, kept

    def run(self, job: AsyncJob) -> None:
        """Run ``job`` to its outcome in S3; never raises (a pool thread has no one to tell)."""
        try:
            where = self._answer(job)
        except JobFailedError as exc:
            logger.warning("inference %s failed: %s", job.inference_id, exc)
            self._put_failure(job, str(exc))
        except Exception as exc:  # the front's own fault: said in the failure object too
            logger.error("inference %s: unexpected error", job.inference_id, exc_info=exc)
            self._put_failure(job, f"internal error in the local asynchronous front: {exc}")
        else:
            logger.info("inference %s answered: %s", job.inference_id, where)

    def _answer(self, job: AsyncJob) -> S3Path:
        waited = time.monotonic() - job.received
        if waited > job.ttl:
            raise JobFailedError(f"the request expired: it waited {waited:.0f} s in the queue, "
                                 f"over its RequestTTLSeconds ({job.ttl})")  # fmt: skip
        try:
            response = requests.post(
                self.url + "/invocations",
                data=self._input(job),
                headers=job.headers(),
                timeout=(CONNECT_TIMEOUT, job.timeout),
                stream=True,
            )
        except requests.Timeout as exc:
            raise JobFailedError(f"the model did not answer within InvocationTimeoutSeconds "
                                 f"({job.timeout} s)") from exc  # fmt: skip
        except requests.ConnectionError as exc:
            raise JobFailedError(f"the model server could not be reached: {exc}") from exc
        with response:
            if response.status_code >= 400:
                raise JobFailedError(response.content.decode("utf-8", "replace"))
            kind = response.headers.get("Content-Type", "application/octet-stream")
            self.s3.upload_fileobj(response.raw, job.output.bucket, job.output.key,
                                   ExtraArgs={"ContentType": kind})  # fmt: skip
        return job.output

    def _input(self, job: AsyncJob) -> bytes | _SizedPieces:
        if job.source is None:
            return job.inline
        try:
            found = self.s3.get_object(Bucket=job.source.bucket, Key=job.source.key)
        except (ClientError, BotoCoreError) as exc:
            raise JobFailedError(f"the input {job.source} could not be read: {exc}") from exc
        return _SizedPieces(found["Body"], int(found["ContentLength"]))

    def _put_failure(self, job: AsyncJob, message: str) -> None:
        try:
            self.s3.put_object(Bucket=job.failure.bucket, Key=job.failure.key,
                               Body=message.encode(), ContentType="text/plain")  # fmt: skip
        except (ClientError, BotoCoreError) as exc:
            logger.error("inference %s: the failure could not be written to %s: %s",
                         job.inference_id, job.failure, exc)  # fmt: skip
