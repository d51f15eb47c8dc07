"""The arithmetic of `make bench` (no servers run here): verdicts, the server-cost bound, and
how the streaming row counts and times pieces."""

from __future__ import annotations

from typing import Any

import pytest

from bench.run import cost_analysis, verdicts
from bench.stream_client import StreamSummary, StreamTimes
from bench.streaming import StreamRow, stream_verdicts


def _row(model: str, kind: str, system: str, ratio: float, p99: float) -> dict[str, Any]:
    return {"model": model, "kind": kind, "system": system, "ratio": ratio, "p99_ms": p99}


ROWS = [
    _row("digit", "plain", "plain", 0.43, 16.0),
    _row("digit", "byoserve", "batch 1", 0.35, 19.0),
    _row("digit", "byoserve", "batch 8", 0.47, 21.0),
    _row("resnet18", "plain", "plain", 0.96, 809.0),
    _row("resnet18", "byoserve", "batch 1", 0.84, 843.0),
    _row("resnet18", "byoserve", "batch 8", 0.99, 772.0),
]


def test_a_target_is_met_only_by_one_row_meeting_both_bounds() -> None:
    result = verdicts(ROWS, cold=1.73, torch_s=1.2)
    assert result["resnet18"]["met"] is True
    assert result["resnet18"]["best"] == "batch 8"
    # digit: the row within p99 is too slow; the verdict names it and the shortfall
    assert result["digit"]["met"] is False
    assert (result["digit"]["best"], result["digit"]["ratio"]) == ("batch 1", 0.35)
    cold = result["cold_start"]
    assert (cold["seconds"], cold["import_torch_s"], cold["met"]) == (1.73, 1.2, False)
    assert cold["over_import_torch_s"] == pytest.approx(0.53)
    assert verdicts(ROWS, cold=1.4, torch_s=1.2)["cold_start"]["met"] is True


def test_with_no_row_within_the_p99_bound_the_fastest_is_reported() -> None:
    rows = [r for r in ROWS if r["system"] != "batch 1"]
    digit = verdicts(rows, cold=1.0, torch_s=0.9)["digit"]
    assert (digit["best"], digit["p99_ms"], digit["met"]) == ("batch 8", 21.0, False)


def test_the_server_cost_bounds_the_ratio() -> None:
    # 2 cores; the model path alone: 2000 req/s (1000 us a request); a no-op server: 2000 req/s
    analysis = cost_analysis({"byoserve": 2000.0, "plain": 6000.0}, limit=2000.0, cpus=2)
    assert analysis["model_us_per_request"] == pytest.approx(1000.0)
    assert analysis["byoserve"]["server_us_per_request"] == pytest.approx(1000.0)
    assert analysis["byoserve"]["best_ratio"] == pytest.approx(0.5)
    assert analysis["plain"]["best_ratio"] == pytest.approx(0.75)
    # the 0.75x target: a server costing a third of the model path, as "plain" here
    assert analysis["server_us_needed_for_target"] == pytest.approx(
        analysis["plain"]["server_us_per_request"]
    )


def test_gpu_rows_get_their_own_verdict_and_leave_the_cpu_ones_alone() -> None:
    gpu = [
        _row("resnet18", "limit", "GPU bare forward, batch 32", 1.0, 0.0),
        _row("resnet18", "gpu", "byoserve gunicorn on GPU", 0.71, 90.0),
        _row("resnet18", "gpu", "byoserve granian on GPU", 0.83, 400.0),  # no p99 bound on GPU
    ]
    result = verdicts(ROWS + gpu, cold=1.4, torch_s=1.2)
    assert result["resnet18"]["best"] == "batch 8"  # a GPU row is no CPU candidate
    assert "digit_gpu" not in result
    verdict = result["resnet18_gpu"]
    assert (verdict["best"], verdict["ratio"], verdict["met"]) == (
        "byoserve granian on GPU",
        0.83,
        True,
    )
    assert verdicts(ROWS + gpu[:2], cold=1.4, torch_s=1.2)["resnet18_gpu"]["met"] is False
    assert "resnet18_gpu" not in verdicts(ROWS, cold=1.4, torch_s=1.2)


def test_pieces_are_counted_by_their_newline_however_the_bytes_arrive() -> None:
    times = StreamTimes(started=10.0)
    times.feed(b"0 piece\n1 pie", 10.002)  # a piece and part of the next
    times.feed(b"ce\n", 10.003)
    times.feed(b"2 piece\n3 piece\n", 10.005)  # two pieces in one read
    times.feed(b"", 10.006)
    assert times.pieces == [10.002, 10.003, 10.005, 10.005]
    assert times.first_piece_s == pytest.approx(0.002)
    assert times.pieces_per_s == pytest.approx(3 / 0.003)  # 3 intervals between 4 pieces
    summary = StreamSummary.of([times, StreamTimes(10.0, [10.004, 10.005]), times])
    assert (summary.streams, summary.first_piece_ms) == (3, pytest.approx(2.0))


def test_a_stream_verdict_needs_both_the_first_piece_and_the_rate() -> None:
    rows = [  # kind, engine, streams, first piece ms, pieces/s, the bare generator's two
        StreamRow("python", "gunicorn", 1, 2.9, 950.0, 1.0, 1000.0),
        StreamRow("python", "granian", 1, 3.1, 990.0, 1.0, 1000.0),
        StreamRow("torch", "gunicorn", 1, 1.5, 850.0, 1.0, 1000.0),
        StreamRow("torch", "granian", 4, 9.0, 100.0, 2.0, 250.0),  # no target for 4 streams
    ]
    result = stream_verdicts(rows)
    assert set(result) == {
        "stream_python_gunicorn",
        "stream_python_granian",
        "stream_torch_gunicorn",
    }
    assert result["stream_python_gunicorn"]["met"] is True
    assert result["stream_python_gunicorn"]["first_piece_ms_over_bare"] == pytest.approx(1.9)
    assert result["stream_python_granian"]["met"] is False  # 2.1 ms over
    torch = result["stream_torch_gunicorn"]
    assert (torch["rate_ratio"], torch["met"]) == (pytest.approx(0.85), False)
    assert rows[3].as_dict()["rate_ratio"] == pytest.approx(0.4)
