"""Asynchronous and serverless endpoints from a definition: moto over HTTP.

The configs are checked as ``describe_endpoint_config`` shows them, the scaling as Application
Auto Scaling and CloudWatch describe it, and every refusal is one line with nothing created.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Any

import pytest
from moto.applicationautoscaling import models as autoscaling_models
from moto.applicationautoscaling import responses as autoscaling_responses

from deploy.images import PushedImage, record_image
from tests.deploy.conftest import AwsWorld, Result, sagemaker_resources

FAST = ("--poll", "0.01")
REGISTRY = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
TOPIC = "arn:aws:sns:us-east-1:123456789012:{}"
NOTHING: dict[str, list[str]] = {"endpoints": [], "configs": [], "models": []}

ASYNC = """\
[model]
archive = "{archive}"

[image]
repository = "byoserve-test"

[endpoint]
instance_type = "ml.m5.large"
{environment}
[async]
{async_table}
{autoscaling}
"""

FULL_ASYNC = f"""\
output_path = "s3://answers/async/out"
failure_path = "s3://answers/async/failed"
success_topic = "{TOPIC.format("ok")}"
error_topic = "{TOPIC.format("failed")}"
include_response_in = ["success", "ERROR_NOTIFICATION_TOPIC"]
max_concurrent_invocations_per_instance = 4
invocation_timeout = 1800
"""

SERVERLESS = """\
[model]
archive = "{archive}"

[image]
repository = "byoserve-test"
{image}
[serverless]
memory_mb = 2048
max_concurrency = 8
{provisioned}
{rest}
"""


def _define(aws: AwsWorld, name: str, text: str) -> None:
    (aws.endpoints_dir / f"{name}.toml").write_text(text)


def _async(
    aws: AwsWorld, async_table: str = "", autoscaling: str = "", environment: str = ""
) -> str:
    return ASYNC.format(
        archive=aws.archive,
        async_table=async_table,
        autoscaling=autoscaling,
        environment=environment,
    )


def _serverless(aws: AwsWorld, provisioned: str = "", rest: str = "", image: str = "") -> str:
    return SERVERLESS.format(archive=aws.archive, provisioned=provisioned, rest=rest, image=image)


def _running_config(aws: AwsWorld, name: str) -> dict[str, Any]:
    sm = aws.client("sagemaker")
    config_name = sm.describe_endpoint(EndpointName=name)["EndpointConfigName"]
    config: dict[str, Any] = sm.describe_endpoint_config(EndpointConfigName=config_name)
    return config


def _environment(aws: AwsWorld, config: dict[str, Any]) -> dict[str, str]:
    model_name = config["ProductionVariants"][0]["ModelName"]
    model = aws.client("sagemaker").describe_model(ModelName=model_name)
    environment: dict[str, str] = model["PrimaryContainer"]["Environment"]
    return environment


def push_to_moto(aws: AwsWorld, size: int, repository: str = "byoserve-test") -> str:
    """An image of ``size`` bytes (as ECR reports it) in moto's ECR, recorded as ``push`` does."""
    ecr = aws.client("ecr")
    ecr.create_repository(repositoryName=repository)
    layer = "sha256:" + hashlib.sha256(f"{repository}{size}".encode()).hexdigest()
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": size,
                   "digest": "sha256:" + "ef" * 32},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                    "size": size, "digest": layer}],
    }  # fmt: skip
    put = ecr.put_image(repositoryName=repository, imageManifest=json.dumps(manifest), imageTag="t")
    image = PushedImage(
        repository=repository,
        registry=REGISTRY,
        tag="t",
        digest=put["image"]["imageId"]["imageDigest"],
        local_image=f"{repository}:latest",
        image_id="sha256:" + "cd" * 32,
        pushed_at="2025-01-01T00:00:00Z",
    )
    record_image(image, aws.build_dir / "images")
    return image.uri


def _scaling(aws: AwsWorld) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    client = aws.client("application-autoscaling")
    targets = client.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
    policies = client.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"]
    return targets, policies


def _alarms(aws: AwsWorld) -> list[dict[str, Any]]:
    alarms: list[dict[str, Any]] = aws.client("cloudwatch").describe_alarms()["MetricAlarms"]
    return alarms


def _one_line_refusal(result: Result, *words: str) -> None:
    assert result.code != 0, result.out
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("deploy: "), result.err
    for word in words:
        assert word in lines[0], lines[0]


# --- asynchronous ---------------------------------------------------------------------------


