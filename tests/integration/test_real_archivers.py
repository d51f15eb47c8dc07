"""Archives made by the real ``torch-model-archiver`` 0.12 and MMS ``model-archiver`` 1.0.3, in
every format each writes, served unchanged: with ``--model-dir``, from a model store
(``--models NAME.mar``, ``name=NAME.tar.gz``), and as SageMaker leaves a tgz of theirs in
``/opt/ml/model`` (extracted as it is, the model under ``NAME/``).

The commands are written as the tools' documentation writes them. torch-model-archiver archives a
``BaseHandler`` subclass with an eager model (``model.py`` and a state_dict); model-archiver a
directory holding a TorchScript model and an MMS ``handle(data, context)`` module.

MMS's model-archiver cannot share an environment with torch-model-archiver: both distributions
install the same top-level package, ``model_archiver``, so whichever is installed last replaces
the other's files (``torch-model-archiver`` then runs MMS's code, or the reverse). It is installed
apart, with pip ``--target`` into ``.venv/model-archiver-1.0.3`` (it needs nothing beyond the
standard library: its ``future`` and ``enum-compat`` requirements are for Python 2, hence
``--no-deps``), and its own console script runs with that directory first on ``PYTHONPATH``.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.fixtures.handler_styles import MMS_SERVICE, copy_handler
from tests.fixtures.models import DigitsModel
from tests.fixtures.server import REPO, ServerProcess, free_port, start_server

pytestmark = pytest.mark.slow

MMS_REQUIREMENT = "model-archiver==1.0.3"
MMS_HOME = Path(sys.prefix) / "model-archiver-1.0.3"
TORCH_FORMATS = {"default": ".mar", "zip-store": ".mar", "tgz": ".tar.gz", "no-archive": ""}
MMS_FORMATS = {"default": ".mar", "tgz": ".tar.gz", "no-archive": ""}
BUILT = [("torch", fmt) for fmt in TORCH_FORMATS] + [("mms", fmt) for fmt in MMS_FORMATS]
READY_S = 240.0
MMS_TEMPLATE = REPO / "tests" / "fixtures" / "mms_template" / "model_handler.py"


@pytest.fixture(scope="session")
def mms_archiver() -> tuple[list[str], dict[str, str]]:
    """The real ``model-archiver`` executable, and the environment it runs in (installed apart
    on first use, under a lock: two test runs may start at once)."""
    script = MMS_HOME / "bin" / "model-archiver"
    with (Path(sys.prefix) / ".model-archiver.lock").open("a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        if not script.is_file():
            pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps"]
            subprocess.run([*pip, "--target", str(MMS_HOME), MMS_REQUIREMENT], check=True)
    return [str(script)], {**os.environ, "PYTHONPATH": str(MMS_HOME)}


def name_of(tool: str, fmt: str) -> str:
    return f"{tool}-{fmt}"


def torch_flags(fmt: str, digits: DigitsModel) -> list[str]:
    """A torch-model-archiver command line as TorchServe's examples write it."""
    return [
        *("--model-name", name_of("torch", fmt), "--version", "1.0"),
        *("--model-file", str(digits.directory / "model.py")),
        *("--serialized-file", str(digits.directory / "model.pt")),
        *("--handler", "digits_handler.py", "--export-path", "model_store"),
        *("--archive-format", fmt),
    ]


def mms_flags(fmt: str) -> list[str]:
    """A model-archiver command line as MMS's examples write it."""
    return [
        *("--model-name", name_of("mms", fmt), "--model-path", "digits"),
        *("--handler", "digit_service:handle", "--export-path", "model_store"),
        *("--archive-format", fmt),
    ]


@pytest.fixture(scope="module")
def work(
    digits: DigitsModel,
    tmp_path_factory: pytest.TempPathFactory,
    mms_archiver: tuple[list[str], dict[str, str]],
) -> Path:
    """The tools' inputs, and in ``model_store/`` what both wrote, in each of their formats."""
    work = tmp_path_factory.mktemp("real-archivers")
    (work / "model_store").mkdir()
    copy_handler("archivers_digits.py", work / "digits_handler.py")
    torch_archiver = Path(sys.executable).parent / "torch-model-archiver"
    for fmt in TORCH_FORMATS:
        subprocess.run([str(torch_archiver), *torch_flags(fmt, digits)], check=True, cwd=work)
    model_path = work / "digits"  # MMS: a directory with everything the model needs
    model_path.mkdir()
    (model_path / "digit_service.py").write_text(MMS_SERVICE)
    (model_path / "model.ts").write_bytes((digits.directory / "model.ts").read_bytes())
    executable, environ = mms_archiver
    for fmt in MMS_FORMATS:
        subprocess.run([*executable, *mms_flags(fmt)], check=True, cwd=work, env=environ)
    return work


