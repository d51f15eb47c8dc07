"""``python -m serve archive``: layout, manifest, determinism, overwrite rules, error messages."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from serve.archive.archiver import main
from serve.archive.layout import ArchiveError, check_model_file
from tests.fixtures.server import REPO

MODEL_PY = "import torch\nfrom torch import nn\n\n\nclass Net(nn.Module):\n    pass\n"


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    """Fake model inputs: the archiver copies bytes, so they need not be a real model."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "model.pt").write_bytes(b"weights")
    (src / "model.py").write_text(MODEL_PY)
    (src / "handler.py").write_text("def handle(data, context):\n    return data\n")
    (src / "reqs.txt").write_text("numpy\n")
    (src / "index_to_name.json").write_text('{"0": "a"}')
    (src / "vocab.json").write_text('{"<unk>": 0}')
    (src / "config.yaml").write_text("batch_size: 4\nmax_batch_delay: 20\ntopk: 2\n")
    (src / "assets").mkdir()
    (src / "assets" / "x.txt").write_text("x")
    return src


def archive(src: Path, out: Path, *extra: str, name: str = "m") -> list[str]:
    return [
        "--model-name",
        name,
        "--serialized-file",
        str(src / "model.pt"),
        "--export-path",
        str(out),
        *extra,
    ]


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    status = main(argv, environ={})
    captured = capsys.readouterr()
    return status, captured.err


def tar_names(path: Path) -> list[str]:
    with tarfile.open(path) as tar:
        return tar.getnames()


def tar_manifest(path: Path) -> dict[str, object]:
    with tarfile.open(path) as tar:
        member = tar.extractfile("MAR-INF/MANIFEST.json")
        assert member is not None
        loaded: dict[str, object] = json.load(member)
        return loaded


