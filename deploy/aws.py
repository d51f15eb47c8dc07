"""AWS clients: made in one place, called through one method so ``--dry-run`` can intercept.

boto3 (>= 1.28) reads ``AWS_ENDPOINT_URL`` and ``AWS_ENDPOINT_URL_<SERVICE>`` itself, so the tests
point every client at moto through the environment alone; ``make_client`` adds nothing for it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import boto3
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError

from deploy.dryrun import Plan, is_read_only

logger = logging.getLogger(__name__)

USER_AGENT = "byoserve-deploy"


def make_client(
    service: str,
    region: str | None = None,
    endpoint_url: str | None = None,
    *,
    unsigned: bool = False,
    session: boto3.session.Session | None = None,
) -> Any:
    """A boto3 client with standard retries; ``unsigned`` for a local server needing no keys.

    Pass one ``session`` for several clients: it loads each service model once.
    """
    config = Config(
        retries={"mode": "standard", "max_attempts": 5},
        user_agent_extra=USER_AGENT,
        signature_version=UNSIGNED if unsigned else None,
    )
    session = session or boto3.session.Session()
    return session.client(service, region_name=region, endpoint_url=endpoint_url, config=config)


def error_code(exc: ClientError) -> str:
    """The AWS error code of ``exc`` (``ValidationException``, ``NoSuchKey``, ...)."""
    return str(exc.response.get("Error", {}).get("Code", ""))


class Aws:
    """The AWS requests of one command, honouring ``--dry-run``."""

    def __init__(self, region: str, plan: Plan | None = None) -> None:
        self.region = region
        self.plan = plan
        self._clients: dict[str, Any] = {}
        self._session = boto3.session.Session()

    @property
    def dry_run(self) -> bool:
        return self.plan is not None

    def client(self, service: str) -> Any:
        """The (cached) boto3 client for ``service``."""
        if service not in self._clients:
            self._clients[service] = make_client(service, self.region, session=self._session)
        return self._clients[service]

    def call(self, service: str, operation: str, **params: Any) -> dict[str, Any]:
        """Make one request, or print it when this is a dry run and it would change state."""
        client = self.client(service)
        if self.plan is not None and not is_read_only(operation):
            api_name = client.meta.method_to_api_mapping.get(operation, operation)
            self.plan.record(service, api_name, params)
            return {}
        logger.debug("%s.%s %s", service, operation, params)
        response: dict[str, Any] = getattr(client, operation)(**params)
        return response

    def pages(
        self,
        service: str,
        operation: str,
        key: str,
        *,
        request_token: str = "NextToken",
        response_token: str = "NextToken",
        **params: Any,
    ) -> Iterator[Any]:
        """Every item under ``key`` across the pages of a List* request.

        The page token's names default to ``NextToken``; S3's ``ListObjectsV2`` takes
        ``ContinuationToken`` and answers ``NextContinuationToken``.
        """
        token: str | None = None
        while True:
            extra = {request_token: token} if token else {}
            response = self.call(service, operation, **params, **extra)
            yield from response.get(key, [])
            token = response.get(response_token)
            if not token:
                return

    def objects(self, bucket: str, prefix: str, **params: Any) -> Iterator[dict[str, Any]]:
        """Every object of ``ListObjectsV2`` under ``prefix`` in ``bucket``, across its pages."""
        return self.pages(
            "s3",
            "list_objects_v2",
            "Contents",
            request_token="ContinuationToken",
            response_token="NextContinuationToken",
            Bucket=bucket,
            Prefix=prefix,
            **params,
        )

    def account_id(self) -> str:
        """The caller's account id (moto answers 123456789012)."""
        return str(self.call("sts", "get_caller_identity")["Account"])
