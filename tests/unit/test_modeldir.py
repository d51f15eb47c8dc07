"""Tests for serve.model.directory: finding, safely unpacking and preparing the model directory."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import stat
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from serve.model import directory as modeldir
from serve.model import extraction
from serve.model.directory import (
    MARKER_NAME,
    ModelDirectory,
    ModelDirError,
    activate_code_paths,
    find_archive,
    install_requirements_file,
    prepare_model_dir,
    unpack_archive,
)
from serve.model.manifest import Manifest

FILES = {"model.bin": b"weights", "code/inference.py": b"def model_fn(d):\n    return d\n"}


def make_tar(path: Path, files: dict[str, bytes], *, gzip: bool = True) -> Path:
    with tarfile.open(path, "w:gz") if gzip else tarfile.open(path, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def make_zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def make_evil_tar(path: Path, members: list[tarfile.TarInfo], data: bytes = b"pwned") -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info in members:
            if info.isfile():
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return path


def tarinfo(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    if kind == tarfile.CHRTYPE:
        info.devmajor, info.devminor = 1, 3
    return info


def snapshot(root: Path) -> set[Path]:
    return set(root.rglob("*"))


@pytest.fixture(autouse=True)
def private_tempdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the fallback unpack location at the test's own directory."""
    tmp = tmp_path / "systmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    return tmp


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "model"
    directory.mkdir()
    return directory


