"""TorchServe's own tests (tests/peers/torchserve, v0.12.0) against byoserve.

They run as TorchServe's CI runs them: from ``test/pytest`` (where ``key_file.json`` and ``logs/``
land), with a ``torchserve`` command first on PATH that is ``python -m serve``
(``bin/torchserve``), on ports 8080-8082. ``TMPDIR`` is a directory of the harness's own, so
TorchServe's ``/tmp/workspace`` model store and the server's pid file are never another run's.
The tests that do not apply here are not collected (DESELECTED, with the reason of each; docs/
torchserve.md has the table): a skip would fail ``make test``.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

PEERS = Path(__file__).resolve().parent
REPO = PEERS.parents[1]
UPSTREAM_TESTS = PEERS / "torchserve" / "test" / "pytest"
SITE = REPO / "build" / "peers" / "site"  # orjson, which test_utils imports (make test-peers)
TMP = REPO / "build" / "peers" / "tmp"

SNAPSHOTS = "config snapshots are not taken (byoserve always runs as --ncs)"
CUSTOM_METRICS = (
    "its model's handler (examples/custom_metrics) needs torchvision, and the handler metrics "
    "API's lines, QueueTime and WorkerThreadTime are not written; metrics_mode prometheus and "
    "legacy are byoserve's own /metrics"
)
SYSTEM_METRICS = (
    "the system metrics (CPUUtilization, ...) are not written, so turning them off is not "
    "tested by their absence; its model needs torchvision"
)
DESELECTED = {
    "test_startup_timeout.py::test_startup_timeout[5]": (
        "reads TorchServe's console through the pipe of `torchserve --start` for the Java "
        "frontend's WorkerInitializationException; byoserve's --start returns once the server "
        "answers, its output in logs/ts_log.log"
    ),
    "test_token_authorization.py::test_workflow": "workflows are not served",
    "test_token_authorization.py::test_workflow_fail": "workflows are not served",
    "test_token_authorization.py::test_workflow_inference": "workflows are not served",
    "test_token_authorization.py::test_workflow_inference_fail": "workflows are not served",
    "test_token_authorization.py::test_management_api_https": "needs TLS",
    "test_token_authorization.py::test_managament_api_with_incorrect_token_https": "needs TLS",
    "test_token_authorization.py::test_inference_api_with_token_https": "needs TLS",
    "test_model_control_mode.py::test_register_model_failing": (
        "the model API is on without --enable-model-api (TorchServe 0.12: off)"
    ),
    "test_model_control_mode.py::test_delete_model_failing": (
        "the model API is on without --enable-model-api (TorchServe 0.12: off)"
    ),
    "test_model_control_mode.py::test_register_model_failing_https": "needs TLS",
    "test_model_control_mode.py::test_delete_model_failing_https": "needs TLS",
    "test_metrics.py::test_logs_startup_cfg_created_snapshot_enabled": SNAPSHOTS,
    "test_metrics.py::test_metrics_startup_cfg_created_snapshot_enabled": SNAPSHOTS,
    "test_metrics.py::test_log_location_var_snapshot_enabled": SNAPSHOTS,
    "test_metrics.py::test_metrics_location_var_snapshot_enabled": SNAPSHOTS,
    "test_metrics.py::test_log_location_and_metric_location_vars_snapshot_enabled": SNAPSHOTS,
    "test_metrics.py::test_metrics_location_var_snapshot_enabled_rdonly_dir": SNAPSHOTS,
    "test_metrics.py::test_log_location_var_snapshot_disabled_custom_path_read_only": (
        "a log directory that cannot be written stops the start (TorchServe starts without logs)"
    ),
    "test_metrics.py::test_metrics_log_mode": CUSTOM_METRICS,
    "test_metrics.py::test_metrics_prometheus_mode": CUSTOM_METRICS,
    "test_metrics.py::test_auto_detect_backend_metrics_log_mode": CUSTOM_METRICS,
    "test_metrics.py::test_auto_detect_backend_metrics_prometheus_mode": CUSTOM_METRICS,
    "test_metrics.py::test_metrics_legacy_mode": CUSTOM_METRICS,
    "test_metrics.py::test_collect_system_metrics_when_not_disabled": SYSTEM_METRICS,
    "test_metrics.py::test_disable_system_metrics_using_config_properties": SYSTEM_METRICS,
    "test_metrics.py::test_disable_system_metrics_using_environment_variable": SYSTEM_METRICS,
}


def prepare() -> None:
    """The environment TorchServe's tests expect. Called as this file is imported: pytest imports
    the conftest files under it (``test/pytest/conftest.py`` imports ``test_utils``, which reads
    the temp directory and imports orjson) before any ``pytest_configure`` hook runs."""
    TMP.mkdir(parents=True, exist_ok=True)
    # A fresh /tmp/workspace/model_store, as TorchServe's ts_scripts/regression_utils.py makes it
    # before it runs these tests (test_metrics.py writes its config files beside it).
    shutil.rmtree(TMP / "workspace", ignore_errors=True)
    (TMP / "workspace" / "model_store").mkdir(parents=True)
    os.environ["TMPDIR"] = str(TMP)
    tempfile.tempdir = None  # gettempdir() reads TMPDIR again
    # The shim first, then this venv's scripts (test_utils runs torch-model-archiver by name).
    scripts = Path(sys.executable).parent
    os.environ["PATH"] = os.pathsep.join([str(PEERS / "bin"), str(scripts), os.environ["PATH"]])
    os.environ["BYOSERVE_PEERS_PYTHON"] = sys.executable
    # The server is this checkout's, whatever the venv installed.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    # One worker process, as TorchServe gives a model registered with initial_workers=1 (what
    # most of these tests ask for): half the processes to start and stop on a 2-core machine.
    os.environ.setdefault("SAGEMAKER_MODEL_SERVER_WORKERS", "1")
    # TorchServe 0.12's default: token authorization on everywhere (byoserve's is on beyond
    # loopback only). The tests that do not want it say so (--disable-token-auth, or
    # disable_token_authorization=true in their config), and both rank above this variable.
    os.environ["BYOSERVE_TOKEN_AUTH"] = "true"
    if SITE.is_dir():
        sys.path.append(str(SITE))


prepare()


def pytest_sessionstart(session: pytest.Session) -> None:
    """Into ``test/pytest``, once pytest has resolved the paths it was given (--junitxml, ...)."""
    os.chdir(UPSTREAM_TESTS)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Leave out the tests that do not apply (DESELECTED)."""
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        key = f"{item.path.name}::{item.name}"
        (dropped if key in DESELECTED else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
