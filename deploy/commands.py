"""The endpoint verbs of ``python -m deploy`` (build, push, upload, create/delete, autoscale,
status, logs, local): each takes the parsed flags and the settings, returns 0. ``invoke`` and
``transform`` are in deploy/invokecommand.py and deploy/transformcommand.py."""

from __future__ import annotations

import argparse
import json
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

from deploy import (
    archives,
    asyncfront,
    endpoints,
    hosting,
    images,
    local,
    multimodel,
    scaling,
)
from deploy.aws import Aws, make_client
from deploy.cloudwatch import format_tail
from deploy.commandcontext import connect_aws, read_definition, read_waiting, upload_single
from deploy.definitions import (
    EndpointDefinition,
    TargetArchive,
    check_target_name,
)
from deploy.dryrun import Plan
from deploy.engine import BuildRequest
from deploy.engines import open_engine
from deploy.errors import DeployError
from deploy.hostingtables import Autoscaling
from deploy.release import Release, check_role
from deploy.repack import target_name
from deploy.report import endpoint_report, format_report
from deploy.settings import DeploySettings
from serve.process.probe import free_port


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
    aws = connect_aws(settings, None)
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
    definition = read_definition(args, settings)
    aws = connect_aws(settings, definition)
    if definition.multi_model:
        uploads = _upload_targets(args, settings, definition, aws)
    elif args.target_name:
        raise DeployError(f"--name is for multi-model endpoints, and {definition.source} is not")
    else:
        uploads = [upload_single(args, settings, definition, aws)]
    for uploaded in uploads:
        print(f"{'uploaded' if uploaded.uploaded else 'already there'}: {uploaded.url}")
    return 0


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
        return upload_single(args, settings, definition, aws).url, None
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
    definition = read_definition(args, settings)
    aws = connect_aws(settings, definition)
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
    config = endpoints.deploy_release(aws, release, read_waiting(args), force=args.force)
    if definition.autoscaling is not None and not args.no_wait:
        scaling.apply_scaling(aws, definition.name, definition.autoscaling, definition.hosting)
    if not settings.dry_run:
        print(f"{definition.name} runs {config} (image {image}, model {model_data})")
    return 0


def delete_endpoint(args: argparse.Namespace, settings: DeploySettings) -> int:
    """Delete the endpoint, its autoscaling, and every config and model tagged for it."""
    definition = read_definition(args, settings, required=False)
    aws = connect_aws(settings, definition)
    scaling.remove_scaling(aws, definition.name)
    deleted = endpoints.delete_endpoint(aws, definition.name, read_waiting(args))
    if not settings.dry_run:
        print("\n".join(f"deleted {item}" for item in deleted) or "nothing to delete")
    return 0


def autoscale(args: argparse.Namespace, settings: DeploySettings) -> int:
    """Target tracking, bounds from the definition or flags: on invocations per instance, on
    the queue for an asynchronous endpoint (which may scale to 0), on provisioned concurrency
    utilization for a serverless one."""
    definition = read_definition(args, settings)
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
    aws = connect_aws(settings, definition)
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
    definition = read_definition(args, settings, required=False)
    report = endpoint_report(connect_aws(settings, definition), definition.name)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print("\n".join(format_report(report)))
    return 0


def logs(args: argparse.Namespace, settings: DeploySettings) -> int:
    """The last lines of ``/aws/sagemaker/Endpoints/NAME``."""
    definition = read_definition(args, settings, required=False)
    for line in format_tail(connect_aws(settings, definition), definition.name, args.lines):
        print(line)
    return 0


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
    definition = read_definition(args, settings)
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
