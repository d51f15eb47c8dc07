"""What every verb of ``python -m deploy`` reads from its flags and settings first.

The endpoint's definition, the AWS clients of its region, how long to wait, and the one archive of
a single-model endpoint uploaded: the same for deploy/commands.py, deploy/invokecommand.py and
deploy/transformcommand.py.
"""

from __future__ import annotations

import argparse

from deploy import archives, endpoints
from deploy.aws import Aws
from deploy.definitions import EndpointDefinition, load_definition
from deploy.dryrun import Plan
from deploy.settings import DeploySettings


def connect_aws(settings: DeploySettings, definition: EndpointDefinition | None) -> Aws:
    """The AWS clients for the definition's region (flags and environment first); a dry run
    records its requests instead of sending them."""
    where = str(definition.source) if definition else "the environment"
    region = settings.require("region", definition.region if definition else None, where)
    return Aws(region, Plan() if settings.dry_run else None)


def read_definition(
    args: argparse.Namespace, settings: DeploySettings, *, required: bool = True
) -> EndpointDefinition:
    """The endpoint's definition; verbs that only need the name work without the file."""
    path = settings.endpoints_dir / f"{args.name}.toml"
    if not required and not args.name.endswith(".toml") and not path.exists():
        return EndpointDefinition(name=args.name, source=path)
    return load_definition(args.name, settings.endpoints_dir)


def read_waiting(args: argparse.Namespace) -> endpoints.Waiting:
    """How the verb waits for AWS: ``--poll``, ``--wait-timeout``, unless ``--no-wait``."""
    return endpoints.Waiting(poll=args.poll, timeout=args.wait_timeout, enabled=not args.no_wait)


def upload_single(
    args: argparse.Namespace, settings: DeploySettings, definition: EndpointDefinition, aws: Aws
) -> archives.UploadedArchive:
    """A single-model endpoint's archive (``--archive``, else the definition's) in the bucket."""
    archive = archives.resolve_archive(definition, args.archive, directory=True)
    bucket = settings.require("bucket", definition.bucket, str(definition.source))
    return archives.upload_archive(aws, definition.name, archive, bucket)
