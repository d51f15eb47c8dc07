"""``deploy transform`` on SageMaker: the job as describe_transform_job shows it, the archive
uploaded, the refusals made before any request, dry runs, a failed job's reason and log tail
(moto over HTTP; moto completes jobs at once, and runs no container)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.deploy.conftest import AwsWorld, Result

FAST = ("--poll", "0.01")
S3_IN = "s3://byoserve-test-models/batch/in/"
S3_OUT = "s3://byoserve-test-models/batch/out"
FULL = (
    "--content-type", "application/jsonlines", "--accept", "application/jsonlines",
    "--split-type", "Line", "--batch-strategy", "MultiRecord", "--max-payload-mb", "4",
    "--max-concurrent-transforms", "5", "--assemble-with", "Line",
    "--instance-type", "ml.c5.xlarge", "--instance-count", "3",
)  # fmt: skip


def _transform(cli: Callable[..., Result], *extra: str) -> Result:
    return cli("transform", "demo", "--input", S3_IN, "--output", S3_OUT, *extra)


def _jobs(aws: AwsWorld) -> list[dict[str, Any]]:
    sagemaker = aws.client("sagemaker")
    summaries = sagemaker.list_transform_jobs()["TransformJobSummaries"]
    return [
        sagemaker.describe_transform_job(TransformJobName=item["TransformJobName"])
        for item in summaries
    ]


def test_transform_job_as_describe_shows_it(
    aws: AwsWorld, cli: Callable[..., Result], pushed: str
) -> None:
    from deploy.archives import file_sha256

    s3 = aws.client("s3")
    s3.put_object(Bucket=aws.bucket, Key="batch/out/in.jsonl.out", Body=b'{"label": 1}\n')
    result = _transform(cli, *FULL, *FAST)
    assert result.code == 0, result.err
    [job] = _jobs(aws)
    name = job["TransformJobName"]
    assert name.startswith("demo-") and job["TransformJobStatus"] == "Completed"
    assert job["TransformInput"] == {
        "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": S3_IN}},
        "ContentType": "application/jsonlines",
        "SplitType": "Line",
    }
    assert job["TransformOutput"] == {
        "S3OutputPath": S3_OUT,
        "Accept": "application/jsonlines",
        "AssembleWith": "Line",
    }
    assert job["TransformResources"] == {"InstanceType": "ml.c5.xlarge", "InstanceCount": 3}
    assert job["BatchStrategy"] == "MultiRecord"
    assert job["MaxPayloadInMB"] == 4 and job["MaxConcurrentTransforms"] == 5
    assert job["Environment"] == {"SAGEMAKER_MODEL_SERVER_WORKERS": "1"}
    model = aws.client("sagemaker").describe_model(ModelName=job["ModelName"])
    key = f"models/demo/{file_sha256(aws.archive)}/model.tar.gz"
    assert model["PrimaryContainer"]["Image"] == pushed
    assert model["PrimaryContainer"]["ModelDataUrl"] == f"s3://{aws.bucket}/{key}"
    assert model["ExecutionRoleArn"] == aws.role_arn
    assert s3.get_object(Bucket=aws.bucket, Key=key)["Body"].read() == aws.archive.read_bytes()
    tags = aws.client("sagemaker").list_tags(ResourceArn=job["TransformJobArn"])["Tags"]
    assert {"Key": "byoserve:endpoint", "Value": "demo"} in tags
    assert f"{name}: Completed" in result.out
    assert f"{name}: 1 output object(s)" in result.out
    assert f"s3://{aws.bucket}/batch/out/in.jsonl.out  13 bytes" in result.out


def test_defaults_leave_the_unset_fields_to_sagemaker(
    aws: AwsWorld, cli: Callable[..., Result], pushed: str
) -> None:
    result = _transform(cli, "--no-wait")
    assert result.code == 0, result.err
    [job] = _jobs(aws)
    assert "BatchStrategy" not in job and "MaxPayloadInMB" not in job
    assert "MaxConcurrentTransforms" not in job
    assert job["TransformInput"]["SplitType"] == "None"
    assert job["TransformResources"] == {"InstanceType": "ml.m5.large", "InstanceCount": 2}
    assert "Completed" not in result.out  # not waited for


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (("--max-payload-mb", "101"), "--max-payload-mb must be 1 to 100 (MB), not 101"),
        (("--max-payload-mb", "0"), "--max-payload-mb 0 is SageMaker's HTTP chunked mode"),
        (("--max-concurrent-transforms", "20", "--max-payload-mb", "6"), "x --max-payload-mb 6"),
        (("--max-concurrent-transforms", "17"), "is over 100"),
        (("--max-concurrent-transforms", "0"), "must be at least 1"),
        (("--instance-count", "101"), "--instance-count must be 1 to 100, not 101"),
        (("--instance-count", "0"), "--instance-count must be 1 to 100"),
        (("--split-type", "RecordIO"), "--split-type must be None or Line, not 'RecordIO'"),
        (("--batch-strategy", "Many"), "--batch-strategy must be SingleRecord or MultiRecord"),
        (("--assemble-with", "Comma"), "--assemble-with must be None or Line"),
        (("--batch-strategy", "MultiRecord"), "MultiRecord needs --split-type Line"),
        (("--no-docker",), "--no-docker is for --local"),
    ],
)
def test_refusals_are_one_line_before_any_request(
    aws: AwsWorld, cli: Callable[..., Result], pushed: str, flags: tuple[str, ...], says: str
) -> None:
    result = _transform(cli, *flags)
    assert result.code != 0
    assert result.err.count("\n") == 1 and result.err.startswith("deploy: "), result.err
    assert says in result.err
    _assert_nothing_made(aws)


@pytest.mark.parametrize("which", ["--input", "--output"])
def test_paths_that_are_not_s3_are_refused_without_local(
    aws: AwsWorld, cli: Callable[..., Result], pushed: str, which: str
) -> None:
    paths = {"--input": S3_IN, "--output": S3_OUT, which: "records/"}
    result = cli("transform", "demo", *(item for pair in paths.items() for item in pair))
    assert result.code != 0 and result.err.count("\n") == 1
    assert f"deploy: {which} records/: a SageMaker transform job reads and writes s3://" in (
        result.err
    )
    _assert_nothing_made(aws)


def test_a_multi_model_definition_is_refused(
    aws: AwsWorld, cli: Callable[..., Result], pushed: str
) -> None:
    (aws.endpoints_dir / "many.toml").write_text(
        f'[model]\nmode = "multi-model"\narchives = ["{aws.archive}"]\n'
        '[image]\nrepository = "byoserve-test"\n'
    )
    result = cli("transform", "many", "--input", S3_IN, "--output", S3_OUT)
    assert result.code != 0 and result.err.count("\n") == 1
    assert "is a multi-model definition: a transform job runs one model" in result.err
    _assert_nothing_made(aws)


def _assert_nothing_made(aws: AwsWorld) -> None:
    assert aws.client("sagemaker").list_transform_jobs()["TransformJobSummaries"] == []
    assert aws.client("sagemaker").list_models()["Models"] == []
    assert aws.client("s3").list_objects_v2(Bucket=aws.bucket)["KeyCount"] == 0


def test_dry_run_prints_the_plan_and_creates_nothing(
    aws: AwsWorld, cli: Callable[..., Result], pushed: str
) -> None:
    result = _transform(cli, *FULL, "--dry-run")
    assert result.code == 0, result.err
    assert "DRY-RUN s3 PutObject " in result.out
    assert "DRY-RUN sagemaker CreateModel " in result.out
    line = next(x for x in result.out.splitlines() if "CreateTransformJob" in x)
    assert '"MaxPayloadInMB": 4' in line and '"SplitType": "Line"' in line
    _assert_nothing_made(aws)


def test_a_failed_job_reports_its_reason_and_log_tail(
    aws: AwsWorld, cli: Callable[..., Result], pushed: str, failing_transform_jobs: str
) -> None:
    logs = aws.client("logs")
    group, stream = "/aws/sagemaker/TransformJobs", "nightly-1/i-0abc-AlgorithmError"
    logs.create_log_group(logGroupName=group)
    logs.create_log_stream(logGroupName=group, logStreamName=stream)
    logs.create_log_stream(logGroupName=group, logStreamName="other-job/i-0def")
    now = int(time.time() * 1000)  # CloudWatch refuses events older than 14 days
    events = [
        {"timestamp": now - 2000, "message": "loading the model"},
        {"timestamp": now - 1000, "message": "line 3: expected a text"},
    ]
    logs.put_log_events(logGroupName=group, logStreamName=stream, logEvents=events)
    logs.put_log_events(
        logGroupName=group,
        logStreamName="other-job/i-0def",
        logEvents=[{"timestamp": now, "message": "someone else's"}],
    )
    result = _transform(cli, "--job-name", "nightly-1", *FAST)
    assert result.code == 3
    assert f"nightly-1: Failed: {failing_transform_jobs}" in result.out
    assert f"last log lines of {group}/nightly-1*:" in result.out
    assert f"{stream} loading the model" in result.out
    assert f"{stream} line 3: expected a text" in result.out
    assert "someone else's" not in result.out
    assert result.err == f"deploy: transform job nightly-1 Failed: {failing_transform_jobs}\n"
