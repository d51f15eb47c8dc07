"""What every fuzz test shares: Hypothesis's settings for a bounded, repeatable run, and the
checks after it that the server came through intact.

Bounded for CI (``FUZZ_EXAMPLES`` requests, 2000 by default, derandomized so a run is repeatable);
``FUZZ_EXAMPLES=10000 FUZZ_RANDOM=1`` explores further.
"""

from __future__ import annotations

import os

import requests
from hypothesis import HealthCheck, settings

from tests.fixtures.server import ServerProcess

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "2000"))


def fuzz_settings(max_examples: int = EXAMPLES) -> settings:
    """``max_examples`` generated requests, no per-example deadline (a request to a busy model on
    a shared machine takes what it takes), the same examples each run unless ``FUZZ_RANDOM=1``."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=os.environ.get("FUZZ_RANDOM") != "1",
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def check_server_intact(
    server: ServerProcess, pids: list[int] | None = None, *, ping: bool = False
) -> None:
    """After a fuzz run: the same workers as ``pids`` (none died), with ``ping`` the server still
    answering ``/ping``, and no traceback in its log (a client's mistake is no server error)."""
    if pids is not None:
        assert server.worker_pids() == pids, "a worker died"
    if ping:
        assert requests.get(f"{server.url}/ping", timeout=5).status_code == 200
    assert "Traceback" not in server.log(), "a client's mistake was logged with a traceback"
