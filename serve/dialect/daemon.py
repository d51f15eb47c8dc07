"""``serve --start`` in the background, ``--foreground``, and ``serve --stop``, as ``torchserve``
does them (``ts/model_server.py``): a pid file in the temp directory, one server at a time.

- In the background the server is a new session (setsid) running ``serve ... --foreground``, its
  output appended to ``logs/ts_log.log`` (``LOG_LOCATION``). Unlike ``torchserve``, which returns
  at once, ``--start`` returns once the server's ``/ping`` answers 200 (asked with the
  inference key of the ``key_file.json`` it writes, when token authorization is on), or fails
  with the line that says why (a model that does not load, an address in use), leaving nothing
  running.
- The pid file is ``$TMPDIR/.byoserve.pid``: TorchServe's name (``.model_server.pid``) would let
  ``torchserve --stop`` and ``serve --stop`` stop each other's servers. A pid file whose process is
  gone, or is not a serve, is stale and removed.
- ``--stop`` sends SIGTERM (requests in flight finish) and waits for the process to end.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from pathlib import Path
from types import FrameType

from serve.config import ConfigError, ServingConfig
from serve.errors import StartupError
from serve.http.auth import KEY_FILE_NAME, key_header
from serve.process.probe import pid_alive, wait_for_ping

PID_NAME = ".byoserve.pid"
STOP_TIMEOUT_S = 60.0  # torchserve --stop --foreground waits as long
START_MARGIN_S = 30.0  # beyond the start-up timeout, for gunicorn and the first /ping
POLL_S = 0.1
REASONS = tuple(f"{error.reason}:" for error in (StartupError, ConfigError))  # in its log


def pid_path() -> Path:
    """Where the running server's pid is kept (the temp directory: TMPDIR)."""
    return Path(tempfile.gettempdir()) / PID_NAME


def _is_serve(pid: int) -> bool:
    """Whether ``pid`` is a serve (``python -m serve``, the ``serve`` script, or gunicorn's
    title for it), not a process that took the number of one gone."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # cannot tell: trust the pid file, as torchserve does without psutil
    words = [os.path.basename(word.decode(errors="replace")) for word in command.split(b"\0")]
    return "serve" in words or b"[byoserve]" in command


def holder(pid_file: Path) -> int | None:
    """The pid of the serve the pid file names, if it runs; a stale pid file is removed."""
    try:
        pid = int(pid_file.read_text().split()[0])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, IndexError):
        pid = 0
    if pid_alive(pid) and _is_serve(pid):
        return pid
    pid_file.unlink(missing_ok=True)
    return None


def _release(pid_file: Path, pid: int) -> None:
    """Remove the pid file if it still names ``pid``."""
    with suppress(OSError):
        if pid_file.read_text().split()[:1] == [str(pid)]:
            pid_file.unlink(missing_ok=True)


def _write_pid(pid_file: Path, pid: int) -> bool:
    try:
        pid_file.write_text(f"{pid}\n")
    except OSError as exc:
        print(
            f"serve: cannot write the pid file {pid_file}: {exc.strerror or exc}", file=sys.stderr
        )
        return False
    return True


def _leave(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def run_foreground(
    config: ServingConfig, pid_file: Path, start: Callable[[ServingConfig], int]
) -> int:
    """Serve in this process (``start``), its pid in the pid file until it ends."""
    if not _write_pid(pid_file, os.getpid()):
        return 1
    # SIGTERM while the models are prepared (before gunicorn takes the signal over) unwinds,
    # so that the pid file and temporary files go too.
    signal.signal(signal.SIGTERM, _leave)
    try:
        return start(config)
    finally:
        _release(pid_file, os.getpid())


def start_background(
    config: ServingConfig, argv: Sequence[str], pid_file: Path, log_file: Path
) -> int:
    """Start ``serve ARGV`` (a ``--foreground`` command line) as a session of its own, and wait
    until its /ping answers 200: 0, or 1 with the reason said on stderr (and nothing left
    running)."""
    try:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with log_file.open("ab") as log:
            offset = log.tell()
            server = subprocess.Popen(
                [sys.executable, "-m", "serve", *argv],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
    except OSError as exc:
        print(f"serve: cannot write the log {log_file}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    if not _write_pid(pid_file, server.pid):
        _terminate(server)
        return 1
    try:
        up = _await_up(server, config)
    except KeyboardInterrupt:
        _terminate(server)
        _release(pid_file, server.pid)
        print("serve: interrupted: the server was stopped", file=sys.stderr)
        return 130
    if up:
        print(f"byoserve is running (pid {server.pid}): {_addresses(config)}; log: {log_file}")
        return 0
    _release(pid_file, server.pid)
    if server.returncode is None:  # still not answering
        _terminate(server)
        waited = config.startup_timeout + START_MARGIN_S
        reason = f"cannot start: /ping did not answer 200 within {waited:.0f} s"
    else:
        reason = _reason(log_file, offset) or f"exited with status {server.returncode}"
    print(f"serve: {reason} (log: {log_file})", file=sys.stderr)
    return server.returncode if server.returncode and server.returncode > 0 else 1


def _await_up(server: subprocess.Popen[bytes], config: ServingConfig) -> bool:
    """Whether the server's /ping answers 200 before it exits or the start-up time is over."""
    deadline = time.monotonic() + config.startup_timeout + START_MARGIN_S
    alive = lambda: server.poll() is None  # noqa: E731
    if not config.token_auth:
        return wait_for_ping(_url(config), deadline, alive, POLL_S)
    key_file = Path.cwd() / KEY_FILE_NAME  # the server's: it runs in this directory
    headers = lambda: key_header(key_file, "inference")  # noqa: E731
    return wait_for_ping(_url(config), deadline, alive, POLL_S, headers)


