"""``python -m deploy invoke``: one request to an endpoint, answered on stdout.

A real-time endpoint's answer as one body or (``--stream``) piece by piece; an asynchronous one's
input put in S3 and ``InvokeEndpointAsync`` made, with ``--wait`` its answer fetched from S3.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from deploy.asyncinvoke import (
    AsyncInvocation,
    await_outcome,
    input_location,
    invoke_async,
    upload_input,
)
from deploy.aws import make_client
from deploy.commandcontext import read_definition
from deploy.definitions import EndpointDefinition
from deploy.dryrun import Plan
from deploy.errors import DeployError
from deploy.invoke import Invocation, invoke, invoke_stream, runtime_client
from deploy.s3paths import S3Path
from deploy.settings import DeploySettings


def invoke_endpoint(args: argparse.Namespace, settings: DeploySettings) -> int:
    """One request; the response body goes to stdout as is (``--stream``: each piece as it
    arrives)."""
    definition = read_definition(args, settings, required=False)
    if args.asynchronous:
        return _invoke_async(args, settings, definition)
    if args.input or args.wait or args.inference_id or args.invocation_timeout:
        raise DeployError("--input, --inference-id, --invocation-timeout, --wait go with --async")
    region = settings.region or definition.region
    if args.endpoint_url is None:
        region = settings.require("region", definition.region, str(definition.source))
        if args.stream and definition.multi_model:
            raise DeployError(f"{definition.name} is a multi-model endpoint: it cannot stream")
        _check_target_model(definition, args.target_model)
    body = args.body.encode() if args.body is not None else _read_body(args.body_file)
    request = Invocation(
        body, args.content_type, args.accept, args.custom_attributes, args.target_model
    )
    operation, params = (
        ("InvokeEndpointWithResponseStream", request.stream_params(definition.name))
        if args.stream
        else ("InvokeEndpoint", request.params(definition.name))
    )
    if settings.dry_run:
        Plan().record("sagemaker-runtime", operation, params)
        return 0
    client = runtime_client(region, args.endpoint_url)
    if args.stream:
        output = _StreamOutput()
        try:
            answer = invoke_stream(client, definition.name, request, output.write)
        finally:
            output.end_line()
    else:
        answer = invoke(client, definition.name, request)
        sys.stdout.buffer.write(answer.body)
        sys.stdout.buffer.write(b"\n" if not answer.body.endswith(b"\n") else b"")
        sys.stdout.flush()
    if answer.custom_attributes:
        print(f"custom attributes: {answer.custom_attributes}", file=sys.stderr)
    return 0


def _invoke_async(
    args: argparse.Namespace, settings: DeploySettings, definition: EndpointDefinition
) -> int:
    """``invoke --async``: the input uploaded (or ``--input``), ``InvokeEndpointAsync``, the
    locations printed; with ``--wait``, the answer (stdout) or the failure (an error)."""
    if args.stream or args.target_model:
        raise DeployError("--async takes neither --stream nor --target-model")
    if args.input and (args.body is not None or args.body_file is not None):
        raise DeployError("--async takes the input from --input or from --body/--body-file")
    region = settings.region or definition.region
    if args.endpoint_url is None:
        region = settings.require("region", definition.region, str(definition.source))
    s3 = make_client("s3", region)
    plan = Plan() if settings.dry_run else None
    location = args.input or _upload_async_input(args, settings, definition, s3, plan)
    S3Path.parse(location, "--input")
    timeout = args.invocation_timeout or (
        definition.async_inference.invocation_timeout if definition.async_inference else None
    )
    request = AsyncInvocation(location, args.content_type, args.accept, args.custom_attributes,
                              args.inference_id, timeout)  # fmt: skip
    if plan is not None:
        plan.record("sagemaker-runtime", "InvokeEndpointAsync", request.params(definition.name))
        return 0
    receipt = invoke_async(runtime_client(region, args.endpoint_url), definition.name, request)
    where = sys.stderr if args.wait else sys.stdout
    print(f"inference {receipt.inference_id}", file=where)
    print(f"output: {receipt.output_location}", file=where)
    if receipt.failure_location:
        print(f"failure: {receipt.failure_location}", file=where, flush=True)
    if args.wait:
        answer = await_outcome(s3, receipt, args.wait_timeout, args.poll)
        sys.stdout.buffer.write(answer + (b"" if answer.endswith(b"\n") else b"\n"))
        sys.stdout.flush()
    return 0


def _upload_async_input(
    args: argparse.Namespace,
    settings: DeploySettings,
    definition: EndpointDefinition,
    s3: Any,
    plan: Plan | None,
) -> str:
    """The request body put in S3 for ``--async``: under the bucket (flags, environment, the
    definition), else the bucket of the definition's ``[async] output_path``."""
    table = definition.async_inference
    bucket = settings.bucket or definition.bucket
    if bucket is None and table is not None and table.output_path:
        bucket = S3Path.parse(table.output_path, "[async] output_path").bucket
    if bucket is None:
        raise DeployError(
            "--async needs its input in S3: pass --input s3://..., or a bucket to upload the "
            "body to (--bucket, BYOSERVE_BUCKET or [aws] bucket)"
        )
    body = args.body.encode() if args.body is not None else _read_body(args.body_file)
    where = input_location(bucket, definition.name)
    if plan is not None:
        plan.record("s3", "PutObject", {"Bucket": where.bucket, "Key": where.key, "Body": body})
        return str(where)
    return upload_input(s3, where, body, args.content_type)


class _StreamOutput:
    """stdout for a stream: each piece written and flushed at once; the last line ended."""

    def __init__(self) -> None:
        self.last = b"\n"

    def write(self, piece: bytes) -> None:
        if piece:
            sys.stdout.buffer.write(piece)
            sys.stdout.flush()
            self.last = piece[-1:]

    def end_line(self) -> None:
        if self.last != b"\n":
            sys.stdout.buffer.write(b"\n")
            sys.stdout.flush()


def _check_target_model(definition: EndpointDefinition, target_model: str | None) -> None:
    """A multi-model endpoint on SageMaker refuses a request that names no target."""
    if definition.multi_model and not target_model:
        names = ", ".join(target.name for target in definition.targets)
        raise DeployError(
            f"{definition.name} is a multi-model endpoint: pass --target-model, e.g. one of {names}"
        )


def _read_body(path: str | None) -> bytes:
    if path is None or path == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise DeployError(f"cannot read the request body {path}: {exc.strerror}") from exc
