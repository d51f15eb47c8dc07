"""Token authorization as TorchServe 0.12 has it (serve/http/auth.py): the key file's layout and
mode, keys shared through it by separate readers (as by separate workers), the check in front of
a port's WSGI app with TorchServe's refusal, the token API, and the settings that turn it on and
off with ``serve --start``."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from werkzeug.test import Client

from serve.config import ServingConfig
from serve.dialect.cli import build_torchserve_parser, torchserve_config
from serve.http.auth import (
    REFUSED,
    TOKEN_API_REFUSED,
    KeyFile,
    Keys,
    TokenGuard,
    bearer,
    issue_key_file,
    protect,
)
from serve.observe.observer import Observer

HOUR = timedelta(hours=1)


def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    """The port's own app: answers what it was asked."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [environ["PATH_INFO"].encode()]


class Requests(Observer):
    def __init__(self) -> None:
        self.done: list[tuple[str, int, str | None]] = []

    def request_done(
        self, route: str, status: int, seconds: float, error: str | None, model: str = ""
    ) -> None:
        self.done.append((route, status, error))


def guarded(path: Path, kind: str, observer: Observer | None = None) -> Client:
    keys = KeyFile(path, HOUR)
    return Client(TokenGuard(app, keys, kind, observer or Observer()))  # type: ignore[arg-type]