def stop(pid_file: Path) -> int:
    """``serve --stop``: SIGTERM to the running server, then wait for it to end."""
    pid = holder(pid_file)
    if pid is None:
        print("byoserve is not currently running.")
        return 0
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass  # it ended meanwhile
    except PermissionError as exc:
        print(f"serve: cannot stop byoserve (pid {pid}): {exc.strerror}", file=sys.stderr)
        return 1
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while pid_alive(pid):
        if time.monotonic() > deadline:
            print(
                f"serve: byoserve (pid {pid}) did not stop within {STOP_TIMEOUT_S:.0f} s",
                file=sys.stderr,
            )
            return 1
        time.sleep(POLL_S)
    _release(pid_file, pid)
    print("byoserve has stopped.")
    return 0


def _url(config: ServingConfig) -> str:
    """Where this machine reaches the server: a wildcard address means its loopback."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(config.host.strip("[]"), config.host)
    host = host.strip("[]")
    return f"http://[{host}]:{config.port}" if ":" in host else f"http://{host}:{config.port}"


def _addresses(config: ServingConfig) -> str:
    parts = [f"inference http://{config.host}:{config.port}"]
    others = (("management", config.management_address), ("metrics", config.metrics_address))
    for name, address in others:
        if address is not None:
            parts.append(f"{name} http://{address[0]}:{address[1]}")
    return ", ".join(parts)


def _reason(log_file: Path, offset: int) -> str | None:
    """The line of this start's log that says why it stopped (text or JSON lines)."""
    with log_file.open("rb") as log:
        log.seek(offset)
        lines = log.read().decode(errors="replace").splitlines()
    messages = []
    for line in lines:
        try:
            entry = json.loads(line)
            messages.append(str(entry["message"]) if isinstance(entry, dict) else line)
        except (ValueError, KeyError):
            messages.append(line)
    for message in reversed(messages):
        for marker in REASONS:
            if marker in message:
                return message[message.index(marker) :]
    last = [message for message in messages if message.strip()]
    return last[-1].strip() if last else None


def _terminate(server: subprocess.Popen[bytes]) -> None:
    server.terminate()
    try:
        server.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
