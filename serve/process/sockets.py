"""What both HTTP engines share: the addresses the server listens on and their checks at start,
the listen backlog and GIL switch interval of a worker, and the two ways a worker ends the
serving (recycling itself, or stopping the whole server).

Neither engine's package is imported here: each engine (serve/process/gunicorn_engine.py,
serve/process/granian_engine.py) builds on this module, never on the other.
"""

from __future__ import annotations

import os
import signal
import socket

from serve.config import ConfigError, ServingConfig

# Streams still open this long before the graceful timeout ends are ended as failures, so that
# their request threads log and count them before the worker is killed (both engines).
STREAM_END_MARGIN = 1.0
GIL_SWITCH_INTERVAL = 0.0005  # seconds; measured in bench/: p99 44 -> 28 ms on the digit model
BACKLOG = 2048
SERVING_SETTING = "--host/BYOSERVE_HOST, --port/SAGEMAKER_BIND_TO_PORT"


def socket_address(host: str, port: int) -> tuple[socket.AddressFamily, tuple[str, int]]:
    """The socket family and address to bind for ``host`` as configured (IPv6 with or
    without brackets)."""
    return (socket.AF_INET6 if ":" in host else socket.AF_INET), (host.strip("[]"), port)


def bind_address(host: str, port: int) -> str:
    """``host:port`` as a server's bind setting spells it (``[::1]:8080`` for IPv6)."""
    return f"[{host.strip('[]')}]:{port}" if ":" in host else f"{host}:{port}"


def check_listen(host: str, port: int, setting: str = SERVING_SETTING) -> None:
    """Refuse at once an address nothing can listen on (in use, or not this machine's), instead
    of an engine's retries and traceback.

    Raises:
        ConfigError: naming the address and why.
    """
    family, address = socket_address(host, port)
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the engines bind
        try:
            sock.bind(address)
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {host}:{port} ({setting}): {exc.strerror or exc}"
            ) from exc


def listen_addresses(config: ServingConfig) -> list[tuple[str, str, int]]:
    """Every address the server listens on, with the settings that name it: the serving port,
    then TorchServe's management and metrics addresses when configured.

    Raises:
        ConfigError: two of them share a port.
    """
    addresses = [(SERVING_SETTING, config.host, config.port)]
    if config.management_address is not None:
        addresses.append(("management_address", *config.management_address))
    if config.metrics_address is not None:
        addresses.append(("metrics_address", *config.metrics_address))
    ports: dict[int, str] = {}
    for setting, _, port in addresses:
        if port in ports:
            raise ConfigError(f"{setting} and {ports[port]} both use port {port}")
        ports[port] = setting
    return addresses


def check_addresses(config: ServingConfig) -> None:
    """:func:`check_listen` for every address of :func:`listen_addresses`.

    Raises:
        ConfigError: an address is shared, in use, or not this machine's.
    """
    for setting, host, port in listen_addresses(config):
        check_listen(host, port, setting)


def recycle_worker() -> None:
    """This worker is stuck (a handler call that does not end): leave as on SIGTERM, letting the
    other requests in flight finish; the engine's master starts a new worker in its place."""
    os.kill(os.getpid(), signal.SIGTERM)


def stop_server(exc: BaseException) -> None:
    """A worker could not load the models the server starts with (the registry has recorded
    why): stop the whole server the way SIGTERM does, so that the master says why once
    (serve/process/server.py) instead of every worker and the engine's traceback."""
    os.kill(os.getppid(), signal.SIGTERM)
