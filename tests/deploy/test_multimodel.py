"""Multi-model endpoints: endpoints/catalog.toml deployed to moto over HTTP (archives under one
prefix, ``Mode=MultiModel``), upload-model adding to the live endpoint, status, delete, definition
errors, dry runs; and ``invoke --target-model`` over real HTTP to a small recording server."""

from __future__ import annotations

import io
import json
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.deploy.conftest import (
    AwsWorld,
    Result,
    make_archive,
    record_pushed_image,
    sagemaker_resources,
)
from tests.fixtures.server import REPO

FAST = ("--poll", "0.01")
PREFIX = "models/catalog/"


@dataclass
class Catalog:
    """The project's endpoints/catalog.toml, with stand-in archives at the paths it names."""

    aws: AwsWorld
    image: str
    archives: dict[str, Path]

    @property
    def prefix_url(self) -> str:
        return f"s3://{self.aws.bucket}/{PREFIX}"

    def objects(self, bucket: str | None = None) -> dict[str, bytes]:
        """Every object under the prefix, by key."""
        s3 = self.aws.client("s3")
        listed = s3.list_objects_v2(Bucket=bucket or self.aws.bucket, Prefix=PREFIX)
        return {
            item["Key"]: s3.get_object(Bucket=bucket or self.aws.bucket, Key=item["Key"])[
                "Body"
            ].read()
            for item in listed.get("Contents", [])
        }

    def versions(self) -> int:
        """How many object versions the prefix holds (the bucket is versioned): one per put."""
        listed = self.aws.client("s3").list_object_versions(Bucket=self.aws.bucket, Prefix=PREFIX)
        return len(listed.get("Versions", []))

    def model(self) -> dict[str, Any]:
        sm = self.aws.client("sagemaker")
        config = sm.describe_endpoint(EndpointName="catalog")["EndpointConfigName"]
        variant = sm.describe_endpoint_config(EndpointConfigName=config)["ProductionVariants"][0]
        model: dict[str, Any] = sm.describe_model(ModelName=variant["ModelName"])
        return model

    def config_name(self) -> str:
        endpoint = self.aws.client("sagemaker").describe_endpoint(EndpointName="catalog")
        return str(endpoint["EndpointConfigName"])


@pytest.fixture
def catalog(aws: AwsWorld) -> Catalog:
    """endpoints/catalog.toml copied as is; its build/*.tar.gz are small stand-ins here."""
    shutil.copy(REPO / "endpoints" / "catalog.toml", aws.endpoints_dir / "catalog.toml")
    archives = {
        name: make_archive(aws.build_dir / name, marker=name)
        for name in ("sentiment.tar.gz", "digits.tar.gz")
    }
    aws.client("s3").put_bucket_versioning(
        Bucket=aws.bucket, VersioningConfiguration={"Status": "Enabled"}
    )
    return Catalog(aws, record_pushed_image(aws, "byoserve"), archives)


def test_create_endpoint_uploads_every_archive_under_one_prefix(
    catalog: Catalog, cli: Callable[..., Result]
) -> None:
    result = cli("create-endpoint", "catalog", *FAST)
    assert result.code == 0, result.err
    assert "catalog: InService" in result.out and catalog.prefix_url in result.out
    container = catalog.model()["PrimaryContainer"]
    assert container["Mode"] == "MultiModel"
    assert container["ModelDataUrl"] == catalog.prefix_url
    assert container["Image"] == catalog.image
    assert container["Environment"]["SAGEMAKER_MODEL_SERVER_WORKERS"] == "2"
    assert catalog.objects() == {
        PREFIX + name: path.read_bytes() for name, path in catalog.archives.items()
    }
    scaling = catalog.aws.client("application-autoscaling")
    (target,) = scaling.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
    assert target["ResourceId"] == "endpoint/catalog/variant/AllTraffic"
    assert target["MaxCapacity"] == 2


