"""``python -m deploy VERB``: build, push, upload, create/update/delete endpoints, invoke, local,
transform.

Errors print one line on stderr (``deploy: ...``) and exit non-zero; no traceback unless
``--verbose``. See docs/deploy.md for the verbs and the endpoint definition format.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
)

from deploy import commands, invokecommand, transformcommand
from deploy.errors import DeployError
from deploy.settings import DeploySettings

logger = logging.getLogger(__name__)

Handler = Callable[[argparse.Namespace, DeploySettings], int]
NO_CREDENTIALS = (
    "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE "
    "(see `aws configure`)"
)
BAD_CREDENTIALS = {"InvalidClientTokenId", "UnrecognizedClientException", "ExpiredToken"}


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    add = common.add_argument
    add("--region", help="AWS region (default AWS_REGION / AWS_DEFAULT_REGION, then [aws] region)")
    add("--role-arn", help="SageMaker execution role (default BYOSERVE_ROLE_ARN)")
    add("--bucket", help="S3 bucket for model archives (default BYOSERVE_BUCKET)")
    add("--endpoints-dir", type=Path, help="where NAME.toml files live (default endpoints/)")
    add("--build-dir", type=Path, help="where pushed image digests are kept (default build/)")
    add("--docker", help="container CLI to use, e.g. docker or podman (default DOCKER)")
    add("--dry-run", action="store_true", help="print the requests that would change anything")
    add("-v", "--verbose", action="store_true", help="log every request; tracebacks on errors")
    return common


def _waiting(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-wait", action="store_true", help="return once requests are made")
    parser.add_argument("--poll", type=float, default=15.0, help="seconds between status checks")
    parser.add_argument("--wait-timeout", type=float, default=3600.0, help="give up after (s)")


def _verb(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    handler: Handler,
    common: argparse.ArgumentParser,
    text: str,
    *,
    named: bool = True,
) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, parents=[common], help=text, description=text)
    if named:
        parser.add_argument(
            "name", metavar="NAME", help="endpoint (endpoints/NAME.toml) or a .toml"
        )
    parser.set_defaults(handler=handler)
    return parser


def _transform_flags(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--input", required=True, metavar="SRC", help="s3://BUCKET/PREFIX (--local: a directory)")
    add("--output", required=True, metavar="DST", help="s3://BUCKET/PREFIX (--local: a directory)")
    add("--content-type", help="ContentType of each request, e.g. application/jsonlines")
    add("--accept", help="Accept of each request, e.g. application/jsonlines")
    add("--split-type", default="None", help="None (an object is a record) or Line")
    add("--batch-strategy", help="SingleRecord or MultiRecord (default: the server's answer)")
    add("--max-payload-mb", type=int, help="largest request, 1-100 MB (default 6)")
    add("--max-concurrent-transforms", type=int, help="requests at once per instance")
    add("--assemble-with", default="None", help="None (answers as they are) or Line")
    add("--instance-type", help="default: the definition's")
    add("--instance-count", type=int, help="1-100 (default: the definition's)")
    add("--archive", type=Path, help="transform with this model.tar.gz instead")
    add("--image", help="image URI (default: the digest `push` recorded; --local: R:latest)")
    add("--job-name", help="TransformJobName (default NAME-<utc time>-<4 hex>)")
    add("--local", action="store_true", help="run the job here against a local server")
    add("--no-docker", action="store_true", help="--local: run python -m serve, no image")
    add("--ready-timeout", type=float, default=300.0, help="--local: seconds for /ping")
    _waiting(parser)


def build_parser() -> argparse.ArgumentParser:
    """The parser for every verb."""
    parser = argparse.ArgumentParser(prog="python -m deploy", description=__doc__)
    common = _common()
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for verb, handler, text in (
        ("build", commands.build, "build the serving image as REPOSITORY:TAG"),
        ("push", commands.push, "push REPOSITORY:TAG to ECR by an immutable tag, record digest"),
    ):
        p = _verb(sub, verb, handler, common, text, named=False)
        p.add_argument("--repository", default="byoserve", help="image/ECR repository name")
        p.add_argument("--tag", default="latest", help="local tag to build or push")
    b = sub.choices["build"]
    b.add_argument("--gpu", action="store_true", help="build Dockerfile.gpu")
    b.add_argument("--dockerfile", help="Dockerfile to build (default Dockerfile)")
    b.add_argument("--context", default=".", help="build context directory")
    b.add_argument("--build-arg", action="append", default=[], metavar="KEY=VALUE")
    b.add_argument("--volume", action="append", default=[], metavar="SRC:DST[:ro]",
                   help="build-time mount (CLI engines), e.g. /opt/wheels:/wheels:ro")  # fmt: skip
    sub.choices["push"].add_argument(
        "--registry", help="push to this registry host instead of ECR's (tests: localhost:PORT)"
    )
    up = _verb(sub, "upload-model", commands.upload_model, common,
               "archive(s) to S3: by content hash, or added to a multi-model endpoint")  # fmt: skip
    up.add_argument("--archive", type=Path,
                    help="model.tar.gz, .mar or model directory instead of the definition's "
                    "(a .mar or directory is repacked into a tar.gz)")  # fmt: skip
    up.add_argument("--name", dest="target_name", metavar="TARGET",  # NAME is the endpoint
                    help="multi-model: the archive's name under the prefix, the TargetModel "
                    "(default: its file name, x.mar as x.tar.gz)")  # fmt: skip
    for verb, existing in (("create-endpoint", False), ("update-endpoint", True)):
        text = "update the endpoint blue/green" if existing else "create or update the endpoint"
        p = _verb(sub, verb, commands.create_endpoint, common, text + ", rollback on failure")
        p.add_argument("--archive", type=Path, help="single-model: model.tar.gz to deploy")
        p.add_argument("--image", help="image URI (default: the digest `push` recorded)")
        p.add_argument("--force", action="store_true", help="new release even if nothing changed")
        p.set_defaults(require_existing=existing)
        _waiting(p)
    _waiting(_verb(sub, "delete-endpoint", commands.delete_endpoint, common,
                   "delete the endpoint, its configs, models and autoscaling"))  # fmt: skip
    scale = _verb(sub, "autoscale", commands.autoscale, common, "target tracking on invocations")
    scale.add_argument("--min", type=int, help="fewest instances")
    scale.add_argument("--max", type=int, help="most instances")
    scale.add_argument("--target", type=float, help="invocations per instance per minute")
    st = _verb(sub, "status", commands.status, common, "endpoint status, config, autoscaling")
    st.add_argument("--json", action="store_true", help="print everything as JSON")
    lg = _verb(sub, "logs", commands.logs, common, "tail of /aws/sagemaker/Endpoints/NAME")
    lg.add_argument("--lines", type=int, default=50, help="how many lines")
    inv = _verb(
        sub, "invoke", invokecommand.invoke_endpoint, common, "send one request, print answer"
    )
    inv.add_argument("--body-file", help="request body file (default: stdin)")
    inv.add_argument("--body", help="request body as a string")
    inv.add_argument("--content-type", default="application/json")
    inv.add_argument("--accept", help="wanted response type")
    inv.add_argument("--custom-attributes", help="X-Amzn-SageMaker-Custom-Attributes")
    inv.add_argument("--target-model", help="multi-model: the archive to invoke, e.g. x.tar.gz")
    inv.add_argument("--endpoint-url", help="a local server, e.g. http://127.0.0.1:8080")
    inv.add_argument("--stream", action="store_true",
                     help="InvokeEndpointWithResponseStream: print the pieces as they arrive "
                     "(not for multi-model endpoints)")  # fmt: skip
    inv.add_argument("--async", dest="asynchronous", action="store_true",
                     help="InvokeEndpointAsync: the body is uploaded to S3 (or give --input), "
                     "the output location is printed")  # fmt: skip
    inv.add_argument("--input", metavar="S3_URL", help="--async: an input already in S3")
    inv.add_argument("--inference-id", help="--async: the request's InferenceId")
    inv.add_argument("--invocation-timeout", type=int, metavar="SECONDS",
                     help="--async: InvocationTimeoutSeconds, 1-3600 (default: the "
                     "definition's [async] invocation_timeout)")  # fmt: skip
    inv.add_argument(
        "--wait",
        action="store_true",
        help="--async: wait for the answer (or the failure) and print it",
    )
    inv.add_argument("--wait-timeout", type=float, default=3600.0,
                     help="--async --wait: give up after (s)")  # fmt: skip
    inv.add_argument("--poll", type=float, default=2.0,
                     help="--async --wait: seconds between looks in S3")  # fmt: skip
    text = "batch transform: a SageMaker job on s3://, or --local here"
    _transform_flags(_verb(sub, "transform", transformcommand.transform, common, text))
    loc = _verb(sub, "local", commands.run_local, common,
                "serve the archive, or every archive of a multi-model endpoint, here")  # fmt: skip
    loc.add_argument("--no-docker", action="store_true", help="run python -m serve, no image")
    loc.add_argument("--port", type=int, help="host port (default: a free one)")
    loc.add_argument("--image", help="local image (default REPOSITORY:latest)")
    loc.add_argument("--archive", type=Path, help="serve this model.tar.gz alone instead")
    loc.add_argument("--ready-timeout", type=float, default=300.0, help="seconds for /ping")
    return parser


def _message(exc: Exception) -> str:
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return NO_CREDENTIALS
    if isinstance(exc, NoRegionError):
        return "no AWS region: pass --region or set AWS_REGION"
    if isinstance(exc, EndpointConnectionError):
        return f"cannot reach AWS: {exc}"
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        if code in BAD_CREDENTIALS:
            return f"AWS rejected the credentials ({code}): check AWS_PROFILE or the access keys"
        return f"AWS {exc.operation_name} failed: {code}: {error.get('Message', '')}"
    return str(exc)


def configure_logging(verbose: bool) -> None:
    """Messages of the deploy package on stderr (the stream of this call: tests swap it)."""
    package = logging.getLogger("deploy")
    for handler in [h for h in package.handlers if getattr(h, "byoserve", False)]:
        package.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.byoserve = True  # type: ignore[attr-defined]
    handler.setFormatter(
        logging.Formatter("%(levelname)s %(name)s: %(message)s" if verbose else "%(message)s")
    )
    package.addHandler(handler)
    package.setLevel(logging.DEBUG if verbose else logging.INFO)
    package.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m deploy``; returns the exit status."""
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    settings = DeploySettings.from_env(
        region=args.region,
        role_arn=args.role_arn,
        bucket=args.bucket,
        endpoints_dir=args.endpoints_dir,
        build_dir=args.build_dir,
        docker=args.docker,
        dry_run=args.dry_run or None,
    )
    handler: Handler = args.handler
    try:
        return handler(args, settings)
    except KeyboardInterrupt:
        print("deploy: interrupted", file=sys.stderr)
        return 130
    except (DeployError, BotoCoreError, ClientError) as exc:
        if args.verbose:
            logger.exception("%s failed", args.verb)
        print(f"deploy: {_message(exc)}", file=sys.stderr)
        return exc.exit_code if isinstance(exc, DeployError) else 1