@pytest.fixture(scope="module")
def store(work: Path) -> Path:
    return work / "model_store"


def archive_of(store: Path, tool: str, fmt: str) -> Path:
    suffix = (TORCH_FORMATS if tool == "torch" else MMS_FORMATS)[fmt]
    return store / f"{name_of(tool, fmt)}{suffix}"


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[ServerProcess]]:
    started: list[ServerProcess] = []
    yield started
    for server in started:
        server.stop(10)


def serve(servers: list[ServerProcess], tmp_path: Path, model: Path | None, *args: str) -> str:
    server = start_server(model, tmp_path / "logs", args=args, ready_timeout=READY_S)
    servers.append(server)
    return server.url


def check_answers(url: str, digits: DigitsModel) -> None:
    """Each held-out image's digit, as the model itself predicts it."""
    images = digits.images[:3]
    expected = digits.predict(images).argmax(1).tolist()
    for image, digit in zip(images, expected, strict=True):
        response = requests.post(url, json=image.tolist(), timeout=60)
        assert response.status_code == 200, response.text
        assert response.json()["digit"] == digit


@pytest.mark.engines("gunicorn", reason="starts no server")
def test_what_each_tool_writes(store: Path) -> None:
    """The formats as the tools write them: zips, tgz with NAME/ on top, directories."""
    found = sorted(p.name for p in store.iterdir() if not p.name.startswith(".byoserve-"))
    assert found == sorted(archive_of(store, tool, fmt).name for tool, fmt in BUILT)
    with tarfile.open(archive_of(store, "mms", "tgz")) as tgz:
        assert "mms-tgz/MAR-INF/MANIFEST.json" in tgz.getnames()
    with tarfile.open(archive_of(store, "torch", "tgz")) as tgz:
        assert "torch-tgz/MAR-INF/MANIFEST.json" in tgz.getnames()
    assert (archive_of(store, "torch", "no-archive") / "MAR-INF" / "MANIFEST.json").is_file()


@pytest.mark.engines("gunicorn", reason="starts no server")
@pytest.mark.parametrize(
    ("tool", "fmt"),
    [("torch", "default"), ("torch", "zip-store"), ("mms", "default"), ("mms", "no-archive")],
)
def test_serve_archive_writes_what_they_write(
    work: Path, digits: DigitsModel, tool: str, fmt: str, tmp_path: Path
) -> None:
    """The same command line, given to ``serve archive``: the same files, the same manifest
    model section (their tgz puts files under NAME/ where ours is SageMaker's layout, and
    torch-model-archiver's no-archive is flat where ours is that layout too)."""
    flags = torch_flags(fmt, digits) if tool == "torch" else mms_flags(fmt)
    flags[flags.index("model_store")] = str(tmp_path / "ours")
    command = [sys.executable, "-m", "serve", "archive", *flags]
    subprocess.run(command, check=True, cwd=work, env={**os.environ, "PYTHONPATH": str(REPO)})
    theirs, ours = (
        archive_of(work / "model_store", tool, fmt),
        archive_of(tmp_path / "ours", tool, fmt),
    )
    assert files_of(ours).keys() == files_of(theirs).keys()
    for name, data in files_of(theirs).items():
        if name != "MAR-INF/MANIFEST.json":
            assert files_of(ours)[name] == data, name
    mine, real = (json.loads(files_of(p)["MAR-INF/MANIFEST.json"]) for p in (ours, theirs))
    assert (mine["runtime"], mine["model"]) == (real["runtime"], real["model"])


def files_of(path: Path) -> dict[str, bytes]:
    """A .mar's or a directory's files by name."""
    if path.is_dir():
        return {
            p.relative_to(path).as_posix(): p.read_bytes() for p in path.rglob("*") if p.is_file()
        }
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist() if not name.endswith("/")}