def test_create_endpoint_again_uploads_and_creates_nothing(
    catalog: Catalog, cli: Callable[..., Result]
) -> None:
    assert cli("create-endpoint", "catalog", *FAST).code == 0
    before = sagemaker_resources(catalog.aws)
    plan = cli("create-endpoint", "catalog", "--dry-run")
    assert plan.code == 0, plan.err
    for request in ("s3 PutObject", "sagemaker Create", "sagemaker UpdateEndpoint"):
        assert f"DRY-RUN {request}" not in plan.out, plan.out
    again = cli("create-endpoint", "catalog", *FAST)
    assert again.code == 0 and "already runs this release" in again.out
    assert sagemaker_resources(catalog.aws) == before
    assert catalog.versions() == 2


def test_changed_archive_makes_a_new_release_on_the_same_prefix(
    catalog: Catalog, cli: Callable[..., Result], tmp_path: Path
) -> None:
    assert cli("create-endpoint", "catalog", *FAST).code == 0
    first = catalog.config_name()
    added = make_archive(tmp_path / "extra.tar.gz", marker="extra")
    assert cli("upload-model", "catalog", "--archive", str(added)).code == 0
    make_archive(catalog.archives["digits.tar.gz"], marker="digits v2")
    result = cli("create-endpoint", "catalog", *FAST)
    assert result.code == 0, result.err
    assert "replaced" not in result.err  # a new fleet has no cached copy to warn about
    now = sagemaker_resources(catalog.aws)
    assert now["configs"] == [catalog.config_name()] and first not in now["configs"]
    assert catalog.model()["PrimaryContainer"]["ModelDataUrl"] == catalog.prefix_url
    objects = catalog.objects()
    assert objects[PREFIX + "digits.tar.gz"] == catalog.archives["digits.tar.gz"].read_bytes()
    assert objects[PREFIX + "extra.tar.gz"] == added.read_bytes()


def test_upload_model_adds_an_archive_to_the_live_endpoint_without_updating_it(
    catalog: Catalog, cli: Callable[..., Result], tmp_path: Path
) -> None:
    assert cli("create-endpoint", "catalog", *FAST).code == 0
    before, config = sagemaker_resources(catalog.aws), catalog.config_name()
    added = make_archive(tmp_path / "sentiment-v2.tar.gz", marker="v2")
    result = cli("upload-model", "catalog", "--archive", str(added))
    assert result.code == 0, result.err
    assert f"uploaded: {catalog.prefix_url}sentiment-v2.tar.gz" in result.out
    named = cli("upload-model", "catalog", "--archive", str(added), "--name", "latest.tar.gz")
    assert f"uploaded: {catalog.prefix_url}latest.tar.gz" in named.out
    again = cli("upload-model", "catalog", "--archive", str(added))
    assert f"already there: {catalog.prefix_url}sentiment-v2.tar.gz" in again.out
    assert catalog.objects()[PREFIX + "latest.tar.gz"] == added.read_bytes()
    assert catalog.versions() == 4
    assert sagemaker_resources(catalog.aws) == before and catalog.config_name() == config
    described = catalog.aws.client("sagemaker").describe_endpoint(EndpointName="catalog")
    assert described["EndpointStatus"] == "InService"


