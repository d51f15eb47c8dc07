"""Every error path prints one line on stderr and exits non-zero without a traceback; dry runs
change nothing. The CLI runs as a real ``python -m deploy`` process against moto over HTTP."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.deploy.conftest import AwsWorld, Result
from tests.fixtures.server import REPO


def deploy(*args: str, env: dict[str, str] | None = None, drop: tuple[str, ...] = ()) -> Result:
    """``python -m deploy ARGS`` with the test's environment, minus ``drop``, plus ``env``."""
    environ = {k: v for k, v in os.environ.items() if k not in drop}
    proc = subprocess.run(
        [sys.executable, "-m", "deploy", *args],
        cwd=REPO,
        env={**environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def assert_one_line_error(result: Result, *expected: str) -> None:
    assert result.code != 0, result.out
    assert "Traceback" not in result.err
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("deploy: "), result.err
    for text in expected:
        assert text in lines[0]


def _state(aws: AwsWorld) -> dict[str, object]:
    sm = aws.client("sagemaker")
    s3 = aws.client("s3")
    return {
        "endpoints": sm.list_endpoints()["Endpoints"],
        "configs": sm.list_endpoint_configs()["EndpointConfigs"],
        "models": sm.list_models()["Models"],
        "objects": s3.list_objects_v2(Bucket=aws.bucket).get("Contents", []),
        "repos": aws.client("ecr").describe_repositories()["repositories"],
        "targets": aws.client("application-autoscaling").describe_scalable_targets(
            ServiceNamespace="sagemaker"
        )["ScalableTargets"],
    }


CREDENTIALS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE")


def test_no_credentials(aws: AwsWorld, pushed: str) -> None:
    result = deploy("create-endpoint", "demo", drop=CREDENTIALS)
    assert_one_line_error(result, "no AWS credentials found", "AWS_ACCESS_KEY_ID")


def test_no_region(aws: AwsWorld) -> None:
    result = deploy("status", "demo", drop=("AWS_REGION", "AWS_DEFAULT_REGION"))
    assert_one_line_error(result, "no AWS region", "AWS_REGION", "--region")


def test_no_role(aws: AwsWorld, pushed: str) -> None:
    result = deploy("create-endpoint", "demo", drop=("BYOSERVE_ROLE_ARN",))
    assert_one_line_error(result, "no SageMaker execution role", "BYOSERVE_ROLE_ARN", "--role-arn")
    assert result.code == 2


def test_role_that_does_not_exist(aws: AwsWorld, pushed: str) -> None:
    role = "arn:aws:iam::123456789012:role/nobody"
    result = deploy("create-endpoint", "demo", "--role-arn", role)
    assert_one_line_error(result, f"execution role {role} does not exist")


def test_no_bucket(aws: AwsWorld) -> None:
    result = deploy("upload-model", "demo", drop=("BYOSERVE_BUCKET",))
    assert_one_line_error(result, "no S3 bucket", "BYOSERVE_BUCKET")


def test_bucket_that_does_not_exist(aws: AwsWorld) -> None:
    result = deploy("upload-model", "demo", "--bucket", "not-a-bucket-here")
    assert_one_line_error(result, "s3://not-a-bucket-here", "aws s3 mb")


def test_missing_archive(aws: AwsWorld, pushed: str) -> None:
    aws.archive.unlink()
    result = deploy("create-endpoint", "demo")
    assert_one_line_error(result, f"model archive {aws.archive} not found", "make model")
    assert _state(aws)["models"] == []


def test_no_pushed_image(aws: AwsWorld) -> None:
    result = deploy("create-endpoint", "demo")
    assert_one_line_error(result, "no pushed image recorded", "make build push")


def test_missing_definition(aws: AwsWorld) -> None:
    result = deploy("create-endpoint", "nope")
    assert_one_line_error(result, "no endpoint definition", "nope.toml")


def test_bad_definition(aws: AwsWorld) -> None:
    (aws.endpoints_dir / "bad.toml").write_text(
        '[model]\narchive = "x"\n[endpoint]\ninstance_count = "two"\n'
    )
    result = deploy("create-endpoint", "bad")
    assert_one_line_error(result, "instance_count", "must be a int")


def test_endpoint_failed_to_create(aws: AwsWorld, pushed: str, failing_endpoints: str) -> None:
    result = deploy("create-endpoint", "demo", "--poll", "0.01")
    assert result.code == 3
    assert failing_endpoints in result.out and "/aws/sagemaker/Endpoints/demo" in result.out
    assert_one_line_error(result, "endpoint demo failed to create")


def test_status_of_missing_endpoint(aws: AwsWorld) -> None:
    assert_one_line_error(deploy("status", "demo"), "no endpoint demo")


@pytest.mark.parametrize(
    ("verb", "expected"),
    [
        (
            "create-endpoint",
            [
                "sagemaker CreateModel",
                "sagemaker CreateEndpointConfig",
                "sagemaker CreateEndpoint ",
                "s3 PutObject",
            ],
        ),
        ("upload-model", ["s3 PutObject"]),
    ],
)
def test_dry_run_prints_requests_and_changes_nothing(
    aws: AwsWorld, pushed: str, cli: Callable[..., Result], verb: str, expected: list[str]
) -> None:
    before = _state(aws)
    result = cli(verb, "demo", "--dry-run")
    assert result.code == 0, result.err
    for text in expected:
        assert f"DRY-RUN {text}" in result.out
    if verb == "create-endpoint":
        assert '"ContainerStartupHealthCheckTimeoutInSeconds": 300' in result.out
    assert _state(aws) == before


def test_dry_run_of_update_delete_and_autoscale_changes_nothing(
    aws: AwsWorld, pushed: str, cli: Callable[..., Result]
) -> None:
    assert cli("create-endpoint", "demo", "--poll", "0.01").code == 0
    before = _state(aws)
    update = cli("update-endpoint", "demo", "--force", "--dry-run")
    assert "DRY-RUN sagemaker UpdateEndpoint" in update.out
    delete = cli("delete-endpoint", "demo", "--dry-run")
    assert "DRY-RUN sagemaker DeleteEndpoint " in delete.out
    assert "DRY-RUN sagemaker DeleteEndpointConfig" in delete.out
    assert "DRY-RUN sagemaker DeleteModel" in delete.out
    assert "DRY-RUN application-autoscaling DeregisterScalableTarget" in delete.out
    scale = cli("autoscale", "demo", "--dry-run")
    assert "DRY-RUN application-autoscaling PutScalingPolicy" in scale.out
    assert _state(aws) == before


def test_every_verb_has_help() -> None:
    from deploy.cli import build_parser

    (verbs,) = [
        action.choices
        for action in build_parser()._actions
        if isinstance(action, argparse._SubParsersAction)
    ]
    expected = {"build", "push", "upload-model", "create-endpoint", "update-endpoint"}
    expected |= {"delete-endpoint", "autoscale", "status", "logs", "invoke", "local"}
    assert set(verbs) >= expected
    for verb in verbs:
        result = deploy(verb, "--help")
        assert result.code == 0 and "--dry-run" in result.out, verb


def test_build_dry_run_prints_the_build(tmp_path: Path, cli: Callable[..., Result]) -> None:
    result = cli(
        "build",
        "--gpu",
        "--docker",
        "podman",
        "--dry-run",
        "--build-arg",
        "A=1",
        "--volume",
        "/opt/wheels:/wheels:ro",
    )
    if result.code != 0 and "not found on PATH" in result.err:
        pytest.fail("podman is not installed: run `make containers` first (never skipped)")
    assert result.code == 0, result.err
    assert "DRY-RUN docker build" in result.out and '"dockerfile": "Dockerfile.gpu"' in result.out
    assert '"build_args": {"A": "1"}' in result.out
