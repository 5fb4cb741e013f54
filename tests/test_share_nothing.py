"""Dask clusters whose workers share nothing with the client but the scheduler and a
bucket (tests/conftest.py's ``share_nothing_cluster`` and moto's S3 server)."""

from __future__ import annotations

import os
import shutil
import signal
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from conftest import assert_one_line_error, invoke, run_cli

pytestmark = pytest.mark.slow  # a scheduler and two worker processes


def test_the_workers_share_no_folder_with_the_test(share_nothing_cluster, tmp_path):
    from distributed import Client

    (tmp_path / "here.txt").write_text("the test's own file")
    with Client(share_nothing_cluster.address, timeout=30, set_as_default=False) as client:
        seen = client.run(os.path.exists, str(tmp_path / "here.txt"))
        tmp = client.run(lambda: __import__("tempfile").gettempdir())
    assert sorted(tmp.values()) == sorted(str(f / "tmp") for f in share_nothing_cluster.folders)
    if share_nothing_cluster.hidden:
        assert list(seen.values()) == [False, False]


# Tile mode on such a cluster: the blocks travel through the bucket as part objects
# (geoseg.parts), the model as bytes in its handle.

def objects(s3: Any) -> dict[str, bytes]:
    """Every object in the test's bucket: key → bytes."""
    listed = s3.list_objects_v2(Bucket=s3.bucket).get("Contents", [])
    return {o["Key"]: s3.get_object(Bucket=s3.bucket, Key=o["Key"])["Body"].read()
            for o in listed}


def model_loads() -> int:
    """In a worker (``client.run``): how many models its predictor cache has loaded."""
    from geoseg.inference import cached_predictor

    return int(cached_predictor.cache_info().misses)


@pytest.fixture
def scene_url(s3: Any, make_scene: Callable[..., tuple[Path, np.ndarray]]) -> str:
    """A 256 × 256 scene in the test's bucket."""
    path, _ = make_scene(256, 256)
    s3.upload_file(str(path), s3.bucket, "in/scene.tif")
    return f"s3://{s3.bucket}/in/scene.tif"


@pytest.fixture
def user_model(tmp_path: Path) -> Path:
    """The bundled model copied under the test's temp root: the workers cannot see it."""
    from geoseg.model import bundled_path

    return Path(shutil.copytree(bundled_path("default"), tmp_path / "model"))


def test_tile_mode_to_a_bucket_gives_the_bytes_of_a_local_run(s3, share_nothing_cluster,
                                                              scene_url, user_model, tmp_path):
    from distributed import Client

    args = ("--tile-size", 64, "--model", user_model)
    local = tmp_path / "local"
    local.mkdir()
    result = run_cli("predict", scene_url, "-o", local / "m.tif", "--probabilities",
                     local / "p.tif", "--quicklook", local / "q.png", *args,
                     "--scheduler", "threads")
    assert result.exit_code == 0, result.output
    url = f"s3://{s3.bucket}/out"
    with Client(share_nothing_cluster.address, timeout=30, set_as_default=False) as client:
        before = client.run(model_loads)
        result = run_cli("predict", scene_url, "-o", f"{url}/m.tif", "--probabilities",
                         f"{url}/p.tif", "--quicklook", f"{url}/q.png", *args,
                         "--scheduler", share_nothing_cluster.address)
        after = client.run(model_loads)
    assert result.exit_code == 0, result.output
    names = ("m.tif", "m.qml", "p.tif", "q.png")
    found = objects(s3)
    assert not [k for k in found if ".geoseg-parts" in k]  # the parts are gone
    assert {k: v for k, v in found.items() if k.startswith("out/")} == \
        {f"out/{n}": (local / n).read_bytes() for n in names}
    # The model went as bytes, loaded at most once by each worker (whichever ran tasks).
    assert all(after[w] - before[w] <= 1 for w in after), (before, after)
    assert sum(after.values()) > sum(before.values()) or sum(before.values()) > 0