def test_upload_model_goes_to_the_prefix_the_endpoint_serves(
    catalog: Catalog, cli: Callable[..., Result], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cli("create-endpoint", "catalog", *FAST).code == 0
    catalog.aws.client("s3").create_bucket(Bucket="another-bucket")
    monkeypatch.setenv("BYOSERVE_BUCKET", "another-bucket")
    added = make_archive(tmp_path / "extra.tar.gz")
    result = cli("upload-model", "catalog", "--archive", str(added))
    assert f"uploaded: {catalog.prefix_url}extra.tar.gz" in result.out, result.err
    assert catalog.objects("another-bucket") == {}


def test_upload_model_before_the_endpoint_uses_the_definitions_prefix(
    catalog: Catalog, cli: Callable[..., Result]
) -> None:
    result = cli("upload-model", "catalog")
    assert result.code == 0, result.err
    assert set(catalog.objects()) == {PREFIX + "sentiment.tar.gz", PREFIX + "digits.tar.gz"}
    assert sagemaker_resources(catalog.aws)["endpoints"] == []


def test_replacing_an_archive_warns_about_cached_copies(
    catalog: Catalog, cli: Callable[..., Result], tmp_path: Path
) -> None:
    assert cli("create-endpoint", "catalog", *FAST).code == 0
    other = make_archive(tmp_path / "other.tar.gz", marker="other")
    result = cli("upload-model", "catalog", "--archive", str(other), "--name", "digits.tar.gz")
    assert result.code == 0, result.err
    assert f"replaced {catalog.prefix_url}digits.tar.gz" in result.err
    assert "new name" in result.err
    assert catalog.objects()[PREFIX + "digits.tar.gz"] == other.read_bytes()


def test_status_shows_mode_prefix_and_archives(
    catalog: Catalog, cli: Callable[..., Result], tmp_path: Path
) -> None:
    assert cli("create-endpoint", "catalog", *FAST).code == 0
    assert cli("upload-model", "catalog", "--archive", str(make_archive(tmp_path / "x.tar.gz")))
    text = cli("status", "catalog")
    assert text.code == 0, text.err
    assert f"mode: MultiModel, model data {catalog.prefix_url}" in text.out
    assert "3 archive(s) under the prefix" in text.out
    for name in ("digits.tar.gz", "sentiment.tar.gz", "x.tar.gz"):
        assert f"    {name}  " in text.out
    report = json.loads(cli("status", "catalog", "--json").out)
    assert report["Mode"] == "MultiModel" and report["ModelDataUrl"] == catalog.prefix_url
    assert [item["Name"] for item in report["Targets"]] == [
        "digits.tar.gz",
        "sentiment.tar.gz",
        "x.tar.gz",
    ]


def test_status_of_a_single_model_endpoint_shows_its_mode(
    aws: AwsWorld, pushed: str, cli: Callable[..., Result]
) -> None:
    assert cli("create-endpoint", "demo", *FAST).code == 0
    text = cli("status", "demo")
    assert f"mode: SingleModel, model data s3://{aws.bucket}/models/demo/" in text.out
    assert "archive(s)" not in text.out
    assert "Targets" not in json.loads(cli("status", "demo", "--json").out)


def test_delete_endpoint_leaves_no_endpoint_config_or_model(
    catalog: Catalog, cli: Callable[..., Result]
) -> None:
    assert cli("create-endpoint", "catalog", *FAST).code == 0
    make_archive(catalog.archives["sentiment.tar.gz"], marker="v2")
    assert cli("update-endpoint", "catalog", *FAST).code == 0
    result = cli("delete-endpoint", "catalog", *FAST)
    assert result.code == 0, result.err
    assert sagemaker_resources(catalog.aws) == {"endpoints": [], "configs": [], "models": []}
    scaling = catalog.aws.client("application-autoscaling")
    assert scaling.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"] == []
    assert len(catalog.objects()) == 2  # archives are kept, as for single-model endpoints


def _state(aws: AwsWorld) -> dict[str, Any]:
    s3 = aws.client("s3")
    versions = s3.list_object_versions(Bucket=aws.bucket).get("Versions", [])
    return {**sagemaker_resources(aws), "objects": [v["VersionId"] for v in versions]}


def test_dry_runs_print_the_requests_and_send_none(
    catalog: Catalog, cli: Callable[..., Result], tmp_path: Path
) -> None:
    before = _state(catalog.aws)
    plan = cli("create-endpoint", "catalog", "--dry-run")
    assert plan.code == 0, plan.err
    puts = [line for line in plan.out.splitlines() if line.startswith("DRY-RUN s3 PutObject")]
    assert len(puts) == 2 and all(f'"Key": "{PREFIX}' in line for line in puts)
    (create,) = [line for line in plan.out.splitlines() if "sagemaker CreateModel" in line]
    assert '"Mode": "MultiModel"' in create and f'"ModelDataUrl": "{catalog.prefix_url}"' in create
    assert "DRY-RUN sagemaker CreateEndpoint " in plan.out
    added = make_archive(tmp_path / "extra.tar.gz")
    upload = cli("upload-model", "catalog", "--archive", str(added), "--dry-run")
    assert f'"Key": "{PREFIX}extra.tar.gz"' in upload.out and "DRY-RUN s3 PutObject" in upload.out
    invoke = cli(
        "invoke", "catalog", "--target-model", "digits.tar.gz", "--body", "{}", "--dry-run"
    )
    assert "DRY-RUN sagemaker-runtime InvokeEndpoint" in invoke.out
    assert '"TargetModel": "digits.tar.gz"' in invoke.out
    local = cli("local", "catalog", "--no-docker", "--port", "8080", "--dry-run")
    store = {name: str(path) for name, path in sorted(catalog.archives.items())}
    shown = json.dumps({"model_store": store, "port": 8080}, sort_keys=True)
    assert local.out == f"DRY-RUN local run {shown}\n"
    alone = cli("local", "catalog", "--archive", str(added), "--port", "8080", "--dry-run")
    assert alone.out == f'DRY-RUN local run {{"archive": "{added}", "port": 8080}}\n'
    assert _state(catalog.aws) == before


BAD_DEFINITIONS = [
    ('archives = ["a.tar.gz"]', "[model]: `archives` needs mode"),
    ('mode = "multi-model"\narchive = "a.tar.gz"', "[model]: `archive` is for single-model"),
    ('mode = "multi-model"', '[model]: mode = "multi-model" needs `archives`'),
    ('mode = "multi-model"\narchives = "a.tar.gz"', "needs `archives`, a list"),
    ('mode = "multi-model"\narchives = []', "needs `archives`, a list"),
    ('mode = "multi-model"\narchives = [3]', "[model] archives[0]: must be a path or a table"),
    (
        'mode = "multi-model"\narchives = ["a.tar.gz", {path = "b.tar.gz", nmae = "c"}]',
        "[model] archives[1]: unknown key(s) nmae",
    ),
    ('mode = "multi-model"\narchives = [{name = "c.tar.gz"}]', "archives[0]: needs `path`"),
    (
        'mode = "multi-model"\narchives = [{path = "b.tar.gz", name = "x/y.tar.gz"}]',
        "archives[0]: archive name 'x/y.tar.gz'",
    ),
    ('mode = "multi-model"\narchives = ["build/model.tar"]', "ending in .tar.gz"),
    (
        'mode = "multi-model"\narchives = ["a/x.tar.gz", "b/x.tar.gz"]',
        "[model]: two archives named x.tar.gz",
    ),
    ('mode = "multi"\narchive = "a.tar.gz"', "[model]: `mode` must be 'single-model' or"),
    ('mode = 2\narchive = "a.tar.gz"', "`mode` must be a str"),
    ('archive = "a.tar.gz"\narchve = "b"', "[model]: unknown key(s) archve"),
    ('archive = "a.tar.gz"\n[endpoint]\ninstance_typ = "x"', "[endpoint]: unknown key(s)"),
]


@pytest.mark.parametrize(("model", "expected"), BAD_DEFINITIONS)
def test_definition_errors_name_the_file_and_key(
    aws: AwsWorld, cli: Callable[..., Result], model: str, expected: str
) -> None:
    (aws.endpoints_dir / "bad.toml").write_text(f"[model]\n{model}\n")
    result = cli("create-endpoint", "bad")
    assert result.code == 1 and result.err.count("\n") == 1, result.err
    assert result.err.startswith(f"deploy: {aws.endpoints_dir / 'bad.toml'}")
    assert expected in result.err
    assert sagemaker_resources(aws)["models"] == []


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("create-endpoint", "catalog", "--archive", "x.tar.gz"), "--archive is for single-model"),
        (("upload-model", "demo", "--name", "x.tar.gz"), "--name is for multi-model"),
        (("upload-model", "catalog", "--name", "x.tar.gz"), "pass both"),
        (("upload-model", "catalog", "--archive", "nowhere.tar.gz"), "check --archive"),
        (("invoke", "catalog", "--body", "{}"), "pass --target-model, e.g. one of sentiment"),
    ],
)
def test_multi_model_flags_misused(
    catalog: Catalog, cli: Callable[..., Result], args: tuple[str, ...], expected: str
) -> None:
    result = cli(*args)
    assert result.code == 1 and result.err.startswith("deploy: ") and expected in result.err
    assert sagemaker_resources(catalog.aws)["models"] == [] and catalog.objects() == {}


