"""``transform --local``: run a batch transform job here, against a local server, as SageMaker
runs it against the container.

Each input object is split by line (``SplitType=Line``; ``None``: the whole object is one record),
its records packed into requests under ``MaxPayloadInMB`` (``MultiRecord``) or sent one a request
(``SingleRecord``), with ``MaxConcurrentTransforms`` requests in flight. 5xx answers and broken
connections are retried 3 times (SageMaker's default ``InvocationsMaxRetries``). A 4xx whose
message starts ``line K:`` fails record K of its request; the others are sent again (split around
it; a 4xx naming no line is narrowed down by halves), so one bad record costs only its own answer.
Each object's answers go to ``<object>.out``: one line per input line, in order (blank lines and
failed records answer an empty line) with ``AssembleWith=Line``, the answers as they are with
``None``.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import urllib3
from tqdm import tqdm

from deploy.batchio import OUT_SUFFIX, ObjectStore
from deploy.batchsettings import MIB, Settings, execution_parameters, resolve
from deploy.transform import TransformJob

logger = logging.getLogger(__name__)

MAX_RETRIES = 3  # InvocationsMaxRetries' default
INVOCATION_TIMEOUT = 600.0  # InvocationsTimeoutInSeconds' default
LINE_ERROR = re.compile(r"line (\d+): (.*)", re.DOTALL)
SHOWN_FAILURES = 20


@dataclass
class InputObject:
    """One input object: its records (lines), their answers, what failed."""

    name: str
    records: list[bytes]
    answers: list[bytes | None]
    pending: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def split(cls, name: str, data: bytes, split_type: str) -> InputObject:
        if split_type == "None":
            records = [data]
        else:
            records = data.split(b"\n")
            if records and records[-1] == b"":
                records.pop()  # the newline that ends the last line
        return cls(name, records, [None] * len(records))


@dataclass(frozen=True, slots=True)
class Failure:
    """A record that got no answer: where it is and why."""

    name: str
    line: int | None  # 1-based line in the object; None with SplitType None
    message: str

    def __str__(self) -> str:
        where = self.name if self.line is None else f"{self.name} line {self.line}"
        return f"{where}: {self.message}"


def pack(item: InputObject, settings: Settings) -> Iterator[list[int]]:
    """The requests of one object, as lists of record indices: blank lines are not sent;
    MultiRecord fills each request up to the payload limit."""
    if settings.strategy == "SingleRecord":
        yield from ([i] for i, record in enumerate(item.records) if record.strip())
        return
    batch: list[int] = []
    size = 0
    for index, record in enumerate(item.records):
        if not record.strip():
            continue
        if batch and size + 1 + len(record) > settings.payload_bytes:
            yield batch
            batch, size = [], 0
        size += len(record) + (1 if batch else 0)
        batch.append(index)
    if batch:
        yield batch


class Runner:
    """Sends one job's requests and assembles the answers (see the module docstring)."""

    def __init__(
        self,
        job: TransformJob,
        settings: Settings,
        url: str,
        pool: urllib3.PoolManager,
        output: ObjectStore,
        progress: tqdm[Any],
    ) -> None:
        self.job, self.settings, self.url = job, settings, f"{url}/invocations"
        self.pool, self.output, self.progress = pool, output, progress
        self.headers = {"Content-Type": job.content_type or "application/octet-stream"}
        if job.accept:
            self.headers["Accept"] = job.accept
        self.retries = urllib3.Retry(
            total=MAX_RETRIES,
            status_forcelist=range(500, 600),
            allowed_methods=None,  # POST too: SageMaker retries invocations
            backoff_factor=0.05,
            raise_on_status=False,
        )
        self.timeout = urllib3.Timeout(connect=10.0, read=INVOCATION_TIMEOUT)
        self.failures: list[Failure] = []
        self.records = 0
        self.written: list[str] = []
        self._lock = threading.Lock()

    def send(self, item: InputObject, batch: list[int]) -> None:
        """Send ``batch`` (and, after a 4xx, its parts), then write the object if it is done."""
        try:
            todo = [batch]
            while todo:
                todo += self._send_one(item, todo.pop())
        finally:
            with item.lock:
                item.pending -= 1
                done = item.pending == 0
            if done:
                self.finish(item)

    def _send_one(self, item: InputObject, batch: list[int]) -> list[list[int]]:
        """One request; returns the parts to send again (after a 4xx), else []."""
        body = b"\n".join(item.records[i] for i in batch)
        if len(body) > self.settings.payload_bytes:
            self._fail(item, batch, f"{len(body)} bytes, over MaxPayloadInMB")
            return []
        try:
            response = self.pool.request(
                "POST",
                self.url,
                body=body,
                headers=self.headers,
                retries=self.retries,
                timeout=self.timeout,
            )
        except urllib3.exceptions.HTTPError as exc:
            self._fail(item, batch, f"no answer after {MAX_RETRIES} retries: {exc}")
            return []
        if response.status == 200:
            self._answer(item, batch, response.data)
            return []
        message = _error_message(response.data) or f"HTTP {response.status}"
        if not 400 <= response.status < 500:
            self._fail(item, batch, f"HTTP {response.status} after {MAX_RETRIES} retries: "
                       f"{message}")  # fmt: skip
            return []
        found = LINE_ERROR.match(message)
        if found and 1 <= int(found.group(1)) <= len(batch):
            bad = int(found.group(1)) - 1
            self._fail(item, [batch[bad]], found.group(2))
            return [part for part in (batch[:bad], batch[bad + 1 :]) if part]
        if len(batch) == 1:
            self._fail(item, batch, message)
            return []
        half = len(batch) // 2  # no line named: narrow it down
        return [batch[:half], batch[half:]]

    def _answer(self, item: InputObject, batch: list[int], data: bytes) -> None:
        if len(batch) == 1:
            item.answers[batch[0]] = data
        else:
            lines = data.split(b"\n")
            ended = data.endswith(b"\n")
            if ended:
                lines.pop()
            if len(lines) != len(batch):
                if self.job.assemble_with == "Line":
                    got = f"{len(lines)} lines for {len(batch)} records"
                    self._fail(item, batch, f"the server answered {got}")
                    return
                item.answers[batch[0]] = data  # None: the answer as it came
                for index in batch[1:]:
                    item.answers[index] = b""
            else:
                for index, line in zip(batch, lines, strict=True):
                    item.answers[index] = line + b"\n" if ended else line
        self._count(len(batch))

    def _fail(self, item: InputObject, batch: list[int], message: str) -> None:
        with self._lock:
            for index in batch:
                line = None if self.job.split_type == "None" else index + 1
                self.failures.append(Failure(item.name, line, message))
        self._count(len(batch))

    def _count(self, records: int) -> None:
        with self._lock:
            self.records += records
        self.progress.update(records)

    def finish(self, item: InputObject) -> None:
        """Write ``<name>.out``: the answers assembled as the job says."""
        if self.job.assemble_with == "Line":
            data = b"".join(
                (answer or b"").removesuffix(b"\n").removesuffix(b"\r") + b"\n"
                for answer in item.answers
            )
        else:
            data = b"".join(answer or b"" for answer in item.answers)
        where = self.output.write(item.name + OUT_SUFFIX, data)
        with self._lock:
            self.written.append(where)


