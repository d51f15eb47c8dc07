"""ServingConfig from the environment, and the cgroup-aware CPU count."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from serve.codecs.images import DEFAULT_MAX_IMAGE_PIXELS
from serve.config import MIB, ConfigError, ServingConfig
from serve.model.settings import (
    ModelOverrides,
    ModelSettings,
    ModelsJson,
    Registration,
    choose_settings,
)
from serve.process.cpus import available_cpus, resolved


def test_defaults_follow_the_sagemaker_contract() -> None:
    config = resolved(ServingConfig.from_env({}))
    assert config.model_dir == Path("/opt/ml/model")
    assert config.port == 8080
    assert config.timeout == 60
    assert config.max_request_size == 6 * MIB
    assert config.default_accept == "application/json"
    assert config.log_level == logging.INFO
    assert config.workers == available_cpus()
    assert config.torch_threads == max(1, available_cpus() // config.workers)
    # every request waiting in the queue holds a request thread: the hard bound is the threads
    assert config.queue_size == config.threads


def test_sagemaker_variables_are_read() -> None:
    config = ServingConfig.from_env(
        {
            "SAGEMAKER_BIND_TO_PORT": "9090",
            "SAGEMAKER_MODEL_SERVER_WORKERS": "3",
            "SAGEMAKER_MODEL_SERVER_TIMEOUT": "120",
            "SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT": "text/csv",
            "SAGEMAKER_CONTAINER_LOG_LEVEL": "10",
            "SAGEMAKER_PROGRAM": "serve_me.py",
            "SAGEMAKER_TS_BATCH_SIZE": "8",
            "SAGEMAKER_TS_MAX_BATCH_DELAY": "20",
        }
    )
    assert (config.port, config.workers) == (9090, 3)
    assert (config.timeout, config.default_accept, config.log_level) == (120, "text/csv", 10)
    assert (config.program, config.max_batch_size, config.max_batch_delay_ms) == (
        "serve_me.py",
        8,
        20,
    )


def test_max_request_size_takes_precedence_over_payload_in_mb() -> None:
    assert (
        ServingConfig.from_env({"SAGEMAKER_MAX_PAYLOAD_IN_MB": "10"}).max_request_size == 10 * MIB
    )
    both = {"SAGEMAKER_MAX_PAYLOAD_IN_MB": "10", "SAGEMAKER_MAX_REQUEST_SIZE": "1000"}
    assert ServingConfig.from_env(both).max_request_size == 1000


def test_our_names_win_over_the_toolkit_names_and_flags_win_over_both() -> None:
    environ = {"BYOSERVE_MAX_BATCH_SIZE": "4", "SAGEMAKER_TS_BATCH_SIZE": "8"}
    assert ServingConfig.from_env(environ).max_batch_size == 4
    assert ServingConfig.from_env(environ, max_batch_size=2, port=7000).max_batch_size == 2


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SAGEMAKER_BIND_TO_PORT", "0"),
        ("SAGEMAKER_BIND_TO_PORT", "http"),
        ("SAGEMAKER_MODEL_SERVER_WORKERS", "-1"),
        ("SAGEMAKER_MODEL_SERVER_TIMEOUT", "0"),
        ("SAGEMAKER_MAX_REQUEST_SIZE", "big"),
        ("SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT", "json"),
        ("SAGEMAKER_CONTAINER_LOG_LEVEL", "LOUD"),
        ("BYOSERVE_INSTALL_REQUIREMENTS", "True-ish"),
        ("BYOSERVE_LOG_FORMAT", "xml"),
        ("SAGEMAKER_BATCH_STRATEGY", "SOMETIMES"),
    ],
)
def test_a_bad_value_names_the_variable_and_the_value(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"{name}={value!r}"):
        ServingConfig.from_env({name: value})


@pytest.mark.parametrize(
    ("name", "allowed"),
    [
        ("BYOSERVE_HTTP_ENGINE", "gunicorn, granian"),
        ("BYOSERVE_DIALECT", "sagemaker, torchserve"),
        ("BYOSERVE_LOG_FORMAT", "text, json"),
        ("SAGEMAKER_BATCH_STRATEGY", "MULTI_RECORD, SINGLE_RECORD, MultiRecord, SingleRecord"),
    ],
)
def test_a_choice_names_the_values_it_allows(name: str, allowed: str) -> None:
    with pytest.raises(ConfigError, match=f"must be one of {allowed}$"):
        ServingConfig.from_env({name: "other"})


def test_booleans_are_strict() -> None:
    assert ServingConfig.from_env({"BYOSERVE_METRICS": "0"}).metrics is False
    assert ServingConfig.from_env({"BYOSERVE_METRICS": "TRUE"}).metrics is True
    with pytest.raises(ConfigError):
        ServingConfig.from_env({"BYOSERVE_METRICS": "yes"})


def test_multi_model_settings() -> None:
    assert ServingConfig.from_env({}).single_model
    config = ServingConfig.from_env(
        {
            "SAGEMAKER_MULTI_MODEL": "true",
            "BYOSERVE_MODEL_STORE": "/store",
            "BYOSERVE_MODELS": "a=a.tar.gz, b.mar  all",
            "BYOSERVE_MAX_MODELS": "3",
            "BYOSERVE_MEMORY_BUDGET_MB": "1.5",
        }
    )
    assert not config.single_model
    assert config.model_store == Path("/store")
    assert config.models == ("a=a.tar.gz", "b.mar", "all")
    assert config.max_models == 3
    assert config.memory_budget == int(1.5 * MIB)
    assert not ServingConfig.from_env({"BYOSERVE_MODELS": "a=/x/a.tar.gz"}).single_model
    with pytest.raises(ConfigError, match="needs a model store"):
        ServingConfig.from_env({"BYOSERVE_MODELS": "all"})
    with pytest.raises(ConfigError, match="BYOSERVE_MAX_MODELS"):
        ServingConfig.from_env({"BYOSERVE_MAX_MODELS": "0"})


def test_model_settings_registration_then_environment_then_archive() -> None:
    config = ServingConfig.from_env({"BYOSERVE_MAX_BATCH_SIZE": "4"}, timeout=30.0, threads=8)
    archive = {"batchSize": 16, "maxBatchDelay": 50, "responseTimeout": 90}
    assert Registration().settings(config, archive, 64) == ModelSettings(4, 0.05, 90.0, 8)
    registered = ModelOverrides(2, 0, 5, 7)
    assert Registration(registered).settings(config, archive, 64) == ModelSettings(2, 0.0, 5.0, 7)
    plain = ServingConfig.from_env({}, timeout=30.0)
    assert Registration().settings(plain, {}, 64) == ModelSettings(1, 0.0, 30.0, 64)
    assert Registration().settings(plain, archive, 8).max_batch_size == 8
    snake = {"batch_size": 16, "max_batch_delay": 50, "response_timeout": 90}
    assert choose_settings(
        plain, archive=ModelOverrides.from_archive_options(snake), capacity=64
    ) == ModelSettings(16, 0.05, 90.0, 64)


def test_an_archive_setting_of_the_wrong_kind_does_not_apply(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING):
        options = ModelOverrides.from_archive_options({"batchSize": "4", "maxBatchDelay": 10})
    assert options == ModelOverrides(max_batch_delay_ms=10)
    assert "batchSize must be a whole number of at least 1, not '4'" in caplog.text


def test_workers_and_torch_threads_are_the_cpus_once_resolved() -> None:
    given = ServingConfig.from_env({})
    assert (given.workers, given.torch_threads) == (0, 0)  # resolved where the server starts
    assert (resolved(given, cpus=8).workers, resolved(given, cpus=8).torch_threads) == (8, 1)
    two = resolved(ServingConfig.from_env({}, workers=2), cpus=8)
    assert (two.workers, two.torch_threads) == (2, 4)
    assert resolved(two, cpus=1) is two


def test_the_image_pixel_limit_defaults_to_the_codecs_own() -> None:
    assert ServingConfig.from_env({}).max_image_pixels == DEFAULT_MAX_IMAGE_PIXELS


def _cgroup(root: Path, cpu_max: str) -> Path:
    (root / "sys/fs/cgroup").mkdir(parents=True)
    (root / "sys/fs/cgroup/cpu.max").write_text(cpu_max)
    return root


def test_cgroup_v2_quota_limits_the_cpu_count(tmp_path: Path) -> None:
    assert available_cpus(_cgroup(tmp_path / "half", "50000 100000\n")) == 1
    unlimited = available_cpus(_cgroup(tmp_path / "max", "max 100000\n"))
    assert unlimited == available_cpus(tmp_path / "none")
    assert available_cpus(_cgroup(tmp_path / "huge", "6400000 100000\n")) == unlimited


def test_cgroup_v1_quota_limits_the_cpu_count(tmp_path: Path) -> None:
    cpu = tmp_path / "sys/fs/cgroup/cpu"
    cpu.mkdir(parents=True)
    (cpu / "cpu.cfs_quota_us").write_text("100000\n")
    (cpu / "cpu.cfs_period_us").write_text("100000\n")
    assert available_cpus(tmp_path) == 1


def test_torchserves_models_json_is_a_setting_named_in_its_errors() -> None:
    text = '{"m": {"1.0": {"batchSize": 4, "maxBatchDelay": 50, "minWorkers": 2}}}'
    config = ServingConfig.from_env({"BYOSERVE_MODEL_CONFIG": text})
    assert config.model_config is not None
    models = ModelsJson.parse(config.model_config)
    assert models.models == {"m": {"1.0": ModelOverrides(batch_size=4, max_batch_delay_ms=50)}}
    assert models.ignored == ("minWorkers",)
    with pytest.raises(ConfigError, match=r"^BYOSERVE_MODEL_CONFIG='\{': not JSON"):
        ServingConfig.from_env({"BYOSERVE_MODEL_CONFIG": "{"})


def test_torchserves_config_file_and_log_location_variables(tmp_path: Path) -> None:
    environ = {"TS_CONFIG_FILE": str(tmp_path / "a.properties"), "LOG_LOCATION": str(tmp_path)}
    config = ServingConfig.from_env(environ)
    assert config.config_file == tmp_path / "a.properties"
    assert config.log_location == tmp_path
    mms = ServingConfig.from_env({"MMS_CONFIG_FILE": str(tmp_path / "b.properties")})
    assert mms.config_file == tmp_path / "b.properties"


def test_one_setting_is_parsed_or_read_on_its_own() -> None:
    assert ServingConfig.parse_setting("queue_size", "file: job_queue_size", "9") == 9
    with pytest.raises(ConfigError, match=r"^file: job_queue_size='0': must be at least 1$"):
        ServingConfig.parse_setting("queue_size", "file: job_queue_size", "0")
    assert ServingConfig.read_setting("port", {"SAGEMAKER_BIND_TO_PORT": "9000"}) == 9000
    assert ServingConfig.read_setting("port", {"SAGEMAKER_BIND_TO_PORT": " "}) == 8080
    assert ServingConfig.set_in_environment("port", {"SAGEMAKER_BIND_TO_PORT": "1"})
    assert not ServingConfig.set_in_environment("port", {"SAGEMAKER_BIND_TO_PORT": ""})
    with pytest.raises(KeyError):
        ServingConfig.spec("no_such_setting")


def test_a_batch_transform_job_waits_600_s_unless_told_otherwise() -> None:
    job = ServingConfig.from_env({"SAGEMAKER_BATCH": "true"})
    assert (job.batch, job.timeout) == (True, 600.0)
    assert "batch transform job" in (job.transform_job() or "")
    told = ServingConfig.from_env(
        {"SAGEMAKER_BATCH": "True", "SAGEMAKER_MODEL_SERVER_TIMEOUT": "90"}
    )
    assert told.timeout == 90.0
    assert ServingConfig.from_env({}).transform_job() is None


@pytest.mark.parametrize(
    ("value", "strategy"),
    [
        ("MULTI_RECORD", "MULTI_RECORD"),
        ("MultiRecord", "MULTI_RECORD"),
        ("SINGLE_RECORD", "SINGLE_RECORD"),
        ("SingleRecord", "SINGLE_RECORD"),
        (" singlerecord ", "SINGLE_RECORD"),
    ],
)
def test_batch_strategy_takes_both_spellings(value: str, strategy: str) -> None:
    config = ServingConfig.from_env({"SAGEMAKER_BATCH_STRATEGY": value})
    assert config.batch_strategy == strategy


def test_max_concurrent_transforms_fit_in_every_workers_threads_and_queue() -> None:
    config = ServingConfig.from_env({"SAGEMAKER_MAX_CONCURRENT_TRANSFORMS": "100"})
    assert config.queue_size >= 100 and config.threads >= 100
    assert config.queue_size <= config.threads
    small = ServingConfig.from_env({"SAGEMAKER_MAX_CONCURRENT_TRANSFORMS": "4"})
    assert (small.threads, small.queue_size) == (64, 64)
    set_threads = ServingConfig.from_env(
        {"SAGEMAKER_MAX_CONCURRENT_TRANSFORMS": "40", "BYOSERVE_WORKER_THREADS": "16"}
    )
    assert (set_threads.threads, set_threads.queue_size) == (16, 40)
    with pytest.raises(ConfigError, match=r"BYOSERVE_QUEUE_SIZE=8 is below .*=40"):
        ServingConfig.from_env(
            {"SAGEMAKER_MAX_CONCURRENT_TRANSFORMS": "40", "BYOSERVE_QUEUE_SIZE": "8"}
        )


def test_payload_in_mb_zero_takes_whole_objects_and_is_reported_within_sagemakers_limit() -> None:
    whole = ServingConfig.from_env({"SAGEMAKER_MAX_PAYLOAD_IN_MB": "0"})
    assert whole.max_request_size == 1024 * MIB
    assert whole.max_payload_in_mb == 100
    assert ServingConfig.from_env({"SAGEMAKER_MAX_PAYLOAD_IN_MB": "20"}).max_payload_in_mb == 20
