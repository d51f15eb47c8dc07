"""The verbs of ``python -m deploy``: each takes the parsed flags and the settings, returns 0."""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

from deploy import (
    archives,
    asyncfront,
    batchio,
    batchlocal,
    batchsettings,
    endpoints,
    hosting,
    images,
    local,
    multimodel,
    scaling,
)
from deploy import transform as transforms
from deploy.asyncinvoke import (
    AsyncInvocation,
    await_outcome,
    input_location,
    invoke_async,
    upload_input,
)
from deploy.aws import Aws, make_client
from deploy.cloudwatch import format_tail
from deploy.definitions import (
    EndpointDefinition,
    TargetArchive,
    check_target_name,
    load_definition,
)
from deploy.dryrun import Plan
from deploy.engine import BuildRequest
from deploy.engines import open_engine
from deploy.errors import DeployError
from deploy.hostingtables import Autoscaling
from deploy.invoke import Invocation, invoke, invoke_stream, runtime_client
from deploy.release import Release, check_role, unique_name
from deploy.repack import target_name
from deploy.report import endpoint_report, format_report
from deploy.s3paths import S3Path
from deploy.settings import DeploySettings
from serve.process.probe import free_port


def _aws(settings: DeploySettings, definition: EndpointDefinition | None) -> Aws:
    where = str(definition.source) if definition else "the environment"
    region = settings.require("region", definition.region if definition else None, where)
    return Aws(region, Plan() if settings.dry_run else None)


def _definition(
    args: argparse.Namespace, settings: DeploySettings, *, required: bool = True
) -> EndpointDefinition:
    """The endpoint's definition; verbs that only need the name work without the file."""
    path = settings.endpoints_dir / f"{args.name}.toml"
    if not required and not args.name.endswith(".toml") and not path.exists():
        return EndpointDefinition(name=args.name, source=path)
    return load_definition(args.name, settings.endpoints_dir)


def _waiting(args: argparse.Namespace) -> endpoints.Waiting:
    return endpoints.Waiting(poll=args.poll, timeout=args.wait_timeout, enabled=not args.no_wait)


def build(args: argparse.Namespace, settings: DeploySettings) -> int:
    """Build the CPU (or ``--gpu``) image as ``REPOSITORY:TAG``."""
    dockerfile = args.dockerfile or ("Dockerfile.gpu" if args.gpu else "Dockerfile")
    pairs = [item.partition("=") for item in args.build_arg]
    if any(not sep for _, sep, _ in pairs):
        raise DeployError("--build-arg takes KEY=VALUE")
    revision = images.git_revision(Path(args.context))
    request = BuildRequest(
        context=Path(args.context),
        dockerfile=dockerfile,
        tag=f"{args.repository}:{args.tag}",
        build_args={key: value for key, _, value in pairs},
        volumes=tuple(args.volume),
        labels={"org.opencontainers.image.revision": revision} if revision else None,
    )
    engine = open_engine(settings.docker, settings.docker_host)
    image_id = images.build_image(engine, request, Plan() if settings.dry_run else None)
    if image_id:
        print(f"built {request.tag} {image_id}")
    return 0


def push(args: argparse.Namespace, settings: DeploySettings) -> int:
    """Push ``REPOSITORY:TAG`` to ECR under an immutable tag and record its digest."""
    aws = _aws(settings, None)
    engine = open_engine(settings.docker, settings.docker_host)
    local_image = f"{args.repository}:{args.tag}"
    pushed = images.push_image(
        aws, engine, local_image, args.repository, settings.images_dir, args.registry
    )
    if pushed:
        print(f"pushed {pushed.uri}")
        print(f"recorded in {settings.images_dir / (args.repository + '.json')}")
    return 0


def upload_model(args: argparse.Namespace, settings: DeploySettings) -> int:
    """Upload the endpoint's archive(s) to S3, unless the same bytes are there.

    Single-model: under the content hash. Multi-model: by name under the prefix the endpoint
    serves (the definition's before it exists); the endpoint itself is not touched.
    """
    definition = _definition(args, settings)
    aws = _aws(settings, definition)
    if definition.multi_model:
        uploads = _upload_targets(args, settings, definition, aws)
    elif args.target_name:
        raise DeployError(f"--name is for multi-model endpoints, and {definition.source} is not")
    else:
        uploads = [_upload(args, settings, definition, aws)]
    for uploaded in uploads:
        print(f"{'uploaded' if uploaded.uploaded else 'already there'}: {uploaded.url}")
    return 0


