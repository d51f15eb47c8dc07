"""TorchServe's and MMS's ``config.properties``: each key mapped to the setting it means here,
parsed by that setting's own parser, with errors naming the file and the key.

- Keys that mean something here set a setting (:data:`APPLIED`; ``inference_address`` sets the
  host and port, ``load_models`` the start-up models, ``models`` their per-model settings).
- Keys of TorchServe or MMS that mean nothing here (:data:`NOT_APPLYING`: JVM, Netty, TLS, gRPC,
  CORS, plugins, snapshots, ...) are accepted and named in one log line.
- Any other key stops the start, named: a typo must not pass for a setting.
- ``$$NAME$$`` in a value is replaced by the environment variable NAME (an error when unset), and
  with ``enable_envvars_config=true`` the variables ``TS_<KEY>`` (``MMS_<KEY>`` for an MMS file)
  override the file's keys, ``TS_ALLOWED_URLS`` only with ``use_env_allowed_urls=true``: both as
  TorchServe's frontend does (``ConfigManager.resolveEnvVarVals``, ``setSystemVars``). Those
  variables are named by the keys, so they are read here rather than declared in serve/config.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serve.config import ConfigError, ServingConfig
from serve.dialect.javaprops import PropertiesError, read_properties
from serve.model.settings import ModelsJson, SettingError

Apply = Callable[[str, str], dict[str, Any]]  # (source, raw value) -> parsed values by setting


def _to(setting: str) -> Apply:
    return lambda source, raw: {setting: ServingConfig.parse_setting(setting, source, raw)}


def _inference_address(source: str, raw: str) -> dict[str, Any]:
    host, port = ServingConfig.parse_setting("management_address", source, raw)
    return {"host": host, "port": port}


def _models(source: str, raw: str) -> dict[str, Any]:
    """TorchServe's per-model settings, checked here so that an error names the file and key;
    the setting keeps the JSON object (serve/model/settings.py reads it again at start)."""
    document = ServingConfig.parse_setting("model_config", source, raw)
    try:
        ModelsJson.parse(document)
    except SettingError as exc:
        raise ConfigError(f"{source}={raw!r}: {exc}") from exc
    return {"model_config": document}


def _token_auth(source: str, raw: str) -> dict[str, Any]:
    """``disable_token_authorization``: the token_auth setting, the other way round."""
    return {"token_auth": not ServingConfig.parse_setting("token_auth", source, raw)}


def _load_models(source: str, raw: str) -> dict[str, Any]:
    """``standalone`` (none), ``all``/``ALL``, or ``NAME=PATH``/``PATH`` separated by commas."""
    words = raw.replace(",", " ").split()
    if [word.lower() for word in words] == ["standalone"]:
        return {"models": ()}
    text = " ".join("all" if word.lower() == "all" else word for word in words)
    return {"models": ServingConfig.parse_setting("models", source, text)}


APPLIED: Mapping[str, Apply] = {
    "inference_address": _inference_address,
    "management_address": _to("management_address"),
    "metrics_address": _to("metrics_address"),
    "model_store": _to("model_store"),
    "load_models": _load_models,
    "models": _models,
    "default_workers_per_model": _to("workers"),
    "job_queue_size": _to("queue_size"),
    "max_request_size": _to("max_request_size"),
    "enable_model_api": _to("enable_model_api"),
    "allowed_urls": _to("allowed_urls"),
    "default_response_timeout": _to("timeout"),  # seconds, as documented (MMS 1.1 read minutes)
    "default_response_timeout_seconds": _to("timeout"),  # MMS
    "default_startup_timeout": _to("startup_timeout"),
    "install_py_dep_per_model": _to("install_requirements"),
    "enable_metrics_api": _to("metrics"),
    # byoserve's: TorchServe reads only the variables LOG_LOCATION and METRICS_LOCATION
    "log_location": _to("log_location"),
    "metrics_location": _to("metrics_location"),
    "disable_token_authorization": _token_auth,
    "token_expiration_min": _to("token_expiration_min"),
}
ENVVARS = "enable_envvars_config"
ENV_ALLOWED_URLS = "use_env_allowed_urls"

# TorchServe 0.12's ConfigManager and model_server.py, and MMS 1.1's: keys that mean nothing here.
NOT_APPLYING = frozenset(
    {
        # the JVM, Netty and the Java frontend
        "vmargs", "plugins_path", "async_logging", "number_of_netty_threads",
        "netty_client_threads", "prefer_direct_buffer", "use_native_io", "io_ratio",
        "model_server_home", "python", "version", "tsConfigFile", "debug", "preload_model",
        "initial_worker_port", "initial_distribution_port", "default_service_handler",
        "service_envelope", "decode_input_request", "unregister_model_timeout",
        # TLS and CORS: put a proxy or load balancer in front
        "keystore", "keystore_pass", "keystore_type", "certificate_file", "private_key_file",
        "cors_allowed_origin", "cors_allowed_methods", "cors_allowed_headers",
        # limits and devices handled otherwise (BYOSERVE_MAX_IMAGE_PIXELS, CUDA_VISIBLE_DEVICES)
        "max_response_size", "limit_max_image_pixels", "number_of_gpu", "blacklist_env_vars",
        # metrics, logging and snapshots of the Java frontend
        "metrics_config", "metrics_mode", "metrics_format", "model_metrics_auto_detect",
        "disable_system_metrics", "system_metrics_cmd", "metric_time_interval",
        "model_snapshot", "cpp_log_config",
        # CPU launcher and IPEX
        "ipex_enable", "ipex_gpu_enable", "cpu_launcher_enable", "cpu_launcher_args",
        # gRPC, workflows, sequences, the open inference protocol
        "grpc_inference_address", "grpc_management_address", "grpc_inference_port",
        "grpc_management_port", "grpc_inference_max_connection_age_ms",
        "grpc_management_max_connection_age_ms", "grpc_inference_max_connection_age_grace_ms",
        "grpc_management_max_connection_age_grace_ms", "enable_grpc_ssl", "workflow_store",
        "ts_open_inference_protocol",
        "ts_header_key_sequence_id", "ts_header_key_sequence_start",
        "ts_header_key_sequence_end",
    }
)  # fmt: skip
_VARIABLE = re.compile(r"\$\$([^$]+[^$])\$\$")


@dataclass(frozen=True, slots=True)
class FileSettings:
    """What a config.properties sets.

    Attributes:
        values: parsed settings by name, from the file's keys.
        environment: parsed settings from ``TS_<KEY>`` variables (enable_envvars_config=true),
            which TorchServe ranks above the command line.
        ignored: the keys given that do not apply here (``models.minWorkers`` for the JSON's).
    """

    values: dict[str, Any]
    environment: dict[str, Any]
    ignored: tuple[str, ...]


def load_properties(
    path: Path, environ: Mapping[str, str], prefix: str = "TS_", name: str | None = None
) -> FileSettings:
    """Read the config.properties at ``path``; ``name`` is how errors call it (the path).

    Raises:
        ConfigError: the file cannot be read, holds an unknown key, or a value its setting
            refuses: ``config.properties: job_queue_size='x': why``.
    """
    label = name or str(path)
    try:
        properties = read_properties(path)
    except (OSError, PropertiesError) as exc:
        raise ConfigError(f"{label}: {getattr(exc, 'strerror', None) or exc}") from exc
    unknown = sorted(set(properties) - set(APPLIED) - NOT_APPLYING - {ENVVARS, ENV_ALLOWED_URLS})
    if unknown:
        raise ConfigError(
            f"{label}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} "
            "(not a TorchServe or MMS setting)"
        )
    properties = {key: _substitute(label, key, raw, environ) for key, raw in properties.items()}
    values: dict[str, Any] = {}
    for key, raw in properties.items():
        if key in APPLIED:
            values.update(APPLIED[key](f"{label}: {key}", raw))
    environment = _from_environment(properties, environ, prefix)
    ignored = sorted(key for key in properties if key in NOT_APPLYING)
    for document in (values.get("model_config"), environment.get("model_config")):
        checked = ModelsJson.parse(document) if document is not None else None
        ignored.extend(f"models.{key}" for key in (checked.ignored if checked else ()))
    return FileSettings(values, environment, tuple(dict.fromkeys(ignored)))


def _java_true(raw: str | None) -> bool:
    """Java's ``Boolean.parseBoolean``, as TorchServe reads these two keys."""
    return raw is not None and raw.strip().lower() == "true"


def _from_environment(
    properties: Mapping[str, str], environ: Mapping[str, str], prefix: str
) -> dict[str, Any]:
    """The ``TS_<KEY>`` variables, when the file says ``enable_envvars_config=true``."""
    if not _java_true(properties.get(ENVVARS)):
        return {}
    env_urls = _java_true(properties.get(ENV_ALLOWED_URLS))
    values: dict[str, Any] = {}
    for key, apply in APPLIED.items():
        variable = prefix + key.upper()
        raw = environ.get(variable)
        if raw is None or (key == "allowed_urls" and not env_urls):
            continue
        values.update(apply(variable, raw))
    return values


def _substitute(label: str, key: str, raw: str, environ: Mapping[str, str]) -> str:
    """``$$NAME$$`` replaced by the variable NAME, as TorchServe does for every key."""

    def value(match: re.Match[str]) -> str:
        variable = match.group(1)
        if variable not in environ:
            raise ConfigError(f"{label}: {key}: environment variable {variable} is not set")
        return environ[variable]

    return _VARIABLE.sub(value, raw)
