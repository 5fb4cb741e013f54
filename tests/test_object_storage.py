"""Outputs to ``s3://`` URLs (geoseg.storage), against a real S3 API: moto's server on
127.0.0.1, reached over HTTP by geoseg as by any S3 client; the tests look at the bucket
through boto3, a client of their own."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from affine import Affine
from conftest import assert_one_line_error, aws_env, free_port, run_cli, write_raster

import geoseg
from geoseg import storage
from geoseg.errors import OutputError, OutputExistsError


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


def test_refused_credentials_are_one_line_and_not_shown(s3_server, s3, scene, monkeypatch,
                                                        s3_auth):
    monkeypatch.setattr(geoseg.prediction, "open_source", _never)

    # moto checks signatures and IAM only once this many requests were made (by default never).
    s3_auth(True)
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


# What a read-only user may do, as IAM names it: HEAD is authorized by s3:GetObject and
# ListObjectsV2 by s3:ListBucket. moto 5.2.6 (unlike AWS and moto before it) authorizes S3
# requests by the API operation's name instead, so those names are granted too: an IAM policy
# may name actions AWS does not have (they never match), and the user then reads and lists,
# and may not write, on any moto, as on AWS.
READ_ONLY = ["s3:GetObject", "s3:ListBucket", "s3:HeadObject", "s3:ListObjectsV2"]


def iam_user(s3_server: str, s3: Any, name: str, actions: list[str]) -> dict[str, str]:
    """The access key of a new IAM user that may do ``actions`` on any S3 resource (moto
    checks it once ``s3_auth(True)``)."""
    import boto3

    iam = boto3.client("iam", endpoint_url=s3_server, region_name="us-east-1")
    user = f"{name}-{s3.bucket}"
    iam.create_user(UserName=user)
    iam.put_user_policy(UserName=user, PolicyName=name, PolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}]}))
    return dict(iam.create_access_key(UserName=user)["AccessKey"])


def read_only_user(s3_server: str, s3: Any) -> dict[str, str]:
    """The access key of a new IAM user that may read and list the test's bucket but not
    write to it."""
    return iam_user(s3_server, s3, "reader", READ_ONLY)


def test_a_denied_write_is_one_line_and_leaves_nothing(s3_server, s3, scene, monkeypatch,
                                                       s3_auth):
    """An IAM user that may read and list the bucket but not write to it. Nothing short of
    a write can tell that a write will be refused, so the up-front check passes and the
    upload itself is refused: that refusal is one line naming the output, and leaves
    nothing."""
    key = read_only_user(s3_server, s3)
    s3_auth(True)
    aws_env(monkeypatch, s3_server, key=key["AccessKeyId"], secret=key["SecretAccessKey"])
    tried: list[str] = []
    real = storage.upload
    monkeypatch.setattr(storage, "upload", lambda local, url, **kw: (tried.append(url),
                                                                       real(local, url, **kw)))
    url = f"s3://{s3.bucket}/m.tif"
    result = run_cli("predict", scene, "-o", url, "--tile-size", 64)
    assert_one_line_error(result, "access denied: the credentials may not write here",
                          named=url)
    assert key["SecretAccessKey"] not in result.output
    # The refusal this test is about is the upload's (the only place a denied write
    # shows); were it the check's, the upload's handling of it would go untested.
    assert tried == [url]
    s3_auth(False)
    assert objects(s3) == {}


def test_credentials_that_may_not_look_at_an_output_are_one_line_before_any_work(
        s3_server, s3, scene, monkeypatch, s3_auth):
    """A user who may write but not read or list: outputs cannot be checked up front, and
    the message says it is the looking that was refused, not the writing."""
    key = iam_user(s3_server, s3, "writer", ["s3:PutObject"])
    s3_auth(True)
    aws_env(monkeypatch, s3_server, key=key["AccessKeyId"], secret=key["SecretAccessKey"])
    monkeypatch.setattr(geoseg.prediction, "open_source", _never)
    url = f"s3://{s3.bucket}/m.tif"
    result = run_cli("predict", scene, "-o", url)
    assert_one_line_error(result, "access denied: the credentials may not read or list here",
                          named=url)
    s3_auth(False)
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


def two_scenes(make_scene: Callable[..., tuple[Path, np.ndarray]], tmp_path: Path) -> Path:
    folder = tmp_path / "scenes"
    folder.mkdir()
    for k, size in enumerate(((96, 112), (80, 64))):
        path = make_scene(*size, seed=k)[0]
        path.rename(folder / f"scene_{k}.tif")
    return folder


def bucket_run(out: object, scenes: Path, *extra: object) -> Any:
    return run_cli("run", scenes / "*.tif", "-o", out, "--tile-size", 64, "--probabilities",
                   "--quicklook", "--no-progress", *extra)


RUN_REPORTS = {"geoseg-journal.jsonl", "summary.json"}


def test_run_to_a_bucket_writes_the_bytes_of_a_local_run_and_resumes(s3, make_scene, tmp_path,
                                                                      monkeypatch):
    scenes = two_scenes(make_scene, tmp_path)
    assert bucket_run(tmp_path / "here", scenes).exit_code == 0
    here = {p.name: p.read_bytes() for p in (tmp_path / "here").iterdir()
            if p.name not in RUN_REPORTS}
    url = f"s3://{s3.bucket}/maps/2026"
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))  # where outputs are staged
    (tmp_path / "tmp").mkdir()
    result = bucket_run(url + "/", scenes)
    assert result.exit_code == 0, result.output
    assert "2 scenes: 2 done, 0 skipped, 0 failed" in result.output
    assert f"summary: {url}/summary.json" in result.output
    there = objects(s3)
    journal = sorted(k for k in there if k.startswith("maps/2026/geoseg-journal/"))
    assert len(journal) == 3  # the run, and a line per scene
    assert {k.removeprefix("maps/2026/"): v for k, v in there.items()
            if k not in journal and not k.endswith("summary.json")} == here
    summary = json.loads(there["maps/2026/summary.json"])
    assert summary["scenes"][0]["outputs"]["mask"] == f"{url}/scene_0.mask.tif"
    assert list((tmp_path / "tmp").iterdir()) == []  # staged files went
    events = [json.loads(there[k]) for k in journal]
    assert events[1]["outputs"]["mask"]["etag"] and events[1]["outputs"]["mask"]["path"] == (
        f"{url}/scene_0.mask.tif")

    # Again without --resume: the earlier run is an existing output.
    again = bucket_run(url, scenes)
    assert_one_line_error(again, "exists already", "--resume", named=f"{url}/geoseg-journal")
    # Resumed: finished scenes are checked by size and ETag, a changed one is redone.
    edited = bytearray(there["maps/2026/scene_1.gpkg"])  # the same size: only its ETag says
    edited[-1] ^= 1
    s3.put_object(Bucket=s3.bucket, Key="maps/2026/scene_1.gpkg", Body=bytes(edited))
    result = bucket_run(url, scenes, "--resume")
    assert result.exit_code == 0, result.output
    assert "skipped scene_0 (finished by an earlier run)" in result.output
    assert "redo    scene_1 (its gpkg output changed)" in result.output
    assert {k: v for k, v in objects(s3).items() if k in there and k not in journal
            and not k.endswith("summary.json")} == {k: v for k, v in there.items()
                                                   if k not in journal
                                                   and not k.endswith("summary.json")}
    # Parts a killed tile-mode run left of this run's masks go; anyone else's stay.
    for key in ("maps/2026/.geoseg-parts-scene_1.mask.tif-0123456789abcdef/mask/0-0.npy.z",
                "maps/2026/.geoseg-parts-other.mask.tif-0123456789abcdef/mask/0-0.npy.z"):
        s3.put_object(Bucket=s3.bucket, Key=key, Body=b"left by a killed run")
    result = bucket_run(url, scenes, "--resume")
    assert result.exit_code == 0, result.output
    assert [k for k in objects(s3) if ".geoseg-parts-" in k] == [
        "maps/2026/.geoseg-parts-other.mask.tif-0123456789abcdef/mask/0-0.npy.z"]
    # --overwrite starts the journal again.
    result = bucket_run(url, scenes, "--overwrite")
    assert result.exit_code == 0, result.output
    assert len([k for k in objects(s3) if "/geoseg-journal/" in k]) == 3


def test_a_run_the_credentials_may_not_write_fails_before_any_work(s3_server, s3, s3_auth,
                                                                   make_scene, tmp_path,
                                                                   monkeypatch):
    """A read-only user: the run's first write, its journal's first event, is refused
    before any scene is computed, and nothing is left in the bucket."""
    from geoseg import batch

    scenes = two_scenes(make_scene, tmp_path)
    key = read_only_user(s3_server, s3)
    s3_auth(True)
    aws_env(monkeypatch, s3_server, key=key["AccessKeyId"], secret=key["SecretAccessKey"])
    monkeypatch.setattr(batch, "predict_scene", _never)
    url = f"s3://{s3.bucket}/maps"
    result = bucket_run(url, scenes)
    assert_one_line_error(result, "access denied")
    assert url in result.output and key["SecretAccessKey"] not in result.output
    s3_auth(False)
    assert objects(s3) == {}


def test_an_aws_profile_gives_keys_region_and_endpoint(s3, scene, tmp_path, monkeypatch):
    """A user with ``AWS_PROFILE`` and the AWS CLI's files only: outputs go up and inputs
    come down (GDAL too) with that profile's keys and endpoint."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION",
                 "AWS_ENDPOINT_URL", "CPL_AWS_CREDENTIALS_FILE"):
        monkeypatch.delenv(name, raising=False)
    endpoint = s3.meta.endpoint_url
    (tmp_path / "credentials").write_text(
        "[default]\naws_access_key_id = wrong\naws_secret_access_key = wrong\n\n"
        "[geo]\naws_access_key_id = testing\naws_secret_access_key = testing\n")
    (tmp_path / "config").write_text(
        f"[default]\nregion = eu-west-1\n\n[profile geo]\nregion = us-east-1\n"
        f"endpoint_url = {endpoint}\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_PROFILE", "geo")
    url = f"s3://{s3.bucket}/m.tif"
    result = run_cli("predict", scene, "-o", url, "--tile-size", 64, "--scheduler", "sync")
    assert result.exit_code == 0, result.output
    result = run_cli("vectorize", url, "-o", tmp_path / "back.gpkg")  # read through GDAL
    assert result.exit_code == 0, result.output
    assert (tmp_path / "back.gpkg").read_bytes().startswith(b"SQLite format 3")


