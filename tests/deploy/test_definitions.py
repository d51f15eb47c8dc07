"""Endpoint definitions' ``[async]``, ``[serverless]`` and ``[autoscaling]`` tables: values and
refusals, parsed from TOML text as ``load_definition`` reads it (no AWS)."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy.definitions import EndpointDefinition, load_definition
from deploy.hostingtables import AsyncInference, Serverless
from deploy.tomltables import DefinitionError

TOPIC = "arn:aws:sns:us-east-1:123456789012:answers"
MODEL = '[model]\narchive = "build/m.tar.gz"\n'


def _load(tmp_path: Path, text: str, name: str = "ep") -> EndpointDefinition:
    endpoints = tmp_path / "endpoints"
    endpoints.mkdir(exist_ok=True)
    (endpoints / f"{name}.toml").write_text(MODEL + text)
    return load_definition(name, endpoints)


def _refused(tmp_path: Path, text: str) -> str:
    with pytest.raises(DefinitionError) as caught:
        _load(tmp_path, text)
    message = str(caught.value)
    assert "\n" not in message
    return message


# --- [async] ---------------------------------------------------------------------------------


def test_an_empty_async_table_means_async_with_every_default(tmp_path: Path) -> None:
    definition = _load(tmp_path, "[async]\n")
    assert definition.hosting == "async"
    assert definition.async_inference == AsyncInference()
    assert definition.async_inference.invocation_timeout == 900
    assert definition.async_inference.output_prefix("b", "ep") == "s3://b/async/ep/output"
    assert definition.async_inference.failure_prefix("b", "ep") == "s3://b/async/ep/failures"


def test_every_async_key_is_read(tmp_path: Path) -> None:
    definition = _load(
        tmp_path,
        f"""[async]
