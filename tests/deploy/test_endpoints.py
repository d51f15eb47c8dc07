"""create/update/delete-endpoint, autoscale, status, logs, upload-model: moto over HTTP."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from tests.deploy.conftest import (
    FAKE_DIGEST,
    REGION,
    AwsWorld,
    Result,
    make_archive,
    sagemaker_resources,
)
from tests.deploy.motoendpoints import UPDATE_FAILURE, Lifecycle

FAST = ("--poll", "0.01")


def _config(aws: AwsWorld, name: str) -> dict[str, Any]:
    config: dict[str, Any] = aws.client("sagemaker").describe_endpoint_config(
        EndpointConfigName=name
    )
    return config


def _statuses(out: str, name: str) -> list[str]:
    """The statuses the wait loop printed, in order (``[   3s] NAME: Status``)."""
    return [
        line.split(f"] {name}: ", 1)[1]
        for line in out.splitlines()
        if line.startswith("[") and f"] {name}: " in line
    ]


def test_boto3_reads_aws_endpoint_url_itself(aws: AwsWorld) -> None:
    from deploy.aws import make_client

    assert make_client("sagemaker", REGION).meta.endpoint_url == aws.url
    assert make_client("ecr", REGION).meta.endpoint_url == aws.url


def test_upload_model_uses_a_content_hash_key_and_skips_when_present(
    aws: AwsWorld, cli: Callable[..., Result]
) -> None:
    from deploy.archives import file_sha256

    first = cli("upload-model", "demo")
    key = f"models/demo/{file_sha256(aws.archive)}/model.tar.gz"
    assert first.code == 0, first.err
    assert f"uploaded: s3://{aws.bucket}/{key}" in first.out
    body = aws.client("s3").get_object(Bucket=aws.bucket, Key=key)["Body"].read()
    assert body == aws.archive.read_bytes()
    again = cli("upload-model", "demo")
    assert again.code == 0 and f"already there: s3://{aws.bucket}/{key}" in again.out
    make_archive(aws.archive, marker="changed")
    changed = cli("upload-model", "demo")
    assert "uploaded:" in changed.out and key not in changed.out
    assert aws.client("s3").list_objects_v2(Bucket=aws.bucket)["KeyCount"] == 2


def test_create_endpoint_model_config_endpoint_in_service(
    aws: AwsWorld, cli: Callable[..., Result], pushed: str
) -> None:
    result = cli("create-endpoint", "demo", *FAST)
    assert result.code == 0, result.err
    assert _statuses(result.out, "demo") == ["Creating", "InService"]
    sm = aws.client("sagemaker")
    endpoint = sm.describe_endpoint(EndpointName="demo")
    assert endpoint["EndpointStatus"] == "InService"
    config = _config(aws, endpoint["EndpointConfigName"])
    variant = config["ProductionVariants"][0]
    assert variant["VariantName"] == "AllTraffic"
    assert variant["InitialInstanceCount"] == 2 and variant["InstanceType"] == "ml.m5.large"
    assert variant["ContainerStartupHealthCheckTimeoutInSeconds"] == 300
    assert variant["ModelDataDownloadTimeoutInSeconds"] == 240
    model = sm.describe_model(ModelName=variant["ModelName"])
    assert model["PrimaryContainer"]["Image"] == pushed
    assert model["PrimaryContainer"]["Image"].endswith("@" + FAKE_DIGEST)
    assert model["PrimaryContainer"]["ModelDataUrl"].startswith(f"s3://{aws.bucket}/models/demo/")
    assert model["PrimaryContainer"]["Environment"] == {"SAGEMAKER_MODEL_SERVER_WORKERS": "1"}
    assert model["ExecutionRoleArn"] == aws.role_arn
    scaling = aws.client("application-autoscaling")
    target = scaling.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
    assert [(t["ResourceId"], t["MinCapacity"], t["MaxCapacity"]) for t in target] == [
        ("endpoint/demo/variant/AllTraffic", 2, 5)
    ]


def test_create_endpoint_again_changes_nothing(
    aws: AwsWorld, cli: Callable[..., Result], pushed: str
) -> None:
    assert cli("create-endpoint", "demo", *FAST).code == 0
    before = sagemaker_resources(aws)
    again = cli("create-endpoint", "demo", *FAST)
    assert again.code == 0 and "already runs this release" in again.out
    assert sagemaker_resources(aws) == before


def test_update_moves_to_a_new_config_and_deletes_the_old_one(
    aws: AwsWorld, cli: Callable[..., Result], pushed: str
) -> None:
    assert cli("create-endpoint", "demo", *FAST).code == 0
    first = sagemaker_resources(aws)
    make_archive(aws.archive, marker="v2")
    result = cli("update-endpoint", "demo", *FAST)
    assert result.code == 0, result.err
    assert _statuses(result.out, "demo") == ["Updating", "InService"]
    now = sagemaker_resources(aws)
    current = aws.client("sagemaker").describe_endpoint(EndpointName="demo")["EndpointConfigName"]
    assert now["configs"] == [current] and now["models"] == [current]
    assert current not in first["configs"]


def test_update_endpoint_needs_an_existing_endpoint(
    aws: AwsWorld, cli: Callable[..., Result], pushed: str
) -> None:
    result = cli("update-endpoint", "demo", *FAST)
    assert result.code != 0 and "no endpoint demo" in result.err
    assert sagemaker_resources(aws) == {"endpoints": [], "configs": [], "models": []}


def test_delete_endpoint_leaves_nothing(
    aws: AwsWorld, cli: Callable[..., Result], pushed: str
) -> None:
    assert cli("create-endpoint", "demo", *FAST).code == 0
    make_archive(aws.archive, marker="v2")
    assert cli("update-endpoint", "demo", *FAST).code == 0
    result = cli("delete-endpoint", "demo", *FAST)
    assert result.code == 0, result.err
    assert "deleted endpoint demo" in result.out
    assert _statuses(result.out, "demo") == ["Deleting", "Deleted"]
    assert sagemaker_resources(aws) == {"endpoints": [], "configs": [], "models": []}
    scaling = aws.client("application-autoscaling")
    assert scaling.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"] == []
    assert scaling.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"] == []
    again = cli("delete-endpoint", "demo", *FAST)
    assert again.code == 0 and "nothing to delete" in again.out


def test_delete_endpoint_spares_other_endpoints_resources(
    aws: AwsWorld, cli: Callable[..., Result], pushed: str
) -> None:
    other = (aws.endpoints_dir / "demo.toml").read_text()
    (aws.endpoints_dir / "demo-two.toml").write_text(other)
    assert cli("create-endpoint", "demo", *FAST).code == 0
    assert cli("create-endpoint", "demo-two", *FAST).code == 0
    assert cli("delete-endpoint", "demo", *FAST).code == 0
    left = sagemaker_resources(aws)
    assert left["endpoints"] == ["demo-two"] and len(left["models"]) == 1


def test_autoscale_registers_target_and_target_tracking_policy(
    aws: AwsWorld, cli: Callable[..., Result], pushed: str
) -> None:
    assert cli("create-endpoint", "demo", "--no-wait").code == 0
    result = cli("autoscale", "demo", "--min", "1", "--max", "3", "--target", "70")
    assert result.code == 0, result.err
    scaling = aws.client("application-autoscaling")
    (target,) = scaling.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
    assert target["ResourceId"] == "endpoint/demo/variant/AllTraffic"
    assert target["ScalableDimension"] == "sagemaker:variant:DesiredInstanceCount"
    assert (target["MinCapacity"], target["MaxCapacity"]) == (1, 3)
    (policy,) = scaling.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"]
    tracking = policy["TargetTrackingScalingPolicyConfiguration"]
    assert policy["PolicyType"] == "TargetTrackingScaling"
    assert tracking["TargetValue"] == 70.0
    metric = tracking["PredefinedMetricSpecification"]["PredefinedMetricType"]
    assert metric == "SageMakerVariantInvocationsPerInstance"
    assert cli("autoscale", "demo", "--min", "1", "--max", "3", "--target", "70").code == 0
    policies = scaling.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"]
    assert len(policies) == 1


def test_status_reports_endpoint_config_and_scaling(
    aws: AwsWorld, cli: Callable[..., Result], pushed: str
) -> None:
    assert cli("create-endpoint", "demo", *FAST).code == 0
    text = cli("status", "demo")
    assert text.code == 0 and "demo: InService" in text.out
    assert "AllTraffic: 2 x ml.m5.large" in text.out and "autoscaling: 2-5" in text.out
    report = json.loads(cli("status", "demo", "--json").out)
    assert report["EndpointStatus"] == "InService"
    assert report["ScalableTarget"]["MaxCapacity"] == 5


def _put_logs(aws: AwsWorld, name: str, messages: list[str]) -> None:
    logs = aws.client("logs")
    group = f"/aws/sagemaker/Endpoints/{name}"
    logs.create_log_group(logGroupName=group)
    logs.create_log_stream(logGroupName=group, logStreamName="AllTraffic/i-0abc")
    now = int(time.time() * 1000)
    events = [{"timestamp": now + i, "message": m} for i, m in enumerate(messages)]
    logs.put_log_events(logGroupName=group, logStreamName="AllTraffic/i-0abc", logEvents=events)


def test_logs_prints_the_tail_of_the_endpoint_log_group(
    aws: AwsWorld, cli: Callable[..., Result]
) -> None:
    _put_logs(aws, "demo", [f"line {i}" for i in range(10)])
    result = cli("logs", "demo", "--lines", "3")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert len(lines) == 3 and lines[-1].endswith("AllTraffic/i-0abc line 9")
    missing = cli("logs", "never-created")
    assert missing.code == 0 and "(no log events in /aws/sagemaker/Endpoints/never-created)" in (
        missing.out
    )


def test_endpoint_that_fails_to_create_prints_reason_and_log_tail(
    aws: AwsWorld, cli: Callable[..., Result], pushed: str, failing_endpoints: str
) -> None:
    _put_logs(aws, "demo", ["Traceback (most recent call last):", "ImportError: no module x"])
    result = cli("create-endpoint", "demo", *FAST)
    assert result.code == 3
    assert "demo: Failed" in result.out
    assert failing_endpoints in result.out
    assert "ImportError: no module x" in result.out
    assert result.err.startswith("deploy: endpoint demo failed to create") and "Traceback" not in (
        result.err
    )


def test_failed_update_that_sagemaker_reverts_is_reported_and_cleaned_up(
    aws: AwsWorld,
    cli: Callable[..., Result],
    pushed: str,
    endpoint_lifecycle: Lifecycle,
) -> None:
    """SageMaker's usual failed update: the endpoint is InService again on the previous config,
    with a FailureReason; the new release is deleted, no rollback call is needed."""
    assert cli("create-endpoint", "demo", *FAST).code == 0
    before = sagemaker_resources(aws)
    endpoint_lifecycle.update_outcomes.append("reverted")
    make_archive(aws.archive, marker="v2")
    result = cli("update-endpoint", "demo", *FAST)
    assert result.code == 3, result.err
    assert _statuses(result.out, "demo") == ["Updating", "InService"]
    assert UPDATE_FAILURE in result.out and "rolling demo back" not in result.out
    assert result.err.count("\n") == 1 and "it runs the previous config" in result.err
    assert sagemaker_resources(aws) == before


def test_failed_update_rolls_back_to_the_previous_config(
    aws: AwsWorld,
    cli: Callable[..., Result],
    pushed: str,
    endpoint_lifecycle: Lifecycle,
) -> None:
    """An update that leaves the endpoint Failed on the new config: deploy sends it back to the
    previous one and waits for that too."""
    assert cli("create-endpoint", "demo", *FAST).code == 0
    before = sagemaker_resources(aws)
    endpoint_lifecycle.update_outcomes.append("failed")
    make_archive(aws.archive, marker="v2")
    result = cli("update-endpoint", "demo", *FAST)
    assert result.code == 3 and "rolling demo back to" in result.out
    assert _statuses(result.out, "demo") == ["Updating", "Failed", "Updating", "InService"]
    assert UPDATE_FAILURE in result.out
    assert "it runs the previous config" in result.err
    assert sagemaker_resources(aws) == before
    endpoint = aws.client("sagemaker").describe_endpoint(EndpointName="demo")
    assert endpoint["EndpointStatus"] == "InService"
    assert [endpoint["EndpointConfigName"]] == before["configs"]


def test_wait_timeout_ends_the_wait_with_one_line(
    aws: AwsWorld,
    cli: Callable[..., Result],
    pushed: str,
    endpoint_lifecycle: Lifecycle,
) -> None:
    endpoint_lifecycle.stuck = True
    result = cli("create-endpoint", "demo", "--poll", "0.01", "--wait-timeout", "0.2")
    assert result.code == 3, result.err
    assert _statuses(result.out, "demo") == ["Creating"]
    assert result.err == (
        "deploy: demo still Creating after 0 s; see `python -m deploy status demo`\n"
    )
    endpoint = aws.client("sagemaker").describe_endpoint(EndpointName="demo")
    assert endpoint["EndpointStatus"] == "Creating"  # left as it is, for the user to look at