def test_run_to_a_bucket_refuses_existing_objects_and_missing_buckets(s3, make_scene, tmp_path):
    scenes = two_scenes(make_scene, tmp_path)
    s3.put_object(Bucket=s3.bucket, Key="out/scene_1.png", Body=b"someone else's")
    url = f"s3://{s3.bucket}/out"
    assert_one_line_error(bucket_run(url, scenes), "exists already", named=f"{url}/scene_1.png")
    assert set(objects(s3)) == {"out/scene_1.png"}  # no journal either
    missing = f"s3://{s3.bucket}-missing/out"
    assert_one_line_error(bucket_run(missing, scenes), "no such bucket", named=missing)


def test_a_prefix_another_run_holds_is_one_line_before_any_work(s3, make_scene, tmp_path,
                                                                 monkeypatch):
    """A run holds its prefix by a lock object it renews; a second run stops at it, before
    any work. A lock left unrenewed (its run was killed outright) is taken over."""
    from geoseg import batch, journal

    scenes = two_scenes(make_scene, tmp_path)
    lock = "maps/geoseg-journal/lock"
    s3.put_object(Bucket=s3.bucket, Key=lock, Body=b'{"host": "elsewhere", "pid": 1}')
    predict_scene = batch.predict_scene
    monkeypatch.setattr(batch, "predict_scene", _never)
    url = f"s3://{s3.bucket}/maps"
    assert_one_line_error(bucket_run(url, scenes), "another geoseg run is writing into this "
                          "folder", f"its lock {url}/geoseg-journal/lock", named=url)
    assert set(objects(s3)) == {lock}  # the other run's lock is kept
    monkeypatch.setattr(batch, "predict_scene", predict_scene)
    monkeypatch.setattr(journal, "LEASE_S", 0)  # the lock is now older than a lease
    result = bucket_run(url, scenes)
    assert result.exit_code == 0, result.output
    left = objects(s3)
    assert lock not in left and "maps/scene_1.gpkg" in left  # taken over, released at the end