def test_tgz_layout_and_manifest(
    inputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = archive(
        inputs,
        tmp_path / "out",
        "--version=2.0",
        f"--model-file={inputs / 'model.py'}",
        f"--handler={inputs / 'handler.py'}",
        f"--requirements-file={inputs / 'reqs.txt'}",
        f"--config-file={inputs / 'config.yaml'}",
        f"--extra-files={inputs / 'index_to_name.json'},{inputs / 'assets'}",
    )
    assert run(argv, capsys) == (0, "")
    path = tmp_path / "out" / "m.tar.gz"
    assert tar_names(path) == [
        "MAR-INF",
        "MAR-INF/MANIFEST.json",
        "assets",
        "assets/x.txt",
        "code",
        "code/handler.py",
        "code/requirements.txt",
        "config.yaml",
        "index_to_name.json",
        "model.pt",
        "model.py",  # beside the weights: TorchServe's BaseHandler imports it from there
    ]
    assert tar_manifest(path) == {
        "runtime": "python",
        "model": {
            "modelName": "m",
            "serializedFile": "model.pt",
            "handler": "code/handler.py",
            "modelFile": "model.py",
            "modelVersion": "2.0",
            "requirementsFile": "code/requirements.txt",
            "configFile": "config.yaml",
        },
        "archiverVersion": tar_manifest(path)["archiverVersion"],
    }
    with tarfile.open(path) as tar:
        for info in tar.getmembers():
            assert (info.uid, info.gid, info.uname, info.gname) == (0, 0, "", "")
            assert info.mode == (0o755 if info.isdir() else 0o644)


def test_builtin_handler_puts_the_model_file_under_code(
    inputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = archive(inputs, tmp_path, "--handler=digit", f"--model-file={inputs / 'model.py'}")
    assert run(argv, capsys) == (0, "")
    manifest = tar_manifest(tmp_path / "m.tar.gz")
    assert manifest["model"] == {
        "modelName": "m",
        "serializedFile": "model.pt",
        "handler": "digit",
        "modelFile": "code/model.py",
    }


def test_same_inputs_give_identical_bytes(
    inputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for fmt, suffix in (("tgz", ".tar.gz"), ("mar", ".mar")):
        flags = [f"--archive-format={fmt}", f"--handler={inputs / 'handler.py'}"]
        assert run(archive(inputs, tmp_path / "a", *flags), capsys)[0] == 0
        (inputs / "model.pt").touch()  # a newer mtime must not matter
        assert run(archive(inputs, tmp_path / "b", *flags), capsys)[0] == 0
        first, second = tmp_path / "a" / f"m{suffix}", tmp_path / "b" / f"m{suffix}"
        assert first.read_bytes() == second.read_bytes()


def test_source_date_epoch_sets_created_on(inputs: Path, tmp_path: Path) -> None:
    status = main(archive(inputs, tmp_path), environ={"SOURCE_DATE_EPOCH": "1700000000"})
    assert status == 0
    assert tar_manifest(tmp_path / "m.tar.gz")["createdOn"] == "14/11/2023 22:13:20"


def test_mar_is_flat_like_torch_model_archiver(
    inputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = archive(
        inputs,
        tmp_path,
        "--archive-format=mar",
        f"--handler={inputs / 'handler.py'}:handle",
        f"--requirements-file={inputs / 'reqs.txt'}",
    )
    assert run(argv, capsys) == (0, "")
    with zipfile.ZipFile(tmp_path / "m.mar") as mar:
        assert mar.namelist() == ["MAR-INF/MANIFEST.json", "handler.py", "model.pt", "reqs.txt"]
        manifest = json.loads(mar.read("MAR-INF/MANIFEST.json"))
    assert manifest["model"]["handler"] == "handler.py:handle"
    assert manifest["model"]["requirementsFile"] == "reqs.txt"


def test_no_archive_writes_a_directory(
    inputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(archive(inputs, tmp_path, "--archive-format=no-archive"), capsys)[0] == 0
    root = tmp_path / "m"
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*")) == [
        "MAR-INF",
        "MAR-INF/MANIFEST.json",
        "model.pt",
    ]
    assert run(archive(inputs, tmp_path, "--archive-format=no-archive", "-f"), capsys)[0] == 0


def test_refuses_to_overwrite_without_force(
    inputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(archive(inputs, tmp_path), capsys)[0] == 0
    before = (tmp_path / "m.tar.gz").read_bytes()
    (inputs / "model.pt").write_bytes(b"new weights")
    status, err = run(archive(inputs, tmp_path), capsys)
    assert status == 2
    assert (
        err
        == f"serve archive: error: {tmp_path / 'm.tar.gz'} exists; use -f/--force to overwrite it\n"
    )
    assert (tmp_path / "m.tar.gz").read_bytes() == before
    assert run(archive(inputs, tmp_path, "--force"), capsys)[0] == 0
    assert (tmp_path / "m.tar.gz").read_bytes() != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.tar.gz", "src"]  # no temp files


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--model-file=missing.py"], "--model-file missing.py: no such file"),
        (["--handler=missing.py"], "--handler missing.py: no such file"),
        (["--requirements-file=nope.txt"], "--requirements-file nope.txt: no such file"),
        (["--extra-files=a.json,nope.json"], "--extra-files a.json: no such file"),
        (["--config-file=nope.yaml"], "--config-file nope.yaml: no such file"),
        (
            ["--handler=image_classifer"],
            "--handler 'image_classifer': not a .py file or a built-in handler "
            "(built-ins: digit, image_classifier, tensor, text_classifier)",
        ),
        (["--model-name=a/b"], "--model-name 'a/b': use letters, digits"),
        (["--handler=text_classifier"], "--handler text_classifier: text_classifier: no vocab"),
    ],
)
def test_error_messages(
    inputs: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    flags: list[str],
    message: str,
) -> None:
    monkeypatch.chdir(inputs.parent)
    status, err = run(archive(inputs, tmp_path / "out", *flags), capsys)
    assert status == 2
    assert err.startswith(f"serve archive: error: {message}")
    assert err.count("\n") == 1
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_missing_serialized_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, err = run(["--model-name=m", f"--serialized-file={tmp_path / 'x.pt'}"], capsys)
    assert (status, err) == (
        2,
        f"serve archive: error: --serialized-file {tmp_path / 'x.pt'}: no such file\n",
    )


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("import torch\n\ndef f():\n    pass\n", "defines 0 nn.Module classes; expected one"),
        (
            "import torch.nn as nn\n\nclass A(nn.Module):\n    pass\n\nclass B(A):\n    pass\n",
            r"defines 2 nn.Module classes \(A, B\); expected one",
        ),
        ("class Net(:\n", "syntax error on line 1"),
    ],
)
def test_model_file_needs_exactly_one_module(tmp_path: Path, source: str, message: str) -> None:
    path = tmp_path / "model.py"
    path.write_text(source)
    with pytest.raises(ArchiveError, match=message):
        check_model_file(path)


@pytest.mark.parametrize(
    "source",
    [
        "import torch\n\nclass Net(torch.nn.Module):\n    pass\n",
        "from torch.nn import Module\n\nclass Net(Module):\n    pass\n",
        "from torch import nn\n\nclass Net(nn.Sequential):\n    pass\n\nclass Opt(object):\n"
        "    pass\n",
        "import torch\n\nclass O(torch.optim.Optimizer):\n    pass\n\n"
        "class N(torch.nn.Linear):\n    pass\n",
    ],
)
def test_model_file_classes_are_found_statically(tmp_path: Path, source: str) -> None:
    path = tmp_path / "model.py"
    path.write_text(source)
    assert check_model_file(path) in ("Net", "N")


def test_bad_builtin_setting_and_config(
    inputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (inputs / "bad.json").write_text('{"topk": 0}')
    status, err = run(
        archive(
            inputs, tmp_path, "--handler=image_classifier", f"--config-file={inputs / 'bad.json'}"
        ),
        capsys,
    )
    assert status == 2
    assert "image_classifier: setting topk=0: expected an integer of at least 1" in err
    (inputs / "list.yaml").write_text("- 1\n- 2\n")
    status, err = run(archive(inputs, tmp_path, f"--config-file={inputs / 'list.yaml'}"), capsys)
    assert (status, err.count("\n")) == (2, 1)
    assert "must hold a mapping of settings" in err


def test_cli_errors_have_no_traceback(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "serve", "archive", "--model-name=m", "--handler=nope"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("serve archive: error: --handler 'nope'")
    assert "Traceback" not in result.stderr