@pytest.mark.parametrize(("tool", "fmt"), BUILT, ids=[name_of(*b) for b in BUILT])
def test_model_dir_serves_it(
    store: Path,
    digits: DigitsModel,
    tmp_path: Path,
    servers: list[ServerProcess],
    tool: str,
    fmt: str,
) -> None:
    url = serve(servers, tmp_path, archive_of(store, tool, fmt))
    check_answers(f"{url}/invocations", digits)


def test_model_store_serves_them_all(
    store: Path, digits: DigitsModel, tmp_path: Path, servers: list[ServerProcess]
) -> None:
    """``--models NAME.mar`` and ``name=NAME.tar.gz`` (and directories), as TorchServe's
    ``torchserve --model-store model_store --models ...`` lines write them."""
    models = []
    for tool, fmt in BUILT:
        entry = archive_of(store, tool, fmt).name
        models.append(entry if fmt in ("default", "zip-store") else f"{name_of(tool, fmt)}={entry}")
    url = serve(servers, tmp_path, None, "--model-store", str(store), "--models", *models)
    for tool, fmt in BUILT:
        check_answers(f"{url}/models/{name_of(tool, fmt)}/invoke", digits)


@pytest.mark.parametrize("tool", ["torch", "mms"])
def test_tgz_as_sagemaker_extracts_it(
    store: Path, digits: DigitsModel, tmp_path: Path, servers: list[ServerProcess], tool: str
) -> None:
    """SageMaker extracts model.tar.gz into /opt/ml/model as it is: their tgz leaves the model,
    MAR-INF/MANIFEST.json included, one directory down, under NAME/."""
    opt_ml_model = tmp_path / "opt-ml-model"
    with tarfile.open(archive_of(store, tool, "tgz")) as tgz:
        tgz.extractall(opt_ml_model, filter="data")
    name = name_of(tool, "tgz")
    assert [p.name for p in opt_ml_model.iterdir()] == [name]
    url = serve(servers, tmp_path, opt_ml_model)
    check_answers(f"{url}/invocations", digits)
    log = servers[-1].log()
    assert f"model directory {opt_ml_model} holds only {name}/ with the model in it" in log


def test_mms_template_batches_four_requests_at_once(
    mms_archiver: tuple[list[str], dict[str, str]], tmp_path: Path, servers: list[ServerProcess]
) -> None:
    """MMS's own ``model_service_template`` (tests/fixtures/mms_template/), archived by MMS's
    model-archiver and registered with ``batch_size=4`` on one worker: four requests sent
    together are one batch of four (its preprocess asserts that the batch is full). A lone
    request then fails that assertion, and the template's error path, which calls
    ``context.request_processor.report_status(500, ...)`` on MMS 1.0's whole-batch object, runs:
    what fails it is the template's own four answers for one request."""
    model_path = tmp_path / "template"
    model_path.mkdir()
    shutil.copyfile(MMS_TEMPLATE, model_path / "model_handler.py")
    store = tmp_path / "store"
    store.mkdir()
    executable, environ = mms_archiver
    flags = ["--model-name", "template", "--model-path", str(model_path)]
    flags += ["--handler", "model_handler", "--export-path", str(store)]
    subprocess.run([*executable, *flags], check=True, cwd=tmp_path, env=environ)
    management = f"http://127.0.0.1:{free_port()}"
    args = ("--model-store", str(store), "--management-address", management)
    url = serve(servers, tmp_path, None, *args)
    registered = requests.post(
        f"{management}/models",
        params={"url": "template.mar", "batch_size": 4, "max_batch_delay": 5000,
                "initial_workers": 1, "synchronous": "true"},
        timeout=120,
    )  # fmt: skip
    assert registered.status_code == 200, registered.text

    def predict(_: int) -> requests.Response:
        return requests.post(f"{url}/predictions/template", json=[1.0], timeout=60)

    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(predict, range(4)))
    assert [(answer.status_code, answer.text) for answer in answers] == [(200, "OK")] * 4
    lone = predict(0)
    assert lone.status_code == 500, lone.text
    assert "handle returned 4 results for 1 requests" in lone.json()["message"]
    log = servers[-1].log()
    assert "Invalid input batch size: 1" in log and "report_status" not in log
