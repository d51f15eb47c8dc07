"""A code-only change rebuilds the code layers and reuses the dependency layer."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.container.conftest import BuiltImage
from tests.container.podman import (
    BuildStep,
    build_image,
    build_steps,
    copy_build_context,
    remove_image,
)

pytestmark = pytest.mark.container


def dependency_install(steps: list[BuildStep]) -> BuildStep:
    """The one RUN step that pip-installs the requirement list (the expensive layer)."""
    found = [
        step
        for step in steps
        if step.instruction.startswith("RUN ")
        and "pip install" in step.instruction
        and "requirements.txt" in step.instruction
    ]
    assert len(found) == 1, [step.instruction for step in steps]
    return found[0]


def test_code_only_change_reuses_the_dependency_layer(
    image: BuiltImage, image_repository: str, tmp_path: Path
) -> None:
    context = copy_build_context(tmp_path / "context")
    changed = context / "serve" / "__init__.py"
    changed.write_text(changed.read_text() + f"# rebuild probe {uuid.uuid4().hex}\n")
    tag = f"{image_repository}-rebuild"
    try:
        steps = build_steps(build_image(context, tag, tmp_path / "rebuild.log"))
    finally:
        remove_image(tag)

    install = dependency_install(steps)
    assert install.cached, "dependency layer rebuilt:\n" + "\n".join(install.lines[-20:])
    code = [step for step in steps if step.instruction.startswith("COPY serve/")]
    assert len(code) == 1 and not code[0].cached, "the changed code was not copied again"
