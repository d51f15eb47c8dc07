"""``transform``: a batch transform job, its settings checked as SageMaker would check them.

:class:`TransformJob` holds what ``create_transform_job`` takes; :func:`check_job` refuses, in one
line and before any AWS call, the values SageMaker would refuse (and the few deploy cannot run);
:func:`run_job` creates the model and the job on SageMaker, waits, and reports the output objects
or the failure with the tail of ``/aws/sagemaker/TransformJobs``. ``--local`` runs the same job
here instead (:mod:`deploy.batchlocal`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from deploy.aws import Aws
from deploy.cloudwatch import tail_group
from deploy.definitions import EndpointDefinition
from deploy.endpoints import Waiting
from deploy.errors import DeployError
from deploy.release import ENDPOINT_TAG, Release, create_model
from deploy.s3paths import S3Path

SPLIT_TYPES = ("None", "Line")
STRATEGIES = ("SingleRecord", "MultiRecord")
ASSEMBLIES = ("None", "Line")
MAX_PAYLOAD_MB = 100  # MaxPayloadInMB's bound, and MaxConcurrentTransforms x MaxPayloadInMB's
DEFAULT_PAYLOAD_MB = 6  # SageMaker's, when neither the job nor /execution-parameters says
MAX_INSTANCES = 100
MAX_ENVIRONMENT = 16  # entries in a transform job's Environment
LOG_GROUP = "/aws/sagemaker/TransformJobs"
SETTLED = ("Completed", "Failed", "Stopped")


class TransformFailedError(DeployError):
    """The job failed, or (``--local``) some records did."""

    exit_code = 3


@dataclass(frozen=True, slots=True)
class TransformJob:
    """One batch transform, as ``create_transform_job`` and ``--local`` both take it.

    None means "not given": SageMaker then asks the container's ``/execution-parameters``,
    else uses its defaults (:func:`deploy.batchsettings.resolve` does the same locally).
    """

    input: str
    output: str
    content_type: str | None = None
    accept: str | None = None
    split_type: str = "None"
    batch_strategy: str | None = None
    max_payload_mb: int | None = None
    max_concurrent: int | None = None
    assemble_with: str = "None"
    environment: dict[str, str] = field(default_factory=dict)

    def create_params(
        self, name: str, model: str, instance_type: str, instance_count: int
    ) -> dict[str, Any]:
        """The ``create_transform_job`` parameters (Tags added by the caller)."""
        source = {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": self.input}}
        transform_input: dict[str, Any] = {"DataSource": source, "SplitType": self.split_type}
        transform_output: dict[str, Any] = {
            "S3OutputPath": self.output,
            "AssembleWith": self.assemble_with,
        }
        if self.content_type:
            transform_input["ContentType"] = self.content_type
        if self.accept:
            transform_output["Accept"] = self.accept
        params: dict[str, Any] = {
            "TransformJobName": name,
            "ModelName": model,
            "TransformInput": transform_input,
            "TransformOutput": transform_output,
            "TransformResources": {"InstanceType": instance_type, "InstanceCount": instance_count},
            "Environment": self.environment,
        }
        for key, value in (
            ("BatchStrategy", self.batch_strategy),
            ("MaxPayloadInMB", self.max_payload_mb),
            ("MaxConcurrentTransforms", self.max_concurrent),
        ):
            if value is not None:
                params[key] = value
        return params


def canonical(value: str | None, allowed: tuple[str, ...], flag: str) -> str | None:
    """``value`` spelled as SageMaker spells it (any case, ``_`` ignored), or a refusal."""
    if value is None:
        return None
    for name in allowed:
        if value.replace("_", "").lower() == name.lower():
            return name
    raise DeployError(f"{flag} must be {' or '.join(allowed)}, not {value!r}")


def check_job(job: TransformJob, instance_count: int, *, local: bool) -> None:
    """Refuse, in one line, what SageMaker would refuse (or deploy cannot run).

    Raises:
        DeployError: the first value that cannot be used, and why.
    """
    if not local:
        for flag, url in (("--input", job.input), ("--output", job.output)):
            if not url.startswith("s3://") or len(url) <= len("s3://"):
                raise DeployError(
                    f"{flag} {url}: a SageMaker transform job reads and writes s3:// "
                    "prefixes (run it here with --local for a directory)"
                )
    payload = job.max_payload_mb
    if payload == 0:
        raise DeployError(
            "--max-payload-mb 0 is SageMaker's HTTP chunked mode (built-in algorithms only), "
            f"which deploy transform does not support: give 1 to {MAX_PAYLOAD_MB}"
        )
    if payload is not None and not 1 <= payload <= MAX_PAYLOAD_MB:
        raise DeployError(f"--max-payload-mb must be 1 to {MAX_PAYLOAD_MB} (MB), not {payload}")
    concurrent = job.max_concurrent
    if concurrent is not None and concurrent < 1:
        raise DeployError(f"--max-concurrent-transforms must be at least 1, not {concurrent}")
    if concurrent is not None and concurrent * (payload or DEFAULT_PAYLOAD_MB) > MAX_PAYLOAD_MB:
        raise DeployError(
            f"--max-concurrent-transforms {concurrent} x --max-payload-mb "
            f"{payload or DEFAULT_PAYLOAD_MB} is over {MAX_PAYLOAD_MB}: SageMaker refuses "
            "MaxConcurrentTransforms x MaxPayloadInMB over 100"
        )
    if not 1 <= instance_count <= MAX_INSTANCES:
        raise DeployError(f"--instance-count must be 1 to {MAX_INSTANCES}, not {instance_count}")
    if job.batch_strategy == "MultiRecord" and job.split_type == "None":
        raise DeployError(
            "--batch-strategy MultiRecord needs --split-type Line: with SplitType None each "
            "object is one record"
        )
    if len(job.environment) > MAX_ENVIRONMENT:
        raise DeployError(
            f"a transform job takes at most {MAX_ENVIRONMENT} environment variables; the "
            f"definition's [environment] has {len(job.environment)}"
        )


def check_definition(definition: EndpointDefinition) -> None:
    """A transform job runs one model: a multi-model definition is refused."""
    if definition.multi_model:
        raise DeployError(
            f"{definition.source} is a multi-model definition: a transform job runs one model "
            "(pass --archive to transform with one of its archives)"
        )


def create_job(
    aws: Aws, release: Release, job: TransformJob, name: str, instance_type: str, count: int
) -> dict[str, Any]:
    """Create the model (named as the job) and the job; returns the job's parameters."""
    create_model(aws, release, name)
    params = job.create_params(name, name, instance_type, count)
    params["Tags"] = [{"Key": ENDPOINT_TAG, "Value": release.endpoint}]
    aws.call("sagemaker", "create_transform_job", **params)
    return params