def test_bad_name_for_an_added_archive(
    catalog: Catalog, cli: Callable[..., Result], tmp_path: Path
) -> None:
    added = make_archive(tmp_path / "x.tar.gz")
    result = cli("upload-model", "catalog", "--archive", str(added), "--name", "a b.tar.gz")
    assert result.code == 1 and "--name: archive name 'a b.tar.gz'" in result.err
    assert catalog.objects() == {}


@pytest.mark.parametrize("verb", [("create-endpoint", *FAST), ("local", "--no-docker")])
def test_missing_archive_uploads_and_serves_nothing(
    catalog: Catalog, cli: Callable[..., Result], verb: tuple[str, ...]
) -> None:
    catalog.archives["digits.tar.gz"].unlink()
    result = cli(verb[0], "catalog", *verb[1:])
    assert result.code == 1
    assert f"model archive {catalog.archives['digits.tar.gz']} not found" in result.err
    assert "make model" in result.err
    assert catalog.objects() == {} and sagemaker_resources(catalog.aws)["models"] == []


def test_the_example_definition_names_both_built_archives() -> None:
    from deploy.definitions import load_definition

    definition = load_definition("catalog", REPO / "endpoints")
    assert definition.multi_model and definition.archive is None
    assert [(t.path, t.name) for t in definition.targets] == [
        (REPO / "build" / "sentiment.tar.gz", "sentiment.tar.gz"),
        (REPO / "build" / "digits.tar.gz", "digits.tar.gz"),
    ]


