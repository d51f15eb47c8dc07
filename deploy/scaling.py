"""``autoscale``: Application Auto Scaling of the ``AllTraffic`` variant, by hosting mode.

* real-time: instances, target tracking on invocations per instance;
* asynchronous: instances, target tracking on the queue (``ApproximateBacklogSizePerInstance``),
  down to zero; at zero a step policy, set off by a CloudWatch alarm on
  ``HasBacklogWithoutCapacity``, brings the first instance back as soon as a request waits
  (as docs.aws.amazon.com/sagemaker/latest/dg/async-inference-autoscale.html sets it up);
* serverless: provisioned concurrency, target tracking on its utilization.
"""

from __future__ import annotations

from typing import Any

from deploy.aws import Aws
from deploy.hostingtables import Autoscaling

VARIANT = "AllTraffic"
NAMESPACE = "sagemaker"
DIMENSION = "sagemaker:variant:DesiredInstanceCount"
PROVISIONED_DIMENSION = "sagemaker:variant:DesiredProvisionedConcurrency"
METRIC = "SageMakerVariantInvocationsPerInstance"
PROVISIONED_METRIC = "SageMakerVariantProvisionedConcurrencyUtilization"
BACKLOG_METRIC = "ApproximateBacklogSizePerInstance"
WITHOUT_CAPACITY_METRIC = "HasBacklogWithoutCapacity"
WITHOUT_CAPACITY_POLICY = "HasBacklogWithoutCapacity-ScalingPolicy"
METRIC_NAMESPACE = "AWS/SageMaker"


def resource_id(endpoint_name: str, variant: str = VARIANT) -> str:
    """``endpoint/NAME/variant/AllTraffic``, the scalable target's id."""
    return f"endpoint/{endpoint_name}/variant/{variant}"


def policy_name(endpoint_name: str, hosting: str = "real-time") -> str:
    """The target-tracking policy's name for the endpoint's hosting mode."""
    what = {"async": "backlog-per-instance", "serverless": "provisioned-concurrency"}
    return f"{endpoint_name}-{what.get(hosting, 'invocations-per-instance')}"


def alarm_name(endpoint_name: str) -> str:
    """The alarm that takes an asynchronous endpoint out of zero instances."""
    return f"{endpoint_name}-has-backlog-without-capacity"


def dimension(hosting: str) -> str:
    """What scales: provisioned concurrency for serverless, else the instance count."""
    return PROVISIONED_DIMENSION if hosting == "serverless" else DIMENSION


def _target_tracking(endpoint_name: str, scaling: Autoscaling, hosting: str) -> dict[str, Any]:
    config: dict[str, Any] = {
        "ScaleInCooldown": scaling.scale_in_cooldown,
        "ScaleOutCooldown": scaling.scale_out_cooldown,
    }
    if hosting == "async":
        return {
            **config,
            "TargetValue": scaling.target_backlog_per_instance,
            "CustomizedMetricSpecification": {
                "MetricName": BACKLOG_METRIC,
                "Namespace": METRIC_NAMESPACE,
                "Dimensions": [{"Name": "EndpointName", "Value": endpoint_name}],
                "Statistic": "Average",
            },
        }
    metric, target = (
        (PROVISIONED_METRIC, scaling.target_provisioned_concurrency_utilization)
        if hosting == "serverless"
        else (METRIC, scaling.target_invocations_per_instance)
    )
    return {
        **config,
        "TargetValue": target,
        "PredefinedMetricSpecification": {"PredefinedMetricType": metric},
    }


def apply_scaling(
    aws: Aws, endpoint_name: str, scaling: Autoscaling, hosting: str = "real-time"
) -> None:
    """Register the variant as a scalable target and put the target-tracking policy; for an
    asynchronous endpoint that may reach zero, the step policy and its alarm too. All are
    create-or-update calls, so running this again is harmless; policies of another mode (the
    definition changed) are removed."""
    target = {
        "ServiceNamespace": NAMESPACE,
        "ResourceId": resource_id(endpoint_name),
        "ScalableDimension": dimension(hosting),
    }
    aws.call(
        "application-autoscaling",
        "register_scalable_target",
        **target,
        MinCapacity=scaling.min_capacity,
        MaxCapacity=scaling.max_capacity,
    )
    kept = {policy_name(endpoint_name, hosting)}
    aws.call(
        "application-autoscaling",
        "put_scaling_policy",
        **target,
        PolicyName=policy_name(endpoint_name, hosting),
        PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration=_target_tracking(endpoint_name, scaling, hosting),
    )
    if hosting == "async" and scaling.min_capacity == 0:
        _put_leave_zero(aws, endpoint_name, target, scaling.scale_out_cooldown)
        kept.add(WITHOUT_CAPACITY_POLICY)
    else:
        _delete_alarm(aws, endpoint_name)
    for policy in scaling_policies(aws, endpoint_name):
        if policy["PolicyName"] not in kept:
            _delete_policy(aws, endpoint_name, policy)


