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
    its prefix) and the autoscaling target of endpoint ``name``."""
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
        "ScalableTarget": scaling.scalable_target(aws, name),
    }
    if report["Mode"] == MODE_MULTI and report["ModelDataUrl"]:
        report["Targets"] = list_targets(aws, ModelPrefix.parse(report["ModelDataUrl"]))
    return report


def format_report(report: dict[str, Any]) -> list[str]:
    """The report as the lines ``status`` prints."""
    lines = [
        f"{report['EndpointName']}: {report['EndpointStatus']} ({report['EndpointConfigName']})"
    ]
    for variant in report["Config"]:
        lines.append(
            f"  {variant['VariantName']}: {variant.get('InitialInstanceCount')} x "
            f"{variant.get('InstanceType')}, model {variant['ModelName']}"
        )
    lines.append(f"  mode: {report['Mode']}, model data {report['ModelDataUrl']}")
    if "Targets" in report:
        lines.append(f"  {len(report['Targets'])} archive(s) under the prefix (TargetModel):")
        lines += [f"    {item['Name']}  {item['Size']} bytes" for item in report["Targets"]]
    if report["FailureReason"]:
        lines.append(f"  failure: {report['FailureReason']}")
    target = report["ScalableTarget"]
    if target:
        lines.append(f"  autoscaling: {target['MinCapacity']}-{target['MaxCapacity']} instances")
    return lines
