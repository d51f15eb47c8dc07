"""Asynchronous inference here: ``deploy local`` on an ``[async]`` definition answers boto3's
``invoke_endpoint_async`` (input from S3, answer or failure to S3, moto's S3 over HTTP), and
``deploy invoke --async`` uploads, invokes and (``--wait``) fetches the outcome."""

from __future__ import annotations

import io
import json
import socket
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
from botocore.exceptions import ClientError

from deploy.asyncinvoke import AsyncFailedError, AsyncReceipt, await_outcome
from tests.deploy.conftest import AwsWorld, Result
from tests.deploy.test_local import LocalServer

ASYNC_DEFINITION = """\
[model]
archive = "{archive}"

[image]
repository = "byoserve-test"

[endpoint]
instance_type = "ml.m5.large"

[environment]
SAGEMAKER_MODEL_SERVER_WORKERS = "1"

[async]
invocation_timeout = 120
max_concurrent_invocations_per_instance = 2
"""
WAIT = 120.0  # seconds: a bound on waits for outcomes that come at once when all is well


# The demo handler, and one that takes as long as it is told to: the invocation timeout's subject.
SLOW_INFERENCE_PY = """\
import io
import json
import socket
import tarfile
import time


def model_fn(model_dir):
    return {"label": "POSITIVE"}


def transform_fn(model, body, content_type, accept):
    text = json.loads(body)
    if isinstance(text, dict) and "take" in text:
        time.sleep(text["take"])
    return json.dumps({"label": model["label"], "input": text})
"""


def _archive(path: Path) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        data = SLOW_INFERENCE_PY.encode()
        info = tarfile.TarInfo("code/inference.py")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def async_world(aws: AwsWorld) -> AwsWorld:
    """moto, and ``asyncdemo``: an asynchronous endpoint whose handler echoes its JSON input."""
    text = ASYNC_DEFINITION.format(archive=_archive(aws.archive.with_name("async.tar.gz")))
    (aws.endpoints_dir / "asyncdemo.toml").write_text(text)
    return aws


@pytest.fixture
def front(async_world: AwsWorld) -> Iterator[LocalServer]:
    """``deploy local asyncdemo --no-docker``: the front's URL once it printed it."""
    server = LocalServer("asyncdemo", "--no-docker")
    yield server
    server.stop()


def _runtime(url: str) -> Any:
    return boto3.client(
        "sagemaker-runtime",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
    )


def _outcome(aws: AwsWorld, response: dict[str, Any]) -> bytes:
    receipt = AsyncReceipt(
        response["InferenceId"], response["OutputLocation"], response.get("FailureLocation")
    )
    return await_outcome(aws.client("s3"), receipt, WAIT, 0.05)


def _keys(aws: AwsWorld, prefix: str) -> list[str]:
    listed = aws.client("s3").list_objects_v2(Bucket=aws.bucket, Prefix=prefix)
    return [item["Key"] for item in listed.get("Contents", [])]


@pytest.mark.slow
def test_local_front_answers_invoke_endpoint_async(
    async_world: AwsWorld, front: LocalServer, cli: Callable[..., Result]
) -> None:
    aws, server = async_world, front
    s3 = aws.client("s3")
    s3.put_object(Bucket=aws.bucket, Key="inputs/one.json", Body=b'{"text": "great"}')
    runtime = _runtime(server.url)
    response = runtime.invoke_endpoint_async(
        EndpointName="asyncdemo",
        InputLocation=f"s3://{aws.bucket}/inputs/one.json",
        ContentType="application/json",
        InferenceId="first",
    )
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 202
    assert response["InferenceId"] == "first"
    base = f"s3://{aws.bucket}/async/asyncdemo"
    assert response["OutputLocation"] == f"{base}/output/first.out"
    assert response["FailureLocation"] == f"{base}/failures/first-error.out"
    answer = json.loads(_outcome(aws, response))
    assert answer == {"label": "POSITIVE", "input": {"text": "great"}}

    # the handler fails on this input: the error goes to the failure path, no answer is written
    s3.put_object(Bucket=aws.bucket, Key="inputs/bad.json", Body=b"not json")
    failed = runtime.invoke_endpoint_async(
        EndpointName="asyncdemo",
        InputLocation=f"s3://{aws.bucket}/inputs/bad.json",
        ContentType="application/json",
    )
    with pytest.raises(AsyncFailedError, match=r"failed: .*JSONDecodeError"):
        _outcome(aws, failed)
    inference = failed["InferenceId"]
    assert _keys(aws, f"async/asyncdemo/failures/{inference}") == [
        f"async/asyncdemo/failures/{inference}-error.out"
    ]
    assert _keys(aws, f"async/asyncdemo/output/{inference}") == []

    # an input that is not there fails too, and says which
    missing = runtime.invoke_endpoint_async(
        EndpointName="asyncdemo", InputLocation=f"s3://{aws.bucket}/inputs/none.json"
    )
    with pytest.raises(AsyncFailedError, match=r"inputs/none\.json could not be read"):
        _outcome(aws, missing)

    # an inline body (botocore's Body, up to 128,000 bytes) needs no S3 input
    inline = runtime.invoke_endpoint_async(
        EndpointName="asyncdemo", Body=b'{"text": "inline"}', ContentType="application/json"
    )
    assert json.loads(_outcome(aws, inline))["input"] == {"text": "inline"}

    # what SageMaker refuses is refused as it refuses it
    with pytest.raises(ClientError) as refused:
        runtime.invoke_endpoint_async(EndpointName="other", InputLocation="s3://b/k")
    assert refused.value.response["Error"]["Code"] == "ValidationError"
    assert "Endpoint other not found" in refused.value.response["Error"]["Message"]
    with pytest.raises(ClientError, match="InvokeEndpointAsync"):
        runtime.invoke_endpoint(EndpointName="asyncdemo", Body=b"{}")

    # the container's own routes are passed through
    assert requests.get(f"{server.url}/ping", timeout=30).status_code == 200

    # the CLI end to end: upload, invoke, wait, print
    result = cli("invoke", "asyncdemo", "--async", "--endpoint-url", server.url,
                 "--body", '{"text": "ok"}', "--wait", "--poll", "0.05")  # fmt: skip
    assert result.code == 0, result.err
    assert json.loads(result.out) == {"label": "POSITIVE", "input": {"text": "ok"}}
    assert f"output: {base}/output/" in result.err
    assert len(_keys(aws, "async/asyncdemo/input/")) == 1  # the uploaded body
    bad = cli("invoke", "asyncdemo", "--async", "--endpoint-url", server.url,
              "--body", "not json", "--wait", "--poll", "0.05")  # fmt: skip
    assert bad.code != 0 and bad.out == ""
    located, failure = bad.err.splitlines()[:3], bad.err.splitlines()[3:]
    assert located[1].startswith("output: ") and located[2].startswith("failure: ")
    assert len(failure) == 1 and failure[0].startswith("deploy: inference "), bad.err
    assert "JSONDecodeError" in failure[0]
    stored = f"s3://{aws.bucket}/inputs/one.json"
    given = cli("invoke", "asyncdemo", "--async", "--endpoint-url", server.url,
                "--input", stored, "--inference-id", "mine")  # fmt: skip
    assert given.code == 0, given.err
    assert given.out.splitlines() == [
        "inference mine",
        f"output: {base}/output/mine.out",
        f"failure: {base}/failures/mine-error.out",
    ]

    # InvocationTimeoutSeconds bounds the wait for the model's answer
    slow = runtime.invoke_endpoint_async(
        EndpointName="asyncdemo",
        Body=b'{"take": 4}',
        ContentType="application/json",
        InvocationTimeoutSeconds=1,
    )
    with pytest.raises(AsyncFailedError, match=r"did not answer within .* \(1 s\)"):
        _outcome(aws, slow)
    assert server.stop() == 0


