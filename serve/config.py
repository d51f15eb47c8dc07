"""Serving configuration: one frozen object, built once from the environment.

Every environment variable the server honours is declared here and nowhere else. SageMaker's own
names are kept so that existing scripts carry over; settings SageMaker has no name for use the
``BYOSERVE_`` prefix.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import logging
import os
import re
import socket
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from serve.errors import StartupError

MIB = 1024 * 1024
DEFAULT_MAX_REQUEST_SIZE = 6 * MIB
# Every request waiting in a model's queue holds a request thread; requests past the threads wait
# in the HTTP engine's own queue, unseen by the admission (serve/runtime/admission.py). More threads
# bring them in sight but cost tail latency on granian: at 256 connections over 2 workers, p99 was
# 2.2 to 2.7x connections / throughput with 256 threads, 1.4 to 1.6x with 64 (docs/benchmarks.md).
DEFAULT_THREADS = 64
DEFAULT_QUEUE_MAX_BYTES = 1024 * MIB
# SageMaker's batch transform: its default InvocationsTimeoutInSeconds, and the most it sends in
# one request (MaxPayloadInMB); with MaxPayloadInMB=0 it sends whole objects, chunked, unbounded,
# and the server takes as much as an asynchronous endpoint's body (1 GiB).
TRANSFORM_TIMEOUT = 600.0
MAX_TRANSFORM_PAYLOAD_MB = 100
UNBOUNDED_PAYLOAD = 1024 * MIB

HttpEngine = Literal["gunicorn", "granian"]
"""The HTTP engines (``BYOSERVE_HTTP_ENGINE``): serve/process/engine.py's registry."""
Dialect = Literal["sagemaker", "torchserve"]
LogFormat = Literal["text", "json"]
BatchStrategy = Literal["MULTI_RECORD", "SINGLE_RECORD"]


class ConfigError(StartupError, ValueError):
    """A setting has a value the server cannot start with (a usage error: status 2)."""

    exit_code = 2
    reason = "configuration error"


def _int(value: str) -> int:
    return int(value.strip(), 10)


def _positive_int(value: str) -> int:
    number = _int(value)
    if number < 1:
        raise ValueError("must be at least 1")
    return number


def _non_negative_float(value: str) -> float:
    number = float(value.strip())
    if not number >= 0:
        raise ValueError("must be zero or more")
    return number


def _positive_float(value: str) -> float:
    number = float(value.strip())
    if not number > 0:
        raise ValueError("must be more than zero")
    return number


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise ValueError("must be true, false, 1 or 0")


def _port(value: str) -> int:
    number = _int(value)
    if not 1 <= number <= 65535:
        raise ValueError("must be a port number between 1 and 65535")
    return number


def _log_level(value: str) -> int:
    text = value.strip()
    if text.isdigit():
        return int(text)
    level = logging.getLevelName(text.upper())
    if not isinstance(level, int):
        raise ValueError("must be a number or a level name such as INFO")
    return level


def _media_type(value: str) -> str:
    text = value.strip()
    if "/" not in text:
        raise ValueError("must be a media type such as application/json")
    return text


def _choice(choices: Any) -> Callable[[str], str]:
    """A parser for one of the values of the ``Literal`` type ``choices``; its error names them."""
    options: tuple[str, ...] = get_args(choices)

    def parse(value: str) -> str:
        text = value.strip().upper() if options[0].isupper() else value.strip().lower()
        if text not in options:
            raise ValueError("must be one of " + ", ".join(options))
        return text

    return parse


def _text(value: str) -> str:
    return value.strip()


def _path(value: str) -> Path:
    text = value.strip()
    if not text:
        raise ValueError("must be a path")
    return Path(os.path.abspath(text))  # resolved once: pip and handlers run elsewhere


def _host(value: str) -> str:
    text = value.strip()
    try:
        ipaddress.ip_address(text.strip("[]"))
        return text
    except ValueError:
        pass
    if not text or all(part.isdigit() for part in text.split(".")):
        raise ValueError("must be an IP address or a host name")
    try:
        socket.getaddrinfo(text, None)
    except (socket.gaierror, UnicodeError) as exc:
        raise ValueError(f"cannot be resolved ({exc})") from exc
    return text