def _error_message(data: bytes) -> str:
    """The ``{"error": {"message": ...}}`` of an error answer, else its text."""
    try:
        message = json.loads(data)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return data.decode("utf-8", "replace").strip()[:500]
    return str(message)


@dataclass(frozen=True, slots=True)
class Summary:
    """What a local job did."""

    objects: int
    records: int
    failures: list[Failure]
    seconds: float
    settings: Settings
    written: list[str]

    @property
    def records_per_s(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0

    def lines(self) -> list[str]:
        """The failures (the first few) and one summary line."""
        shown = [f"failed: {failure}" for failure in self.failures[:SHOWN_FAILURES]]
        if len(self.failures) > SHOWN_FAILURES:
            shown.append(f"... and {len(self.failures) - SHOWN_FAILURES} more failed records")
        return [
            *shown,
            f"transform: {self.objects} file(s), {self.records} records, "
            f"{len(self.failures)} failed, {self.seconds:.2f} s, {self.records_per_s:.0f} "
            f"records/s ({self.settings.strategy}, {self.settings.concurrency} at once, "
            f"{self.settings.payload_bytes // MIB} MB)",
        ]


def run_job(
    job: TransformJob, url: str, inputs: ObjectStore, names: list[str], output: ObjectStore
) -> Summary:
    """Run ``job`` against the server at ``url``: the objects ``names`` of ``inputs`` (listed
    before the server starts, so a wrong input fails fast) to ``output``."""
    settings = resolve(job, execution_parameters(urllib3.PoolManager(), url))
    pool = urllib3.PoolManager(maxsize=settings.concurrency, block=True)
    logger.info(
        "%d object(s) from %s: %s, %d MB a request, %d at once",
        len(names), inputs.url, settings.strategy, settings.payload_bytes // MIB,
        settings.concurrency,
    )  # fmt: skip
    started = time.perf_counter()
    with (
        tqdm(unit=" records", file=sys.stderr, disable=None, dynamic_ncols=True) as progress,
        ThreadPoolExecutor(settings.concurrency, thread_name_prefix="transform") as executor,
    ):
        runner = Runner(job, settings, url, pool, output, progress)
        in_flight = threading.BoundedSemaphore(2 * settings.concurrency)
        errors: list[BaseException] = []

        def done(future: Future[None]) -> None:
            in_flight.release()
            if future.exception() is not None:
                errors.append(future.exception())  # type: ignore[arg-type]

        for number, name in enumerate(names, start=1):
            progress.set_postfix_str(f"file {number}/{len(names)} {name}", refresh=False)
            item = InputObject.split(name, inputs.read(name), job.split_type)
            batches = list(pack(item, settings))
            item.pending = len(batches)
            if not batches:
                runner.finish(item)
            for batch in batches:
                in_flight.acquire()
                executor.submit(runner.send, item, batch).add_done_callback(done)
    if errors:
        raise errors[0]
    seconds = time.perf_counter() - started
    failures = sorted(runner.failures, key=lambda failure: (failure.name, failure.line or 0))
    return Summary(len(names), runner.records, failures, seconds, settings, sorted(runner.written))
