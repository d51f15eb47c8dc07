"""moto's SageMaker endpoints, moved through the states SageMaker moves them through.

moto 5.2 makes an endpoint ``InService`` the moment it is created, deletes it the moment it is
deleted, and has no ``UpdateEndpoint`` at all, so a wait loop tested against it never loops. The
moto server runs in the test process, so its backend can be patched: with :func:`install`, an
endpoint is ``Creating`` (``Updating``, ``Deleting``) for the next ``in_transit``
``DescribeEndpoint`` calls and only then settles. Steps are counted in calls, not seconds: the
tests wait on what the deploy code does, never on a clock.

How it settles is set on the :class:`Lifecycle` a test gets:

* ``create_failure``: endpoints created from now on end ``Failed`` with that reason;
* ``update_outcomes``: each update takes the next one: ``"reverted"`` (SageMaker's usual failed
  update: the endpoint is ``InService`` again on the previous config, with a ``FailureReason``)
  or ``"failed"`` (the endpoint ends ``Failed`` on the new config); an update with none left
  succeeds;
* ``stuck``: nothing settles any more (for ``--wait-timeout``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from moto.core.responses import ActionResult
from moto.sagemaker import models as sagemaker_models
from moto.sagemaker.responses import SageMakerResponse

UPDATE_FAILURE = "the new fleet did not pass the ping"


@dataclass
class Lifecycle:
    """How moto's endpoints move (see the module's docstring)."""

    in_transit: int = 1
    create_failure: str | None = None
    update_outcomes: list[str] = field(default_factory=list)
    stuck: bool = False


@dataclass
class _Transit:
    """Where an endpoint is going: its final status (None: deleted), config and reason."""

    status: str | None
    config: str
    reason: str | None
    left: int


def _start(lifecycle: Lifecycle, endpoint: Any, status: str, final: _Transit) -> None:
    endpoint.endpoint_status = status
    endpoint.byoserve_transit = final
    final.left = lifecycle.in_transit


def install(monkeypatch: pytest.MonkeyPatch) -> Lifecycle:
    """Patch moto's backend for this test; returns the settings the test may change."""
    lifecycle = Lifecycle()
    backend_class = sagemaker_models.SageMakerModelBackend
    original_init = sagemaker_models.FakeEndpoint.__init__
    original_describe = backend_class.describe_endpoint
    original_delete = backend_class.delete_endpoint

    def created(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        failure = lifecycle.create_failure
        final = _Transit(
            "Failed" if failure else "InService", self.endpoint_config_name, failure, 0
        )
        _start(lifecycle, self, "Creating", final)

    def describe(self: Any, endpoint_name: str) -> dict[str, Any]:
        endpoint = self.endpoints.get(endpoint_name)
        transit: _Transit | None = getattr(endpoint, "byoserve_transit", None)
        if endpoint is not None and transit is not None and not lifecycle.stuck:
            if transit.left > 0:
                transit.left -= 1
            elif transit.status is None:
                del self.endpoints[endpoint_name]
            else:
                endpoint.endpoint_status = transit.status
                endpoint.failure_reason = transit.reason
                endpoint.endpoint_config_name = transit.config
                endpoint.byoserve_transit = None
        result: dict[str, Any] = original_describe(self, endpoint_name)
        return result

    def delete(self: Any, endpoint_name: str) -> None:
        endpoint = self.endpoints.get(endpoint_name)
        if endpoint is None or lifecycle.in_transit == 0:
            original_delete(self, endpoint_name)
            return
        _start(lifecycle, endpoint, "Deleting", _Transit(None, "", None, 0))

    def update(self: SageMakerResponse) -> ActionResult:
        backend = self.sagemaker_backend
        name = self._get_param("EndpointName")
        config = backend.describe_endpoint_config(self._get_param("EndpointConfigName"))
        original_describe(backend, name)  # ValidationException when missing, as AWS
        endpoint = backend.endpoints[name]
        previous = endpoint.endpoint_config_name
        outcome = lifecycle.update_outcomes.pop(0) if lifecycle.update_outcomes else "ok"
        endpoint.production_variants = endpoint._process_production_variants(
            config["ProductionVariants"]
        )
        final = {
            "ok": _Transit("InService", config["EndpointConfigName"], None, 0),
            "reverted": _Transit("InService", previous, UPDATE_FAILURE, 0),
            "failed": _Transit("Failed", config["EndpointConfigName"], UPDATE_FAILURE, 0),
        }[outcome]
        _start(lifecycle, endpoint, "Updating", final)
        return ActionResult({"EndpointArn": endpoint.arn})

    monkeypatch.setattr(sagemaker_models.FakeEndpoint, "__init__", created)
    monkeypatch.setattr(backend_class, "describe_endpoint", describe)
    monkeypatch.setattr(backend_class, "delete_endpoint", delete)
    monkeypatch.setattr(SageMakerResponse, "update_endpoint", update, raising=False)
    return lifecycle
