"""``BYOSERVE_SERVERLESS=true``: the real server writes nothing outside ``TMPDIR``.

SageMaker Serverless may give the container no write access but the temp dir. The server starts
on a model (an extracted tree, as SageMaker mounts it, or a model.tar.gz beside nothing else, as
``docker run -v`` does) whose code imports torch and a package its requirements.txt installs;
HOME, the working directory, the model directory and site-packages are compared before and after.
Running as root, file modes cannot make the model read-only, so the comparison is what shows it.
"""

from __future__ import annotations

import base64
import hashlib
import io
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest
import requests

from serve.config import ServingConfig
from tests.fixtures.server import REPO, start_server

HANDLER = """\
import json

import tinyreq
import torch

from helper import WIDTH


def model_fn(model_dir):
    return torch.nn.Linear(WIDTH, 1)


def transform_fn(model, body, content_type, accept):
    with torch.no_grad():
        value = model(torch.tensor(json.loads(body), dtype=torch.float32))
    return json.dumps({"from": tinyreq.WHERE, "shape": list(value.shape)})
"""


def _wheel(directory: Path) -> Path:
    """``tinyreq``, a one-module wheel pip installs without an index."""
    files = {
        "tinyreq/__init__.py": 'WHERE = "requirements"\n',
        "tinyreq-0.1.dist-info/METADATA": "Metadata-Version: 2.1\nName: tinyreq\nVersion: 0.1\n",
        "tinyreq-0.1.dist-info/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: byoserve-tests\nRoot-Is-Purelib: true\n"
            "Tag: py3-none-any\n"
        ),
    }
    record = []
    for name, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{name},sha256={digest.decode()},{len(text.encode())}")
    record.append("tinyreq-0.1.dist-info/RECORD,,")
    files["tinyreq-0.1.dist-info/RECORD"] = "\n".join(record) + "\n"
    path = directory / "tinyreq-0.1-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        for name, text in files.items():
            wheel.writestr(name, text)
    return path


def _model_tree(root: Path) -> Path:
    code = root / "code"
    code.mkdir(parents=True)
    (code / "inference.py").write_text(HANDLER)
    (code / "helper.py").write_text("WIDTH = 2\n")  # imported as a module: its bytecode too
    _wheel(code)
    (code / "requirements.txt").write_text("./tinyreq-0.1-py3-none-any.whl\n")
    return root


def _model_archive(root: Path, staging: Path) -> Path:
    tree = _model_tree(staging)
    root.mkdir(parents=True)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        archive.add(tree / "code", arcname="code")
    (root / "model.tar.gz").write_bytes(buffer.getvalue())
    return root


def _snapshot(*roots: Path) -> dict[str, tuple[int, int]]:
    """Every file and directory under ``roots``: its size and modification time."""
    seen = {}
    for root in roots:
        for path in [root, *root.rglob("*")]:
            stat = path.lstat()
            seen[str(path)] = (stat.st_size, stat.st_mtime_ns)
    return seen


def _site_packages() -> set[str]:
    return {entry.name for entry in Path(sysconfig.get_paths()["purelib"]).iterdir()}


def test_serverless_defaults_to_one_worker_and_the_temp_dir() -> None:
    config = ServingConfig.from_env({"BYOSERVE_SERVERLESS": "true"})
    assert config.workers == 1 and config.unpack_dir == config.temp_dir
    assert config.requirements_target == config.temp_dir / "byoserve-requirements"
    chosen = ServingConfig.from_env(
        {"BYOSERVE_SERVERLESS": "true", "SAGEMAKER_MODEL_SERVER_WORKERS": "3"}
    )
    assert chosen.workers == 3
    plain = ServingConfig.from_env({})
    assert plain.workers == 0 and plain.unpack_dir is None and plain.requirements_target is None


@pytest.mark.parametrize("layout", ["tree", "archive"])
def test_serverless_server_writes_only_under_tmpdir(tmp_path: Path, layout: str) -> None:
    home, temp, cwd = tmp_path / "home", tmp_path / "tmp", tmp_path / "cwd"
    for directory in (home, temp, cwd):
        directory.mkdir()
    model_root = tmp_path / "model"
    if layout == "tree":
        model = _model_tree(model_root)
    else:
        model = _model_archive(model_root, tmp_path / "staging")
    for path in [model, *model.rglob("*")]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    before, packages = _snapshot(home, cwd, model), _site_packages()
    server = start_server(
        model,
        tmp_path / "logs",
        env={
            "BYOSERVE_SERVERLESS": "true",
            "HOME": str(home),
            "TMPDIR": str(temp),
            "PYTHONPATH": str(REPO),
            "XDG_CACHE_HOME": "",
            "PYTHONDONTWRITEBYTECODE": "",  # as in the image: the server must see to it
            # The image's PATH: the venv, then the system's (no developer tool shims).
            "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
        },
        cwd=cwd,
        ready_timeout=180.0,  # SageMaker Serverless gives /ping 3 minutes
    )
    try:
        assert requests.get(f"{server.url}/ping", timeout=10).status_code == 200
        answer = requests.post(
            f"{server.url}/invocations",
            data="[1.0, 2.0]",
            headers={"Content-Type": "application/json"},
            timeout=30,
        )
        assert answer.status_code == 200, server.log()
        assert answer.json() == {"from": "requirements", "shape": [1]}
    finally:
        server.stop()
    assert _snapshot(home, cwd, model) == before, server.log()
    assert _site_packages() == packages
    assert (temp / "byoserve-requirements" / "tinyreq" / "__init__.py").is_file()
