"""Per-model settings: each entrance's spellings and checks, the order of the sources, and a
registration's round trip through the shared models.json."""

from __future__ import annotations

from pathlib import Path

import pytest

from serve.bootstrap import build_server
from serve.config import ConfigError, ServingConfig
from serve.http.invocation import BodyRules
from serve.model.settings import (
    ModelOverrides,
    ModelsJson,
    Registration,
    SettingError,
    field_of,
    spellings,
)
from serve.runtime.shared import SharedModels


def test_each_entrance_has_its_spellings_of_the_same_fields() -> None:
    assert spellings("models") == ("batchSize", "maxBatchDelay", "responseTimeout")
    assert spellings("register") == ("batch_size", "max_batch_delay", "response_timeout")
    assert spellings("sagemaker") == (*spellings("register"), "queue_size")
    assert field_of("maxBatchDelay", "archive") == field_of("max_batch_delay", "archive")
    assert field_of("max_batch_delay", "models") is None  # the JSON is TorchServe's own spelling


def test_the_register_call_reads_its_text_as_numbers_and_checks_each() -> None:
    given = {"batch_size": "4", "max_batch_delay": "50", "response_timeout": "2.5", "url": "m"}
    assert ModelOverrides.from_register_params(given) == ModelOverrides(4, 50, 2.5)
    with pytest.raises(SettingError, match=r"^batch_size must be a whole number of at least 1"):
        ModelOverrides.from_register_params({"batch_size": "0"})
    with pytest.raises(SettingError, match=r"^response_timeout must be a number of seconds"):
        ModelOverrides.from_register_params({"response_timeout": "soon"})


def test_sagemakers_load_takes_json_values_as_they_are() -> None:
    body = {"model_name": "m", "url": "/x", "queue_size": 3, "max_batch_delay": 0}
    assert ModelOverrides.from_fields(body, "sagemaker") == ModelOverrides(
        max_batch_delay_ms=0, queue_size=3
    )
    with pytest.raises(SettingError, match=r"^batch_size must be .*, not True$"):
        ModelOverrides.from_fields({"batch_size": True}, "sagemaker")
    with pytest.raises(SettingError, match=r"^batch_size must be .*, not '4'$"):
        ModelOverrides.from_fields({"batch_size": "4"}, "sagemaker")


def test_a_models_json_error_names_the_model_version_and_key() -> None:
    with pytest.raises(SettingError, match=r"^model 'm' version '1.0': maxBatchDelay must be a"):
        ModelsJson.parse({"m": {"1.0": {"maxBatchDelay": -1}}})
    with pytest.raises(SettingError, match="unknown key 'batch_size'; TorchServe's are batchSize"):
        ModelsJson.parse({"m": {"1.0": {"batch_size": 2}}})


def test_a_registration_travels_through_models_json_typed(tmp_path: Path) -> None:
    shared = SharedModels(tmp_path)
    registration = Registration(
        overrides=ModelOverrides(batch_size=4, max_batch_delay_ms=12.5),
        models_json=ModelOverrides(response_timeout_s=9),
        url="echo.mar",
        handler="handler.py",
    )
    with shared.editing() as desired:
        desired.add("echo", "/store/echo.mar", registered=registration)
    assert shared.read().models["echo"].registered == registration


def test_a_bad_model_config_variable_stops_the_start_naming_it(tmp_path: Path) -> None:
    config = ServingConfig.from_env(
        {"BYOSERVE_MODEL_CONFIG": '{"m": {"1.0": {"batchSize": 0}}}'},
        model_store=tmp_path,
        models=("all",),
        metrics=False,
    )
    with pytest.raises(ConfigError, match=r"^BYOSERVE_MODEL_CONFIG: model 'm' version '1.0'"):
        build_server(config, BodyRules())