def _upload(
    args: argparse.Namespace, settings: DeploySettings, definition: EndpointDefinition, aws: Aws
) -> archives.UploadedArchive:
    archive = archives.resolve_archive(definition, args.archive, directory=True)
    bucket = settings.require("bucket", definition.bucket, str(definition.source))
    return archives.upload_archive(aws, definition.name, archive, bucket)


def _prefix(settings: DeploySettings, definition: EndpointDefinition) -> multimodel.ModelPrefix:
    bucket = settings.require("bucket", definition.bucket, str(definition.source))
    return multimodel.ModelPrefix.of(bucket, definition.name)


def _upload_targets(
    args: argparse.Namespace, settings: DeploySettings, definition: EndpointDefinition, aws: Aws
) -> list[archives.UploadedArchive]:
    """``--archive`` (as ``--name``), else every archive of the definition, under the prefix."""
    prefix = multimodel.live_prefix(aws, definition.name) or _prefix(settings, definition)
    if args.archive is None:
        if args.target_name:
            raise DeployError("--name names the --archive to add; pass both")
        uploads = list(multimodel.upload_targets(aws, definition, prefix).values())
    else:
        archive = archives.existing_archive(args.archive, "check --archive", directory=True)
        name = check_target_name(args.target_name or target_name(archive), "--name")
        target = TargetArchive(archive, name)
        uploads = [multimodel.upload_target(aws, definition.name, target, prefix)]
    multimodel.warn_replaced(uploads)
    return uploads


def _model_data(
    args: argparse.Namespace, settings: DeploySettings, definition: EndpointDefinition, aws: Aws
) -> tuple[str, dict[str, str] | None]:
    """Upload what the endpoint serves: its ``ModelDataUrl``, and multi-model, the targets."""
    if not definition.multi_model:
        return _upload(args, settings, definition, aws).url, None
    if args.archive:
        raise DeployError(
            f"--archive is for single-model endpoints: list archives under [model] in "
            f"{definition.source}, or add one with upload-model"
        )
    prefix = _prefix(settings, definition)
    multimodel.warn_if_moved(aws, definition.name, prefix)
    uploaded = multimodel.upload_targets(aws, definition, prefix)
    return prefix.url, {name: item.sha256 for name, item in uploaded.items()}


def create_endpoint(args: argparse.Namespace, settings: DeploySettings) -> int:
    """Upload, then create the endpoint or move it to the new release; wait; autoscale."""
    definition = _definition(args, settings)
    aws = _aws(settings, definition)
    found = endpoints.describe_endpoint(aws, definition.name)
    if args.require_existing and found is None:
        raise DeployError(f"no endpoint {definition.name}: use create-endpoint first")
    role = settings.require("role_arn", definition.role_arn, str(definition.source))
    image = args.image or images.recorded_image(definition.repository, settings.images_dir).uri
    if definition.serverless is not None:
        if found is not None:
            hosting.check_mode_change(aws, definition, found)
        hosting.check_serverless_image(aws, image)
    bucket = settings.bucket or definition.bucket
    if definition.async_inference is not None:  # a missing bucket is told before any upload
        hosting.async_inference_config(definition.async_inference, bucket, definition.name)
    check_role(aws, role)
    model_data, targets = _model_data(args, settings, definition, aws)
    release = Release.of(definition, image, model_data, role, targets, bucket)
    config = endpoints.deploy_release(aws, release, _waiting(args), force=args.force)
    if definition.autoscaling is not None and not args.no_wait:
        scaling.apply_scaling(aws, definition.name, definition.autoscaling, definition.hosting)
    if not settings.dry_run:
        print(f"{definition.name} runs {config} (image {image}, model {model_data})")
    return 0


def delete_endpoint(args: argparse.Namespace, settings: DeploySettings) -> int:
    """Delete the endpoint, its autoscaling, and every config and model tagged for it."""
    definition = _definition(args, settings, required=False)
    aws = _aws(settings, definition)
    scaling.remove_scaling(aws, definition.name)
    deleted = endpoints.delete_endpoint(aws, definition.name, _waiting(args))
    if not settings.dry_run:
        print("\n".join(f"deleted {item}" for item in deleted) or "nothing to delete")
    return 0


