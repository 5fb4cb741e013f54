"""Dask clusters whose workers share nothing with the client but the scheduler and a
bucket (tests/conftest.py's ``share_nothing_cluster`` and moto's S3 server)."""

from __future__ import annotations

import os
import signal
import uuid

import pytest

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


# geoseg run into a bucket: scenes from the bucket, outputs to it, on workers that share
# nothing with the client (test_object_storage.py runs the same on local schedulers).

SCENES = 4
REPORTS = ("geoseg-journal/", "summary.json")


def bucket_objects(s3) -> dict[str, bytes]:
    listed = s3.list_objects_v2(Bucket=s3.bucket).get("Contents", [])
    return {o["Key"]: s3.get_object(Bucket=s3.bucket, Key=o["Key"])["Body"].read()
            for o in listed}


def maps(s3, prefix: str) -> dict[str, bytes]:
    """The run's outputs under ``prefix`` by file name (its journal and summary left out)."""
    return {k.removeprefix(prefix): v for k, v in bucket_objects(s3).items()
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
    from distributed import Client, Event, Queue

    source, model, local = bucket_scenes
    url = f"s3://{s3.bucket}/maps"
    cue = f"geoseg-test-{uuid.uuid4().hex}"
    with Client(share_nothing_cluster.address, timeout=30, set_as_default=False) as client:
        client.run(faults.pause_model_tasks, cue)
        run = geoseg_process("run", source, "-o", url, "--model", model, "--probabilities",
                             "--no-progress", "--scheduler", share_nothing_cluster.address)
        try:
            pid = Queue(cue, client=client).get(timeout=300)  # a worker, paused mid-scene
            assert maps(s3, "maps/") == {}  # nothing of a scene is visible before it ends
            os.kill(pid, signal.SIGKILL)
        finally:
            Event(cue, client=client).set()
        out, err = run.communicate(timeout=300)
        client.run(faults.unpause_model_tasks)  # the worker that lived on
    assert run.returncode == 0, err
    assert f"{SCENES} scenes: {SCENES} done" in out
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
    run.send_signal(signal.SIGINT)
    _, err = run.communicate(timeout=60)
    assert run.returncode == 130, err
    assert "Traceback" not in err
    first = {n: v for n, v in local.items() if n.startswith("scene_0.")}
    assert maps(s3, "maps/") == first  # whole scenes only, each object whole
    result = run_cli("run", source, "-o", url, "--model", model, "--probabilities",
                     "--no-progress", "--resume")
    assert result.exit_code == 0, result.output
    assert "skipped scene_0 (finished by an earlier run)" in result.output
    assert maps(s3, "maps/") == local
