"""The fuzz suite runs on both HTTP engines, as the integration tests do (the same switch:
tests/integration/conftest.py)."""

from tests.integration.conftest import engine, pytest_generate_tests

__all__ = ["engine", "pytest_generate_tests"]