@pytest.mark.parametrize("fault, words", [
    ("no credentials", ("no AWS credentials", "AWS_PROFILE")),
    ("closed endpoint", ("cannot reach the endpoint",)),
])
def test_a_run_to_an_unusable_bucket_is_one_line_before_any_work(s3, make_scene, tmp_path,
                                                                  monkeypatch, fault, words):
    from geoseg import batch

    scenes = two_scenes(make_scene, tmp_path)
    if fault == "no credentials":
        monkeypatch.delenv("AWS_ACCESS_KEY_ID")
        monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    else:
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setattr(batch, "predict_scene", _never)
    url = f"s3://{s3.bucket}/maps"
    assert_one_line_error(bucket_run(url, scenes), *words, named=url)


def _never(*args: object, **kwargs: object) -> None:
    raise AssertionError("the work started before the outputs were checked")


# Inputs: scenes, globs and STAC Items read from the bucket.

def upload_files(s3: Any, files: dict[str, Path]) -> None:
    for key, path in files.items():
        s3.put_object(Bucket=s3.bucket, Key=key, Body=path.read_bytes())


def predicted(tmp_path: Path, name: str, *src: object, cmd: str = "predict") -> bytes:
    out = tmp_path / name
    result = run_cli(cmd, *src, "-o", out, "--tile-size", 64, "--scheduler", "sync")
    assert result.exit_code == 0, result.output
    return out.read_bytes()