@dataclass
class Recorder:
    """What the recording server was sent: method, path, headers, body of each request."""

    requests: list[dict[str, Any]] = field(default_factory=list)


def _recording_handler(recorder: Recorder) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            recorder.requests.append(
                {"path": self.path, "headers": dict(self.headers.items()), "body": body}
            )
            answer = json.dumps({"target": self.headers.get("X-Amzn-SageMaker-Target-Model")})
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer.encode())

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def recording_server() -> Iterator[tuple[str, Recorder]]:
    """A plain HTTP server on a free loopback port that records what boto3 sends."""
    recorder = Recorder()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _recording_handler(recorder))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", recorder
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def _png(path: Path) -> Path:
    buffer = io.BytesIO()
    Image.new("L", (8, 8), color=255).save(buffer, format="PNG")
    path.write_bytes(buffer.getvalue())
    return path


def test_invoke_target_model_sends_the_header_over_http(
    catalog: Catalog,
    cli: Callable[..., Result],
    recording_server: tuple[str, Recorder],
    tmp_path: Path,
) -> None:
    url, recorder = recording_server
    png = _png(tmp_path / "0.png")
    args = ("--endpoint-url", url, "--content-type", "image/png", "--body-file", str(png))
    result = cli("invoke", "catalog", "--target-model", "digits.tar.gz", *args)
    assert result.code == 0, result.err
    assert json.loads(result.out) == {"target": "digits.tar.gz"}
    (sent,) = recorder.requests
    assert sent["path"] == "/endpoints/catalog/invocations"
    assert sent["headers"]["X-Amzn-SageMaker-Target-Model"] == "digits.tar.gz"
    assert sent["headers"]["Content-Type"] == "image/png"
    assert "Authorization" not in sent["headers"]  # unsigned: a local server needs no keys
    assert sent["body"] == png.read_bytes()
    plain = cli("invoke", "catalog", "--endpoint-url", url, "--body", "{}")
    assert plain.code == 0 and json.loads(plain.out) == {"target": None}
    assert "X-Amzn-SageMaker-Target-Model" not in recorder.requests[1]["headers"]
