"""``python -m serve archive``: both tools' flag sets, formats and defaults, layout, manifest,
determinism, overwrite rules, error messages."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from serve.archive.archiver import main
from serve.archive.layout import ArchiveError
from serve.archive.modelfile import check_model_file
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
    (src / "assets" / "deep").mkdir(parents=True)
    (src / "assets" / "x.txt").write_text("x")
    (src / "assets" / "deep" / "y.txt").write_text("y")
    return src


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """A directory as MMS model-archiver's --model-path takes it, with what MMS leaves out."""
    root = tmp_path / "mms"
    for name, text in {
        "service.py": "def handle(data, context):\n    return data\n",
        "model.ts": "weights",
        "signature.json": "{}",
        "lib/helper.py": "X = 1\n",
        "lib/helper.pyc": "compiled",
        "__pycache__/service.cpython-311.pyc": "compiled",
        ".git/config": "hidden",
        ".DS_Store": "finder",
        "old.mar": "an older archive",
        "MAR-INF/MANIFEST.json": '{"stale": true}',
    }.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


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
    return status, capsys.readouterr().err


def names(path: Path) -> list[str]:
    if path.is_dir():
        return sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as mar:
            return mar.namelist()
    with tarfile.open(path) as tar:
        return tar.getnames()


def manifest(path: Path) -> dict[str, object]:
    if path.is_dir():
        loaded: dict[str, object] = json.loads((path / "MAR-INF/MANIFEST.json").read_text())
    elif zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as mar:
            loaded = json.loads(mar.read("MAR-INF/MANIFEST.json"))
    else:
        with tarfile.open(path) as tar:
            member = tar.extractfile("MAR-INF/MANIFEST.json")
            assert member is not None
            loaded = json.load(member)
    return loaded