def test_predict_from_s3_gives_the_mask_of_the_local_scene(s3, scene, tmp_path):
    upload_files(s3, {"in/scene.tif": scene})
    here = predicted(tmp_path, "here.tif", scene)
    assert predicted(tmp_path, "there.tif", f"s3://{s3.bucket}/in/scene.tif") == here
    mask = geoseg.predict(f"s3://{s3.bucket}/in/scene.tif", tile_size=64, scheduler="sync")
    with rasterio.open(tmp_path / "here.tif") as ds:
        assert np.array_equal(mask.values, ds.read(1))


def tiles(scene: Path, tmp_path: Path) -> list[Path]:
    """The scene cut into a left and a right tile (a mosaic of two files)."""
    with rasterio.open(scene) as ds:
        data, profile = ds.read(), ds.profile
    half = data.shape[2] // 2
    out = []
    for k, part in enumerate((data[:, :, :half], data[:, :, half:])):
        transform = profile["transform"] * Affine.translation(k * half, 0)
        out.append(write_raster(tmp_path / f"tile_{k}.tif", part, transform=transform,
                                nodata=profile["nodata"]))
    return out


def test_a_glob_over_a_prefix_is_the_mosaic_of_its_tiles(s3, scene, tmp_path):
    left, right = tiles(scene, tmp_path)
    upload_files(s3, {"scenes/a/tile_0.tif": left, "scenes/b/c/tile_1.tif": right,
                      "scenes/notes.txt": scene, "scenes/tile_9.tif.aux.xml": scene,
                      "other/tile_2.tif": left})
    here = predicted(tmp_path, "here.tif", left, right)
    assert predicted(tmp_path, "there.tif", f"s3://{s3.bucket}/scenes/**/*.tif") == here
    # '*' does not cross folders, '**' does; and they match after the prefix only.
    assert storage.glob(f"s3://{s3.bucket}/scenes/*/tile_?.tif") == [
        f"s3://{s3.bucket}/scenes/a/tile_0.tif"]
    assert storage.glob(f"s3://{s3.bucket}/*/**/tile_[02].tif") == [
        f"s3://{s3.bucket}/other/tile_2.tif", f"s3://{s3.bucket}/scenes/a/tile_0.tif"]


def test_run_takes_a_glob_over_a_prefix_as_one_scene_per_object(s3, scene, tmp_path):
    left, right = tiles(scene, tmp_path)
    upload_files(s3, {"scenes/a/tile_0.tif": left, "scenes/b/tile_1.tif": right})
    for where, src in (("here", str(tmp_path / "tile_*.tif")),
                       ("there", f"s3://{s3.bucket}/scenes/*/*.tif")):
        result = run_cli("run", src, "-o", tmp_path / where, "--tile-size", 64,
                         "--scheduler", "sync")
        assert result.exit_code == 0, result.output
    for name in ("tile_0.mask.tif", "tile_1.mask.tif"):
        assert (tmp_path / "there" / name).read_bytes() == (tmp_path / "here" / name).read_bytes()


