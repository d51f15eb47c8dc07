"""TorchServe's and MMS's config.properties: the format as Java reads it, each key mapped to its
setting (or named as not applying, or refused), TorchServe's per-model ``models`` JSON, and the
order in which ``serve --start`` lays the command line, the file and the environment."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from serve.config import MIB, ConfigError, ServingConfig
from serve.dialect.cli import (
    build_torchserve_parser,
    is_torchserve_command,
    log_files,
    torchserve_config,
)
from serve.dialect.javaprops import PropertiesError, parse_properties, read_properties
from serve.dialect.properties import load_properties
from serve.model.settings import ModelOverrides, ModelsJson, Registration

MODELS_JSON = """models={\\
  "noop": {\\
    "1.0": {\\
        "defaultVersion": true,\\
        "marName": "noop.mar",\\
        "minWorkers": 1,\\
        "maxWorkers": 1,\\
        "batchSize": 4,\\
        "maxBatchDelay": 100,\\
        "responseTimeout": 120\\
    }\\
  }\\
}
"""


def write(tmp_path: Path, text: str, name: str = "config.properties") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def load(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> Any:
    return load_properties(write(tmp_path, text), environ or {}, name="config.properties")


# The format


def test_separators_comments_and_blanks_as_java_reads_them() -> None:
    text = (
        "# a comment\n"
        "! another\n"
        "\n"
        "   \t\n"
        "a=1\n"
        "b : 2\n"
        "c 3\n"
        "  d=  spaced value  \n"
        "e\n"
        "f=x=y:z\n"
        "a=last wins\n"
    )
    assert parse_properties(text) == {
        "a": "last wins",
        "b": "2",
        "c": "3",
        "d": "spaced value  ",  # blanks after the value are kept, as in Java
        "e": "",
        "f": "x=y:z",
    }


def test_continuations_join_lines_and_drop_the_next_lines_leading_blanks() -> None:
    text = "key = one, \\\n      two, \\\n\tthree\nnext=1\r\nother=2\rlast=3"
    assert parse_properties(text) == {
        "key": "one, two, three",
        "next": "1",
        "other": "2",
        "last": "3",
    }


def test_an_even_number_of_backslashes_does_not_continue_and_a_comment_never_does() -> None:
    text = "path=C:\\\\dir\\\\\nafter=1\n# comment \\\nnot_continued=2\n"
    assert parse_properties(text) == {"path": "C:\\dir\\", "after": "1", "not_continued": "2"}


def test_escapes_in_keys_and_values() -> None:
    text = "a\\=b\\:c\\ d=\\t\\u00e9\\n\\q\nend=trailing\\"
    assert parse_properties(text) == {"a=b:c d": "\té\nq", "end": "trailing"}


def test_a_malformed_unicode_escape_names_its_line() -> None:
    with pytest.raises(PropertiesError, match=r"line 2: malformed \\uXXXX escape"):
        parse_properties("ok=1\nbad=\\u12G4\n")


def test_a_file_that_is_not_utf8_is_read_as_latin1(tmp_path: Path) -> None:
    path = tmp_path / "config.properties"
    path.write_bytes("model_store=/models/caf\u00e9\n".encode("latin-1"))
    assert read_properties(path) == {"model_store": "/models/caf\u00e9"}


# Keys and settings


def test_every_applying_key_sets_its_setting(tmp_path: Path) -> None:
    store = tmp_path / "store"
    text = (
        "inference_address=http://0.0.0.0:9080\n"
        "management_address=http://127.0.0.1:9081\n"
        "metrics_address=127.0.0.1:9082\n"
        f"model_store={store}\n"
        "load_models=a.mar,b=b.mar\n"
        "default_workers_per_model=3\n"
        "job_queue_size=7\n"
        "max_request_size=1048576\n"
        "enable_model_api=true\n"
        "allowed_urls=file://.*,https://models\\\\.example\\\\.com/.*\n"
        "default_response_timeout=33\n"
        "default_startup_timeout=44\n"
        "install_py_dep_per_model=true\n"
        "enable_metrics_api=false\n"
    )
    loaded = load(tmp_path, text)
    assert loaded.values == {
        "host": "0.0.0.0",
        "port": 9080,
        "management_address": ("127.0.0.1", 9081),
        "metrics_address": ("127.0.0.1", 9082),
        "model_store": store,
        "models": ("a.mar", "b=b.mar"),
        "workers": 3,
        "queue_size": 7,
        "max_request_size": MIB,
        "enable_model_api": True,
        "allowed_urls": ("file://.*", r"https://models\.example\.com/.*"),
        "timeout": 33.0,
        "startup_timeout": 44.0,
        "install_requirements": True,
        "metrics": False,
    }
    assert loaded.ignored == ()


@pytest.mark.parametrize(
    ("value", "models"),
    [
        ("standalone", ()),
        ("ALL", ("all",)),
        ("all", ("all",)),
        ("m=m.mar, n.mar", ("m=m.mar", "n.mar")),
    ],
)
def test_load_models_takes_torchserves_forms(
    tmp_path: Path, value: str, models: tuple[str, ...]
) -> None:
    assert load(tmp_path, f"load_models={value}\n").values["models"] == models


def test_keys_that_do_not_apply_are_accepted_and_named(tmp_path: Path) -> None:
    text = (
        "async_logging=true\nvmargs=-Xmx4g\nnumber_of_gpu=2\ncors_allowed_origin=*\n" + MODELS_JSON
    )
    loaded = load(tmp_path, text)
    assert loaded.ignored == (
        "async_logging",
        "cors_allowed_origin",
        "number_of_gpu",
        "vmargs",
        "models.marName",
        "models.maxWorkers",
        "models.minWorkers",
    )
    assert "async_logging" not in loaded.values


def test_unknown_keys_stop_the_start_naming_them(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, "job_queue_size=1\nbatch_size=4\ninference_adress=http://x:1\n")
    assert str(caught.value) == (
        "config.properties: unknown keys batch_size, inference_adress "
        "(not a TorchServe or MMS setting)"
    )


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("job_queue_size=x", "config.properties: job_queue_size='x': invalid literal"),
        (
            "default_workers_per_model=0",
            "config.properties: default_workers_per_model='0': must be",
        ),
        (
            "inference_address=https://0.0.0.0:8443",
            "inference_address='https://0.0.0.0:8443': https",
        ),
        ("enable_model_api=yes", "config.properties: enable_model_api='yes': must be true, false"),
        ("allowed_urls=(", "config.properties: allowed_urls='(': '(' is not a regular expression"),
        ('models={"m": {"1.0": {"batchSize": 0}}}', "batchSize must be a whole number"),
        ('models={"m": {"1.0": {"batchsize": 2}}}', "unknown key 'batchsize'"),
        ("models=[1]", "config.properties: models='[1]': must be a JSON object"),
    ],
)
def test_a_bad_value_names_the_file_and_the_key(tmp_path: Path, line: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, line + "\n")
    assert expected in str(caught.value)
    assert "\n" not in str(caught.value)


def test_environment_variables_are_substituted_as_torchserve_does(tmp_path: Path) -> None:
    loaded = load(tmp_path, "job_queue_size=$$QUEUE$$\n", {"QUEUE": "12"})
    assert loaded.values["queue_size"] == 12
    with pytest.raises(ConfigError, match="job_queue_size: environment variable QUEUE is not set"):
        load(tmp_path, "job_queue_size=$$QUEUE$$\n", {})


def test_ts_variables_override_the_file_only_with_enable_envvars_config(tmp_path: Path) -> None:
    environ = {"TS_JOB_QUEUE_SIZE": "9", "TS_ALLOWED_URLS": "https://.*"}
    plain = load(tmp_path, "job_queue_size=3\n", environ)
    assert plain.environment == {}
    enabled = load(tmp_path, "job_queue_size=3\nenable_envvars_config=true\n", environ)
    assert enabled.values["queue_size"] == 3
    assert enabled.environment == {"queue_size": 9}  # TS_ALLOWED_URLS needs use_env_allowed_urls
    both = load(tmp_path, "enable_envvars_config=true\nuse_env_allowed_urls=true\n", environ)
    assert both.environment == {"queue_size": 9, "allowed_urls": ("https://.*",)}
    with pytest.raises(ConfigError, match="TS_JOB_QUEUE_SIZE='x'"):
        load(tmp_path, "enable_envvars_config=true\n", {"TS_JOB_QUEUE_SIZE": "x"})


# TorchServe's models JSON


def test_models_json_becomes_registered_settings_by_name_and_version(tmp_path: Path) -> None:
    models = ModelsJson.parse(load(tmp_path, MODELS_JSON).values["model_config"])
    noop = ModelOverrides(batch_size=4, max_batch_delay_ms=100, response_timeout_s=120)
    assert models.models == {"noop": {"1.0": noop}}
    assert models.defaults == {"noop": "1.0"}
    assert models.overrides_for("noop", "1.0") == noop
    assert models.overrides_for("other", "1.0") == ModelOverrides()


def test_an_archive_without_a_version_takes_the_default_or_only_version() -> None:
    models = ModelsJson.parse(
        json.loads(
            '{"m": {"1.0": {"batchSize": 2}, "2.0": {"batchSize": 8, "defaultVersion": true}},'
            ' "n": {"3.0": {"batchSize": 3}}}'
        )
    )
    assert models.overrides_for("m", None) == ModelOverrides(batch_size=8)
    assert models.overrides_for("m", "1.0") == ModelOverrides(batch_size=2)
    assert models.overrides_for("n", None) == ModelOverrides(batch_size=3)


def test_a_version_the_json_does_not_have_applies_nothing_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    models = ModelsJson.parse({"m": {"1.0": {"batchSize": 2}}})
    with caplog.at_level(logging.WARNING):
        assert models.overrides_for("m", "2.0") == ModelOverrides()
    assert "models: m has no entry for version 2.0 (it has 1.0)" in caplog.text


def test_the_archives_own_settings_win_over_the_json_as_in_torchserve() -> None:
    config = ServingConfig.from_env({"BYOSERVE_MAX_BATCH_SIZE": "3"}, timeout=30.0)
    entry = ModelsJson.parse({"m": {"1.0": {"batchSize": 2, "maxBatchDelay": 50}}})
    registration = Registration(models_json=entry.overrides_for("m", "1.0"))
    # the archive's batchSize beats the JSON's, and the environment's beats the archive's
    chosen = registration.settings(config, {"batchSize": 16}, capacity=64)
    assert (chosen.max_batch_size, chosen.max_batch_delay) == (3, 0.05)
    # where the archive says nothing, the JSON's beats the environment's
    chosen = registration.settings(config, {"max_batch_delay": 5}, capacity=64)
    assert (chosen.max_batch_size, chosen.max_batch_delay) == (2, 0.005)


# serve --start: defaults, file, command line, environment


def start_config(
    args: list[str], environ: dict[str, str] | None = None
) -> tuple[ServingConfig, list[str]]:
    parsed = build_torchserve_parser().parse_args(["--start", *args])
    return torchserve_config(parsed, environ or {})


def test_start_answers_as_torchserve_on_its_addresses(tmp_path: Path) -> None:
    config, notes = start_config(["--model-store", str(tmp_path)])
    assert config.dialect == "torchserve"
    assert (config.host, config.port) == ("127.0.0.1", 8080)
    assert config.management_address == ("127.0.0.1", 8081)
    assert config.metrics_address == ("127.0.0.1", 8082)
    assert config.timeout == 120
    assert config.enable_model_api is True  # unlike TorchServe 0.12: tutorials register models
    assert config.install_requirements is False
    assert config.model_store == tmp_path
    assert notes == []


def test_the_file_overrides_the_environment_and_flags_override_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "job_queue_size=7\ndefault_workers_per_model=3\nload_models=a.mar\n")
    environ = {"BYOSERVE_QUEUE_SIZE": "5", "SAGEMAKER_MODEL_SERVER_WORKERS": "2"}
    args = ["--ts-config", str(path), "--model-store", str(tmp_path)]
    config, _ = start_config(args, environ)
    assert (config.queue_size, config.workers, config.models) == (7, 3, ("a.mar",))
    config, _ = start_config([*args, "--workers", "4", "--models", "b.mar", "c=c.mar"], environ)
    assert (config.queue_size, config.workers, config.models) == (7, 4, ("b.mar", "c=c.mar"))
    config, _ = start_config(["--model-store", str(tmp_path)], environ)
    assert (config.queue_size, config.workers) == (5, 2)


def test_serves_variables_override_torchserves_defaults(tmp_path: Path) -> None:
    environ = {"SAGEMAKER_BIND_TO_PORT": "9000", "SAGEMAKER_MAX_PAYLOAD_IN_MB": "2"}
    config, _ = start_config(["--model-store", str(tmp_path)], environ)
    assert (config.host, config.port, config.max_request_size) == ("127.0.0.1", 9000, 2 * MIB)
    config, _ = start_config(["--model-store", str(tmp_path)])
    assert config.max_request_size == 6553500


def test_ts_variables_rank_above_the_command_line_with_enable_envvars_config(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, "enable_envvars_config=true\n")
    args = ["--ts-config", str(path), "--model-store", str(tmp_path), "--port", "9001"]
    config, _ = start_config(args, {"TS_INFERENCE_ADDRESS": "http://127.0.0.1:9002"})
    assert config.port == 9002


def test_ts_config_file_variable_wins_over_the_flag_and_config_properties_is_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flag = write(tmp_path, "job_queue_size=3\n", "flag.properties")
    variable = write(tmp_path, "job_queue_size=4\n", "variable.properties")
    args = ["--ts-config", str(flag), "--model-store", str(tmp_path)]
    config, _ = start_config(args, {"TS_CONFIG_FILE": str(variable)})
    assert config.queue_size == 4
    work = tmp_path / "work"
    work.mkdir()
    write(work, "job_queue_size=6\n")
    monkeypatch.chdir(work)
    config, _ = start_config(["--model-store", str(tmp_path)])
    assert config.queue_size == 6


def test_flags_and_keys_that_do_not_apply_are_one_line_each_source(tmp_path: Path) -> None:
    path = write(tmp_path, "async_logging=true\nnumber_of_netty_threads=4\n")
    args = ["--ts-config", str(path), "--model-store", str(tmp_path), "--ncs", "--log-config", "x"]
    _, notes = start_config([*args, "--disable-token-auth"])
    assert notes == [
        f"{path}: ignored, they do not apply here: async_logging, number_of_netty_threads",
        "ignored, they do not apply here: --ncs, --log-config",
    ]


def test_enable_model_api_flag_and_key(tmp_path: Path) -> None:
    config, _ = start_config(["--model-store", str(tmp_path), "--enable-model-api"])
    assert config.enable_model_api is True
    path = write(tmp_path, "enable_model_api=false\n")
    config, _ = start_config(["--model-store", str(tmp_path), "--ts-config", str(path)])
    assert config.enable_model_api is False


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], "--model-store DIR is needed (or model_store in the config file)"),
        (["--model-store", "/nonexistent/store"], "--model-store directory not found"),
        (["--model-store", ".", "--ts-config", "/nonexistent.properties"], "--ts-config file not"),
        (
            ["--model-store", ".", "--mms-config", "/nonexistent.properties"],
            "--mms-config file not",
        ),
        (["--model-store", ".", "--workers", "0"], "--workers='0': must be at least 1"),
    ],
)
def test_start_refuses_what_it_cannot_serve(args: list[str], expected: str) -> None:
    with pytest.raises(ConfigError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        start_config(args)


def test_torchserve_command_lines_are_recognised() -> None:
    assert is_torchserve_command(["--start", "--model-store", "s"])
    assert is_torchserve_command(["--stop"])
    assert is_torchserve_command(["--ts-config=config.properties"])
    assert is_torchserve_command(["--foreground", "--model-store", "s"])
    assert not is_torchserve_command(["--model-store", "s", "--models", "a.mar"])
    assert not is_torchserve_command(["--model-dir", "m", "--port", "9000"])


def test_log_files_go_to_log_location_and_metrics_location(tmp_path: Path) -> None:
    args = ["--model-store", str(tmp_path)]
    files = log_files(start_config(args)[0], mms=False)
    assert (files.logs, files.metrics) == (Path("logs").absolute(), Path("logs").absolute())
    assert (files.server_log, files.metrics_log) == ("ts_log.log", "ts_metrics.log")
    environ = {"LOG_LOCATION": str(tmp_path / "a"), "METRICS_LOCATION": str(tmp_path / "m")}
    files = log_files(start_config(args, environ)[0], mms=True)
    assert (files.logs, files.metrics) == (tmp_path / "a", tmp_path / "m")
    assert (files.server_log, files.metrics_log) == ("mms_log.log", "mms_metrics.log")
    path = write(tmp_path, f"log_location={tmp_path / 'b'}\nmetrics_location=metrics\n")
    files = log_files(start_config([*args, "--ts-config", str(path)], environ)[0], mms=False)
    assert (files.logs, files.metrics) == (tmp_path / "b", Path("metrics").absolute())
