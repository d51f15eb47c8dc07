"""upload-model with what archivers write: a ``.mar`` (or a ``no-archive`` directory) is repacked
into the gzipped tar SageMaker takes, with the same files, the same bytes every time; a
``.tar.gz`` goes up as it is. Moto over HTTP, as the other deploy tests."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from serve.archive.archiver import main as archive_main
from tests.deploy.conftest import INFERENCE_PY, AwsWorld, Result

MANIFEST = b'{"runtime": "python", "model": {"modelName": "demo", "handler": "inference.py"}}'
FILES = {
    "MAR-INF/MANIFEST.json": MANIFEST,
    "inference.py": INFERENCE_PY.encode(),
    "assets/.hidden": b"kept",
    "weights.bin": bytes(range(256)) * 64,
}
MULTI_MODEL = """\
[model]
mode = "multi-model"
archives = ["{archive}"]

[image]
repository = "byoserve-test"

[endpoint]
instance_type = "ml.m5.large"
instance_count = 1
"""


def make_mar(path: Path, files: dict[str, bytes] = FILES) -> Path:
    """A .mar as torch-model-archiver writes one: a deflated zip, the files at its top."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as mar:
        for name, data in files.items():
            mar.writestr(name, data)
    return path


def tar_files(body: bytes) -> dict[str, bytes]:
    """The regular files of a gzipped tar, by name."""
    assert body[:2] == b"\x1f\x8b"
    found: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as tar:
        for member in tar.getmembers():
            extracted = tar.extractfile(member) if member.isfile() else None
            if extracted is not None:
                found[member.name] = extracted.read()
    return found


def uploaded(aws: AwsWorld, out: str) -> tuple[str, bytes]:
    """The key of the one ``uploaded:``/``already there:`` line, and the object's bytes."""
    (url,) = [line.split(": ", 1)[1] for line in out.splitlines() if line.startswith(("up", "al"))]
    key = url.removeprefix(f"s3://{aws.bucket}/")
    return key, aws.client("s3").get_object(Bucket=aws.bucket, Key=key)["Body"].read()


def test_a_mar_goes_up_as_a_tar_gz_of_its_files(
    aws: AwsWorld, cli: Callable[..., Result], tmp_path: Path
) -> None:
    mar = make_mar(tmp_path / "demo.mar")
    first = cli("upload-model", "demo", "--archive", str(mar))
    assert first.code == 0, first.err
    assert f"repacked {mar} into a gzipped tar for SageMaker (4 files)" in first.err
    key, body = uploaded(aws, first.out)
    assert key == f"models/demo/{hashlib.sha256(body).hexdigest()}/model.tar.gz"
    assert first.out.startswith("uploaded: ")
    assert tar_files(body) == FILES
    head = aws.client("s3").head_object(Bucket=aws.bucket, Key=key)
    assert (head["ContentType"], head["Metadata"]["sha256"]) == (
        "application/gzip",
        hashlib.sha256(body).hexdigest(),
    )
    mar.touch()  # a repack of the same files is the same bytes: not uploaded again
    again = cli("upload-model", "demo", "--archive", str(mar))
    assert again.out == f"already there: s3://{aws.bucket}/{key}\n"
    assert aws.client("s3").list_objects_v2(Bucket=aws.bucket)["KeyCount"] == 1


def test_a_directory_goes_up_as_the_tar_gz_of_its_files(
    aws: AwsWorld, cli: Callable[..., Result], tmp_path: Path
) -> None:
    """A ``no-archive`` directory; and the files of a .mar, extracted, are the same upload."""
    (tmp_path / "inference.py").write_text(INFERENCE_PY)
    (tmp_path / "model.pt").write_bytes(b"weights")
    argv = ["--model-name=demo", f"--serialized-file={tmp_path / 'model.pt'}"]
    argv += [f"--handler={tmp_path / 'inference.py'}", f"--export-path={tmp_path / 'out'}"]
    assert archive_main([*argv, "--archive-format=no-archive"], environ={}) == 0
    from_dir = cli("upload-model", "demo", "--archive", str(tmp_path / "out" / "demo"))
    assert from_dir.code == 0, from_dir.err
    assert sorted(tar_files(uploaded(aws, from_dir.out)[1])) == [
        "MAR-INF/MANIFEST.json",
        "code/inference.py",
        "model.pt",
    ]
    mar = make_mar(tmp_path / "demo.mar")
    with zipfile.ZipFile(mar) as archive:
        archive.extractall(tmp_path / "extracted")
    from_mar = cli("upload-model", "demo", "--archive", str(mar))
    from_tree = cli("upload-model", "demo", "--archive", str(tmp_path / "extracted"))
    key, body = uploaded(aws, from_mar.out)
    assert from_tree.out == f"already there: s3://{aws.bucket}/{key}\n"
    assert tar_files(body) == FILES  # hidden files inside a .mar too


def test_a_tar_gz_goes_up_unchanged(
    aws: AwsWorld, cli: Callable[..., Result], tmp_path: Path
) -> None:
    """An archiver's tgz (files under NAME/) included: the server looks one directory down."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in FILES.items():
            info = tarfile.TarInfo(f"demo/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    archive = tmp_path / "demo.tar.gz"
    archive.write_bytes(gzip.compress(raw.getvalue()))
    result = cli("upload-model", "demo", "--archive", str(archive))
    assert result.code == 0 and "repacked" not in result.err
    assert uploaded(aws, result.out)[1] == archive.read_bytes()
    plain = tmp_path / "plain.tar"  # not gzipped: SageMaker takes gzip, so it is repacked
    plain.write_bytes(raw.getvalue())
    repacked = cli("upload-model", "demo", "--archive", str(plain))
    assert tar_files(uploaded(aws, repacked.out)[1]) == {f"demo/{k}": v for k, v in FILES.items()}


def test_multi_model_names_a_mar_as_its_tar_gz(
    aws: AwsWorld, cli: Callable[..., Result], tmp_path: Path
) -> None:
    definition = MULTI_MODEL.format(archive=aws.archive)
    (aws.endpoints_dir / "shelf.toml").write_text(definition)
    mar = make_mar(tmp_path / "digits.mar")
    result = cli("upload-model", "shelf", "--archive", str(mar))
    assert result.code == 0, result.err
    key, body = uploaded(aws, result.out)
    assert key == "models/shelf/digits.tar.gz"
    assert tar_files(body) == FILES
    named = cli("upload-model", "shelf", "--archive", str(mar), "--name", "v2.tar.gz")
    assert uploaded(aws, named.out) == ("models/shelf/v2.tar.gz", body)
    bad = cli("upload-model", "shelf", "--archive", str(mar), "--name", "v3.mar")
    assert bad.code != 0 and "ending in .tar.gz" in bad.err


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"../escape.py": b"x"}, "unsafe member '../escape.py': path contains '..'"),
        ({}, "holds no file to upload"),
    ],
)
def test_a_mar_that_cannot_be_repacked_uploads_nothing(
    aws: AwsWorld,
    cli: Callable[..., Result],
    tmp_path: Path,
    files: dict[str, bytes],
    message: str,
) -> None:
    mar = make_mar(tmp_path / "bad.mar", files)
    result = cli("upload-model", "demo", "--archive", str(mar))
    assert result.code == 1
    assert result.err.startswith("deploy: ") and message in result.err
    assert result.err.count("\n") == 1
    assert aws.client("s3").list_objects_v2(Bucket=aws.bucket)["KeyCount"] == 0
    missing = cli("upload-model", "demo", "--archive", str(tmp_path / "nowhere.mar"))
    assert missing.code != 0 and "check --archive" in missing.err