def corrupt_last_rows(path: Path, out: Path) -> Path:
    """``path`` rewritten as a DEFLATE-tiled GeoTIFF of 64-pixel blocks whose last row of
    blocks, all but the very last block (which geoseg reads up front), holds garbage: the
    tiles above it are predicted and their blocks written before a task meets it."""
    with rasterio.open(path) as src:
        profile = {**src.profile, "tiled": True, "blockxsize": 64, "blockysize": 64,
                   "compress": "deflate", "interleave": "pixel"}
        data = src.read()
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(data)
    with rasterio.open(out) as ds:
        rows, cols = -(-ds.height // 64), -(-ds.width // 64)
        blocks = [(int(ds.get_tag_item(f"BLOCK_OFFSET_{c}_{r}", "TIFF", bidx=1)),
                   int(ds.get_tag_item(f"BLOCK_SIZE_{c}_{r}", "TIFF", bidx=1)))
                  for r in range(rows - 1, rows) for c in range(cols)][:-1]
    with open(out, "r+b") as f:
        for offset, size in blocks:
            f.seek(offset)
            f.write(b"\xff" * size)
    return out


def test_a_failure_midway_leaves_no_part_and_no_output(s3, share_nothing_cluster,
                                                       make_scene, user_model, tmp_path):
    path, _ = make_scene(256, 256)
    bad = corrupt_last_rows(path, tmp_path / "bad.tif")
    s3.upload_file(str(bad), s3.bucket, "in/bad.tif")
    url = f"s3://{s3.bucket}/out"
    result = invoke("predict", f"s3://{s3.bucket}/in/bad.tif", "-o", f"{url}/m.tif",
                    "--probabilities", f"{url}/p.tif", "--tile-size", 64,
                    "--model", user_model, "--scheduler", share_nothing_cluster.address)
    # A worker's error reaches the user as geoseg's own line about the input.
    assert_one_line_error(result, "cannot be read", named=f"s3://{s3.bucket}/in/bad.tif")
    assert list(objects(s3)) == ["in/bad.tif"]


def test_a_failure_while_streaming_back_leaves_no_part_and_no_output(
        s3, share_nothing_cluster, scene_url, user_model, monkeypatch):
    from geoseg import parts

    decode, calls = parts.decode, [0]

    def fails_third(data: bytes) -> np.ndarray:  # this process's side only
        calls[0] += 1
        if calls[0] == 3:
            raise ValueError("a broken part")
        return decode(data)

    monkeypatch.setattr(parts, "decode", fails_third)
    url = f"s3://{s3.bucket}/out"
    result = invoke("predict", scene_url, "-o", f"{url}/m.tif", "--tile-size", 64,
                    "--model", user_model, "--scheduler", share_nothing_cluster.address)
    assert_one_line_error(result, "part object is unreadable", named=f"{url}/m.tif")
    assert calls[0] == 3
    assert list(objects(s3)) == ["in/scene.tif"]


def test_a_local_output_the_workers_cannot_see_is_one_line(share_nothing_cluster, scene_url,
                                                           user_model, tmp_path):
    if not share_nothing_cluster.hidden:
        pytest.skip("this machine cannot hide the test's folders from the workers")
    out = tmp_path / "new" / "m.tif"
    result = invoke("predict", scene_url, "-o", out, "--tile-size", 64, "--model", user_model,
                    "--scheduler", share_nothing_cluster.address)
    assert_one_line_error(result, f"the Dask workers at {share_nothing_cluster.address}",
                          "cannot see this folder", "s3://", named=out)
    assert not out.parent.exists()


@pytest.mark.parametrize("command", ["predict", "run"])
def test_local_scenes_the_workers_cannot_see_are_one_line(share_nothing_cluster, s3, command,
                                                          make_scene, user_model):
    """A scene on the client's disk, a cluster that cannot read it: one line before any
    work (not a failure per scene on the workers), and nothing in the bucket."""
    if not share_nothing_cluster.hidden:
        pytest.skip("this machine cannot hide the test's folders from the workers")
    scene, _ = make_scene(64, 64)
    out = f"s3://{s3.bucket}/out" + ("/m.tif" if command == "predict" else "")
    result = invoke(command, scene, "-o", out, "--model", user_model,
                    "--scheduler", share_nothing_cluster.address)
    assert_one_line_error(result, f"the Dask workers at {share_nothing_cluster.address}",
                          "cannot see this file", "s3://", named=scene)
    assert objects(s3) == {}


def test_vectorize_reads_a_mask_in_the_bucket_on_the_workers(s3, share_nothing_cluster,
                                                             scene_url, tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")  # the GeoPackage's last_change
    url = f"s3://{s3.bucket}/masks"
    result = run_cli("predict", scene_url, "-o", f"{url}/m.tif", "--probabilities",
                     f"{url}/p.tif", "--tile-size", 64, "--scheduler", "sync")
    assert result.exit_code == 0, result.output
    args = ("vectorize", f"{url}/m.tif", "--probabilities", f"{url}/p.tif", "--chunk-size", 64)
    here, there = tmp_path / "here" / "v.gpkg", tmp_path / "there" / "v.gpkg"  # one layer name
    result = run_cli(*args, "-o", here, "--scheduler", "threads")
    assert result.exit_code == 0, result.output
    result = run_cli(*args, "-o", there, "--scheduler", share_nothing_cluster.address)
    assert result.exit_code == 0, result.output
    assert there.read_bytes() == here.read_bytes()


# geoseg run into a bucket: scenes from the bucket, outputs to it, on workers that share
# nothing with the client (test_object_storage.py runs the same on local schedulers).

SCENES = 4
REPORTS = ("geoseg-journal/", "summary.json")


def maps(s3, prefix: str) -> dict[str, bytes]:
    """The run's outputs under ``prefix`` by file name (its journal and summary left out)."""
    return {k.removeprefix(prefix): v for k, v in objects(s3).items()
            if k.startswith(prefix) and not any(r in k for r in REPORTS)}


@pytest.fixture
def bucket_scenes(s3, tmp_path):
    """Four scenes in the test's bucket, a copy of the bundled model under tmp_path (only
    its bytes can reach the workers), and the outputs of a local-disk run of the same."""
    import shutil

    from conftest import run_cli

    from geoseg.model import bundled_path
    from geoseg.synthetic import write_sample_data

    for seed in range(SCENES):
        scene, _ = write_sample_data(tmp_path / "scenes", size=256, seed=seed)
        s3.upload_file(str(scene), s3.bucket, f"scenes/{scene.name}")
    model = tmp_path / "model"
    shutil.copytree(bundled_path("default"), model)
    source = f"s3://{s3.bucket}/scenes/*.tif"
    result = run_cli("run", source, "-o", tmp_path / "local", "--model", model,
                     "--probabilities", "--no-progress")
    assert result.exit_code == 0, result.output
    local = {p.name: p.read_bytes() for p in (tmp_path / "local").iterdir()
             if p.name not in ("geoseg-journal.jsonl", "summary.json")}
    return source, model, local


def test_a_run_into_a_bucket_on_workers_sharing_nothing(share_nothing_cluster, s3,
                                                        bucket_scenes):
    from conftest import run_cli
    from distributed import Client

    from geoseg.inference import cached_predictor

    source, model, local = bucket_scenes
    url = f"s3://{s3.bucket}/maps"
    with Client(share_nothing_cluster.address, timeout=30, set_as_default=False) as client:
        before = client.run(lambda: cached_predictor.cache_info().misses)
        result = run_cli("run", source, "-o", url, "--model", model, "--probabilities",
                         "--no-progress", "--scheduler", share_nothing_cluster.address)
        loads = client.run(lambda: cached_predictor.cache_info().misses)
        left = client.run(lambda: [n for n in os.listdir(__import__("tempfile").gettempdir())
                                   if n.startswith("geoseg-")])
    assert result.exit_code == 0, result.output
    assert f"{SCENES} scenes: {SCENES} done, 0 skipped, 0 failed" in result.output
    assert maps(s3, "maps/") == local
    # Each worker loaded the model's bytes once, and left nothing of geoseg's in its temp.
    assert all(loads[w] - before[w] <= 1 for w in loads)
    assert list(left.values()) == [[], []]


def test_a_worker_killed_mid_scene_leaves_no_partial_object(share_nothing_cluster, s3,
                                                            bucket_scenes):
    """The kill lands while a scene's model task waits on a Dask event: mid-scene, with
    its outputs being written in the worker's temp folder."""
    import faults
    from conftest import geoseg_process
    from distributed import Client

    source, model, local = bucket_scenes
    url = f"s3://{s3.bucket}/maps"
    with Client(share_nothing_cluster.address, timeout=30, set_as_default=False) as client:
        with faults.model_tasks_paused(client) as paused:
            run = geoseg_process("run", source, "-o", url, "--model", model, "--probabilities",
                                 "--no-progress", "--scheduler", share_nothing_cluster.address)
            pid = paused()  # a worker, paused mid-scene
            assert maps(s3, "maps/") == {}  # nothing of a scene is visible before it ends
            os.kill(pid, signal.SIGKILL)
        out, err = run.communicate(timeout=300)
        client.run(faults.unpause_model_tasks)  # the worker that lived on
    assert run.returncode == 0, err
    assert f"{SCENES} scenes: {SCENES} done" in out
    assert maps(s3, "maps/") == local


def test_a_client_interrupted_mid_run_leaves_whole_objects_and_resumes(share_nothing_cluster,
                                                                        s3, bucket_scenes):
    """SIGINT to the client while scenes wait mid-way on the workers: it stops at once
    (130). The scenes that were running end in the background and upload whole objects;
    --resume replaces them and finishes with the bytes of a local-disk run."""
    import faults
    from conftest import geoseg_process, interruptible, run_cli
    from distributed import Client, Queue

    source, model, local = bucket_scenes
    url = f"s3://{s3.bucket}/maps"
    args = ("run", source, "-o", url, "--model", model, "--probabilities", "--no-progress",
            "--scheduler", share_nothing_cluster.address)
    cue = f"geoseg-test-{uuid.uuid4().hex}"
    with Client(share_nothing_cluster.address, timeout=30, set_as_default=False) as client:
        client.run(faults.announce_uploads, cue)
        try:
            with faults.model_tasks_paused(client) as paused:
                run = geoseg_process(*args, preexec=interruptible)
                paused(), paused()  # a scene has begun on each worker
                assert maps(s3, "maps/") == {}
                run.send_signal(signal.SIGINT)
                _, err = run.communicate(timeout=120)
            # Released, the two scenes end in the background: wait for their uploads.
            uploaded = [Queue(cue, client=client).get(timeout=300) for _ in range(2)]
        finally:
            client.run(faults.unpause_model_tasks)
            client.run(faults.unannounce_uploads)
    assert run.returncode == 130, err
    assert "Traceback" not in err
    there = maps(s3, "maps/")
    assert sorted(there) == sorted(url.rpartition("/")[2] for urls in uploaded for url in urls)
    assert {n: v for n, v in there.items() if local[n] != v} == {}  # each object whole
    result = run_cli(*args, "--resume")  # replaces the two scenes the journal never saw end
    assert result.exit_code == 0, result.output
    assert maps(s3, "maps/") == local


def test_an_interrupted_upload_leaves_whole_scenes_and_resumes(s3, bucket_scenes,
                                                               geoseg_paused):
    """Interrupted between two objects of the second scene's upload: the objects of that
    scene that went up are taken back, the first scene stays, and --resume finishes."""
    from conftest import run_cli

    source, model, local = bucket_scenes
    url = f"s3://{s3.bucket}/maps"
    per_scene = len([n for n in local if n.startswith("scene_0.")])
    run = geoseg_paused(f"geoseg.storage:upload:{per_scene + 2}", "run", source, "-o", url,
                        "--model", model, "--probabilities", "--no-progress")
    assert "maps/geoseg-journal/lock" in objects(s3)  # the run holds its prefix
    run.send_signal(signal.SIGINT)
    _, err = run.communicate(timeout=60)
    assert run.returncode == 130, err
    assert "maps/geoseg-journal/lock" not in objects(s3)  # and lets it go as it stops
    assert "Traceback" not in err
    first = {n: v for n, v in local.items() if n.startswith("scene_0.")}
    assert maps(s3, "maps/") == first  # whole scenes only, each object whole
    result = run_cli("run", source, "-o", url, "--model", model, "--probabilities",
                     "--no-progress", "--resume")
    assert result.exit_code == 0, result.output
    assert "skipped scene_0 (finished by an earlier run)" in result.output
    assert maps(s3, "maps/") == local


def test_a_run_of_fewer_scenes_than_workers_shares_their_tiles_through_the_bucket(
        share_nothing_cluster, s3, bucket_scenes):
    """One scene, two worker threads: the scene is spread tile by tile (its blocks as part
    objects), then vectorized by the client; the same bytes again, and no part left."""
    from conftest import run_cli

    source, model, local = bucket_scenes
    one = source.replace("*.tif", "scene_2.tif")
    url = f"s3://{s3.bucket}/one"
    result = run_cli("run", one, "-o", url, "--model", model, "--probabilities",
                     "--no-progress", "--scheduler", share_nothing_cluster.address)
    assert result.exit_code == 0, result.output
    assert maps(s3, "one/") == {n: v for n, v in local.items() if n.startswith("scene_2.")}
    assert not [k for k in objects(s3) if ".geoseg-parts-" in k]
