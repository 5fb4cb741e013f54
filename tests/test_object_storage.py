"""Outputs to ``s3://`` URLs (geoseg.storage), against a real S3 API: moto's server on
127.0.0.1, reached over HTTP by geoseg as by any S3 client; the tests look at the bucket
through boto3, a client of their own."""

from __future__ import annotations

import itertools
import json
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import assert_one_line_error, run_cli

import geoseg
from geoseg import storage
from geoseg.errors import OutputError, OutputExistsError

_buckets = itertools.count()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def s3_server() -> Iterator[str]:
    """moto's S3 API on a free port of 127.0.0.1 (ThreadedMotoServer is serving once
    ``start`` returns); its endpoint URL."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


def aws_env(monkeypatch: pytest.MonkeyPatch, endpoint: str, key: str = "testing",
            secret: str = "testing") -> None:
    """The standard AWS variables for ``endpoint``, and GDAL's own for the same server
    (GDAL 3.10 reads no AWS_ENDPOINT_URL); no instance metadata service to fall back on."""
    host = endpoint.removeprefix("http://")
    for name, value in {"AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret,
                        "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint,
                        "AWS_S3_ENDPOINT": host, "AWS_HTTPS": "NO",
                        "AWS_VIRTUAL_HOSTING": "FALSE",
                        "AWS_METADATA_ENDPOINT": f"http://127.0.0.1:{free_port()}"}.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL_S3",
                 "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                 "AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def s3(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The AWS environment pointing at the server, and a new empty bucket of this test's
    own: a boto3 client with ``.bucket`` set."""
    import boto3

    aws_env(monkeypatch, s3_server)
    client = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    client.bucket = f"geoseg-test-{next(_buckets)}"
    client.create_bucket(Bucket=client.bucket)
    return client


def objects(s3: Any) -> dict[str, bytes]:
    """Every object in the test's bucket: key → bytes."""
    listed = s3.list_objects_v2(Bucket=s3.bucket).get("Contents", [])
    return {o["Key"]: s3.get_object(Bucket=s3.bucket, Key=o["Key"])["Body"].read()
            for o in listed}


@pytest.fixture
def scene(make_scene: Callable[..., tuple[Path, np.ndarray]]) -> Path:
    return make_scene(96, 112)[0]


def test_predict_to_s3_writes_the_bytes_of_a_local_run(s3, scene, tmp_path):
    local = tmp_path / "local"
    local.mkdir()
    args = ("--tile-size", 64, "--scheduler", "sync")
    for folder in ("a", "b"):  # first: two local runs give the same bytes
        (local / folder).mkdir()
        result = run_cli("predict", scene, "-o", local / folder / "m.tif", "--probabilities",
                         local / folder / "p.tif", "--quicklook", local / folder / "q.png", *args)
        assert result.exit_code == 0, result.output
    names = ("m.tif", "m.qml", "p.tif", "q.png")
    for name in names:
        assert (local / "a" / name).read_bytes() == (local / "b" / name).read_bytes(), name

    url = f"s3://{s3.bucket}/out"
    result = run_cli("predict", scene, "-o", f"{url}/m.tif", "--probabilities", f"{url}/p.tif",
                     "--quicklook", f"{url}/q.png", *args)
    assert result.exit_code == 0, result.output
    assert f"mask: {url}/m.tif (" in result.output and f"style: {url}/m.qml" in result.output
    assert f"probabilities: {url}/p.tif" in result.output
    assert objects(s3) == {f"out/{n}": (local / "a" / n).read_bytes() for n in names}


def test_predict_api_returns_the_uploaded_mask(s3, scene, tmp_path):
    url = f"s3://{s3.bucket}/api/m.tif"
    mask = geoseg.predict(scene, url, tile_size=64, scheduler="sync")
    here = geoseg.predict(scene, tmp_path / "m.tif", tile_size=64, scheduler="sync")
    assert np.array_equal(mask.values, here.values)
    assert mask.rio.transform() == here.rio.transform() and mask.rio.crs == here.rio.crs
    assert set(objects(s3)) == {"api/m.tif", "api/m.qml"}


