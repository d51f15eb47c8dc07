"""Every integration test runs on both HTTP engines (``BYOSERVE_HTTP_ENGINE``): the servers it
starts, its module's shared servers, and the ``torchserve``/``serve`` commands it runs inherit
the engine from the environment. A test that checks what only one engine does says so with
``@pytest.mark.engines("gunicorn", reason=...)``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

ENGINES = ("gunicorn", "granian")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "http_engine" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("engines")
        engines = marker.args if marker is not None else ENGINES
        # Module scope: a module's shared servers start once per engine, not once per test.
        metafunc.parametrize("http_engine", engines, scope="module")


@pytest.fixture(scope="module", autouse=True)
def engine(http_engine: str) -> Iterator[str]:
    """The engine this test's servers run on; module fixtures that start a server take it."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BYOSERVE_HTTP_ENGINE", http_engine)
        yield http_engine
