"""The streaming row of `make bench`: a generator served piece by piece, against the same
generator iterated bare in-process.

The workload (bench/handlers/stream_inference.py, served as a toolkit model's code/inference.py)
yields :data:`PIECES` pieces of 32 bytes, each after about 1 ms of CPU work, calibrated here once
and sent in the request, so the bare and the served generator do the same work. Two kinds of
work: a pure-Python loop (holds the GIL) and small torch matrix products (release it).

For each kind and each engine (1 worker, 1 torch thread): the time to the first piece as the
client sees it (from sending the request to the first piece's bytes) and the pieces a second it
receives, medians over several streams, one at a time and then :data:`CONCURRENT` at once;
against the bare generator in this process (its first piece and its pieces a second; several
generators advanced in turn against several streams), timed in rounds alternating with the
served ones, so that both meet the same share of a busy machine. Targets (issue 20): the first
piece within 2 ms of the bare generator's, and at least 0.9x its pieces a second, one stream at a
time.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from bench.servers import byoserve_command, running
from bench.stream_client import StreamSummary, StreamTimes, read_streams
from serve.process.probe import free_port

HANDLER = Path(__file__).resolve().parent / "handlers" / "stream_inference.py"
PIECES = 200
WORK_S = 0.001  # each piece's work
KINDS = ("python", "torch")
CONCURRENT = 4
# The targets, one stream at a time.
FIRST_PIECE_MS_OVER = 2.0
RATE_RATIO = 0.9


@dataclass(frozen=True)
class StreamRow:
    """One line of the table: a served stream against the bare generator timed beside it."""

    kind: str  # the work
    system: str  # the engine
    streams: int  # at once
    first_piece_ms: float
    pieces_per_s: float
    bare_first_piece_ms: float
    bare_pieces_per_s: float

    @property
    def first_piece_ms_over_bare(self) -> float:
        return self.first_piece_ms - self.bare_first_piece_ms

    @property
    def rate_ratio(self) -> float:
        return self.pieces_per_s / self.bare_pieces_per_s if self.bare_pieces_per_s else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "first_piece_ms_over_bare": self.first_piece_ms_over_bare,
            "rate_ratio": self.rate_ratio,
        }


def build_stream_model(root: Path) -> Path:
    """A toolkit model directory: no weights, code/inference.py the streaming workload."""
    directory = root / "stream"
    if directory.exists():
        shutil.rmtree(directory)
    (directory / "code").mkdir(parents=True)
    shutil.copy(HANDLER, directory / "code" / "inference.py")
    return directory


def load_code(model_dir: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "bench_stream_inference", model_dir / "code" / "inference.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def calibrate(code: ModuleType, model: Any, kind: str, seconds: float = WORK_S) -> int:
    """The units of ``kind`` work that take ``seconds`` here (the median of several timings)."""
    units = 64
    while True:  # grow until one timing is long enough to scale from
        took = _time_work(code, model, kind, units)
        if took >= 0.002:
            break
        units *= 2
    rates = sorted(units / _time_work(code, model, kind, units) for _ in range(15))
    return max(1, round(rates[len(rates) // 2] * seconds))


def _time_work(code: ModuleType, model: Any, kind: str, units: int) -> float:
    began = time.perf_counter()
    code.work(kind, units, model)
    return time.perf_counter() - began


def request_body(kind: str, units: int, pieces: int) -> bytes:
    return json.dumps({"work": kind, "units": units, "pieces": pieces}).encode()


def bare_streams(code: ModuleType, model: Any, body: bytes, streams: int) -> list[StreamTimes]:
    """The generator iterated in-process; with several ``streams``, as many generators started
    together and advanced in turn, a piece each (as the server interleaves them)."""
    started = time.perf_counter()
    times = [StreamTimes(started) for _ in range(streams)]
    generators = [code.predict_fn(code.input_fn(body, "application/json"), model)
                  for _ in range(streams)]  # fmt: skip
    open_ = list(zip(generators, times, strict=True))
    while open_:
        for generator, clock in list(open_):
            if next(generator, None) is None:
                open_.remove((generator, clock))
            else:
                clock.pieces.append(time.perf_counter())
    return times


def _rounds(repeats: int) -> int:
    """Rounds of :data:`CONCURRENT` streams: about as many streams as the single-stream line."""
    return max(2, repeats // CONCURRENT)


def measure_engine(
    model_dir: Path, engine: str, kinds: dict[str, int], pieces: int, repeats: int, log: Path
) -> list[StreamRow]:
    """Each kind through the server on ``engine`` (1 worker, 1 torch thread), one stream and
    :data:`CONCURRENT`, each round of served streams beside a round of the bare generator, so
    that both meet the same share of a busy machine."""
    code = load_code(model_dir)
    model = code.model_fn(str(model_dir))
    port = free_port()
    args = ["--http-engine", engine, "--workers", "1", "--torch-threads", "1"]
    rows = []
    with running(byoserve_command(model_dir, port, args), port, log):
        for kind, units in kinds.items():
            body = request_body(kind, units, pieces)
            for _ in range(3):  # warm-up: the first requests pay for lazy set-ups
                read_streams("127.0.0.1", port, body, pieces, 1)
            for streams, count in ((1, repeats), (CONCURRENT, _rounds(repeats))):
                served: list[StreamTimes] = []
                bare: list[StreamTimes] = []
                for _ in range(count):
                    bare += bare_streams(code, model, body, streams)
                    served += read_streams("127.0.0.1", port, body, pieces, streams)
                rows.append(stream_row(kind, engine, streams, served, bare))
    return rows


def stream_row(
    kind: str, engine: str, streams: int, served: list[StreamTimes], bare: list[StreamTimes]
) -> StreamRow:
    ours, base = StreamSummary.of(served), StreamSummary.of(bare)
    return StreamRow(kind, engine, streams, ours.first_piece_ms, ours.pieces_per_s,
                     base.first_piece_ms, base.pieces_per_s)  # fmt: skip


def stream_verdicts(rows: list[StreamRow]) -> dict[str, Any]:
    """Per kind of work and engine, one stream at a time: the first piece within
    :data:`FIRST_PIECE_MS_OVER` of the bare generator's, and :data:`RATE_RATIO` of its rate."""
    return {
        f"stream_{r.kind}_{r.system}": {
            "first_piece_ms": r.first_piece_ms,
            "first_piece_ms_over_bare": r.first_piece_ms_over_bare,
            "first_piece_ms_over_allowed": FIRST_PIECE_MS_OVER,
            "rate_ratio": r.rate_ratio,
            "rate_ratio_needed": RATE_RATIO,
            "met": r.first_piece_ms_over_bare <= FIRST_PIECE_MS_OVER and r.rate_ratio >= RATE_RATIO,
        }
        for r in rows
        if r.streams == 1
    }


