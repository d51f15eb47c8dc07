"""Load with wrk: a Lua script POSTs one file with its Content-Type; the report is parsed."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "{content_type}"
local file = io.open("{path}", "rb")
wrk.body = file:read("*all")
file:close()
"""
# The same request spread over several models: each names the next one in turn.
TARGETS_LUA = """
local targets = {%s}
local sent = 0
request = function()
  sent = sent + 1
  wrk.headers["X-Amzn-SageMaker-Target-Model"] = targets[sent %% #targets + 1]
  return wrk.format()
end
"""
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


@dataclass(frozen=True)
class LoadResult:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    socket_errors: int

    @property
    def errors(self) -> int:
        return self.non_2xx + self.socket_errors

    @property
    def good_per_s(self) -> float:
        """Requests answered 2xx a second: a refusal (503 at the queue bound) is fast, not done."""
        if not self.requests:
            return self.requests_per_s
        return self.requests_per_s * (self.requests - self.non_2xx) / self.requests

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "errors": self.errors}


def require_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise SystemExit("bench: wrk is not installed (apt-get install -y wrk)")
    return path


def write_script(
    directory: Path, payload: Path, content_type: str, targets: tuple[str, ...] = ()
) -> Path:
    """A wrk script POSTing ``payload``; with ``targets``, each request names the next model."""
    script = directory / f"post-{payload.stem}{'-' + str(len(targets)) if targets else ''}.lua"
    text = LUA.format(content_type=content_type, path=payload.resolve())
    if targets:
        text += TARGETS_LUA % ", ".join(f'"{target}"' for target in targets)
    script.write_text(text)
    return script


def run_wrk(
    url: str, script: Path, duration: float, connections: int = 16, threads: int = 2
) -> LoadResult:
    """One wrk run against ``url``; latency percentiles from ``--latency``."""
    command = [
        require_wrk(),
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        "--timeout",
        "30s",
        "--latency",
        "-s",
        str(script),
        url,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    return parse_report(done.stdout)


def _milliseconds(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if match is None:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_report(report: str) -> LoadResult:
    """Requests/s, p50, p99, request count, non-2xx and socket errors from wrk's text."""

    def find(pattern: str, default: str | None = None) -> str:
        match = re.search(pattern, report, re.MULTILINE)
        if match is None:
            if default is None:
                raise ValueError(f"wrk report without {pattern!r}:\n{report}")
            return default
        return match.group(1)

    socket = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", report
    )
    return LoadResult(
        requests_per_s=float(find(r"^Requests/sec:\s+([\d.]+)")),
        p50_ms=_milliseconds(find(r"^\s+50%\s+(\S+)")),
        p99_ms=_milliseconds(find(r"^\s+99%\s+(\S+)")),
        requests=int(find(r"^\s+(\d+) requests in")),
        non_2xx=int(find(r"Non-2xx or 3xx responses:\s+(\d+)", "0")),
        socket_errors=sum(int(n) for n in socket.groups()) if socket else 0,
    )