def _put_leave_zero(aws: Aws, endpoint_name: str, target: dict[str, str], cooldown: int) -> None:
    """One instance as soon as requests wait and there is none: a step policy and its alarm."""
    policy = aws.call(
        "application-autoscaling",
        "put_scaling_policy",
        **target,
        PolicyName=WITHOUT_CAPACITY_POLICY,
        PolicyType="StepScaling",
        StepScalingPolicyConfiguration={
            "AdjustmentType": "ChangeInCapacity",
            "MetricAggregationType": "Average",
            "Cooldown": cooldown,
            "StepAdjustments": [{"MetricIntervalLowerBound": 0, "ScalingAdjustment": 1}],
        },
    )
    aws.call(
        "cloudwatch",
        "put_metric_alarm",
        AlarmName=alarm_name(endpoint_name),
        AlarmDescription=f"{endpoint_name} has requests waiting and no instance",
        MetricName=WITHOUT_CAPACITY_METRIC,
        Namespace=METRIC_NAMESPACE,
        Statistic="Average",
        EvaluationPeriods=2,
        DatapointsToAlarm=2,
        Threshold=1,
        ComparisonOperator="GreaterThanOrEqualToThreshold",
        TreatMissingData="missing",
        Dimensions=[{"Name": "EndpointName", "Value": endpoint_name}],
        Period=60,
        AlarmActions=[policy.get("PolicyARN", f"<{WITHOUT_CAPACITY_POLICY} ARN>")],
    )


def scalable_target(aws: Aws, endpoint_name: str) -> dict[str, Any] | None:
    """The registered target of the endpoint's variant (instances or provisioned concurrency),
    or None."""
    response = aws.call(
        "application-autoscaling",
        "describe_scalable_targets",
        ServiceNamespace=NAMESPACE,
        ResourceIds=[resource_id(endpoint_name)],
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
    )
    policies: list[dict[str, Any]] = response.get("ScalingPolicies", [])
    return policies


def backlog_alarm(aws: Aws, endpoint_name: str) -> dict[str, Any] | None:
    """The ``HasBacklogWithoutCapacity`` alarm of an asynchronous endpoint, or None."""
    response = aws.call("cloudwatch", "describe_alarms", AlarmNames=[alarm_name(endpoint_name)])
    alarms: list[dict[str, Any]] = response.get("MetricAlarms", [])
    return alarms[0] if alarms else None


def _delete_alarm(aws: Aws, endpoint_name: str) -> None:
    if backlog_alarm(aws, endpoint_name) is not None:
        aws.call("cloudwatch", "delete_alarms", AlarmNames=[alarm_name(endpoint_name)])


def _delete_policy(aws: Aws, endpoint_name: str, policy: dict[str, Any]) -> None:
    aws.call(
        "application-autoscaling",
        "delete_scaling_policy",
        PolicyName=policy["PolicyName"],
        ServiceNamespace=NAMESPACE,
        ResourceId=resource_id(endpoint_name),
        ScalableDimension=policy["ScalableDimension"],
    )


def remove_scaling(aws: Aws, endpoint_name: str) -> bool:
    """Delete the alarm and the policies, deregister the target; False when none was registered."""
    _delete_alarm(aws, endpoint_name)
    target = scalable_target(aws, endpoint_name)
    if target is None:
        return False
    for policy in scaling_policies(aws, endpoint_name):
        _delete_policy(aws, endpoint_name, policy)
    aws.call(
        "application-autoscaling",
        "deregister_scalable_target",
        ServiceNamespace=NAMESPACE,
        ResourceId=resource_id(endpoint_name),
        ScalableDimension=target["ScalableDimension"],
    )
    return True