output_path = "s3://x/out/"
failure_path = "s3://x/failed"
success_topic = "{TOPIC}"
error_topic = "{TOPIC}-errors"
include_response_in = ["success", "error", "SUCCESS_NOTIFICATION_TOPIC"]
max_concurrent_invocations_per_instance = 1000
invocation_timeout = 3600
""",
    )
    spec = definition.async_inference
    assert spec == AsyncInference(
        output_path="s3://x/out/",
        failure_path="s3://x/failed",
        success_topic=TOPIC,
        error_topic=f"{TOPIC}-errors",
        include_response_in=("SUCCESS_NOTIFICATION_TOPIC", "ERROR_NOTIFICATION_TOPIC"),
        max_concurrent_invocations_per_instance=1000,
        invocation_timeout=3600,
    )
    assert spec.output_prefix(None, "ep") == "s3://x/out"


def test_the_default_output_needs_a_bucket(tmp_path: Path) -> None:
    spec = _load(tmp_path, "[async]\n").async_inference
    assert spec is not None
    with pytest.raises(DefinitionError, match=r"output_path.*bucket"):
        spec.output_prefix(None, "ep")


@pytest.mark.parametrize(
    ("table", "words"),
    [
        ('output_path = "/tmp/out"', ("output_path", "s3://")),
        ("output_path = 3", ("output_path", "str")),
        ('failure_path = "https://x"', ("failure_path", "s3://")),
        ('success_topic = "answers"', ("success_topic", "SNS topic ARN")),
        ('include_response_in = ["both"]', ("include_response_in", "'both'")),
        ('include_response_in = ["success"]', ("include_response_in", "success_topic")),
        ('include_response_in = "success"', ("include_response_in", "list")),
        ("max_concurrent_invocations_per_instance = 0", ("1-1000", "not 0")),
        ("max_concurrent_invocations_per_instance = 1001", ("1-1000",)),
        ("invocation_timeout = 0", ("invocation_timeout", "1-3600")),
        ("invocation_timeout = 3601", ("invocation_timeout", "1-3600")),
        ("invocation_timeout = true", ("invocation_timeout", "int")),
        ("timeout = 5", ("unknown key", "timeout")),
    ],
)
def test_async_values_refused(tmp_path: Path, table: str, words: tuple[str, ...]) -> None:
    message = _refused(tmp_path, f"[async]\n{table}\n")
    assert "[async]" in message
    for word in words:
        assert word in message


def test_async_must_be_a_table(tmp_path: Path) -> None:
    endpoints = tmp_path / "endpoints"
    endpoints.mkdir()
    (endpoints / "ep.toml").write_text("async = 1\n" + MODEL)
    with pytest.raises(DefinitionError, match=r"\[async\] must be a table"):
        load_definition("ep", endpoints)


# --- [serverless] ----------------------------------------------------------------------------


@pytest.mark.parametrize("memory", [1024, 2048, 3072, 4096, 5120, 6144])
def test_serverless_memory_sizes(tmp_path: Path, memory: int) -> None:
    definition = _load(tmp_path, f"[serverless]\nmemory_mb = {memory}\nmax_concurrency = 200\n")
    assert definition.serverless == Serverless(memory, 200)
    assert definition.hosting == "serverless"


def test_serverless_with_provisioned_concurrency(tmp_path: Path) -> None:
    text = "[serverless]\nmemory_mb = 1024\nmax_concurrency = 4\nprovisioned_concurrency = 4\n"
    assert _load(tmp_path, text).serverless == Serverless(1024, 4, 4)


@pytest.mark.parametrize(
    ("table", "words"),
    [
        ("max_concurrency = 1", ("memory_mb", "1024, 2048")),
        ("memory_mb = 1000\nmax_concurrency = 1", ("memory_mb", "not 1000")),
        ("memory_mb = 8192\nmax_concurrency = 1", ("memory_mb", "6144")),
        ("memory_mb = 1024", ("max_concurrency",)),
        ("memory_mb = 1024\nmax_concurrency = 0", ("max_concurrency", "1-200")),
        ("memory_mb = 1024\nmax_concurrency = 201", ("max_concurrency", "1-200")),
        (
            "memory_mb = 1024\nmax_concurrency = 2\nprovisioned_concurrency = 3",
            ("provisioned_concurrency", "1-2"),
        ),
        (
            "memory_mb = 1024\nmax_concurrency = 2\nprovisioned_concurrency = 0",
            ("provisioned_concurrency",),
        ),
        ("memory_mb = 1024\nmax_concurrency = 2\nmemory = 1", ("unknown key", "memory")),
    ],
)
def test_serverless_values_refused(tmp_path: Path, table: str, words: tuple[str, ...]) -> None:
    message = _refused(tmp_path, f"[serverless]\n{table}\n")
    for word in words:
        assert word in message


SERVERLESS = "[serverless]\nmemory_mb = 1024\nmax_concurrency = 2\n"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("[async]\n", ("[serverless] and [async]",)),
        ('[image]\ndockerfile = "Dockerfile.gpu"\n', ("no GPU", "Dockerfile.gpu")),
        ('[endpoint]\ninstance_type = "ml.p4d.24xlarge"\n', ("ml.p4d.24xlarge",)),
        ('[endpoint]\ninstance_type = "ml.inf2.xlarge"\n', ("ml.inf2.xlarge",)),
        ("[autoscaling]\nmax_capacity = 2\n", ("scales only provisioned concurrency",)),
    ],
)
def test_what_serverless_cannot_do(tmp_path: Path, text: str, words: tuple[str, ...]) -> None:
    message = _refused(tmp_path, SERVERLESS + text)
    for word in words:
        assert word in message


def test_serverless_multi_model_is_refused(tmp_path: Path) -> None:
    endpoints = tmp_path / "endpoints"
    endpoints.mkdir()
    (endpoints / "ep.toml").write_text(
        '[model]\nmode = "multi-model"\narchives = ["a.tar.gz"]\n' + SERVERLESS
    )
    with pytest.raises(DefinitionError, match="serverless endpoint cannot be multi-model"):
        load_definition("ep", endpoints)


def test_serverless_ignores_a_cpu_instance_type(tmp_path: Path) -> None:
    definition = _load(tmp_path, SERVERLESS + '[endpoint]\ninstance_type = "ml.c5.xlarge"\n')
    assert definition.hosting == "serverless"


# --- [autoscaling] by hosting mode -----------------------------------------------------------


def test_async_may_scale_to_zero_on_its_backlog(tmp_path: Path) -> None:
    text = "[async]\n[autoscaling]\nmin_capacity = 0\nmax_capacity = 3\n"
    text += "target_backlog_per_instance = 2.5\n"
    scaling = _load(tmp_path, text).autoscaling
    assert scaling is not None
    assert (scaling.min_capacity, scaling.max_capacity) == (0, 3)
    assert scaling.target_backlog_per_instance == 2.5


def test_serverless_scales_provisioned_concurrency(tmp_path: Path) -> None:
    text = SERVERLESS + "provisioned_concurrency = 1\n[autoscaling]\nmax_capacity = 2\n"
    text += "target_provisioned_concurrency_utilization = 0.7\n"
    scaling = _load(tmp_path, text).autoscaling
    assert scaling is not None and scaling.target_provisioned_concurrency_utilization == 0.7


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("[autoscaling]\nmin_capacity = 0\nmax_capacity = 2\n", ("[async] endpoints only",)),
        ("[autoscaling]\nmax_capacity = 0\n", ("min_capacity <= max_capacity",)),
        ("[autoscaling]\nmin_capacity = -1\nmax_capacity = 2\n", ("0 <= min_capacity",)),
        (
            "[autoscaling]\ntarget_backlog_per_instance = 3\n",
            ("target_backlog_per_instance", "real-time"),
        ),
        (
            "[async]\n[autoscaling]\ntarget_invocations_per_instance = 3\n",
            ("target_invocations_per_instance", "async", "target_backlog_per_instance"),
        ),
        (
            SERVERLESS + "provisioned_concurrency = 1\n[autoscaling]\nmax_capacity = 3\n",
            ("at most [serverless] max_concurrency (2)",),
        ),
        (
            SERVERLESS + "provisioned_concurrency = 1\n[autoscaling]\nmin_capacity = 0\n",
            ("[async] endpoints only",),
        ),
        (
            SERVERLESS + "provisioned_concurrency = 1\n[autoscaling]\n"
            "target_provisioned_concurrency_utilization = 1.5\n",
            ("0.1-0.9",),
        ),
    ],
)
def test_autoscaling_refused_by_mode(tmp_path: Path, text: str, words: tuple[str, ...]) -> None:
    message = _refused(tmp_path, text)
    assert "[autoscaling]" in message
    for word in words:
        assert word in message


def test_real_time_is_what_a_definition_without_either_table_is(tmp_path: Path) -> None:
    definition = _load(tmp_path, "[autoscaling]\nmin_capacity = 1\nmax_capacity = 2\n")
    assert definition.hosting == "real-time"
    assert definition.async_inference is None and definition.serverless is None