def test_extracted_tree_is_used_in_place(model_dir: Path) -> None:
    for name, data in FILES.items():
        (model_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (model_dir / name).write_bytes(data)

    model = prepare_model_dir(model_dir)

    assert model == ModelDirectory(model_dir, model_dir / "code", Manifest(), None)
    assert find_archive(model_dir) is None


def test_model_tar_gz_in_directory_is_unpacked(model_dir: Path) -> None:
    make_tar(model_dir / "model.tar.gz", FILES)
    (model_dir / "README.md").write_text("beside the archive")

    model = prepare_model_dir(model_dir)

    assert model.root == model_dir / ".byoserve-extracted"
    assert (model.root / "model.bin").read_bytes() == b"weights"
    assert model.code_dir == model.root / "code"
    assert sorted(p.name for p in model_dir.iterdir() if not p.name.startswith(".")) == [
        "README.md",
        "model.tar.gz",
    ]


def test_single_archive_with_hidden_files_is_unpacked(model_dir: Path) -> None:
    make_tar(model_dir / "weights.tgz", FILES)
    (model_dir / ".DS_Store").write_text("")

    assert (prepare_model_dir(model_dir).root / "model.bin").is_file()


def test_other_archive_beside_model_files_means_extracted_tree(model_dir: Path) -> None:
    make_tar(model_dir / "extra.tar.gz", FILES)
    (model_dir / "model.bin").write_bytes(b"weights")

    assert prepare_model_dir(model_dir).root == model_dir


def test_archive_given_directly(tmp_path: Path) -> None:
    archive = make_tar(tmp_path / "mymodel.tar.gz", FILES)

    model = prepare_model_dir(archive)

    assert model.root == tmp_path / ".byoserve-extracted-mymodel"
    assert (model.root / "code" / "inference.py").is_file()


def test_two_archives_in_one_directory_unpack_apart(tmp_path: Path) -> None:
    first = make_tar(tmp_path / "first.tar.gz", {**FILES, "which": b"first"})
    second = make_tar(tmp_path / "second.tar.gz", {**FILES, "which": b"second"})

    roots = [prepare_model_dir(archive).root for archive in (first, second, first)]

    assert [(root / "which").read_text() for root in roots] == ["first", "second", "first"]
    assert roots[0] != roots[1]


def test_plain_tar_with_root_manifest(model_dir: Path) -> None:
    manifest = {"model": {"modelName": "m"}}
    files = {**FILES, "MANIFEST.json": json.dumps(manifest).encode()}
    make_tar(model_dir / "model.tar", files, gzip=False)

    model = prepare_model_dir(model_dir)

    assert model.manifest.raw == manifest
    assert model.manifest_path == model.root / "MANIFEST.json"


def test_mar_zip_with_mar_inf_manifest(model_dir: Path) -> None:
    manifest = {"runtime": "python", "model": {"modelName": "m", "handler": "handler.py"}}
    make_zip(
        model_dir / "m.mar",
        {"MAR-INF/MANIFEST.json": json.dumps(manifest).encode(), "handler.py": b"x = 1\n"},
    )

    model = prepare_model_dir(model_dir)

    assert model.manifest.raw == manifest
    assert model.manifest_path == model.root / "MAR-INF" / "MANIFEST.json"
    assert (model.root / "handler.py").read_text() == "x = 1\n"
    assert model.code_dir is None


def test_format_is_detected_from_content_not_extension(model_dir: Path) -> None:
    make_zip(model_dir / "model.tar.gz", FILES)

    assert (prepare_model_dir(model_dir).root / "model.bin").read_bytes() == b"weights"


def test_unpack_dir_is_used_when_given(model_dir: Path, tmp_path: Path) -> None:
    make_tar(model_dir / "model.tar.gz", FILES)

    model = prepare_model_dir(model_dir, unpack_dir=tmp_path / "scratch")

    assert model.root == tmp_path / "scratch" / ".byoserve-extracted"
    assert not (model_dir / ".byoserve-extracted").exists()


def test_read_only_directory_unpacks_under_temp(
    model_dir: Path, private_tempdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_tar(model_dir / "model.tar.gz", FILES)
    monkeypatch.setattr(modeldir, "directory_is_writable", lambda directory: False)

    model = prepare_model_dir(model_dir)

    assert model.root.parent == private_tempdir
    assert model.root.name.startswith("byoserve-model-")
    assert (model.root / "model.bin").is_file()
    assert [p.name for p in model_dir.iterdir()] == ["model.tar.gz"]
    assert prepare_model_dir(model_dir).root == model.root


@pytest.fixture
def read_only_mount(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs holding model.tar.gz, remounted read-only (needs root with CAP_SYS_ADMIN)."""
    mount = tmp_path / "ro"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(mount)], check=False).returncode:
        pytest.fail("cannot mount a tmpfs here: the test needs root with CAP_SYS_ADMIN, as CI has")
    try:
        make_tar(mount / "model.tar.gz", FILES)
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_genuinely_read_only_mount_unpacks_under_temp(
    read_only_mount: Path, private_tempdir: Path
) -> None:
    assert not modeldir.directory_is_writable(read_only_mount)

    model = prepare_model_dir(read_only_mount)

    assert model.root.parent == private_tempdir
    assert (model.root / "model.bin").read_bytes() == b"weights"


def test_second_call_does_not_re_extract(model_dir: Path) -> None:
    make_tar(model_dir / "model.tar.gz", FILES)
    first = prepare_model_dir(model_dir)
    marker_mtime = (first.root / MARKER_NAME).stat().st_mtime_ns
    (first.root / "sentinel").write_text("still here")

    second = prepare_model_dir(model_dir)

    assert second == first
    assert (second.root / MARKER_NAME).stat().st_mtime_ns == marker_mtime
    assert (second.root / "sentinel").exists()


def test_changed_archive_is_re_extracted(model_dir: Path) -> None:
    archive = make_tar(model_dir / "model.tar.gz", FILES)
    first = prepare_model_dir(model_dir)
    (first.root / "sentinel").write_text("stale")
    make_tar(archive, {"model.bin": b"new weights, longer"})
    os.utime(archive, ns=(archive.stat().st_atime_ns, archive.stat().st_mtime_ns + 10**9))

    second = prepare_model_dir(model_dir)

    assert (second.root / "model.bin").read_bytes() == b"new weights, longer"
    assert not (second.root / "sentinel").exists()
    assert not (second.root / "code").exists()
    leftovers = [p.name for p in model_dir.iterdir() if ".tmp-" in p.name]
    assert leftovers == []


def test_concurrent_calls_extract_once(model_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    make_tar(model_dir / "model.tar.gz", FILES)
    caplog.set_level(logging.INFO, logger="serve.model.directory")

    with ThreadPoolExecutor(4) as pool:
        roots = set(pool.map(lambda _: prepare_model_dir(model_dir).root, range(4)))

    assert roots == {model_dir / ".byoserve-extracted"}
    assert sum("unpacking model archive" in r.getMessage() for r in caplog.records) == 1


def _victim(tmp_path: Path) -> Path:
    victim = tmp_path / "outside" / "victim"
    victim.parent.mkdir(exist_ok=True)
    victim.write_text("original")
    return victim


EVIL_TARS = {
    "absolute path": lambda v: [tarinfo(str(v.parent / "absolute"))],
    "dot-dot": lambda v: [tarinfo("../../outside/evil")],
    "absolute symlink then write": lambda v: [
        tarinfo("link", tarfile.SYMTYPE, str(v)),
        tarinfo("link"),
    ],
    "etc-passwd symlink": lambda v: [tarinfo("pw", tarfile.SYMTYPE, "/etc/passwd")],
    "relative symlink dir then write": lambda v: [
        tarinfo("escape", tarfile.SYMTYPE, "../../outside"),
        tarinfo("escape/victim"),
    ],
    "hard link outside": lambda v: [tarinfo("hard", tarfile.LNKTYPE, str(v))],
    "relative hard link outside": lambda v: [tarinfo("hard", tarfile.LNKTYPE, "../outside/victim")],
    "character device": lambda v: [tarinfo("null", tarfile.CHRTYPE)],
    "link through an inside symlink": lambda v: [
        tarinfo("here", tarfile.SYMTYPE, "."),
        tarinfo("here/up", tarfile.SYMTYPE, "../outside/victim"),
    ],
}


@pytest.mark.parametrize("data_filter", [True, False], ids=["data-filter", "python-3.11.2"])
@pytest.mark.parametrize("case", sorted(EVIL_TARS))
def test_malicious_tar_is_rejected(
    case: str, data_filter: bool, model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Debian 12's python3 (3.11.2, the image's base here) predates tarfile's extraction filters.
    monkeypatch.setattr(extraction, "_HAS_DATA_FILTER", data_filter)
    victim = _victim(tmp_path)
    archive = make_evil_tar(model_dir / "model.tar.gz", EVIL_TARS[case](victim))
    before = snapshot(tmp_path)

    with pytest.raises(ModelDirError, match=r"model archive .*model\.tar\.gz: unsafe member '"):
        prepare_model_dir(model_dir)

    assert victim.read_text() == "original"
    assert snapshot(tmp_path) - before <= {model_dir / ".byoserve-extracted.lock"}
    assert archive.exists()


def test_symlink_inside_the_tree_is_kept(model_dir: Path) -> None:
    make_evil_tar(
        model_dir / "model.tar.gz",
        [tarinfo("blobs/abc"), tarinfo("weights.bin", tarfile.SYMTYPE, "blobs/abc")],
        data=b"weights",
    )

    root = prepare_model_dir(model_dir).root

    assert (root / "weights.bin").is_symlink()
    assert (root / "weights.bin").read_bytes() == b"weights"


def _zip_symlink(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        info = zipfile.ZipInfo("link")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
    return path


@pytest.mark.parametrize(
    ("case", "reason"),
    [("../x", "'..'"), ("/abs/x", "absolute path"), ("symlink", "symbolic link")],
)
def test_malicious_zip_is_rejected(case: str, reason: str, model_dir: Path, tmp_path: Path) -> None:
    archive = model_dir / "m.mar"
    _zip_symlink(archive) if case == "symlink" else make_zip(archive, {case: b"pwned"})
    before = snapshot(tmp_path)

    with pytest.raises(ModelDirError, match=rf"m\.mar: unsafe member '.*': .*{reason}"):
        unpack_archive(archive, model_dir / "out")

    assert snapshot(tmp_path) - before <= {model_dir / ".out.lock"}


def test_corrupt_archive_is_rejected(model_dir: Path) -> None:
    (model_dir / "model.tar.gz").write_bytes(b"not an archive at all")

    with pytest.raises(ModelDirError, match=r"model\.tar\.gz: not a tar or zip archive"):
        prepare_model_dir(model_dir)


def test_missing_path_is_named(tmp_path: Path) -> None:
    with pytest.raises(ModelDirError, match=re.escape(f"{tmp_path / 'nope'}: does not exist")):
        prepare_model_dir(tmp_path / "nope")


def test_single_top_level_directory_is_flattened(model_dir: Path) -> None:
    make_tar(model_dir / "model.tar.gz", {f"mymodel/{k}": v for k, v in FILES.items()})

    model = prepare_model_dir(model_dir)

    assert model.root == model_dir / ".byoserve-extracted" / "mymodel"
    assert model.code_dir == model.root / "code"


def test_lone_code_directory_is_not_flattened(model_dir: Path) -> None:
    make_tar(model_dir / "model.tar.gz", {"code/inference.py": b""})

    model = prepare_model_dir(model_dir)

    assert model.code_dir == model_dir / ".byoserve-extracted" / "code"


def test_archivers_tgz_extracted_in_place_is_served_one_level_down(
    model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """torch-model-archiver's and MMS's tgz put every file under NAME/; SageMaker extracts it
    into /opt/ml/model as it is, so the model (and MAR-INF) is one directory down."""
    manifest = {"model": {"modelName": "digits", "handler": "service:handle"}}
    (model_dir / "digits" / "MAR-INF").mkdir(parents=True)
    (model_dir / "digits" / "MAR-INF" / "MANIFEST.json").write_text(json.dumps(manifest))
    (model_dir / "digits" / "service.py").write_text("def handle(data, context):\n    pass\n")
    (model_dir / ".hidden").write_text("")

    with caplog.at_level(logging.INFO, logger="serve.model.extraction"):
        model = prepare_model_dir(model_dir)

    assert model.root == model_dir / "digits"
    assert model.manifest.raw == manifest
    assert model.manifest_path == model_dir / "digits" / "MAR-INF" / "MANIFEST.json"
    lines = [r.getMessage() for r in caplog.records if "holds only" in r.getMessage()]
    assert lines == [
        f"model directory {model_dir} holds only digits/ with the model in it (a tgz "
        f"extracted as it is, e.g. by SageMaker); serving {model_dir / 'digits'}"
    ]


def test_lone_directory_with_code_is_descended(model_dir: Path) -> None:
    (model_dir / "mymodel" / "code").mkdir(parents=True)
    (model_dir / "mymodel" / "code" / "inference.py").write_text("")

    model = prepare_model_dir(model_dir)

    assert (model.root, model.code_dir) == (model_dir / "mymodel", model_dir / "mymodel" / "code")


@pytest.mark.parametrize("layout", ["no model inside", "beside a file", "code", "MAR-INF", "link"])
def test_other_lone_directories_are_used_in_place(
    model_dir: Path, tmp_path: Path, layout: str
) -> None:
    inner = {"code": "code", "MAR-INF": "MAR-INF"}.get(layout, "weights")
    if layout == "link":
        (tmp_path / "elsewhere" / "MAR-INF").mkdir(parents=True)
        (tmp_path / "elsewhere" / "MAR-INF" / "MANIFEST.json").write_text("{}")
        (model_dir / inner).symlink_to(tmp_path / "elsewhere")
    else:
        (model_dir / inner).mkdir()
        (model_dir / inner / "model.pt").write_bytes(b"weights")
    if layout == "beside a file":
        (model_dir / inner / "MANIFEST.json").write_text("{}")
        (model_dir / "inference.py").write_text("")

    assert prepare_model_dir(model_dir).root == model_dir


@pytest.mark.parametrize(("text", "problem"), [("{not json", "invalid JSON"), ("[1]", "object")])
def test_bad_manifest_is_named(text: str, problem: str, model_dir: Path) -> None:
    (model_dir / "MAR-INF").mkdir()
    (model_dir / "MAR-INF" / "MANIFEST.json").write_text(text)

    with pytest.raises(ModelDirError, match=rf"MAR-INF/MANIFEST\.json: .*{problem}"):
        prepare_model_dir(model_dir)


@pytest.fixture
def offline_pip(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep pip off the network: unit tests open no sockets."""
    monkeypatch.setenv("PIP_NO_INDEX", "1")


def test_requirements_already_satisfied_install(model_dir: Path, offline_pip: None) -> None:
    (model_dir / "code").mkdir()
    (model_dir / "code" / "requirements.txt").write_text("# needed\nnumpy\n")

    assert prepare_model_dir(model_dir).code_dir == model_dir / "code"


def test_comment_only_requirements_skip_pip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("\n   \n# nothing yet\n")
    monkeypatch.setattr(subprocess, "run", pytest.fail)

    install_requirements_file(requirements)


def test_failing_requirements_report_pip_output(tmp_path: Path, offline_pip: None) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("this-package-does-not-exist-byoserve==0.0.0\n")

    with pytest.raises(ModelDirError, match=r"requirements\.txt: pip install failed") as err:
        install_requirements_file(requirements)

    assert "this-package-does-not-exist-byoserve" in str(err.value).split("\n", 1)[1]


def test_manifest_requirements_file_is_installed(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    installed: list[Path] = []
    monkeypatch.setattr(
        modeldir, "install_requirements_file", lambda path, target=None: installed.append(path)
    )
    (model_dir / "code").mkdir()
    (model_dir / "code" / "requirements.txt").write_text("numpy\n")
    (model_dir / "extra.txt").write_text("numpy\n")
    (model_dir / "MANIFEST.json").write_text(
        json.dumps({"model": {"requirementsFile": "extra.txt"}})
    )

    prepare_model_dir(model_dir)
    assert installed == [model_dir / "code" / "requirements.txt", model_dir / "extra.txt"]

    installed.clear()
    prepare_model_dir(model_dir, install_requirements=False)
    assert installed == []


def test_manifest_naming_missing_requirements_file(model_dir: Path) -> None:
    (model_dir / "MANIFEST.json").write_text(json.dumps({"model": {"requirementsFile": "../x"}}))

    with pytest.raises(ModelDirError, match=r"MANIFEST\.json: requirementsFile '\.\./x'"):
        prepare_model_dir(model_dir)


def test_activate_code_paths_orders_without_duplicates(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "path", [*sys.path, str(model_dir)])
    (model_dir / "code").mkdir()
    model = prepare_model_dir(model_dir, install_requirements=False)

    activate_code_paths(model)
    activate_code_paths(model)

    assert sys.path[:2] == [str(model_dir / "code"), str(model_dir)]
    assert sys.path.count(str(model_dir)) == 1
    assert sys.path.count(str(model_dir / "code")) == 1


def test_activate_code_paths_without_code_dir(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))

    activate_code_paths(prepare_model_dir(model_dir))

    assert sys.path[0] == str(model_dir)


def test_the_manifest_is_read_once_into_typed_fields_and_kept_whole(model_dir: Path) -> None:
    manifest = {
        "archiverVersion": "0.12.0",
        "options": {"topk": 3},
        "model": {
            "modelName": "m",
            "modelVersion": 2.0,
            "handler": " handler.py ",
            "serializedFile": "model.pt",
            "modelFile": "model.py",
            "configFile": "model-config.yaml",
            "requirementsFile": "requirements.txt",
        },
    }
    (model_dir / "MANIFEST.json").write_text(json.dumps(manifest))
    (model_dir / "requirements.txt").write_text("")

    read = prepare_model_dir(model_dir, install_requirements=False).manifest

    assert (read.model_name, read.model_version, read.handler) == ("m", "2.0", "handler.py")
    assert (read.serialized_file, read.model_file) == ("model.pt", "model.py")
    assert (read.config_file, read.requirements_file) == ("model-config.yaml", "requirements.txt")
    assert (read.archiver_version, dict(read.options)) == ("0.12.0", {"topk": 3})
    assert read.raw == manifest  # what handlers get as context.manifest
    named = read.with_handler("other.py")
    assert named.handler == "other.py" and named.raw["model"]["handler"] == "other.py"
    assert named.raw["model"]["modelName"] == "m" and read.raw["model"]["handler"] == " handler.py "
    assert Manifest.from_raw({"model": ["not", "an", "object"]}) == Manifest(
        raw={"model": ["not", "an", "object"]}
    )
