"""The container tests leave podman's storage as they found it: a multi-stage build's final image
and its stages go at the end, what was there before stays."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.container.podman import (
    SESSION,
    build_image,
    images_removed_afterwards,
    local_images,
    remove_image,
)

pytestmark = pytest.mark.container

TWO_STAGES = f"""
FROM python:3.11-slim AS stage
RUN echo {SESSION} > /stage
FROM python:3.11-slim
COPY --from=stage /stage /stage
RUN cat /stage > /done
"""


def test_a_multi_stage_build_leaves_podman_as_it_found_it(
    podman_ready: None, image_repository: str, tmp_path: Path
) -> None:
    before = set(local_images())
    (tmp_path / "Dockerfile").write_text(TWO_STAGES)
    tag = f"{image_repository}-cleanup"
    with images_removed_afterwards():
        build_image(tmp_path, tag, tmp_path / "build.log")
        assert len(set(local_images()) - before) >= 3  # the image and the stages' steps
        remove_image(tag)
    assert set(local_images()) == before
