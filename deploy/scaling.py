"""``autoscale``: Application Auto Scaling target tracking on invocations per instance."""

from __future__ import annotations

from typing import Any

from deploy.aws import Aws
from deploy.definitions import Autoscaling

VARIANT = "AllTraffic"
NAMESPACE = "sagemaker"
DIMENSION = "sagemaker:variant:DesiredInstanceCount"
METRIC = "SageMakerVariantInvocationsPerInstance"


def resource_id(endpoint_name: str, variant: str = VARIANT) -> str:
    """``endpoint/NAME/variant/AllTraffic``, the scalable target's id."""
    return f"endpoint/{endpoint_name}/variant/{variant}"


def policy_name(endpoint_name: str) -> str:
    return f"{endpoint_name}-invocations-per-instance"


def apply_scaling(aws: Aws, endpoint_name: str, scaling: Autoscaling) -> None:
    """Register the variant as a scalable target and put the target-tracking policy (both are
    create-or-update calls, so running this again is harmless)."""
    target = {
        "ServiceNamespace": NAMESPACE,
        "ResourceId": resource_id(endpoint_name),
        "ScalableDimension": DIMENSION,
    }
    aws.call(
        "application-autoscaling",
        "register_scalable_target",
        **target,
        MinCapacity=scaling.min_capacity,
        MaxCapacity=scaling.max_capacity,
    )
    aws.call(
        "application-autoscaling",
        "put_scaling_policy",
        **target,
        PolicyName=policy_name(endpoint_name),
        PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": scaling.target_invocations_per_instance,
            "PredefinedMetricSpecification": {"PredefinedMetricType": METRIC},
            "ScaleInCooldown": scaling.scale_in_cooldown,
            "ScaleOutCooldown": scaling.scale_out_cooldown,
        },
    )


def scalable_target(aws: Aws, endpoint_name: str) -> dict[str, Any] | None:
    """The registered target of the endpoint's variant, or None."""
    response = aws.call(
        "application-autoscaling",
        "describe_scalable_targets",
        ServiceNamespace=NAMESPACE,
        ResourceIds=[resource_id(endpoint_name)],
        ScalableDimension=DIMENSION,
    )
    targets: list[dict[str, Any]] = response.get("ScalableTargets", [])
    return targets[0] if targets else None


def scaling_policies(aws: Aws, endpoint_name: str) -> list[dict[str, Any]]:
    """The scaling policies on the endpoint's variant."""
    response = aws.call(
        "application-autoscaling",
        "describe_scaling_policies",
        ServiceNamespace=NAMESPACE,
        ResourceId=resource_id(endpoint_name),
        ScalableDimension=DIMENSION,
    )
    policies: list[dict[str, Any]] = response.get("ScalingPolicies", [])
    return policies


def remove_scaling(aws: Aws, endpoint_name: str) -> bool:
    """Deregister the target (its policies go with it); False when none was registered."""
    if scalable_target(aws, endpoint_name) is None:
        return False
    for policy in scaling_policies(aws, endpoint_name):
        aws.call(
            "application-autoscaling",
            "delete_scaling_policy",
            PolicyName=policy["PolicyName"],
            ServiceNamespace=NAMESPACE,
            ResourceId=resource_id(endpoint_name),
            ScalableDimension=DIMENSION,
        )
    aws.call(
        "application-autoscaling",
        "deregister_scalable_target",
        ServiceNamespace=NAMESPACE,
        ResourceId=resource_id(endpoint_name),
        ScalableDimension=DIMENSION,
    )
    return True
