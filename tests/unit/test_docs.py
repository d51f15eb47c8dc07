"""The configuration reference is generated from ServingConfig's declarations, and kept so."""

from __future__ import annotations

import dataclasses

from docs.build_config_reference import TARGET, render
from serve.config import ServingConfig


def test_configuration_reference_is_what_the_generator_writes() -> None:
    written = TARGET.read_text(encoding="utf-8")
    assert written == render(), (
        "docs/reference/configuration.md is stale: run `make docs-reference` and commit it"
    )


def test_every_setting_has_help() -> None:
    settings = [spec for spec in dataclasses.fields(ServingConfig) if "env" in spec.metadata]
    missing = [spec.name for spec in settings if not spec.metadata.get("help", "").strip()]
    assert missing == [], f"settings without help= in serve/config.py: {missing}"


def test_every_variable_is_in_the_reference() -> None:
    written = TARGET.read_text(encoding="utf-8")
    for spec in dataclasses.fields(ServingConfig):
        for name in spec.metadata["env"]:
            assert f"`{name}`" in written, name
