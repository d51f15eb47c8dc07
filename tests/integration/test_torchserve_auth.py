"""Token authorization as TorchServe 0.12 has it, for real: ``serve --start`` with two workers
and its management port beyond loopback writes ``key_file.json`` in its working directory, every
port's request needs that port's key (TorchServe's 400 ``InvalidKeyException`` otherwise), the
token API replaces a key for every worker, ``--disable-token-auth``,
``disable_token_authorization=true`` and ``TS_DISABLE_TOKEN_AUTHORIZATION=true`` turn it off
there, ``disable_token_authorization=false`` turns it on for a server on loopback (where it is
off unless asked for), and the SageMaker path (``serve`` without ``--start``) asks for no key.
The checks of TorchServe's test/pytest/test_token_authorization.py, on byoserve's command line."""

from __future__ import annotations

import json
import stat
from typing import Any

import pytest
import requests

from serve.http.auth import REFUSED
from tests.fixtures.server import start_server
from tests.integration.test_metrics_http import wait_all_ready
from tests.integration.test_torchserve_cli import ECHO, TorchServeCli, archive
from tests.integration.test_torchserve_cli import cli as cli  # a fixture

pytestmark = pytest.mark.slow

ASKS = 8  # requests per check: with two workers, both answer some


def keys(cli: TorchServeCli) -> dict[str, str]:
    document: dict[str, Any] = json.loads((cli.work / "key_file.json").read_text())
    return {kind: document[kind]["key"] for kind in ("inference", "management", "API")}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def statuses(url: str, headers: dict[str, str], method: str = "GET") -> set[int]:
    return {  # a connection each, so that both workers answer some
        requests.request(method, url, headers=headers, json=[1], timeout=30).status_code
        for _ in range(ASKS)
    }


ASKED = "disable_token_authorization=false\n"  # on, though every port is on loopback


def start(cli: TorchServeCli, *args: str, properties: str = ASKED, host: str = "127.0.0.1") -> None:
    archive(cli.store, "echo", ECHO, cli.work)
    config = cli.properties(properties, management_host=host)
    flags = ["--start", "--model-store", str(cli.store), "--models", "echo.mar", "--workers", "2"]
    started = cli.run(*flags, "--ts-config", config, *args)
    assert started.returncode == 0, started.stderr
    # granian's workers take requests while they load: wait for both (the metrics port's
    # /metrics needs no key)
    wait_all_ready(f"http://127.0.0.1:{cli.ports['metrics']}", 2)


def test_every_request_needs_its_ports_key_and_the_token_api_replaces_one(
    cli: TorchServeCli,
) -> None:
    # the management port reachable from elsewhere: on, with nothing said
    start(cli, properties="", host="0.0.0.0")
    # (start returns once /ping answers 200: with the inference key of the file it wrote)
    key_file = cli.work / "key_file.json"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    first = keys(cli)
    management = f"http://127.0.0.1:{cli.ports['management']}"
    predict = f"{cli.url}/predictions/echo"

    for headers in ({}, bearer("abcd1234"), bearer(first["management"])):
        refused = requests.get(f"{cli.url}/ping", headers=headers, timeout=10)
        assert refused.status_code == 400
        assert refused.json() == {"code": 400, "type": "InvalidKeyException", "message": REFUSED}
        assert statuses(predict, headers, "POST") == {400}
        assert statuses(f"{cli.url}/invocations", headers, "POST") == {400}
    assert statuses(predict, bearer(first["inference"]), "POST") == {200}
    assert statuses(f"{management}/models/echo", {}) == {400}
    assert statuses(f"{management}/models/echo", bearer(first["inference"])) == {400}
    assert statuses(f"{management}/models/echo", bearer(first["management"])) == {200}
    assert requests.get(f"{cli.url}/api-description", timeout=10).status_code == 200
    metrics = f"http://127.0.0.1:{cli.ports['metrics']}/metrics"
    assert requests.get(metrics, timeout=10).status_code == 200  # as TorchServe's metrics port

    wrong = requests.get(f"{management}/token?type=inference", headers=bearer(first["management"]))
    assert wrong.status_code == 400 and wrong.json()["type"] == "InvalidKeyException"
    renewed = requests.get(
        f"{management}/token", params={"type": "inference"}, headers=bearer(first["API"])
    )
    assert renewed.status_code == 200
    second = keys(cli)
    assert second["inference"] != first["inference"]
    assert second["management"] == first["management"]
    assert statuses(predict, bearer(first["inference"]), "POST") == {400}
    assert statuses(predict, bearer(second["inference"]), "POST") == {200}

    renewed = requests.get(
        f"{management}/token", params={"type": "management"}, headers=bearer(first["API"])
    )
    assert renewed.status_code == 200
    third = keys(cli)
    assert statuses(f"{management}/models", bearer(first["management"])) == {400}
    assert statuses(f"{management}/models", bearer(third["management"])) == {200}

    assert cli.run("--stop").returncode == 0
    assert not key_file.exists()  # as TorchServe's documentation says


@pytest.mark.parametrize(
    ("args", "properties", "env"),
    [
        (["--disable-token-auth"], "", {}),
        ([], "disable_token_authorization=true\n", {}),
        ([], "enable_envvars_config=true\n", {"TS_DISABLE_TOKEN_AUTHORIZATION": "true"}),
    ],
    ids=["flag", "config", "env"],
)
def test_turned_off_no_key_is_needed_and_none_is_written(
    cli: TorchServeCli,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    properties: str,
    env: dict[str, str],
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    archive(cli.store, "echo", ECHO, cli.work)
    # beyond loopback, where it would be on
    config = cli.properties(properties, management_host="0.0.0.0")
    flags = ["--start", "--model-store", str(cli.store), "--models", "echo.mar"]
    started = cli.run(*flags, "--ts-config", config, *args)
    assert started.returncode == 0, started.stderr
    assert not (cli.work / "key_file.json").exists()
    assert requests.get(f"{cli.url}/ping", timeout=10).status_code == 200
    assert requests.post(f"{cli.url}/predictions/echo", json=[1], timeout=30).status_code == 200
    management = f"http://127.0.0.1:{cli.ports['management']}"
    assert requests.get(f"{management}/models", timeout=10).status_code == 200
    assert requests.get(f"{management}/token?type=inference", timeout=10).status_code == 404
    assert cli.run("--stop").returncode == 0


def test_the_sagemaker_path_needs_no_key(cli: TorchServeCli) -> None:
    archive(cli.store, "echo", ECHO, cli.work)
    args = ["--model-store", str(cli.store), "--models", "echo.mar"]
    server = start_server(None, cli.work / "logs", args=args, cwd=cli.work)
    try:
        assert requests.get(f"{server.url}/ping", timeout=10).status_code == 200
        answer = requests.post(f"{server.url}/invocations", json=[1], timeout=30)
        assert answer.status_code == 200, answer.text
        assert not (cli.work / "key_file.json").exists()
    finally:
        server.stop()


def test_start_waits_for_its_own_key_not_a_stale_files(cli: TorchServeCli) -> None:
    """A key file a killed server left behind is overwritten, and --start still sees /ping."""
    (cli.work / "key_file.json").write_text('{"inference": {"key": "stale"}}')
    start(cli)
    fresh = keys(cli)["inference"]
    assert requests.get(f"{cli.url}/ping", headers=bearer(fresh), timeout=10).status_code == 200
    assert cli.run("--stop").returncode == 0
