"""Is a process there, is a server answering: what starting a server and waiting for it needs.

One home for what ``serve --start`` (serve/dialect/daemon.py), ``python -m deploy local``
(deploy/local.py), the benchmarks (bench/servers.py) and the tests' server fixture
(tests/fixtures/server.py) each did with a copy of their own: a free port, a ``/ping`` that
answers 200, a poll against a monotonic deadline that gives up as soon as the server died, and
whether a pid still runs.
"""

from __future__ import annotations

import http.client
import os
import socket
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import urlsplit

POLL_S = 0.05


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (another process may take it before you do)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def ping(url: str, timeout: float = 2.0, headers: Mapping[str, str] | None = None) -> bool:
    """Whether ``GET <url>/ping`` (with ``headers``) answers 200.

    Plain ``http.client``, so that no proxy variable of the environment is honoured: the server
    is local.
    """
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(
        parts.hostname or "127.0.0.1", parts.port or 80, timeout=timeout
    )
    try:
        connection.request("GET", parts.path.rstrip("/") + "/ping", headers=dict(headers or {}))
        return connection.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


def wait_for_ping(
    url: str,
    deadline: float,
    alive: Callable[[], bool],
    interval: float = POLL_S,
    headers: Callable[[], Mapping[str, str]] = dict,
) -> bool:
    """Poll ``<url>/ping`` until it answers 200 (True), the server dies (``alive()`` is false) or
    ``time.monotonic()`` passes ``deadline`` (False: ask ``alive()`` which); ``headers()`` gives
    each poll's headers (a key the server writes as it starts)."""
    while time.monotonic() < deadline:
        if not alive():
            return False
        if ping(url, headers=headers()):
            return True
        time.sleep(interval)
    return False


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs.

    A process of another user runs (``kill(pid, 0)`` raises PermissionError for it); a zombie,
    dead but not yet reaped by its parent, does not. Zero and negative numbers name process
    groups, not a process: never alive.
    """
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, under another user
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False  # gone since
    except OSError:
        return True  # no /proc here: the kernel's answer stands
    return stat.rpartition(")")[2].split()[:1] not in (["Z"], ["X"])