def test_a_stac_item_on_s3_resolves_relative_hrefs_against_its_url(s3, scene, tmp_path):
    with rasterio.open(scene) as ds:
        data, profile = ds.read(), ds.profile
    names = ("blue", "green", "red", "nir08")
    (tmp_path / "item" / "bands").mkdir(parents=True)
    assets = {}
    for k, name in enumerate(names):
        band = write_raster(tmp_path / "item" / "bands" / f"{name}.tif", data[k:k + 1],
                            transform=profile["transform"], nodata=profile["nodata"])
        upload_files(s3, {f"items/bands/{name}.tif": band})
        assets[name] = {"href": f"bands/{name}.tif", "type": "image/tiff; application=geotiff",
                        "roles": ["data"], "eo:bands": [{"name": name, "common_name": name}]}
    doc = {"type": "Feature", "stac_version": "1.0.0", "id": "item-on-s3",
           "stac_extensions": ["https://stac-extensions.github.io/eo/v1.1.0/schema.json"],
           "geometry": None, "properties": {"datetime": "2024-06-11T10:00:00Z"},
           "links": [], "assets": assets}
    (tmp_path / "item" / "item.json").write_text(json.dumps(doc))
    upload_files(s3, {"items/item.json": tmp_path / "item" / "item.json"})
    here = predicted(tmp_path, "here.tif", tmp_path / "item" / "item.json")
    assert predicted(tmp_path, "there.tif", f"s3://{s3.bucket}/items/item.json") == here


@pytest.mark.parametrize("key, words", [
    ("in/missing.tif", ("no such object",)),
    ("nobucket", ("no such bucket",)),
    ("glob", ("matches no object",)),
])
def test_a_missing_input_is_one_line(s3, key, words):
    url = {"nobucket": f"s3://{s3.bucket}-missing/scene.tif",
           "glob": f"s3://{s3.bucket}/scenes/**/*.tif"}.get(key, f"s3://{s3.bucket}/{key}")
    assert_one_line_error(run_cli("predict", url, "-o", "unused.tif"), *words, named=url)


def test_an_input_without_credentials_is_one_line(s3, scene, monkeypatch):
    upload_files(s3, {"scene.tif": scene})
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    url = f"s3://{s3.bucket}/scene.tif"
    result = run_cli("predict", url, "-o", "unused.tif")
    assert_one_line_error(result, "no AWS credentials", "AWS_ACCESS_KEY_ID", named=url)


def test_an_input_behind_an_unreachable_endpoint_is_one_line(s3, monkeypatch, tmp_path):
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("AWS_ENDPOINT_URL", closed)
    monkeypatch.chdir(tmp_path)
    url = f"s3://{s3.bucket}/scene.tif"
    result = run_cli("run", url, "-o", "out")  # a run reports each failed scene, and goes on
    assert result.exit_code == 1
    assert f"cannot reach the endpoint {closed}" in result.output, result.output
    assert "Traceback" not in result.output


def test_gdal_gets_the_endpoint_from_the_aws_environment(monkeypatch):
    from geoseg.gdal import gdal_env

    for name in ("AWS_ENDPOINT_URL_S3", "AWS_S3_ENDPOINT", "AWS_HTTPS", "AWS_VIRTUAL_HOSTING"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://minio.local:9000")
    env = gdal_env(remote=True)
    assert (env["AWS_S3_ENDPOINT"], env["AWS_HTTPS"], env["AWS_VIRTUAL_HOSTING"]) == (
        "minio.local:9000", "NO", "FALSE")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "https://s3.example.org/")
    monkeypatch.setenv("AWS_VIRTUAL_HOSTING", "TRUE")  # the user's own GDAL option stays
    env = gdal_env()
    assert env["AWS_S3_ENDPOINT"] == "s3.example.org" and env["AWS_HTTPS"] == "YES"
    assert "AWS_VIRTUAL_HOSTING" not in env
