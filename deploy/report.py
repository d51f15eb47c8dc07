"""``status``: what an endpoint runs, from SageMaker, S3 and Application Auto Scaling."""

from __future__ import annotations

from typing import Any

from deploy import scaling
from deploy.aws import Aws
from deploy.endpoints import describe_endpoint
from deploy.errors import DeployError
from deploy.multimodel import ModelPrefix, list_targets
from deploy.release import MODE_MULTI, MODE_SINGLE, model_container


def endpoint_report(aws: Aws, name: str) -> dict[str, Any]:
    """Status, config, variants, the model's mode and data (for multi-model, the archives under
    its prefix), an asynchronous endpoint's config and its scale-from-zero alarm, and the
    autoscaling target and policies of endpoint ``name``."""
    found = describe_endpoint(aws, name)
    if found is None:
        raise DeployError(f"no endpoint {name} in {aws.region}")
    config = aws.call(
        "sagemaker", "describe_endpoint_config", EndpointConfigName=found["EndpointConfigName"]
    )
    container = model_container(aws, config)
    report: dict[str, Any] = {
        "EndpointName": found["EndpointName"],
        "EndpointStatus": found["EndpointStatus"],
        "EndpointConfigName": found["EndpointConfigName"],
        "FailureReason": found.get("FailureReason"),
        "Variants": found.get("ProductionVariants", []),
        "Config": config.get("ProductionVariants", []),
        "Mode": container.get("Mode", MODE_SINGLE),
        "ModelDataUrl": container.get("ModelDataUrl"),
        "AsyncInferenceConfig": config.get("AsyncInferenceConfig") or None,
        "ScalableTarget": scaling.scalable_target(aws, name),
        "ScalingPolicies": [policy["PolicyName"] for policy in scaling.scaling_policies(aws, name)],
        # Only asynchronous endpoints have one (and others need no cloudwatch:DescribeAlarms).
        "BacklogAlarm": (
            scaling.backlog_alarm(aws, name) if config.get("AsyncInferenceConfig") else None
        ),
    }
    if report["Mode"] == MODE_MULTI and report["ModelDataUrl"]:
        report["Targets"] = list_targets(aws, ModelPrefix.parse(report["ModelDataUrl"]))
    return report


def format_report(report: dict[str, Any]) -> list[str]:
    """The report as the lines ``status`` prints."""
    lines = [
        f"{report['EndpointName']}: {report['EndpointStatus']} ({report['EndpointConfigName']})"
    ]
    lines += [f"  {_variant(variant)}" for variant in report["Config"]]
    lines.append(f"  mode: {report['Mode']}, model data {report['ModelDataUrl']}")
    lines += _async_lines(report.get("AsyncInferenceConfig"))
    if "Targets" in report:
        lines.append(f"  {len(report['Targets'])} archive(s) under the prefix (TargetModel):")
        lines += [f"    {item['Name']}  {item['Size']} bytes" for item in report["Targets"]]
    if report["FailureReason"]:
        lines.append(f"  failure: {report['FailureReason']}")
    target = report["ScalableTarget"]
    if target:
        unit = (
            "provisioned concurrency"
            if target["ScalableDimension"] == scaling.PROVISIONED_DIMENSION
            else "instances"
        )
        policies = ", ".join(report.get("ScalingPolicies", [])) or "no policy"
        lines.append(
            f"  autoscaling: {target['MinCapacity']}-{target['MaxCapacity']} {unit} ({policies})"
        )
    alarm = report.get("BacklogAlarm")
    if alarm:
        lines.append(
            f"  alarm {alarm['AlarmName']}: {alarm.get('StateValue')} "
            f"({alarm['MetricName']} >= {alarm['Threshold']:g} leaves zero instances)"
        )
    return lines


def _variant(variant: dict[str, Any]) -> str:
    """``AllTraffic: 2 x ml.m5.large, model M`` or its serverless memory and concurrency."""
    serverless = variant.get("ServerlessConfig")
    if serverless:
        provisioned = serverless.get("ProvisionedConcurrency")
        return (
            f"{variant['VariantName']}: serverless, {serverless['MemorySizeInMB']} MB, "
            f"max concurrency {serverless['MaxConcurrency']}"
            + (f", provisioned {provisioned}" if provisioned else "")
            + f", model {variant['ModelName']}"
        )
    return (
        f"{variant['VariantName']}: {variant.get('InitialInstanceCount')} x "
        f"{variant.get('InstanceType')}, model {variant['ModelName']}"
    )


def _async_lines(config: dict[str, Any] | None) -> list[str]:
    """An asynchronous endpoint's output paths, topics and concurrency."""
    if not config:
        return []
    output = config.get("OutputConfig", {})
    lines = [
        f"  async: output {output.get('S3OutputPath')}, failures "
        f"{output.get('S3FailurePath', '(with the output)')}"
    ]
    notification = output.get("NotificationConfig", {})
    for key, what in (("SuccessTopic", "success"), ("ErrorTopic", "error")):
        if key in notification:
            lines.append(f"    {what} topic {notification[key]}")
    if notification.get("IncludeInferenceResponseIn"):
        lines.append(
            f"    answer included in: {', '.join(notification['IncludeInferenceResponseIn'])}"
        )
    client = config.get("ClientConfig", {})
    if "MaxConcurrentInvocationsPerInstance" in client:
        lines.append(
            f"    {client['MaxConcurrentInvocationsPerInstance']} concurrent invocations "
            "per instance"
        )
    return lines