def test_async_config_carries_every_field(
    aws: AwsWorld, cli: Callable[..., Result], pushed: str
) -> None:
    _define(aws, "answers", _async(aws, FULL_ASYNC))
    result = cli("create-endpoint", "answers", *FAST)
    assert result.code == 0, result.err
    config = _running_config(aws, "answers")
    assert config["AsyncInferenceConfig"] == {
        "OutputConfig": {
            "S3OutputPath": "s3://answers/async/out",
            "S3FailurePath": "s3://answers/async/failed",
            "NotificationConfig": {
                "SuccessTopic": TOPIC.format("ok"),
                "ErrorTopic": TOPIC.format("failed"),
                "IncludeInferenceResponseIn": [
                    "SUCCESS_NOTIFICATION_TOPIC",
                    "ERROR_NOTIFICATION_TOPIC",
                ],
            },
        },
        "ClientConfig": {"MaxConcurrentInvocationsPerInstance": 4},
    }
    variant = config["ProductionVariants"][0]
    assert variant["InstanceType"] == "ml.m5.large" and "ServerlessConfig" not in variant
    assert _environment(aws, config) == {
        "SAGEMAKER_MAX_REQUEST_SIZE": "1000000000",
        "SAGEMAKER_MODEL_SERVER_TIMEOUT": "1800",
    }


def test_async_defaults_go_under_the_bucket_and_only_what_is_set(
    aws: AwsWorld, cli: Callable[..., Result], pushed: str
) -> None:
    _define(aws, "answers", _async(aws))
    assert cli("create-endpoint", "answers", *FAST).code == 0
    config = _running_config(aws, "answers")
    assert config["AsyncInferenceConfig"] == {
        "OutputConfig": {
            "S3OutputPath": f"s3://{aws.bucket}/async/answers/output",
            "S3FailurePath": f"s3://{aws.bucket}/async/answers/failures",
        }
    }
    assert _environment(aws, config)["SAGEMAKER_MODEL_SERVER_TIMEOUT"] == "900"


def test_async_environment_keeps_what_the_definition_sets(
    aws: AwsWorld, cli: Callable[..., Result], pushed: str
) -> None:
    environment = '[environment]\nSAGEMAKER_MAX_PAYLOAD_IN_MB = "200"\n'
    environment += 'SAGEMAKER_MODEL_SERVER_TIMEOUT = "100"\n'
    _define(aws, "answers", _async(aws, environment=environment))
    assert cli("create-endpoint", "answers", *FAST).code == 0
    assert _environment(aws, _running_config(aws, "answers")) == {
        "SAGEMAKER_MAX_PAYLOAD_IN_MB": "200",
        "SAGEMAKER_MODEL_SERVER_TIMEOUT": "100",
    }


def test_changing_the_async_table_makes_a_new_release(
    aws: AwsWorld, cli: Callable[..., Result], pushed: str
) -> None:
    _define(aws, "answers", _async(aws))
    assert cli("create-endpoint", "answers", *FAST).code == 0
    first = _running_config(aws, "answers")["EndpointConfigName"]
    again = cli("create-endpoint", "answers", *FAST)
    assert "already runs this release" in again.out
    _define(aws, "answers", _async(aws, "max_concurrent_invocations_per_instance = 2"))
    assert cli("create-endpoint", "answers", *FAST).code == 0
    config = _running_config(aws, "answers")
    assert config["EndpointConfigName"] != first
    assert config["AsyncInferenceConfig"]["ClientConfig"] == {
        "MaxConcurrentInvocationsPerInstance": 2
    }