def autoscale(args: argparse.Namespace, settings: DeploySettings) -> int:
    """Target tracking, bounds from the definition or flags: on invocations per instance, on
    the queue for an asynchronous endpoint (which may scale to 0), on provisioned concurrency
    utilization for a serverless one."""
    definition = _definition(args, settings)
    hosting_mode = definition.hosting
    base = definition.autoscaling or Autoscaling()
    target_field = {
        "async": "target_backlog_per_instance",
        "serverless": "target_provisioned_concurrency_utilization",
    }.get(hosting_mode, "target_invocations_per_instance")
    bounds = replace(
        base,
        min_capacity=base.min_capacity if args.min is None else args.min,
        max_capacity=args.max or base.max_capacity,
        **({target_field: args.target} if args.target else {}),
    )
    _check_bounds(definition, bounds)
    aws = _aws(settings, definition)
    if endpoints.describe_endpoint(aws, definition.name) is None:
        raise DeployError(f"no endpoint {definition.name}: run create-endpoint first")
    scaling.apply_scaling(aws, definition.name, bounds, hosting_mode)
    if not settings.dry_run:
        what = {
            "async": "requests waiting per instance",
            "serverless": "provisioned concurrency in use",
        }.get(hosting_mode, "invocations per instance per minute")
        unit = "provisioned concurrency" if hosting_mode == "serverless" else "instances"
        print(
            f"{scaling.resource_id(definition.name)}: {bounds.min_capacity}-"
            f"{bounds.max_capacity} {unit}, target {getattr(bounds, target_field):g} {what}"
        )
    return 0


def _check_bounds(definition: EndpointDefinition, bounds: Autoscaling) -> None:
    """What ``autoscale``'s flags may ask of the endpoint's hosting mode."""
    if bounds.min_capacity == 0 and definition.async_inference is None:
        raise DeployError("--min 0 (scaling to zero) is for [async] endpoints only")
    if not 0 <= bounds.min_capacity <= bounds.max_capacity:
        raise DeployError("need 0 <= --min <= --max")
    serverless = definition.serverless
    if serverless is not None and serverless.provisioned_concurrency is None:
        raise DeployError(
            f"{definition.name} is serverless: only provisioned concurrency scales; set "
            f"[serverless] provisioned_concurrency in {definition.source}"
        )
    if serverless is not None and bounds.max_capacity > serverless.max_concurrency:
        raise DeployError(
            f"--max {bounds.max_capacity}: provisioned concurrency goes up to [serverless] "
            f"max_concurrency ({serverless.max_concurrency})"
        )


def status(args: argparse.Namespace, settings: DeploySettings) -> int:
    """Endpoint status, config, model (mode, data, targets), autoscaling; ``--json`` for all."""
    definition = _definition(args, settings, required=False)
    report = endpoint_report(_aws(settings, definition), definition.name)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print("\n".join(format_report(report)))
    return 0


def logs(args: argparse.Namespace, settings: DeploySettings) -> int:
    """The last lines of ``/aws/sagemaker/Endpoints/NAME``."""
    definition = _definition(args, settings, required=False)
    for line in format_tail(_aws(settings, definition), definition.name, args.lines):
        print(line)
    return 0


def invoke_endpoint(args: argparse.Namespace, settings: DeploySettings) -> int:
    """One request; the response body goes to stdout as is (``--stream``: each piece as it
    arrives)."""
    definition = _definition(args, settings, required=False)
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


def _local_source(
    args: argparse.Namespace, definition: EndpointDefinition
) -> tuple[dict[str, Any], AbstractContextManager[local.ModelSource]]:
    """What ``local`` serves, as a dry run shows it, and the source to serve: the archive, or
    a multi-model endpoint's archives in a temporary model store (made on entering it)."""
    if definition.multi_model and args.archive is None:
        targets = multimodel.existing_targets(definition)
        shown = {"model_store": {target.name: str(target.path) for target in targets}}
        return shown, local.model_store(targets)
    archive = archives.resolve_archive(definition, args.archive)
    return {"archive": str(archive)}, nullcontext(local.ModelSource(archive))


def run_local(args: argparse.Namespace, settings: DeploySettings) -> int:
    """Serve the endpoint here, in its image or ``--no-docker`` with ``serve``: its archive, or
    every archive of a multi-model endpoint, each loaded when a request first names it; an
    asynchronous one behind the asynchronous front (deploy/asyncfront.py) on ``--port``. The
    server gets the environment it gets on SageMaker: its hosting mode's defaults (the async
    limits, the serverless switch) under ``[environment]``."""
    definition = _definition(args, settings)
    shown, serving = _local_source(args, definition)
    port = args.port or free_port()
    front = asyncfront.AsyncEndpoint.of(definition, settings.bucket or definition.bucket)
    if settings.dry_run:
        extra = {"async": front.shown()} if front else {}
        Plan().record("local", "run", {**shown, "port": port, **extra})
        return 0
    environment, timeout = hosting.container_environment(definition), args.ready_timeout
    server_port = free_port() if front else port
    with serving as source:
        if args.no_docker:
            server = local.subprocess_server(source, server_port, environment, timeout)
        else:
            engine = open_engine(settings.docker, settings.docker_host)
            image = args.image or f"{definition.repository}:latest"
            server = local.container_server(
                engine, image, source, server_port, environment, timeout
            )
        if front:
            s3 = make_client("s3", settings.region or definition.region)
            server = asyncfront.fronted(server, front, port, s3)
        local.serve_here(server)
    return 0


