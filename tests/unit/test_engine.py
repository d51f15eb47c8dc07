"""The engine registry matches the engines the configuration accepts, each named as it is set."""

from __future__ import annotations

from typing import get_args

import pytest

from serve.config import ConfigError, HttpEngine, ServingConfig
from serve.process.engine import ENGINES, engine_for


def test_every_engine_setting_picks_the_engine_of_that_name() -> None:
    assert set(ENGINES) == set(get_args(HttpEngine))
    for name in get_args(HttpEngine):
        config = ServingConfig.from_env({"BYOSERVE_HTTP_ENGINE": name.upper()})
        assert engine_for(config).name == name


def test_an_unknown_engine_is_refused_by_the_configuration() -> None:
    with pytest.raises(ConfigError, match="BYOSERVE_HTTP_ENGINE"):
        ServingConfig.from_env({"BYOSERVE_HTTP_ENGINE": "uvicorn"})


def test_only_an_engine_that_cannot_read_chunked_bodies_refuses_them() -> None:
    for engine in ENGINES.values():
        rules = engine.body_rules
        assert rules.reads_chunked == engine.reads_chunked
        assert rules.malformed == engine.malformed_body
    assert ENGINES["gunicorn"].reads_chunked and not ENGINES["granian"].reads_chunked
