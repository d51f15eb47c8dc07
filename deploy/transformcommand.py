"""``python -m deploy transform``: a batch transform of every object under ``--input``.

A SageMaker transform job made from the definition's model, waited for and reported; or
(``--local``) the same job run here against the archive served in its image or as ``serve``.
"""

from __future__ import annotations

import argparse

from deploy import archives, batchio, batchlocal, batchsettings, images, local
from deploy import transform as transforms
from deploy.aws import Aws
from deploy.commandcontext import connect_aws, read_definition, read_waiting, upload_single
from deploy.definitions import EndpointDefinition
from deploy.dryrun import Plan
from deploy.engines import open_engine
from deploy.errors import DeployError
from deploy.release import Release, check_role, unique_name
from deploy.settings import DeploySettings
from serve.process.probe import free_port


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
    definition = read_definition(args, settings)
    job, count = _transform_job(args, definition)
    if args.local:
        return _transform_here(args, settings, definition, job)
    aws = connect_aws(settings, definition)
    role = settings.require("role_arn", definition.role_arn, str(definition.source))
    image = args.image or images.recorded_image(definition.repository, settings.images_dir).uri
    check_role(aws, role)
    release = Release.of(
        definition, image, upload_single(args, settings, definition, aws).url, role
    )
    name = args.job_name or unique_name(definition.name)
    instance_type = args.instance_type or definition.instance_type
    transforms.create_job(aws, release, job, name, instance_type, count)
    if settings.dry_run or args.no_wait:
        return 0
    waiting = read_waiting(args)
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