def _address(value: str) -> tuple[str, int]:
    """TorchServe's address forms: ``http://HOST:PORT``, ``HOST:PORT`` or ``PORT`` (all hosts)."""
    text = value.strip()
    scheme, sep, rest = text.partition("://")
    if sep:
        if scheme.lower() == "https":
            raise ValueError("https is not served here: put TLS in front (a load balancer)")
        if scheme.lower() != "http":
            raise ValueError("must look like http://HOST:PORT")
        text = rest.rstrip("/")
    host, sep, port = text.rpartition(":")
    if not sep:
        return ("0.0.0.0", _port(text))
    return (_host(host.strip("[]")), _port(port))


def _patterns(value: str) -> tuple[str, ...]:
    """Comma-separated regular expressions (TorchServe's ``allowed_urls``), each checked."""
    patterns = tuple(item.strip() for item in value.split(",") if item.strip())
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"{pattern!r} is not a regular expression: {exc}") from exc
    return patterns


def _megabytes(value: str) -> int:
    return int(_positive_float(value) * MIB)


def _payload_megabytes(value: str) -> int:
    """``SAGEMAKER_MAX_PAYLOAD_IN_MB``: MiB, or 0 (SageMaker sends whole objects, chunked)."""
    number = _non_negative_float(value)
    return int(number * MIB) if number else 0


_STRATEGIES = {"multirecord": "MULTI_RECORD", "singlerecord": "SINGLE_RECORD"}


def _batch_strategy(value: str) -> str:
    """Either spelling: the container's ``MULTI_RECORD`` (what SageMaker sets) or the API's
    ``MultiRecord`` (what a transform job's definition and the SageMaker SDK say)."""
    strategy = _STRATEGIES.get(value.strip().replace("_", "").lower())
    if strategy is None:
        raise ValueError("must be one of MULTI_RECORD, SINGLE_RECORD, MultiRecord, SingleRecord")
    return strategy