def _transform_job(
    args: argparse.Namespace, definition: EndpointDefinition
) -> tuple[transforms.TransformJob, int]:
    """The job the flags describe, and its instance count; refused here, before any request."""
    job = transforms.TransformJob(
        input=args.input,
        output=args.output,
        content_type=args.content_type,
        accept=args.accept,
        split_type=transforms.canonical(args.split_type, transforms.SPLIT_TYPES, "--split-type")
        or "None",
        batch_strategy=transforms.canonical(
            args.batch_strategy, transforms.STRATEGIES, "--batch-strategy"
        ),
        max_payload_mb=args.max_payload_mb,
        max_concurrent=args.max_concurrent_transforms,
        assemble_with=transforms.canonical(
            args.assemble_with, transforms.ASSEMBLIES, "--assemble-with"
        )
        or "None",
        environment=dict(definition.environment),
    )
    count = definition.instance_count if args.instance_count is None else args.instance_count
    transforms.check_job(job, count, local=args.local)
    if args.no_docker and not args.local:
        raise DeployError("--no-docker is for --local: a SageMaker job runs the image")
    if args.archive is None:
        transforms.check_definition(definition)
    return job, count


def transform(args: argparse.Namespace, settings: DeploySettings) -> int:
    """A batch transform of every object under ``--input``: a SageMaker job (created from the
    definition's model, waited for, reported), or ``--local`` the same job here."""
    definition = _definition(args, settings)
    job, count = _transform_job(args, definition)
    if args.local:
        return _transform_here(args, settings, definition, job)
    aws = _aws(settings, definition)
    role = settings.require("role_arn", definition.role_arn, str(definition.source))
    image = args.image or images.recorded_image(definition.repository, settings.images_dir).uri
    check_role(aws, role)
    release = Release.of(definition, image, _upload(args, settings, definition, aws).url, role)
    name = args.job_name or unique_name(definition.name)
    instance_type = args.instance_type or definition.instance_type
    transforms.create_job(aws, release, job, name, instance_type, count)
    if settings.dry_run or args.no_wait:
        return 0
    waiting = _waiting(args)
    transforms.report_job(aws, transforms.wait_for_job(aws, name, waiting), waiting)
    return 0


def _transform_here(
    args: argparse.Namespace,
    settings: DeploySettings,
    definition: EndpointDefinition,
    job: transforms.TransformJob,
) -> int:
    """``--local``: the archive served here (image, or ``--no-docker``), the job run against it."""
    archive = archives.resolve_archive(definition, args.archive)
    environment = {**definition.environment, **batchsettings.server_environment(job)}
    if settings.dry_run:
        shown = {"archive": str(archive), "input": job.input, "output": job.output}
        Plan().record("local", "transform", {**shown, "environment": environment})
        return 0
    uses_s3 = any(url.startswith("s3://") for url in (job.input, job.output))
    # S3 redirects a request for a bucket in another region: any region reaches it.
    region = settings.region or definition.region or "us-east-1"
    aws = Aws(region, None) if uses_s3 else None
    inputs, output = batchio.open_store(job.input, aws), batchio.open_store(job.output, aws)
    names = inputs.names()
    source, port = local.ModelSource(archive), free_port()
    if args.no_docker:
        server = local.subprocess_server(source, port, environment, args.ready_timeout)
    else:
        engine = open_engine(settings.docker, settings.docker_host)
        image = args.image or f"{definition.repository}:latest"
        server = local.container_server(
            engine, image, source, port, environment, args.ready_timeout
        )
    with server as started:
        summary = batchlocal.run_job(job, started.url, inputs, names, output)
    for line in summary.lines():
        print(line)
    if summary.failures:
        raise transforms.TransformFailedError(
            f"{len(summary.failures)} of {summary.records} records failed (listed above); "
            f"the others' answers are in {output.url}"
        )
    return 0