def test_vectorize_to_s3_writes_the_bytes_of_a_local_run(s3, scene, tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")  # the GeoPackage's last_change
    mask = tmp_path / "m.tif"
    assert run_cli("predict", scene, "-o", mask, "--tile-size", 64).exit_code == 0
    result = run_cli("vectorize", mask, "-o", tmp_path / "v.gpkg", "--chunk-size", 32)
    assert result.exit_code == 0, result.output
    url = f"s3://{s3.bucket}/vec/v.gpkg"
    result = run_cli("vectorize", mask, "-o", url, "--chunk-size", 32)
    assert result.exit_code == 0, result.output
    assert f"polygons: {url} (" in result.output and f"style: s3://{s3.bucket}/vec/v.qml" in \
        result.output
    assert objects(s3) == {"vec/v.gpkg": (tmp_path / "v.gpkg").read_bytes(),
                           "vec/v.qml": (tmp_path / "v.qml").read_bytes()}
    frame = geoseg.vectorize(mask, f"s3://{s3.bucket}/api/v.gpkg", chunk_size=32)
    assert len(frame) and objects(s3)["api/v.gpkg"] == (tmp_path / "v.gpkg").read_bytes()


def test_an_existing_object_is_kept_without_overwrite(s3, scene):
    s3.put_object(Bucket=s3.bucket, Key="m.qml", Body=b"an earlier style")
    url = f"s3://{s3.bucket}/m.tif"
    result = run_cli("predict", scene, "-o", url, "--tile-size", 64)
    assert_one_line_error(result, "exists already", "--overwrite", named=f"s3://{s3.bucket}/m.qml")
    assert objects(s3) == {"m.qml": b"an earlier style"}  # nothing of this run either
    result = run_cli("predict", scene, "-o", url, "--tile-size", 64, "--overwrite")
    assert result.exit_code == 0, result.output
    assert objects(s3)["m.qml"].startswith(b"<!DOCTYPE qgis") and "m.tif" in objects(s3)


def test_upload_without_overwrite_never_replaces_an_object_that_appeared_meanwhile(s3, tmp_path):
    """The check before the work saw no object; one written since is kept (conditional
    PUT), not just checked for again."""
    (tmp_path / "new").write_bytes(b"this run")
    url = f"s3://{s3.bucket}/race.tif"
    storage.check_writable(url, overwrite=False)
    s3.put_object(Bucket=s3.bucket, Key="race.tif", Body=b"another writer")
    with pytest.raises(OutputExistsError, match="exists already"):
        storage.upload(tmp_path / "new", url, overwrite=False)
    assert objects(s3) == {"race.tif": b"another writer"}
    storage.upload(tmp_path / "new", url, overwrite=True)
    assert objects(s3) == {"race.tif": b"this run"}


def test_a_large_file_goes_up_in_parts(s3, tmp_path, monkeypatch):
    monkeypatch.setattr(storage, "MULTIPART_FROM", 1024)
    monkeypatch.setattr(storage, "PART_SIZE", 5 * 1024 * 1024)  # S3's smallest part
    data = np.random.default_rng(0).integers(0, 256, 11 * 1024 * 1024, np.uint8).tobytes()
    (tmp_path / "big").write_bytes(data)
    url = f"s3://{s3.bucket}/big.tif"
    storage.upload(tmp_path / "big", url, overwrite=False)
    assert objects(s3) == {"big.tif": data}
    # A multipart upload's ETag is "<md5 of the parts' md5s>-<parts>": it went in 3 parts.
    assert s3.head_object(Bucket=s3.bucket, Key="big.tif")["ETag"].endswith('-3"')
    with pytest.raises(OutputExistsError):
        storage.upload(tmp_path / "big", url, overwrite=False)


def test_a_missing_bucket_fails_before_any_work(s3, scene, monkeypatch):
    monkeypatch.setattr(geoseg.prediction, "open_source", _never)
    url = f"s3://{s3.bucket}-missing/m.tif"
    assert_one_line_error(run_cli("predict", scene, "-o", url), "no such bucket", named=url)


def test_no_credentials_is_one_line(s3, scene, monkeypatch):
    monkeypatch.setattr(geoseg.prediction, "open_source", _never)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    url = f"s3://{s3.bucket}/m.tif"
    result = run_cli("predict", scene, "-o", url)
    assert_one_line_error(result, "no AWS credentials", "AWS_ACCESS_KEY_ID", named=url)


def test_refused_credentials_are_one_line_and_not_shown(s3_server, s3, scene, monkeypatch):
    monkeypatch.setattr(geoseg.prediction, "open_source", _never)
    import moto.settings

    # moto checks signatures and IAM only once this many requests were made (by default never).
    monkeypatch.setattr(moto.settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)
    aws_env(monkeypatch, s3_server, key="AKIAUNKNOWNKEY000000", secret="not-a-known-secret")
    url = f"s3://{s3.bucket}/m.tif"
    result = run_cli("predict", scene, "-o", url)
    assert_one_line_error(result, "credentials were refused", named=url)
    assert "not-a-known-secret" not in result.output


def test_an_unreachable_endpoint_is_one_line(s3, scene, monkeypatch):
    monkeypatch.setattr(geoseg.prediction, "open_source", _never)
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("AWS_ENDPOINT_URL", closed)
    url = f"s3://{s3.bucket}/m.tif"
    result = run_cli("vectorize", "unused.tif", "-o", url)
    assert_one_line_error(result, f"cannot reach the endpoint {closed}", named=url)


def test_a_denied_write_is_one_line_and_leaves_nothing(s3_server, s3, scene, monkeypatch):
    """An IAM user that may read and list the bucket but not write to it: the up-front
    check passes, the upload is refused."""
    import boto3
    import moto.settings

    iam = boto3.client("iam", endpoint_url=s3_server, region_name="us-east-1")
    user = f"reader-{s3.bucket}"
    iam.create_user(UserName=user)
    iam.put_user_policy(UserName=user, PolicyName="read-only", PolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": ["s3:GetObject", "s3:ListBucket"],
                       "Resource": "*"}]}))
    key = iam.create_access_key(UserName=user)["AccessKey"]
    monkeypatch.setattr(moto.settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)
    aws_env(monkeypatch, s3_server, key=key["AccessKeyId"], secret=key["SecretAccessKey"])
    tried: list[str] = []
    real = storage.upload
    monkeypatch.setattr(storage, "upload", lambda local, url, **kw: (tried.append(url),
                                                                       real(local, url, **kw)))
    url = f"s3://{s3.bucket}/m.tif"
    result = run_cli("predict", scene, "-o", url, "--tile-size", 64)
    assert_one_line_error(result, "access denied", named=url)
    assert tried == [url]  # the check up front passed: only the write itself was refused
    assert key["SecretAccessKey"] not in result.output
    monkeypatch.setattr(moto.settings, "INITIAL_NO_AUTH_ACTION_COUNT", float("inf"))
    assert objects(s3) == {}


