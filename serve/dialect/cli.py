"""TorchServe's and MMS's command line: ``serve --start``, ``serve --stop``, ``serve -v``.

    serve --start [--foreground] [--ncs] --model-store DIR [--models NAME=PATH|PATH ...|all]
          [--ts-config FILE | --mms-config FILE] [--enable-model-api] [any flag of serve]
    serve --stop

As with ``torchserve``, ``--start`` (or no ``--start``/``--stop`` at all) starts the server in
the background, answers once its ``/ping`` does, and ``--foreground`` serves in this process;
``--stop`` stops the one running (serve/dialect/daemon.py). The server answers as TorchServe
does (``dialect=torchserve``).

Where each setting comes from, first found wins; TorchServe's own order (frontend
``ConfigManager``; docs/configuration.md):

1. ``TS_<KEY>`` variables (``MMS_<KEY>`` with ``--mms-config``), only when the file sets
   ``enable_envvars_config=true``: TorchServe ranks them above the command line.
2. The command line: TorchServe's flags (``--model-store``, ``--models``, ``--enable-model-api``)
   and serve's own (``--port``, ``--workers``, ...).
3. The config file: ``TS_CONFIG_FILE`` or ``MMS_CONFIG_FILE``, else ``--ts-config`` or
   ``--mms-config``, else ``./config.properties`` when there is one (serve/dialect/properties.py).
4. serve's own variables (``BYOSERVE_*``, ``SAGEMAKER_*``). TorchServe lets no variable override
   its file unless ``enable_envvars_config``, so the file wins over these too.
5. TorchServe's defaults (:data:`TORCHSERVE_DEFAULTS`): inference on http://127.0.0.1:8080,
   management on :8081, metrics on :8082, a 120 s response timeout, requirements not installed
   (``install_py_dep_per_model=false``), 6553500-byte requests. Unlike TorchServe 0.12, the
   model API (register, unregister) is on unless ``enable_model_api=false``: the tutorials users
   replay register models without ``--enable-model-api``, and the management port is bound to
   loopback unless configured otherwise. Token authorization (serve/http/auth.py) is on, as in
   TorchServe 0.12, when the inference or the management port is bound beyond loopback; on
   loopback alone it is off unless asked for, so that the tutorials' command lines and ``curl``
   calls, written before TorchServe had tokens, work as written (:func:`token_auth_default`).
   Said either way, it is what was said: ``--disable-token-auth``,
   ``disable_token_authorization=true|false``, ``BYOSERVE_TOKEN_AUTH``; off with
   ``--mms-config`` (MMS has none). The key file is written here, before the workers start.
6. serve's defaults.

TorchServe flags with nothing to do here (``--log-config``, ``--ncs``, ...) are accepted and
named in one log line.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import logging
import os
import socket
import sys
from collections.abc import Callable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from serve.config import ConfigError, ServingConfig
from serve.dialect import daemon
from serve.dialect.properties import load_properties
from serve.errors import StartupError
from serve.flags import build_parser, flag_values
from serve.http.auth import issue_key_file
from serve.observe.logfiles import LogFiles, configure_log_files
from serve.observe.logs import configure_logging

logger = logging.getLogger(__name__)

TORCHSERVE_DEFAULTS: Mapping[str, str] = {
    "host": "127.0.0.1",
    "port": "8080",
    "management_address": "http://127.0.0.1:8081",
    "metrics_address": "http://127.0.0.1:8082",
    "timeout": "120",
    "install_requirements": "false",
    "max_request_size": "6553500",
}
SET_TOO: Mapping[str, tuple[str, ...]] = {"max_request_size": ("max_payload_mb",)}  # variables
DEFAULT_CONFIG_FILE = Path("config.properties")
# argparse destination: the flag as TorchServe spells it (accepted, nothing to do here)
IGNORED_FLAGS: Mapping[str, str] = {
    "no_config_snapshots": "--ncs",
    "log_config": "--log-config",
    "cpp_log_config": "--cpp-log-config",
    "workflow_store": "--workflow-store",
    "plugins_path": "--plugins-path",
}
TORCHSERVE_FLAGS = frozenset(
    {
        "--start", "--stop", "-v", "--version", "--ts-config", "--mms-config", "--foreground",
        "--ncs", "--no-config-snapshots", "--log-config", "--cpp-log-config", "--workflow-store",
        "--plugins-path", "--ppath", "--disable-token-auth", "--dt", "--enable-model-api",
    }
)  # fmt: skip


def is_torchserve_command(argv: Sequence[str]) -> bool:
    """Whether ``argv`` uses one of TorchServe's or MMS's own flags."""
    return any(arg.split("=", 1)[0] in TORCHSERVE_FLAGS for arg in argv)


def build_torchserve_parser() -> argparse.ArgumentParser:
    """serve's flags, and TorchServe's and MMS's (torchserve's ``ts/arg_parser.py``)."""
    parser = build_parser()
    parser.description = "TorchServe's and MMS's command line; serve's own flags work too."
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("-v", "--version", action="store_true", help="print the version")
    mode.add_argument("--start", action="store_true", help="start the server (the default)")
    mode.add_argument("--stop", action="store_true", help="stop the server started with --start")
    files = parser.add_mutually_exclusive_group()
    files.add_argument("--ts-config", help="TorchServe's config.properties")
    files.add_argument("--mms-config", help="Multi Model Server's config.properties")
    parser.add_argument("--foreground", action="store_true", help="serve in this process")
    parser.add_argument("--enable-model-api", action="store_true", help="allow (un)registering")
    parser.add_argument("--no-config-snapshots", "--ncs", action="store_true", help="(no effect)")
    for flag in ("--log-config", "--cpp-log-config", "--workflow-store"):
        parser.add_argument(flag, help="(no effect)")
    parser.add_argument("--plugins-path", "--ppath", dest="plugins_path", help="(no effect)")
    parser.add_argument(
        "--disable-token-auth", "--dt", action="store_true", help="no token authorization"
    )
    return parser


def main(argv: Sequence[str], start: Callable[[ServingConfig], int]) -> int:
    """``serve`` with TorchServe's or MMS's flags; ``start`` serves a configuration (serve/cli.py's,
    handed in by it: the command line above this one)."""
    args = build_torchserve_parser().parse_args(list(argv))
    if args.version:
        print(f"byoserve version {_version()} (TorchServe and MMS command lines)")
        return 0
    pid_file = daemon.pid_path()
    if args.stop:
        return daemon.stop(pid_file)
    running = daemon.holder(pid_file)
    if running is not None and running != os.getpid():
        print(
            f"serve: byoserve is already running (pid {running}); stop it with serve --stop",
            file=sys.stderr,
        )
        return StartupError.exit_code
    try:
        config, notes = torchserve_config(args, os.environ)
    except ConfigError as exc:
        print(f"serve: {exc.line()}", file=sys.stderr)
        return exc.exit_code
    configure_logging(config.log_level, config.log_format)
    for note in notes:
        logger.warning("%s", note)
    files = log_files(config, mms=bool(args.mms_config))
    if args.foreground:
        try:
            configure_log_files(files, config.log_level)
        except OSError as exc:
            print(f"serve: cannot write the logs in {files.logs}: {exc}", file=sys.stderr)
            return StartupError.exit_code
        return _serve_foreground(config, pid_file, start)
    return daemon.start_background(config, [*argv, "--foreground"], pid_file, files.server_path)


def log_files(config: ServingConfig, mms: bool) -> LogFiles:
    """Where TorchServe's (or MMS's) log files go: ``LOG_LOCATION`` and ``METRICS_LOCATION``,
    each ``./logs`` by default."""
    logs = config.log_location or Path("logs")
    metrics = config.metrics_location or Path("logs")
    make = LogFiles.mms if mms else LogFiles
    return make(logs.absolute(), metrics.absolute())


def _serve_foreground(
    config: ServingConfig, pid_file: Path, start: Callable[[ServingConfig], int]
) -> int:
    """Serve in this process, with TorchServe's key file (serve/http/auth.py) written before
    the workers start and removed when the server ends."""
    try:
        key_file = issue_key_file(config)
    except OSError as exc:
        logger.error("%s: cannot write the key file: %s", StartupError.reason, exc)
        return StartupError.exit_code
    server = os.getpid()
    try:
        return daemon.run_foreground(config, pid_file, start)
    finally:
        if key_file is not None and os.getpid() == server:  # not a worker leaving
            key_file.unlink(missing_ok=True)


def torchserve_config(
    args: argparse.Namespace, environ: Mapping[str, str]
) -> tuple[ServingConfig, list[str]]:
    """The configuration of ``serve --start`` (see the module's docstring for the order), and
    the lines to log about what was given and does not apply.

    Raises:
        ConfigError: a bad value (named with its file and key, flag or variable), an unknown key,
            or no model store.
    """
    defaults = {**TORCHSERVE_DEFAULTS, **({"token_auth": "false"} if args.mms_config else {})}
    # token_auth: when nothing sets it, token_auth_default decides once the addresses are known
    values: dict[str, Any] = {
        name: ServingConfig.parse_setting(name, "TorchServe's default", raw)
        for name, raw in defaults.items()
        if not any(
            ServingConfig.set_in_environment(setting, environ)
            for setting in (name, *SET_TOO.get(name, ()))
        )
    }
    notes = []
    environment: dict[str, Any] = {}
    path, label = _config_file(args, environ)
    if path is not None:
        prefix = "MMS_" if args.mms_config else "TS_"
        loaded = load_properties(path, environ, prefix, label)
        values.update(loaded.values)
        environment = loaded.environment
        if loaded.ignored:
            notes.append(f"{label}: ignored, they do not apply here: {', '.join(loaded.ignored)}")
    values.update(_command_line(args))
    values.update(environment)
    values["dialect"] = "torchserve"
    ignored = [flag for name, flag in IGNORED_FLAGS.items() if getattr(args, name)]
    if ignored:
        notes.append(f"ignored, they do not apply here: {', '.join(ignored)}")
    config = ServingConfig.from_env(environ, **values)
    if "token_auth" not in values and not ServingConfig.set_in_environment("token_auth", environ):
        config = dataclasses.replace(config, token_auth=token_auth_default(config))
    if config.model_store is None:
        raise ConfigError("--model-store DIR is needed (or model_store in the config file)")
    if not config.model_store.is_dir():
        raise ConfigError(f"--model-store directory not found: {config.model_store}")
    return config, notes


def token_auth_default(config: ServingConfig) -> bool:
    """Token authorization where nothing says: on when the inference or the management port
    can be reached from another machine (TorchServe 0.12 turns it on everywhere; its tutorials,
    and the scripts and clients written from them, send no key to a server on loopback)."""
    addresses = [(config.host, config.port), config.management_address]
    return any(address is not None and not _loopback(address[0]) for address in addresses)


def _loopback(host: str) -> bool:
    """Whether ``host`` (an address, or a name: every address it resolves to) is loopback."""
    try:
        found = socket.getaddrinfo(host.strip("[]"), None, proto=socket.IPPROTO_TCP)
    except OSError:  # checked when the address was read; gone since: count it as outside
        return False
    return all(ipaddress.ip_address(str(info[4][0]).split("%")[0]).is_loopback for info in found)


def _config_file(args: argparse.Namespace, environ: Mapping[str, str]) -> tuple[Path | None, str]:
    """The config.properties to read and how errors name it; None when there is none.

    Raises:
        ConfigError: the file named does not exist.
    """
    from_env: Path | None = ServingConfig.read_setting("config_file", environ)
    given = args.ts_config or args.mms_config
    if from_env is not None:
        path, label = from_env, str(from_env)
    elif given:
        path, label = Path(given), given
    elif DEFAULT_CONFIG_FILE.is_file():
        return DEFAULT_CONFIG_FILE.absolute(), str(DEFAULT_CONFIG_FILE)
    else:
        return None, ""
    if not path.is_file():
        if from_env is not None:
            raise ConfigError(f"TS_CONFIG_FILE/MMS_CONFIG_FILE: file not found: {label}")
        raise ConfigError(
            f"{'--mms-config' if args.mms_config else '--ts-config'} file not found: {label}"
        )
    return path.absolute(), label


def _command_line(args: argparse.Namespace) -> dict[str, Any]:
    values = {
        name: ServingConfig.parse_setting(name, _flag(name), raw)
        for name, raw in flag_values(args).items()
    }
    if args.enable_model_api:
        values["enable_model_api"] = True
    if args.disable_token_auth:
        values["token_auth"] = False
    return values


def _flag(name: str) -> str:
    flag: str | None = ServingConfig.spec(name).metadata["flag"]
    return flag or "--no-install-requirements"


def _version() -> str:
    try:
        return metadata.version("byoserve")
    except metadata.PackageNotFoundError:
        return "unknown"