def read(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(path.read_text())
    return document


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "key_file.json"
    KeyFile(path, HOUR).write_new()
    return path


def test_the_key_file_is_torchserves_layout_readable_by_its_owner_only(key_file: Path) -> None:
    text = key_file.read_text()
    document = json.loads(text)
    assert list(document) == ["management", "inference", "API"]
    assert list(document["management"]) == ["key", "expiration time"]
    assert list(document["API"]) == ["key"]
    keys = [document[kind]["key"] for kind in ("management", "inference", "API")]
    assert len(set(keys)) == 3
    assert all(len(key) == 8 and key.replace("-", "").replace("_", "").isalnum() for key in keys)
    expires = document["inference"]["expiration time"]
    assert expires.endswith("Z")  # Java's Instant
    left = datetime.fromisoformat(expires) - datetime.now(UTC)
    assert timedelta(minutes=59) < left <= HOUR
    assert text.startswith('{\n  "management": {\n    "key": ')  # Gson's pretty print
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_bearer_takes_torchserves_header_form_only() -> None:
    assert bearer("Bearer abc") == "abc"
    assert bearer("Bearer \t abc") == "abc"
    assert bearer("bearer abc") == ""
    assert bearer("Bearer abc def") == ""
    assert bearer("abc") == ""
    assert bearer(None) == ""


def test_requests_need_their_ports_key_and_are_refused_as_torchserve_does(
    key_file: Path,
) -> None:
    document = read(key_file)
    requests = Requests()
    inference = guarded(key_file, "inference", requests)
    management = guarded(key_file, "management")
    ok = inference.post("/predictions/m", headers=auth(document["inference"]["key"]))
    assert (ok.status_code, ok.text) == (200, "/predictions/m")
    assert inference.get("/ping", headers=auth(document["inference"]["key"])).status_code == 200
    assert management.get("/models", headers=auth(document["management"]["key"])).text == "/models"
    for client, headers in [
        (inference, {}),
        (inference, auth("abcd1234")),
        (inference, auth(document["management"]["key"])),  # another port's key
        (inference, auth(document["API"]["key"])),
        (inference, {"Authorization": document["inference"]["key"]}),  # no Bearer
        (inference, auth("ключ")),
        (management, auth(document["inference"]["key"])),
    ]:
        refused = client.get("/ping", headers=headers)
        assert refused.status_code == 400
        assert refused.json == {"code": 400, "type": "InvalidKeyException", "message": REFUSED}
        assert refused.headers["Content-Type"] == "application/json"
        assert refused.headers["X-Request-Id"]
    assert requests.done[-1] == ("unauthorized", 400, "invalid_key")


def test_the_api_description_needs_no_key(key_file: Path) -> None:
    for client in (guarded(key_file, "inference"), guarded(key_file, "management")):
        assert client.get("/api-description").status_code == 200
        assert client.options("/").status_code == 200
        assert client.get("/api-description/x").status_code == 400


def test_an_expired_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "key_file.json"
    keys = Keys.issue(timedelta(seconds=-1))
    path.write_text(keys.dumps())
    assert guarded(path, "inference").get("/ping", headers=auth(keys.inference)).status_code == 400
    assert keys.accepts("api", keys.api)  # the API key does not expire


def test_the_token_api_replaces_one_key_for_every_reader(key_file: Path) -> None:
    before = read(key_file)
    management = guarded(key_file, "management")
    other_worker = guarded(key_file, "inference")
    old = auth(before["inference"]["key"])
    assert other_worker.get("/ping", headers=old).status_code == 200

    renewed = management.get("/token?type=inference", headers=auth(before["API"]["key"]))
    assert (renewed.status_code, renewed.data) == (200, b"\n")
    after = read(key_file)
    assert after["inference"]["key"] != before["inference"]["key"]
    assert after["management"] == before["management"] and after["API"] == before["API"]
    assert other_worker.get("/ping", headers=old).status_code == 400
    new = auth(after["inference"]["key"])
    assert other_worker.get("/ping", headers=new).status_code == 200

    # at once again, within the same clock tick: still seen
    again = management.get("/token?type=management", headers=auth(before["API"]["key"]))
    assert again.status_code == 200
    assert management.get("/models", headers=auth(before["management"]["key"])).status_code == 400
    latest = read(key_file)["management"]["key"]
    assert management.get("/models", headers=auth(latest)).status_code == 200


@pytest.mark.parametrize(
    "query", ["/token?type=inference", "/token?type=Inference", "/token?type=api", "/token"]
)
def test_the_token_api_refuses_a_wrong_key_or_type(key_file: Path, query: str) -> None:
    before = key_file.read_text()
    management = guarded(key_file, "management")
    api = read(key_file)["API"]["key"]
    headers = (
        auth(read(key_file)["management"]["key"]) if query.endswith("=inference") else auth(api)
    )
    refused = management.post(query, headers=headers)
    assert refused.status_code == 400
    assert refused.json == {
        "code": 400,
        "type": "InvalidKeyException",
        "message": TOKEN_API_REFUSED,
    }
    assert key_file.read_text() == before


def test_the_inference_port_has_no_token_api(key_file: Path) -> None:
    api = read(key_file)["API"]["key"]
    assert (
        guarded(key_file, "inference").get("/token?type=inference", headers=auth(api)).status_code
        == 400
    )


def test_a_reader_keeps_the_last_keys_when_the_file_goes(key_file: Path) -> None:
    keys = KeyFile(key_file, HOUR)
    first = keys.current()
    key_file.unlink()
    assert keys.current() == first
    assert KeyFile(key_file, HOUR).current() is None  # a worker that never read it refuses all


def test_protect_adds_nothing_when_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    off = ServingConfig(token_auth=False)
    assert protect(app, off, "inference", Observer()) is app
    assert issue_key_file(off) is None and not (tmp_path / "key_file.json").exists()
    on = ServingConfig(token_auth=True, token_expiration_min=0.25)
    assert issue_key_file(on) == tmp_path / "key_file.json"
    left = datetime.fromisoformat(read(tmp_path / "key_file.json")["management"]["expiration time"])
    assert left - datetime.now(UTC) <= timedelta(seconds=15)
    assert isinstance(protect(app, on, "inference", Observer()), TokenGuard)


# serve --start: on where a port is reachable from elsewhere, and what turns it on and off
# (TorchServe's order: TS_ variables with enable_envvars_config, then the command line, then
# config.properties)
OUTSIDE = "management_address=http://0.0.0.0:8081\n"


def start_config(
    tmp_path: Path,
    args: list[str],
    properties: str | None = None,
    environ: dict[str, str] | None = None,
) -> ServingConfig:
    if properties is not None:
        (tmp_path / "ts.properties").write_text(properties)
        args = [*args, "--ts-config", str(tmp_path / "ts.properties")]
    parsed = build_torchserve_parser().parse_args(
        ["--start", "--model-store", str(tmp_path), *args]
    )
    config, _ = torchserve_config(parsed, environ or {})
    return config


def test_start_turns_it_on_beyond_loopback_and_serve_does_not(tmp_path: Path) -> None:
    assert start_config(tmp_path, [], OUTSIDE).token_auth is True
    inference_outside = start_config(tmp_path, [], "inference_address=http://10.1.2.3:8080\n")
    assert inference_outside.token_auth is True
    config = start_config(tmp_path, [])  # TorchServe's defaults: every port on 127.0.0.1
    assert config.token_auth is False and config.token_expiration_min == 60
    # a name counts by the addresses it resolves to
    for loopback in ("http://localhost:8081", "http://127.0.0.2:8081", "http://[::1]:8081"):
        assert start_config(tmp_path, [], f"management_address={loopback}\n").token_auth is False
    # the metrics port has no keys in TorchServe either: it does not count
    assert start_config(tmp_path, [], "metrics_address=http://0.0.0.0:8082\n").token_auth is False
    assert ServingConfig.from_env({}).token_auth is False  # the SageMaker path
    (tmp_path / "mms.properties").write_text(OUTSIDE)
    mms = start_config(tmp_path, ["--mms-config", str(tmp_path / "mms.properties")])
    assert mms.token_auth is False  # MMS has none


@pytest.mark.parametrize(
    ("args", "properties", "environ", "on"),
    [
        (["--disable-token-auth"], OUTSIDE, {}, False),
        (["--dt"], OUTSIDE, {}, False),
        ([], OUTSIDE + "disable_token_authorization=true\n", {}, False),
        ([], "disable_token_authorization=false\n", {}, True),  # asked for on loopback
        # TorchServe's test_priority: the command line over the file
        (["--disable-token-auth"], "disable_token_authorization=false\n", {}, False),
        # test_priority_env: the variable over the file
        (
            [],
            "enable_envvars_config=true\ndisable_token_authorization=false\n",
            {"TS_DISABLE_TOKEN_AUTHORIZATION": "true"},
            False,
        ),
        # test_priority_env_cmd: the variable over the command line
        (
            ["--disable-token-auth"],
            "enable_envvars_config=true\n",
            {"TS_DISABLE_TOKEN_AUTHORIZATION": "false"},
            True,
        ),
        # without enable_envvars_config the variable is not read
        ([], OUTSIDE, {"TS_DISABLE_TOKEN_AUTHORIZATION": "true"}, True),
        ([], "", {"TS_DISABLE_TOKEN_AUTHORIZATION": "false"}, False),
        ([], OUTSIDE, {"BYOSERVE_TOKEN_AUTH": "false"}, False),
        ([], None, {"BYOSERVE_TOKEN_AUTH": "true"}, True),
    ],
)
def test_what_turns_it_off(
    tmp_path: Path, args: list[str], properties: str | None, environ: dict[str, str], on: bool
) -> None:
    assert start_config(tmp_path, args, properties, environ).token_auth is on


def test_token_expiration_min_is_read_and_checked(tmp_path: Path) -> None:
    config = start_config(tmp_path, [], "token_expiration_min=0.25\n")
    assert config.token_expiration_min == 0.25
    with pytest.raises(ValueError, match="token_expiration_min='soon'"):
        start_config(tmp_path, [], "token_expiration_min=soon\n")
    with pytest.raises(ValueError, match="disable_token_authorization='yes'"):
        start_config(tmp_path, [], "disable_token_authorization=yes\n")


def test_the_key_file_is_never_written_through_a_link(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("precious")
    (tmp_path / "key_file.json").symlink_to(target)
    with pytest.raises(OSError):
        KeyFile(tmp_path / "key_file.json", HOUR).write_new()
    assert target.read_text() == "precious"