def measure_streaming(
    scratch: Path, engines: tuple[str, ...], quick: bool
) -> tuple[dict[str, Any], list[StreamRow]]:
    """The streaming rows and their settings (work units per kind, pieces, repeats)."""
    pieces, repeats = (100, 6) if quick else (PIECES, 20)
    model_dir = build_stream_model(scratch / "models")
    code = load_code(model_dir)
    model = code.model_fn(str(model_dir))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the bare generator on one torch thread, as the server runs it
    try:
        kinds = {kind: calibrate(code, model, kind) for kind in KINDS}
        rows = [
            row
            for engine in engines
            for row in measure_engine(
                model_dir, engine, kinds, pieces, repeats, scratch / f"stream-{engine}.log"
            )
        ]
    finally:
        torch.set_num_threads(threads)
    rows.sort(key=lambda r: (KINDS.index(r.kind), r.streams))
    settings = {"pieces": pieces, "repeats": repeats, "work_s": WORK_S, "units": kinds,
                "piece_bytes": code.PIECE_BYTES, "concurrent": CONCURRENT}  # fmt: skip
    return settings, rows


def print_stream_table(rows: list[StreamRow], settings: dict[str, Any]) -> None:
    print(
        f"\nstreaming: {settings['pieces']} pieces of {settings['piece_bytes']} bytes, each after"
        f" {settings['work_s'] * 1000:g} ms of work, median of {settings['repeats']} streams"
        " (1 worker, 1 torch thread), each engine against the bare generator timed beside it"
    )
    print(f"| {'work':6} | {'engine':8} | {'streams':>7} | {'first piece ms':>14} | {'bare':>5} "
          f"| {'over':>5} | {'pieces/s':>8} | {'bare':>5} | {'x bare':>6} |")  # fmt: skip
    print(f"|{'-' * 8}|{'-' * 10}|{'-' * 9}|{'-' * 16}|{'-' * 7}|{'-' * 7}|{'-' * 10}|{'-' * 7}"
          f"|{'-' * 8}|")  # fmt: skip
    for r in rows:
        print(f"| {r.kind:6} | {r.system:8} | {r.streams:7d} | {r.first_piece_ms:14.2f} | "
              f"{r.bare_first_piece_ms:5.2f} | {r.first_piece_ms_over_bare:+5.2f} | "
              f"{r.pieces_per_s:8.0f} | {r.bare_pieces_per_s:5.0f} | "
              f"{r.rate_ratio:6.2f} |")  # fmt: skip
