"""TorchServe's management API postman collection (test/postman, v0.12.0), run by newman against
a byoserve started as TorchServe's ``ts_scripts/api_utils.py`` starts TorchServe for it: a
``config.properties`` of ``disable_token_authorization=true`` and ``enable_model_api=true``, a
``model_store`` of the archives marsgen makes (here the stand-ins, tests/peers/standins.py), and
``torchserve --start --model-store=model_store --ncs --disable-token-auth
--ts-config=config.properties --enable-model-api``.

Newman runs every iteration of the data file but the ones in NOT_APPLICABLE: each differs from
TorchServe by one of byoserve's documented choices (docs/torchserve.md, "Management API answers"),
with the iterations whose state depends on it.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.peers import standins

POSTMAN = standins.UPSTREAM / "test" / "postman"
NEWMAN = standins.REPO / "build" / "newman" / "node_modules" / ".bin" / "newman"

REMOTE = "an http(s) url is refused (403) unless allowed_urls names it"
LOADS_AT_ONCE = "a registration loads the model at once: an unknown handler is 500 there"
# The data file's iterations (0-based), by the test name they carry, and why each is left out.
NOT_APPLICABLE = {
    3: ("Model Re-Registration Densenet161", REMOTE),
    7: ("Register Mnist Model with Invalid Handler", LOADS_AT_ONCE),
    8: ("UnRegister Model mnist", "follows 7: nothing was registered"),
    9: ("Register Mnist Model with Invalid Handler", LOADS_AT_ONCE),
    10: (
        "Scale Invalid Mnist Handler Model with Min Workers - Synchronous",
        "follows 9: nothing was registered, so 404 where TorchServe fails its workers (500)",
    ),
    11: ("UnRegister Model mnist", "follows 9"),
    28: ("Register Model with Additional Params", LOADS_AT_ONCE),
    29: ("UnRegister Model", "follows 28"),
    30: (
        "Register Model with Additional Params and startup_timeout as 0",
        "startup_timeout is taken and not kept: startup_timeout=0 with workers registers",
    ),
    57: ("Register Model - Invalid URL", REMOTE),
    68: (
        "Scale worker by calling Update Worker API with negative min worker Count",
        "min_worker=-1 is 400 (TorchServe: 500 after trying to start workers)",
    ),
}


def applicable(data: list[dict[str, object]]) -> list[dict[str, object]]:
    """The data file's iterations less NOT_APPLICABLE (checked by name, so that a changed data
    file fails here rather than leaving out the wrong ones)."""
    for index, (name, _) in NOT_APPLICABLE.items():
        assert data[index]["test"] == name, (index, data[index])
    return [item for index, item in enumerate(data) if index not in NOT_APPLICABLE]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Path]:
    """byoserve as api_utils starts TorchServe, in ``tmp_path``."""
    store = tmp_path / "model_store"
    store.mkdir()
    standins.gen_mar(str(store))
    (tmp_path / "config.properties").write_text(
        "disable_token_authorization=true\nenable_model_api=true"
    )
    subprocess.run(["torchserve", "--stop"], cwd=tmp_path, check=True)
    start = ["torchserve", "--start", "--model-store=model_store", "--ncs", "--disable-token-auth"]
    start += ["--ts-config=config.properties", "--enable-model-api"]
    subprocess.run(start, cwd=tmp_path, check=True)
    try:
        yield tmp_path
    finally:
        subprocess.run(["torchserve", "--stop", "--foreground"], cwd=tmp_path, check=True)


def test_management_collection(server: Path) -> None:
    assert NEWMAN.exists(), f"{NEWMAN} is missing: make test-peers installs it"
    data = json.loads((POSTMAN / "management_data.json").read_text())
    data_file = server / "management_data.json"
    data_file.write_text(json.dumps(applicable(data)))
    command = [str(NEWMAN), "run", "-e", str(POSTMAN / "environment.json")]
    command += [str(POSTMAN / "management_api_test_collection.json"), "-d", str(data_file)]
    command += ["-r", "cli", "--reporter-cli-no-banner", "--color", "off"]
    run = subprocess.run(command, cwd=server, capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stdout[-8000:] + run.stderr[-2000:]
    ran = len(data) - len(NOT_APPLICABLE)
    assert f"Iteration {ran}/{ran}" in run.stdout, run.stdout[-8000:]