def _json_object(value: str) -> Mapping[str, Any]:
    """A JSON object; what its keys mean is its reader's business (TorchServe's ``models``:
    serve/model/settings.py)."""
    try:
        document = json.loads(value)
    except ValueError as exc:
        raise ValueError(f"not JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise ValueError('must be a JSON object: {"model": {"version": {"batchSize": 4, ...}}}')
    return document


def _words(value: str) -> tuple[str, ...]:
    return tuple(value.replace(",", " ").split())


def setting(
    default: Any,
    *env: str,
    parse: Callable[[str], Any] = _text,
    flag: str | None = None,
    help: str = "",
) -> Any:
    """Declare one setting: its default, the variables it is read from (first wins), its parser,
    and its command-line flag (``python -m serve``), parsed by the same parser."""
    return field(default=default, metadata={"env": env, "parse": parse, "flag": flag, "help": help})


def _parse(spec: dataclasses.Field[Any], source: str, raw: str) -> Any:
    try:
        return spec.metadata["parse"](raw)
    except ValueError as exc:
        raise ConfigError(f"{source}={raw!r}: {exc}") from exc


@dataclass(frozen=True, slots=True)
class ServingConfig:
    """Everything the server needs to know, read once at start and passed down.

    Each field is declared with its environment variables, parser, flag and help;
    docs/reference/configuration.md is generated from these declarations.
    """

    model_dir: Path = setting(
        Path("/opt/ml/model"),
        "BYOSERVE_MODEL_DIR",
        parse=_path,
        flag="--model-dir",
        help="extracted model dir, or a dir/file with model.tar.gz",
    )
    unpack_dir: Path | None = setting(
        None,
        "BYOSERVE_UNPACK_DIR",
        parse=_path,
        help="where an archive is unpacked (into .byoserve-extracted/); default beside the "
        "archive, or the temp dir when that is read-only",
    )
    host: str = setting(
        "0.0.0.0",
        "BYOSERVE_HOST",
        parse=_host,
        flag="--host",
        help="address to bind (default 0.0.0.0)",
    )
    port: int = setting(
        8080,
        "SAGEMAKER_BIND_TO_PORT",
        parse=_port,
        flag="--port",
        help="port (default SAGEMAKER_BIND_TO_PORT or 8080)",
    )
    workers: int = setting(
        0,
        "SAGEMAKER_MODEL_SERVER_WORKERS",
        parse=_positive_int,
        flag="--workers",
        help="worker processes (default: available CPUs)",
    )
    threads: int = setting(
        0,
        "BYOSERVE_WORKER_THREADS",
        parse=_positive_int,
        flag="--threads",
        help=f"request threads per worker (default {DEFAULT_THREADS}, or twice "
        "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS when that is more)",
    )
    torch_threads: int = setting(
        0,
        "BYOSERVE_TORCH_THREADS",
        parse=_positive_int,
        flag="--torch-threads",
        help="torch intra-op threads per worker (default: CPUs / workers)",
    )
    timeout: float = setting(
        60.0,
        "SAGEMAKER_MODEL_SERVER_TIMEOUT",
        parse=_positive_float,
        flag="--timeout",
        help="per-request timeout, seconds (a model's own response timeout wins; 600 in a "
        "batch transform job, SageMaker's own InvocationsTimeoutInSeconds default)",
    )
    startup_timeout: float = setting(
        600.0,
        "SAGEMAKER_STARTUP_TIMEOUT",
        parse=_positive_float,
        help="seconds a model may take to load before the start (or the load) fails",
    )
    graceful_timeout: float = setting(
        25.0,
        "BYOSERVE_GRACEFUL_TIMEOUT",
        parse=_positive_float,
        help="seconds the requests in flight get to finish after SIGTERM",
    )
    max_request_size: int = setting(
        DEFAULT_MAX_REQUEST_SIZE,
        "SAGEMAKER_MAX_REQUEST_SIZE",
        parse=_positive_int,
        flag="--max-request-size",
        help="largest request body, bytes (6 MiB; checked before the body is read)",
    )
    max_payload_mb: int | None = setting(
        None,
        "SAGEMAKER_MAX_PAYLOAD_IN_MB",
        parse=_payload_megabytes,
        help="largest request body in MiB, when SAGEMAKER_MAX_REQUEST_SIZE is not set; a batch "
        "transform job's MaxPayloadInMB (0: whole objects, up to 1 GiB)",
    )
    default_accept: str = setting(
        "application/json",
        "SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT",
        parse=_media_type,
        help="the response type for a request with no Accept or */*",
    )
    log_level: int = setting(
        logging.INFO,
        "SAGEMAKER_CONTAINER_LOG_LEVEL",
        parse=_log_level,
        flag="--log-level",
        help="DEBUG, INFO (default), WARNING, ... or a number",
    )
    log_format: LogFormat = setting(
        "text",
        "BYOSERVE_LOG_FORMAT",
        parse=_choice(LogFormat),
        help="log lines as text or as one JSON object each",
    )
    program: str | None = setting(
        None,
        "SAGEMAKER_PROGRAM",
        flag="--program",
        help="handler module (SAGEMAKER_PROGRAM), e.g. inference.py",
    )
    install_requirements: bool = setting(
        True,
        "BYOSERVE_INSTALL_REQUIREMENTS",
        parse=_bool,
        help="pip-install code/requirements.txt at start (flag: --no-install-requirements)",
    )
    max_batch_size: int | None = setting(
        None,
        "BYOSERVE_MAX_BATCH_SIZE",
        "SAGEMAKER_TS_BATCH_SIZE",
        parse=_positive_int,
        flag="--max-batch-size",
        help="dynamic batching: most requests per model call (default: the archive's, else 1; "
        "a model's registration wins)",
    )
    max_batch_delay_ms: float | None = setting(
        None,
        "BYOSERVE_MAX_BATCH_DELAY_MS",
        "SAGEMAKER_TS_MAX_BATCH_DELAY",
        parse=_non_negative_float,
        flag="--max-batch-delay-ms",
        help="dynamic batching: longest wait for a batch, counted from its first request "
        "(default: the archive's, else 5 ms)",
    )
    queue_size: int = setting(
        0,
        "BYOSERVE_QUEUE_SIZE",
        parse=_positive_int,
        help="the hard bound of a model's queue in a worker, in requests waiting or streaming: "
        "beyond it 503 + Retry-After whatever the wait (default: the request threads, and at "
        "least SAGEMAKER_MAX_CONCURRENT_TRANSFORMS); below it a request is queued while the "
        "wait it can expect fits its timeout",
    )
    queue_max_bytes: int = setting(
        DEFAULT_QUEUE_MAX_BYTES,
        "BYOSERVE_QUEUE_MAX_BYTES",
        parse=_positive_int,
        help="the hard bound of a model's queue in a worker, in request body bytes waiting: "
        "beyond it 503 + Retry-After whatever the wait (default 1 GiB)",
    )
    batch: bool = setting(
        False,
        "SAGEMAKER_BATCH",
        parse=_bool,
        help="true in a SageMaker batch transform job (SageMaker sets it): the per-request "
        "timeout defaults to 600 s, and the start says so",
    )
    batch_strategy: BatchStrategy = setting(
        "MULTI_RECORD",
        "SAGEMAKER_BATCH_STRATEGY",
        parse=_batch_strategy,
        help="a batch transform job's BatchStrategy, MULTI_RECORD or SINGLE_RECORD (MultiRecord "
        "and SingleRecord too), reported by /execution-parameters",
    )
    max_concurrent_transforms: int | None = setting(
        None,
        "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS",
        parse=_positive_int,
        help="a batch transform job's MaxConcurrentTransforms: reported by "
        "/execution-parameters (default: the workers), and every worker's threads and queue "
        "hold that many requests",
    )
    multi_model: bool = setting(
        False,
        "SAGEMAKER_MULTI_MODEL",
        parse=_bool,
        help="a SageMaker multi-model endpoint: start with no model, POST /models and "
        "DELETE /models/<name> load and unload",
    )
    model_store: Path | None = setting(
        None,
        "BYOSERVE_MODEL_STORE",
        parse=_path,
        flag="--model-store",
        help="directory of model archives and model directories",
    )
    models: tuple[str, ...] = setting(
        (),
        "BYOSERVE_MODELS",
        parse=_words,
        flag="--models",
        help="models to start with: NAME=PATH, PATH (named after the file) or all, space or "
        "comma separated; relative paths are in the model store",
    )
    max_models: int | None = setting(
        None,
        "BYOSERVE_MAX_MODELS",
        parse=_positive_int,
        flag="--max-models",
        help="most models held at once; beyond it a load answers 507 (a TargetModel load "
        "unloads the least recently used)",
    )
    memory_budget: int | None = setting(
        None,
        "BYOSERVE_MEMORY_BUDGET_MB",
        parse=_megabytes,
        flag="--memory-budget-mb",
        help="most memory the models may take, in MiB, summed over workers (as for --max-models)",
    )
    http_engine: HttpEngine = setting(
        "gunicorn",
        "BYOSERVE_HTTP_ENGINE",
        parse=_choice(HttpEngine),
        flag="--http-engine",
        help="gunicorn (default) or granian (a Rust HTTP server; chunked bodies refused)",
    )
    share_connections: bool = setting(
        True,
        "BYOSERVE_SHARE_CONNECTIONS",
        parse=_bool,
        help="share client connections out evenly between workers: a worker holding 2 or more "
        "above a sibling answers with Connection: close, and the client reconnects (false: each "
        "worker keeps the connections it gets)",
    )
    dialect: Dialect = setting(
        "sagemaker",
        "BYOSERVE_DIALECT",
        parse=_choice(Dialect),
        help="torchserve: answer as TorchServe does where SageMaker differs (/ping 500 when "
        "unhealthy); set by serve --start",
    )
    management_address: tuple[str, int] | None = setting(
        None,
        "BYOSERVE_MANAGEMENT_ADDRESS",
        parse=_address,
        flag="--management-address",
        help="serve TorchServe's management API here (http://127.0.0.1:8081); off when unset",
    )
    metrics_address: tuple[str, int] | None = setting(
        None,
        "BYOSERVE_METRICS_ADDRESS",
        parse=_address,
        flag="--metrics-address",
        help="serve /metrics on this address too (TorchServe's http://127.0.0.1:8082)",
    )
    enable_model_api: bool = setting(
        True,
        "BYOSERVE_ENABLE_MODEL_API",
        parse=_bool,
        help="false: the management API's register and unregister answer 405",
    )
    token_auth: bool = setting(
        False,
        "BYOSERVE_TOKEN_AUTH",
        parse=_bool,
        help="TorchServe 0.12's token authorization (key_file.json, Authorization: Bearer): with "
        "serve --start, on when the inference or management port is bound beyond loopback and "
        "off on loopback unless asked for (disable_token_authorization=false, or true here); "
        "off for serve, whose SageMaker front door authorizes",
    )
    token_expiration_min: float = setting(
        60.0,
        "BYOSERVE_TOKEN_EXPIRATION_MIN",
        parse=_positive_float,
        help="minutes an inference or management key lasts (TorchServe's token_expiration_min)",
    )
    allowed_urls: tuple[str, ...] = setting(
        (),
        "BYOSERVE_ALLOWED_URLS",
        parse=_patterns,
        help="comma-separated regular expressions: the http(s) model URLs the management API "
        "may fetch (none by default)",
    )
    model_config: Mapping[str, Any] | None = setting(
        None,
        "BYOSERVE_MODEL_CONFIG",
        parse=_json_object,
        help="settings of start-up models by name and version: TorchServe's `models` JSON "
        "(batchSize, maxBatchDelay, responseTimeout); from config.properties with serve --start",
    )
    config_file: Path | None = setting(
        None,
        "TS_CONFIG_FILE",
        "MMS_CONFIG_FILE",
        parse=_path,
        help="serve --start: the config.properties to read, over --ts-config/--mms-config",
    )
    log_location: Path | None = setting(
        None,
        "LOG_LOCATION",
        parse=_path,
        help="serve --start: where TorchServe's log files go (default ./logs)",
    )
    metrics_location: Path | None = setting(
        None,
        "METRICS_LOCATION",
        parse=_path,
        help="serve --start: where TorchServe's metric logs go (default ./logs)",
    )
    allow_pickled_models: bool = setting(
        False,
        "BYOSERVE_ALLOW_PICKLED_MODELS",
        parse=_bool,
        help="true: pickled whole-model files load, and a handler's torch.load(path) unpickles "
        "as before torch 2.6 (trusted models only)",
    )
    max_image_pixels: int = setting(
        25_000_000,  # codecs' default: serve/codecs/images.py DEFAULT_MAX_IMAGE_PIXELS
        "BYOSERVE_MAX_IMAGE_PIXELS",
        parse=_positive_int,
        help="largest image (width x height, read from its header before decoding); "
        "larger answers 413",
    )
    hung_grace: float = setting(
        30.0,
        "BYOSERVE_HUNG_GRACE",
        parse=_positive_float,
        help="seconds past its timeout before a handler call counts as hung and its worker "
        "is replaced",
    )
    error_details: bool = setting(
        True,
        "BYOSERVE_ERROR_DETAILS",
        parse=_bool,
        help="false: a 500 from the handler's code carries a generic message, not its own",
    )
    metrics: bool = setting(
        True,
        "BYOSERVE_METRICS",
        parse=_bool,
        help="collect Prometheus metrics for /metrics, summed over the workers",
    )
    metrics_dir: Path | None = setting(
        None,
        "BYOSERVE_METRICS_DIR",
        "PROMETHEUS_MULTIPROC_DIR",
        parse=_path,
        help="where the workers' metrics files are kept (default: a fresh temp dir)",
    )
    serverless: bool = setting(
        False,
        "BYOSERVE_SERVERLESS",
        parse=_bool,
        help="run as SageMaker Serverless wants: one worker unless set, and nothing written "
        "outside the temp dir (TMPDIR): requirements go there, not into site-packages",
    )

    def __post_init__(self) -> None:
        # workers=0 and torch_threads=0 (the CPUs available) are resolved where the server is
        # started (serve/process/cpus.py, resolved), not here: the CPU count is the machine's.
        transforms = self.max_concurrent_transforms or 0
        if self.threads == 0:
            object.__setattr__(self, "threads", max(DEFAULT_THREADS, 2 * transforms))
        if self.queue_size == 0:
            # Every request that waits holds a request thread: more could never wait here; but
            # never below the requests a transform job keeps in flight (they may all reach one
            # worker).
            object.__setattr__(self, "queue_size", max(1, self.threads, transforms))
        elif self.queue_size < transforms:
            raise ConfigError(
                f"BYOSERVE_QUEUE_SIZE={self.queue_size} is below "
                f"SAGEMAKER_MAX_CONCURRENT_TRANSFORMS={transforms}: the transform job's requests "
                "past it would be answered 503; raise it or leave it unset"
            )
        if self.serverless:
            # One copy of the model (one worker), and archives unpacked under the temp dir, the
            # one place a serverless container may write; workers=0 is "not set".
            object.__setattr__(self, "workers", self.workers or 1)
            object.__setattr__(self, "unpack_dir", self.unpack_dir or self.temp_dir)
        if self.models and self.model_store is None and "all" in self.models:
            raise ConfigError(
                "--models all needs a model store (--model-store, BYOSERVE_MODEL_STORE)"
            )

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        flags: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> ServingConfig:
        """Build the configuration from environment variables, then the command line's ``flags``
        (raw text by setting name, parsed as the variables are), then ``overrides`` (values).

        Raises:
            ConfigError: a variable or flag holds a value that cannot be used; the message names
                both.
        """
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for spec in dataclasses.fields(cls):
            for name in spec.metadata["env"]:
                raw = environ.get(name)
                if raw is not None and raw.strip() != "":
                    values[spec.name] = _parse(spec, name, raw)
                    break
            raw = (flags or {}).get(spec.name)
            if raw is not None:
                values[spec.name] = _parse(spec, spec.metadata["flag"], raw)
        if "max_request_size" not in values and values.get("max_payload_mb") is not None:
            values["max_request_size"] = values["max_payload_mb"] or UNBOUNDED_PAYLOAD
        if values.get("batch") and "timeout" not in values:
            values["timeout"] = TRANSFORM_TIMEOUT
        values.update({key: value for key, value in overrides.items() if value is not None})
        return cls(**values)

    @classmethod
    def parse_setting(cls, name: str, source: str, raw: str) -> Any:
        """Parse ``raw`` as setting ``name`` is parsed from its variable; ``source`` (a file and
        key, say) is what an error names.

        Raises:
            ConfigError: ``source={raw!r}: why``.
        """
        return _parse(cls.spec(name), source, raw)

    @classmethod
    def read_setting(cls, name: str, environ: Mapping[str, str] | None = None) -> Any:
        """Setting ``name`` from its environment variables alone: its default when none is set.

        Raises:
            ConfigError: the variable's value cannot be used.
        """
        spec = cls.spec(name)
        environ = os.environ if environ is None else environ
        for variable in spec.metadata["env"]:
            raw = environ.get(variable)
            if raw is not None and raw.strip() != "":
                return _parse(spec, variable, raw)
        return spec.default

    @classmethod
    def set_in_environment(cls, name: str, environ: Mapping[str, str] | None = None) -> bool:
        """Whether one of setting ``name``'s variables is set (to something other than blanks)."""
        environ = os.environ if environ is None else environ
        variables = cls.spec(name).metadata["env"]
        return any((environ.get(variable) or "").strip() for variable in variables)

    @classmethod
    def spec(cls, name: str) -> dataclasses.Field[Any]:
        """The declaration of setting ``name``."""
        for spec in dataclasses.fields(cls):
            if spec.name == name:
                return spec
        raise KeyError(name)

    @classmethod
    def flags(cls) -> list[dataclasses.Field[Any]]:
        """The settings that have a command-line flag."""
        return [spec for spec in dataclasses.fields(cls) if spec.metadata["flag"]]

    @property
    def single_model(self) -> bool:
        """One model from ``model_dir`` (the SageMaker single-model contract); else the server
        holds the models of ``models``, those loaded through the API, and the store's on demand."""
        return not (self.multi_model or self.model_store is not None or self.models)

    @property
    def temp_dir(self) -> Path:
        """The temp dir (``TMPDIR``, else the system's), where a serverless container writes."""
        return Path(tempfile.gettempdir())

    @property
    def requirements_target(self) -> Path | None:
        """Where pip installs model requirements: under the temp dir when serverless (then on
        ``sys.path``), else None, the environment's site-packages."""
        return self.temp_dir / "byoserve-requirements" if self.serverless else None

    @property
    def max_payload_in_mb(self) -> int:
        """The request size limit in whole MiB, as /execution-parameters reports it: at most
        SageMaker's own limit on MaxPayloadInMB (100)."""
        return max(1, min(MAX_TRANSFORM_PAYLOAD_MB, self.max_request_size // MIB))

    def transform_job(self) -> str | None:
        """What a batch transform job (``SAGEMAKER_BATCH=true``) has set, in one line for the
        start's log; None outside one."""
        if not self.batch:
            return None
        transforms = self.max_concurrent_transforms
        return (
            f"batch transform job: BatchStrategy {self.batch_strategy}, requests up to "
            f"{self.max_request_size / MIB:g} MiB, "
            f"{transforms or 'unset'} MaxConcurrentTransforms, "
            f"{self.timeout:g} s per request"
        )