def wait_for_job(aws: Aws, name: str, waiting: Waiting) -> dict[str, Any]:
    """Poll until the job is Completed, Failed or Stopped; one line per status change."""
    start = time.monotonic()
    last = None
    while True:
        found = aws.call("sagemaker", "describe_transform_job", TransformJobName=name)
        status = str(found["TransformJobStatus"])
        elapsed = time.monotonic() - start
        if status != last:
            print(f"[{elapsed:5.0f}s] {name}: {status}", file=waiting.out, flush=True)
            last = status
        if status in SETTLED:
            return found
        if elapsed > waiting.timeout:
            raise TransformFailedError(
                f"{name} still {status} after {waiting.timeout:.0f} s; see "
                f"`aws sagemaker describe-transform-job --transform-job-name {name}`"
            )
        time.sleep(waiting.poll)


def output_objects(aws: Aws, output: str) -> list[tuple[str, int]]:
    """``(s3 url, size)`` of every object under the ``s3://`` prefix ``output``."""
    where = S3Path.parse(output, "--output")
    found = aws.objects(where.bucket, where.key)
    return [(str(S3Path(where.bucket, str(item["Key"]))), int(item["Size"])) for item in found]


def report_job(aws: Aws, found: dict[str, Any], waiting: Waiting) -> None:
    """Completed: the output objects. Otherwise the reason and the log tail, and an error."""
    name, status = found["TransformJobName"], found["TransformJobStatus"]
    out = waiting.out
    if status == "Completed":
        objects = output_objects(aws, found["TransformOutput"]["S3OutputPath"])
        print(f"{name}: {len(objects)} output object(s)", file=out)
        for url, size in objects:
            print(f"  {url}  {size} bytes", file=out)
        out.flush()
        return
    reason = str(found.get("FailureReason") or "no FailureReason given")
    print(f"{name}: {status}: {reason}", file=out)
    print(f"last log lines of {LOG_GROUP}/{name}*:", file=out)
    lines = tail_group(aws, LOG_GROUP, 30, prefix=name) or [f"(no log events for {name})"]
    for line in lines:
        print(f"  {line}", file=out)
    out.flush()
    raise TransformFailedError(f"transform job {name} {status}: {reason}")