def test_async_without_a_bucket_is_refused_before_anything(
    aws: AwsWorld, cli: Callable[..., Result], pushed: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BYOSERVE_BUCKET")
    _define(aws, "answers", _async(aws))
    _one_line_refusal(cli("create-endpoint", "answers", *FAST), "output_path", "bucket")
    assert sagemaker_resources(aws) == NOTHING


SCALE_TO_ZERO = """\
[autoscaling]
min_capacity = 0
max_capacity = 3
target_backlog_per_instance = 4
scale_in_cooldown = 600
scale_out_cooldown = 120
"""


def test_async_scales_to_zero_on_the_backlog_with_an_alarm_to_leave_it(
    aws: AwsWorld, cli: Callable[..., Result], pushed: str
) -> None:
    _define(aws, "answers", _async(aws, autoscaling=SCALE_TO_ZERO))
    assert cli("create-endpoint", "answers", *FAST).code == 0
    targets, policies = _scaling(aws)
    assert [(t["ScalableDimension"], t["MinCapacity"], t["MaxCapacity"]) for t in targets] == [
        ("sagemaker:variant:DesiredInstanceCount", 0, 3)
    ]
    by_name = {policy["PolicyName"]: policy for policy in policies}
    assert set(by_name) == {
        "answers-backlog-per-instance",
        "HasBacklogWithoutCapacity-ScalingPolicy",
    }
    tracking = by_name["answers-backlog-per-instance"]["TargetTrackingScalingPolicyConfiguration"]
    assert tracking["TargetValue"] == 4.0
    assert (tracking["ScaleInCooldown"], tracking["ScaleOutCooldown"]) == (600, 120)
    assert tracking["CustomizedMetricSpecification"] == {
        "MetricName": "ApproximateBacklogSizePerInstance",
        "Namespace": "AWS/SageMaker",
        "Dimensions": [{"Name": "EndpointName", "Value": "answers"}],
        "Statistic": "Average",
    }
    step = by_name["HasBacklogWithoutCapacity-ScalingPolicy"]
    assert step["PolicyType"] == "StepScaling"
    steps = step["StepScalingPolicyConfiguration"]
    assert steps["AdjustmentType"] == "ChangeInCapacity"
    assert steps["StepAdjustments"] == [{"MetricIntervalLowerBound": 0.0, "ScalingAdjustment": 1}]
    (alarm,) = _alarms(aws)
    assert alarm["MetricName"] == "HasBacklogWithoutCapacity"
    assert alarm["Namespace"] == "AWS/SageMaker"
    assert alarm["Dimensions"] == [{"Name": "EndpointName", "Value": "answers"}]
    assert (alarm["Statistic"], alarm["Threshold"], alarm["Period"]) == ("Average", 1.0, 60)
    assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert alarm["AlarmActions"] == [step["PolicyARN"]]


def test_async_scaling_above_zero_drops_the_alarm_and_delete_removes_all(
    aws: AwsWorld, cli: Callable[..., Result], pushed: str
) -> None:
    _define(aws, "answers", _async(aws, autoscaling=SCALE_TO_ZERO))
    assert cli("create-endpoint", "answers", *FAST).code == 0
    status = cli("status", "answers")
    assert status.code == 0, status.err
    assert f"async: output s3://{aws.bucket}/async/answers/output" in status.out
    assert "autoscaling: 0-3 instances" in status.out
    assert "alarm answers-has-backlog-without-capacity" in status.out
    report = json.loads(cli("status", "answers", "--json").out)
    assert report["AsyncInferenceConfig"]["OutputConfig"]["S3FailurePath"].endswith("/failures")
    assert cli("autoscale", "answers", "--min", "1", "--max", "2").code == 0
    targets, policies = _scaling(aws)
    assert [(t["MinCapacity"], t["MaxCapacity"]) for t in targets] == [(1, 2)]
    assert [p["PolicyName"] for p in policies] == ["answers-backlog-per-instance"]
    assert _alarms(aws) == []
    assert cli("autoscale", "answers", "--min", "0").code == 0
    assert len(_alarms(aws)) == 1
    assert cli("delete-endpoint", "answers", *FAST).code == 0
    assert _scaling(aws) == ([], []) and _alarms(aws) == []
    assert sagemaker_resources(aws) == NOTHING


def test_autoscale_to_zero_is_refused_for_a_real_time_endpoint(
    aws: AwsWorld, cli: Callable[..., Result], pushed: str
) -> None:
    assert cli("create-endpoint", "demo", "--no-wait").code == 0
    _one_line_refusal(cli("autoscale", "demo", "--min", "0"), "async")


def test_dry_run_shows_the_async_config_and_the_alarm(
    aws: AwsWorld, cli: Callable[..., Result], pushed: str
) -> None:
    _define(aws, "answers", _async(aws, FULL_ASYNC, SCALE_TO_ZERO))
    result = cli("create-endpoint", "answers", "--dry-run")
    assert result.code == 0, result.err
    (config_line,) = [line for line in result.out.splitlines() if "CreateEndpointConfig" in line]
    shown = json.loads(config_line.split(" ", 3)[3])
    assert shown["AsyncInferenceConfig"]["ClientConfig"] == {
        "MaxConcurrentInvocationsPerInstance": 4
    }
    assert "DRY-RUN cloudwatch PutMetricAlarm" in result.out
    assert sagemaker_resources(aws) == NOTHING and _alarms(aws) == []


# --- serverless ----------------------------------------------------------------------------


def test_serverless_variant_has_a_serverless_config_and_no_instances(
    aws: AwsWorld, cli: Callable[..., Result]
) -> None:
    image = push_to_moto(aws, 2 * 1000**3)
    _define(aws, "quiet", _serverless(aws, "provisioned_concurrency = 2"))
    result = cli("create-endpoint", "quiet", *FAST)
    assert result.code == 0, result.err
    config = _running_config(aws, "quiet")
    (variant,) = config["ProductionVariants"]
    assert variant["ServerlessConfig"] == {
        "MemorySizeInMB": 2048,
        "MaxConcurrency": 8,
        "ProvisionedConcurrency": 2,
    }
    assert "InstanceType" not in variant and "InitialInstanceCount" not in variant
    assert "AsyncInferenceConfig" not in config or not config["AsyncInferenceConfig"]
    assert _environment(aws, config) == {
        "SAGEMAKER_MODEL_SERVER_WORKERS": "1",
        "BYOSERVE_SERVERLESS": "true",
    }
    model = aws.client("sagemaker").describe_model(ModelName=variant["ModelName"])
    assert model["PrimaryContainer"]["Image"] == image
    status = cli("status", "quiet")
    assert "AllTraffic: serverless, 2048 MB, max concurrency 8, provisioned 2" in status.out


def test_serverless_workers_follow_the_definition(
    aws: AwsWorld, cli: Callable[..., Result]
) -> None:
    push_to_moto(aws, 1000)
    rest = '[environment]\nSAGEMAKER_MODEL_SERVER_WORKERS = "2"\n'
    _define(aws, "quiet", _serverless(aws, rest=rest))
    assert cli("create-endpoint", "quiet", *FAST).code == 0
    environment = _environment(aws, _running_config(aws, "quiet"))
    assert environment == {"SAGEMAKER_MODEL_SERVER_WORKERS": "2", "BYOSERVE_SERVERLESS": "true"}


@pytest.fixture
def moto_provisioned_concurrency(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto's scalable dimensions lack ``sagemaker:variant:DesiredProvisionedConcurrency``,
    which botocore's model (and AWS) has: add it to the enum moto validates against."""
    original = autoscaling_models.ScalableDimensionValueSet
    members = {member.name: member.value for member in original}
    members["SAGEMAKER_VARIANT_DESIRED_PROVISIONED_CONCURRENCY"] = (
        "sagemaker:variant:DesiredProvisionedConcurrency"
    )
    widened = Enum(original.__name__, members)  # type: ignore[misc]
    for module in (autoscaling_models, autoscaling_responses):
        monkeypatch.setattr(module, "ScalableDimensionValueSet", widened)


PROVISIONED_SCALING = """\
[autoscaling]
min_capacity = 1
max_capacity = 4
target_provisioned_concurrency_utilization = 0.6
"""


@pytest.mark.usefixtures("moto_provisioned_concurrency")
def test_serverless_scales_provisioned_concurrency(
    aws: AwsWorld, cli: Callable[..., Result]
) -> None:
    push_to_moto(aws, 1000)
    _define(aws, "quiet", _serverless(aws, "provisioned_concurrency = 2", PROVISIONED_SCALING))
    assert cli("create-endpoint", "quiet", *FAST).code == 0
    targets, policies = _scaling(aws)
    assert [(t["ScalableDimension"], t["MinCapacity"], t["MaxCapacity"]) for t in targets] == [
        ("sagemaker:variant:DesiredProvisionedConcurrency", 1, 4)
    ]
    (policy,) = policies
    tracking = policy["TargetTrackingScalingPolicyConfiguration"]
    assert tracking["TargetValue"] == 0.6
    metric = tracking["PredefinedMetricSpecification"]["PredefinedMetricType"]
    assert metric == "SageMakerVariantProvisionedConcurrencyUtilization"
    assert "autoscaling: 1-4 provisioned concurrency" in cli("status", "quiet").out
    assert cli("delete-endpoint", "quiet", *FAST).code == 0
    assert _scaling(aws) == ([], [])


def test_serverless_image_over_10_gb_is_refused(aws: AwsWorld, cli: Callable[..., Result]) -> None:
    push_to_moto(aws, 11 * 1000**3)
    _define(aws, "quiet", _serverless(aws))
    _one_line_refusal(cli("create-endpoint", "quiet", *FAST), "11.0 GB", "10 GB")
    assert sagemaker_resources(aws) == NOTHING


def test_serverless_image_not_in_ecr_is_refused(
    aws: AwsWorld, cli: Callable[..., Result], pushed: str
) -> None:
    _define(aws, "quiet", _serverless(aws))
    _one_line_refusal(cli("create-endpoint", "quiet", *FAST), "not in ECR", "push")
    other = cli("create-endpoint", "quiet", "--image", "localhost:5000/byoserve:latest")
    _one_line_refusal(other, "only from ECR")
    assert sagemaker_resources(aws) == NOTHING


def test_real_time_endpoint_is_not_updated_to_serverless(
    aws: AwsWorld, cli: Callable[..., Result]
) -> None:
    push_to_moto(aws, 1000)
    assert cli("create-endpoint", "demo", *FAST).code == 0
    before = sagemaker_resources(aws)
    _define(aws, "demo", _serverless(aws))
    _one_line_refusal(cli("create-endpoint", "demo", *FAST), "delete-endpoint demo", "serverless")
    assert sagemaker_resources(aws) == before


@pytest.mark.parametrize(
    ("provisioned", "rest", "image", "words"),
    [
        ("", "", 'dockerfile = "Dockerfile.gpu"', ("no GPU", "Dockerfile.gpu")),
        ("", '[endpoint]\ninstance_type = "ml.g5.xlarge"', "", ("ml.g5.xlarge",)),
        ("", "[autoscaling]\nmax_capacity = 2", "", ("provisioned_concurrency",)),
        (
            "provisioned_concurrency = 1",
            "[autoscaling]\nmax_capacity = 2\ntarget_invocations_per_instance = 10",
            "",
            ("target_invocations_per_instance", "serverless"),
        ),
        (
            "provisioned_concurrency = 1",
            "[autoscaling]\nmax_capacity = 9",
            "",
            ("max_concurrency",),
        ),
    ],
    ids=["gpu-image", "gpu-instance", "instance-scaling", "invocations-target", "over-max"],
)
def test_what_serverless_cannot_do_is_refused_in_one_line(
    aws: AwsWorld,
    cli: Callable[..., Result],
    provisioned: str,
    rest: str,
    image: str,
    words: tuple[str, ...],
) -> None:
    push_to_moto(aws, 1000)
    _define(aws, "quiet", _serverless(aws, provisioned, rest, image))
    _one_line_refusal(cli("create-endpoint", "quiet", *FAST), *words)
    assert sagemaker_resources(aws) == NOTHING


def test_dry_run_shows_the_serverless_variant(aws: AwsWorld, cli: Callable[..., Result]) -> None:
    push_to_moto(aws, 1000)
    _define(aws, "quiet", _serverless(aws))
    result = cli("create-endpoint", "quiet", "--dry-run")
    assert result.code == 0, result.err
    (config_line,) = [line for line in result.out.splitlines() if "CreateEndpointConfig" in line]
    (variant,) = json.loads(config_line.split(" ", 3)[3])["ProductionVariants"]
    assert variant["ServerlessConfig"] == {"MemorySizeInMB": 2048, "MaxConcurrency": 8}
    assert sagemaker_resources(aws) == NOTHING


def test_the_example_definitions_parse(tmp_path: Path) -> None:
    from deploy.definitions import load_definition

    examples = Path(__file__).parents[2] / "endpoints"
    answers = load_definition(str(examples / "sentiment-async.toml"), examples)
    assert answers.hosting == "async" and answers.autoscaling is not None
    assert answers.autoscaling.min_capacity == 0
    quiet = load_definition(str(examples / "sentiment-serverless.toml"), examples)
    assert quiet.hosting == "serverless" and quiet.serverless is not None


def test_a_serverless_endpoint_updates_to_new_memory(
    aws: AwsWorld, cli: Callable[..., Result]
) -> None:
    push_to_moto(aws, 1000)
    _define(aws, "quiet", _serverless(aws))
    assert cli("create-endpoint", "quiet", *FAST).code == 0
    first = _running_config(aws, "quiet")["EndpointConfigName"]
    _define(aws, "quiet", _serverless(aws).replace("memory_mb = 2048", "memory_mb = 4096"))
    result = cli("create-endpoint", "quiet", *FAST)
    assert result.code == 0, result.err
    config = _running_config(aws, "quiet")
    assert config["EndpointConfigName"] != first
    assert config["ProductionVariants"][0]["ServerlessConfig"]["MemorySizeInMB"] == 4096
    assert sagemaker_resources(aws)["configs"] == [config["EndpointConfigName"]]
