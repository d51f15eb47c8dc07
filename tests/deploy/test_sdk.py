"""The SageMaker Python SDK (v2, ``sagemaker<3``) with our image and archive.

* ``sagemaker.model.Model(image_uri, model_data, role).deploy(...)`` runs against moto: the SDK's
  boto3 clients honour ``AWS_ENDPOINT_URL`` like ours, so the model, config and endpoint it
  creates are checked here.
* ``sagemaker.predictor.Predictor`` with JSON (de)serializers talks to our real server, through
  a ``sagemaker-runtime`` client whose ``endpoint_url`` is the local server.

What moto cannot show: SageMaker pulling the image from ECR, unpacking the archive into
/opt/ml/model and passing /ping on a real instance (see docs/deploy.md).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.deploy.conftest import REGION, AwsWorld
from tests.fixtures.server import ServerProcess, start_server

os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
# The SDK is untyped; its modules are held as Any.
import sagemaker  # the SDK (<3), in the test extra
from sagemaker.deserializers import JSONDeserializer
from sagemaker.model import Model
from sagemaker.predictor import Predictor
from sagemaker.serializers import JSONSerializer


def _session(aws: AwsWorld, runtime_url: str | None = None) -> Any:
    boto_session = boto3.Session(region_name=REGION)
    runtime = None
    if runtime_url:
        runtime = boto_session.client("sagemaker-runtime", endpoint_url=runtime_url)
    return sagemaker.session.Session(
        boto_session=boto_session, sagemaker_runtime_client=runtime, default_bucket=aws.bucket
    )


@pytest.fixture
def server(aws: AwsWorld, tmp_path: Path) -> Iterator[ServerProcess]:
    process = start_server(aws.archive, tmp_path / "logs")
    try:
        yield process
    finally:
        process.stop(10)


def test_sdk_model_deploy_creates_model_config_and_endpoint(aws: AwsWorld, pushed: str) -> None:
    session = _session(aws)
    model_data = session.upload_data(str(aws.archive), key_prefix="sdk/demo")
    model = Model(
        image_uri=pushed,
        model_data=model_data,
        role=aws.role_arn,
        env={"SAGEMAKER_MODEL_SERVER_WORKERS": "1"},
        predictor_cls=Predictor,
        sagemaker_session=session,
    )
    predictor = model.deploy(
        initial_instance_count=1,
        instance_type="ml.m5.large",
        endpoint_name="sdk-demo",
        container_startup_health_check_timeout=300,
        model_data_download_timeout=240,
        serializer=JSONSerializer(),
        deserializer=JSONDeserializer(),
        wait=False,  # the SDK's own wait polls every 30 s
    )
    assert session.wait_for_endpoint("sdk-demo", poll=0.1)["EndpointStatus"] == "InService"
    sm = aws.client("sagemaker")
    endpoint = sm.describe_endpoint(EndpointName="sdk-demo")
    assert endpoint["EndpointStatus"] == "InService"
    config = sm.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
    variant = config["ProductionVariants"][0]
    assert variant["ContainerStartupHealthCheckTimeoutInSeconds"] == 300
    described = sm.describe_model(ModelName=variant["ModelName"])["PrimaryContainer"]
    assert described["Image"] == pushed and described["ModelDataUrl"] == model_data
    predictor.delete_endpoint()
    model.delete_model()
    # Deleting, as on SageMaker, until a describe finds it gone (tests/deploy/motoendpoints.py)
    sm.get_waiter("endpoint_deleted").wait(
        EndpointName="sdk-demo", WaiterConfig={"Delay": 1, "MaxAttempts": 30}
    )
    assert sm.list_endpoints()["Endpoints"] == [] and sm.list_models()["Models"] == []
    assert sm.list_endpoint_configs()["EndpointConfigs"] == []


@pytest.mark.slow
def test_sdk_predictor_talks_to_our_server(aws: AwsWorld, server: ServerProcess) -> None:
    predictor = Predictor(
        "demo",
        sagemaker_session=_session(aws, server.url),
        serializer=JSONSerializer(),
        deserializer=JSONDeserializer(),
    )
    assert predictor.predict({"text": "hello"}) == {"label": "POSITIVE", "input": {"text": "hello"}}