def test_invoke_async_dry_run_shows_the_upload_and_the_request(
    async_world: AwsWorld, cli: Callable[..., Result]
) -> None:
    result = cli("invoke", "asyncdemo", "--async", "--body", '{"a": 1}', "--dry-run")
    assert result.code == 0, result.err
    upload, request = result.out.splitlines()
    assert upload.startswith("DRY-RUN s3 PutObject ")
    assert json.loads(upload.split(" ", 3)[3])["Key"].startswith("async/asyncdemo/input/")
    assert request.startswith("DRY-RUN sagemaker-runtime InvokeEndpointAsync ")
    params = json.loads(request.split(" ", 3)[3])
    assert params["InputLocation"].startswith(f"s3://{async_world.bucket}/async/asyncdemo/input/")
    assert params["InvocationTimeoutSeconds"] == 120  # the definition's
    assert _keys(async_world, "async/") == []  # nothing was uploaded
    given = cli("invoke", "asyncdemo", "--async", "--input", "s3://b/in.csv", "--content-type",
                "text/csv", "--invocation-timeout", "30", "--dry-run")  # fmt: skip
    assert given.code == 0, given.err
    (line,) = given.out.splitlines()
    assert json.loads(line.split(" ", 3)[3]) == {
        "EndpointName": "asyncdemo",
        "InputLocation": "s3://b/in.csv",
        "ContentType": "text/csv",
        "InvocationTimeoutSeconds": 30,
    }
    local = cli("local", "asyncdemo", "--no-docker", "--port", "8999", "--dry-run")
    assert local.code == 0, local.err
    shown = json.loads(local.out.split(" ", 3)[3])
    assert shown["async"]["output"] == f"s3://{async_world.bucket}/async/asyncdemo/output"
    assert shown["async"]["concurrency"] == 2


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--async", "--body", "{}"), "--async needs its input in S3: pass --input"),
        (("--async", "--input", "/tmp/x"), "--input must be an s3://BUCKET/KEY location"),
        (("--async", "--input", "s3://b/k", "--body", "{}"), "from --input or from --body"),
        (("--async", "--input", "s3://b/k", "--invocation-timeout", "4000"), "1-3600 seconds"),
        (("--async", "--input", "s3://b/k", "--stream"), "neither --stream nor --target-model"),
        (("--wait", "--body", "{}"), "go with --async"),
    ],
)
def test_invoke_async_refusals_are_one_line(
    async_world: AwsWorld,
    cli: Callable[..., Result],
    monkeypatch: pytest.MonkeyPatch,
    args: tuple[str, ...],
    says: str,
) -> None:
    monkeypatch.delenv("BYOSERVE_BUCKET")
    result = cli("invoke", "asyncdemo", *args, "--endpoint-url", "http://127.0.0.1:9")
    assert result.code != 0 and result.out == ""
    assert result.err.startswith("deploy: ") and says in result.err, result.err
    assert result.err.count("\n") == 1


def test_local_async_without_a_bucket_is_one_line(
    async_world: AwsWorld, cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BYOSERVE_BUCKET")
    result = cli("local", "asyncdemo", "--no-docker", "--dry-run")
    assert result.code != 0 and "set `output_path`, or a bucket" in result.err
    assert result.err.count("\n") == 1


def test_local_async_on_a_port_in_use_is_one_line(
    async_world: AwsWorld, cli: Callable[..., Result]
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = cli("local", "asyncdemo", "--no-docker", "--port", str(port))
    assert result.code != 0 and result.out == ""
    assert (
        result.err.splitlines()[-1]
        == f"deploy: cannot listen on port {port}: Address already in use"
    )