def test_a_failed_upload_removes_what_this_run_uploaded(s3, scene, tmp_path, monkeypatch):
    s3.put_object(Bucket=s3.bucket, Key="other.txt", Body=b"not ours")
    real = storage.upload
    calls: list[str] = []

    def second_fails(local: Path, url: str, *, overwrite: bool) -> None:
        calls.append(url)
        if len(calls) == 2:
            raise OutputError("could not be written (the test's failure)", url)
        real(local, url, overwrite=overwrite)

    monkeypatch.setattr(storage, "upload", second_fails)
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # TMPDIR is read again
    url = f"s3://{s3.bucket}/run"
    result = run_cli("predict", scene, "-o", f"{url}/m.tif", "--quicklook", f"{url}/q.png",
                     "--tile-size", 64)
    assert_one_line_error(result, "the test's failure", named=f"{url}/m.qml")
    assert calls[0] == f"{url}/m.tif"  # uploaded, then removed again
    assert objects(s3) == {"other.txt": b"not ours"}
    assert list((tmp_path / "tmp").iterdir()) == []  # the local files went too


def test_a_failed_local_write_names_the_url(s3, scene, monkeypatch):
    def disk_full(mask: Path, png: Path) -> None:
        raise OutputError("could not be written (No space left on device)", png)

    monkeypatch.setattr(geoseg.maskfile, "write_quicklook", disk_full)
    url = f"s3://{s3.bucket}/q.png"
    result = run_cli("predict", scene, "-o", f"s3://{s3.bucket}/m.tif", "--quicklook", url,
                     "--tile-size", 64)
    assert_one_line_error(result, "No space left", named=url)
    assert objects(s3) == {}


def test_local_and_s3_outputs_together_are_refused(s3, scene, tmp_path, monkeypatch):
    monkeypatch.setattr(geoseg.prediction, "open_source", _never)
    result = run_cli("predict", scene, "-o", f"s3://{s3.bucket}/m.tif", "--quicklook",
                     tmp_path / "q.png")
    assert_one_line_error(result, "all to object storage or all to local files")
    assert objects(s3) == {} and not (tmp_path / "q.png").exists()


def test_a_url_without_a_key_is_one_line(s3, scene, monkeypatch):
    monkeypatch.setattr(geoseg.prediction, "open_source", _never)
    url = f"s3://{s3.bucket}"
    assert_one_line_error(run_cli("predict", scene, "-o", url), "expected s3://BUCKET/KEY",
                          named=url)


def test_run_to_a_bucket_is_refused_not_a_local_folder(scene, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run_cli("run", scene, "-o", "s3://some-bucket/out")
    assert_one_line_error(result, "local folder", named="s3://some-bucket/out")
    assert not (tmp_path / "s3:").exists()


def _never(*args: object, **kwargs: object) -> None:
    raise AssertionError("the work started before the outputs were checked")