def test_tgz_layout_and_manifest(
    inputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = archive(
        inputs,
        tmp_path / "out",
        "--archive-format=tgz",
        "--version=2.0",
        f"--model-file={inputs / 'model.py'}",
        f"--handler={inputs / 'handler.py'}",
        f"--requirements-file={inputs / 'reqs.txt'}",
        f"--config-file={inputs / 'config.yaml'}",
        f"--extra-files={inputs / 'index_to_name.json'},{inputs / 'assets'}",
    )
    assert run(argv, capsys) == (0, "")
    path = tmp_path / "out" / "m.tar.gz"
    assert names(path) == [
        "MAR-INF",
        "MAR-INF/MANIFEST.json",
        "code",
        "code/handler.py",
        "code/requirements.txt",
        "config.yaml",
        "deep",  # a directory's entries go to the root, as torch-model-archiver puts them
        "deep/y.txt",
        "index_to_name.json",
        "model.pt",
        "model.py",  # beside the weights: TorchServe's BaseHandler imports it from there
        "x.txt",
    ]
    assert manifest(path) == {
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
        "archiverVersion": manifest(path)["archiverVersion"],
    }
    with tarfile.open(path) as tar:
        for info in tar.getmembers():
            assert (info.uid, info.gid, info.uname, info.gname) == (0, 0, "", "")
            assert info.mode == (0o755 if info.isdir() else 0o644)


def test_default_is_a_flat_mar_as_both_tools_write(
    inputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = (f"--handler={inputs / 'handler.py'}:handle", f"-r={inputs / 'reqs.txt'}")
    assert run(archive(inputs, tmp_path / "none", *flags), capsys) == (0, "")
    mar = tmp_path / "none" / "m.mar"
    assert names(mar) == ["MAR-INF/MANIFEST.json", "handler.py", "model.pt", "reqs.txt"]
    with zipfile.ZipFile(mar) as archive_file:
        assert {i.compress_type for i in archive_file.infolist()} == {zipfile.ZIP_DEFLATED}
    model = manifest(mar)["model"]
    assert isinstance(model, dict)
    assert (model["handler"], model["requirementsFile"]) == ("handler.py:handle", "reqs.txt")
    for fmt in ("default", "mar"):  # "mar": this archiver's earlier name, still taken
        out = tmp_path / fmt
        assert run(archive(inputs, out, *flags, f"--archive-format={fmt}"), capsys)[0] == 0
        assert (out / "m.mar").read_bytes() == mar.read_bytes()


def test_zip_store_is_an_uncompressed_mar(
    inputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = archive(inputs, tmp_path, "--archive-format", "zip-store", "--handler", "tensor")
    assert run(argv, capsys) == (0, "")
    with zipfile.ZipFile(tmp_path / "m.mar") as mar:
        assert mar.namelist() == ["MAR-INF/MANIFEST.json", "model.pt"]
        assert {info.compress_type for info in mar.infolist()} == {zipfile.ZIP_STORED}
        assert mar.read("model.pt") == b"weights"


def test_no_archive_writes_a_directory(
    inputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(archive(inputs, tmp_path, "--archive-format=no-archive"), capsys)[0] == 0
    assert names(tmp_path / "m") == ["MAR-INF/MANIFEST.json", "model.pt"]
    assert run(archive(inputs, tmp_path, "--archive-format=no-archive", "-f"), capsys)[0] == 0


def test_torch_short_flags_mean_their_long_ones(
    inputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    short = ["-v", "3", "-r", str(inputs / "reqs.txt"), "-c", str(inputs / "config.yaml")]
    long = ["--version", "3", "--requirements-file", str(inputs / "reqs.txt")]
    long += ["--config-file", str(inputs / "config.yaml"), "--runtime", "python3"]
    assert run(archive(inputs, tmp_path / "s", *short, "--runtime=python3"), capsys)[0] == 0
    assert run(archive(inputs, tmp_path / "l", *long), capsys)[0] == 0
    assert (tmp_path / "s/m.mar").read_bytes() == (tmp_path / "l/m.mar").read_bytes()
    found = manifest(tmp_path / "s/m.mar")
    assert found["runtime"] == "python3"
    assert found["model"] == {
        "modelName": "m",
        "serializedFile": "model.pt",
        "modelVersion": "3",
        "requirementsFile": "reqs.txt",
        "configFile": "config.yaml",
    }


def test_handler_and_extra_files_as_torch_model_archiver_takes_them(
    inputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--handler path/name`` means ``path/name.py``; wildcards and directories in
    ``--extra-files`` add what they match, a directory's entries at the root."""
    argv = archive(
        inputs,
        tmp_path,
        f"--handler={inputs / 'handler'}",
        f"--extra-files={inputs / '*.json'},{inputs / 'assets'},{inputs / 'none*.txt'}",
    )
    assert run(argv, capsys)[0] == 0
    assert names(tmp_path / "m.mar") == [
        "MAR-INF/MANIFEST.json",
        "deep/y.txt",
        "handler.py",
        "index_to_name.json",
        "model.pt",
        "vocab.json",
        "x.txt",
    ]
    assert manifest(tmp_path / "m.mar")["model"] == {
        "modelName": "m",
        "serializedFile": "model.pt",
        "handler": "handler.py",
    }


@pytest.mark.parametrize(
    ("fmt", "suffix"), [("default", ".mar"), ("tgz", ".tar.gz"), ("no-archive", "")]
)
def test_mms_model_path_archives_the_directory(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], fmt: str, suffix: str
) -> None:
    argv = ["--model-name=svc", f"--model-path={model_dir}", "--handler=service:handle"]
    argv += [f"--export-path={tmp_path / 'out'}", "--runtime=python3", f"--archive-format={fmt}"]
    assert run(argv, capsys) == (0, "")
    path = tmp_path / "out" / f"svc{suffix}"
    assert [n for n in names(path) if n not in ("MAR-INF", "lib")] == [
        "MAR-INF/MANIFEST.json",
        "lib/helper.py",
        "model.ts",
        "service.py",
        "signature.json",
    ]
    assert manifest(path) == {
        "runtime": "python3",
        "model": {"modelName": "svc", "handler": "service:handle"},
        "archiverVersion": manifest(path)["archiverVersion"],
    }


def test_mms_export_path_inside_the_model_path(
    model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--model-name=svc", f"--model-path={model_dir}", f"--export-path={model_dir}"]
    for _ in range(2):
        assert run([*argv, "--archive-format=tgz", "-f"], capsys)[0] == 0
        assert run([*argv, "--archive-format=no-archive", "-f"], capsys)[0] == 0
    assert "svc.tar.gz" not in names(model_dir / "svc.tar.gz")
    assert not any(n.startswith("svc/") for n in names(model_dir / "svc"))


def test_c_is_convert_with_model_path_and_config_file_without(
    inputs: Path, model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mms = ["--model-name=svc", f"--model-path={model_dir}", f"--export-path={tmp_path}"]
    assert run([*mms, "-c"], capsys) == (0, "")  # nothing to convert: accepted
    assert run([*mms, "--convert", "-f"], capsys) == (0, "")
    (model_dir / "net.onnx").write_bytes(b"onnx")
    status, err = run([*mms, "-c", "-f"], capsys)
    assert (status, err.count("\n")) == (2, 1)
    assert err.startswith("serve archive: error: --convert: model-archiver would turn net.onnx ")
    assert run([*mms, "-f"], capsys)[0] == 0  # without --convert, the .onnx file is archived
    assert "net.onnx" in names(tmp_path / "svc.mar")
    torch = archive(inputs, tmp_path / "t", "-c", str(inputs / "config.yaml"))
    assert run(torch, capsys)[0] == 0
    assert names(tmp_path / "t/m.mar") == ["MAR-INF/MANIFEST.json", "config.yaml", "model.pt"]


def test_refuses_to_overwrite_without_force(
    inputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "m.mar"
    assert run(archive(inputs, tmp_path), capsys)[0] == 0
    before = target.read_bytes()
    (inputs / "model.pt").write_bytes(b"new weights")
    status, err = run(archive(inputs, tmp_path), capsys)
    assert (status, err) == (
        2,
        f"serve archive: error: {target} exists; use -f/--force to overwrite it\n",
    )
    assert target.read_bytes() == before
    assert run(archive(inputs, tmp_path, "--force"), capsys)[0] == 0
    assert target.read_bytes() != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.mar", "src"]  # no temp files


def test_same_inputs_give_identical_bytes(
    inputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for fmt, suffix in (("tgz", ".tar.gz"), ("default", ".mar"), ("zip-store", ".mar")):
        flags = [f"--archive-format={fmt}", f"--handler={inputs / 'handler.py'}", "-f"]
        assert run(archive(inputs, tmp_path / "a", *flags), capsys)[0] == 0
        (inputs / "model.pt").touch()  # a newer mtime must not matter
        assert run(archive(inputs, tmp_path / "b", *flags), capsys)[0] == 0
        first, second = tmp_path / "a" / f"m{suffix}", tmp_path / "b" / f"m{suffix}"
        assert first.read_bytes() == second.read_bytes()


def test_source_date_epoch_sets_created_on(inputs: Path, tmp_path: Path) -> None:
    status = main(archive(inputs, tmp_path), environ={"SOURCE_DATE_EPOCH": "1700000000"})
    assert status == 0
    assert manifest(tmp_path / "m.mar")["createdOn"] == "14/11/2023 22:13:20"


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
        (["--runtime=LSP"], "--runtime LSP: TorchServe's C++ handlers (.so) cannot be served"),
        (["--archive-format=zip"], "argument --archive-format: invalid choice: 'zip'"),
        (["--model-path=src"], "--serialized-file is torch-model-archiver's; with --model-path"),
        (["--convert"], "the following arguments are required: --model-path"),
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--model-p=src"], "unrecognized arguments: --model-p=src"),  # no abbreviations
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
    (inputs / "a.json").write_text("{}")
    status, err = run(archive(inputs, tmp_path / "out", *flags), capsys)
    assert status == 2
    assert err.startswith(f"serve archive: error: {message}")
    assert err.count("\n") == 1
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--model-path=nowhere"], "--model-path nowhere: not a directory"),
        (["--handler=nope:handle"], "--handler 'nope:handle': no nope.py in --model-path mms,"),
        (["--handler=service:"], "--handler 'service:': expected module:function"),
        (["--runtime=LSP"], "argument --runtime: invalid choice: 'LSP'"),
        (["--archive-format=tgz", "-f"], ""),  # accepted
    ],
)
def test_mms_errors(
    model_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    flags: list[str],
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    status, err = run(["--model-name=svc", "--model-path=mms", *flags], capsys)
    if not message:
        assert (status, err) == (0, "")
        return
    assert (status, err.count("\n")) == (2, 1)
    assert err.startswith(f"serve archive: error: {message}")


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
