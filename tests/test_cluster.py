"""Clusters for GPUs, tested on the CPU: one worker per GPU each seeing its own, and model
tasks restricted to the ``GPU`` resource where (and only where) workers declare it."""

from __future__ import annotations

import importlib.util
import os

import faults
import numpy as np
import pytest
import rasterio

import geoseg
from geoseg import cluster, devices

_find = importlib.util.find_spec  # the real one, for the names a test does not hide


def test_visible_gpus_without_a_driver_or_with_all_hidden(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert devices.visible_gpus() == []
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert devices.visible_gpus() == []


def test_visible_gpus_keep_the_names_this_process_was_given(monkeypatch):
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(devices, "cuda_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2, 5,GPU-8f1c,7")
    assert devices.visible_gpus() == ["2", "5", "GPU-8f1c"]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert devices.visible_gpus() == ["0", "1", "2"]


@pytest.mark.slow
def test_a_local_cluster_starts_one_worker_per_gpu_each_seeing_its_own(monkeypatch):
    """With two (pretended) GPUs and no dask-cuda, ``--scheduler local`` starts two worker
    processes, each with CUDA_VISIBLE_DEVICES set to its GPU and the resource GPU=1; with
    ``device="cpu"`` the GPUs are not used."""
    monkeypatch.setattr(cluster, "visible_gpus", lambda: ["3", "5"])
    monkeypatch.setattr("importlib.util.find_spec",
                        lambda name, *a: None if name == "dask_cuda" else _find(name, *a))
    spec = cluster.gpu_workers(["3", "5"], 2)
    assert {n: (w["options"]["env"], w["options"]["resources"], w["options"]["nthreads"])
            for n, w in spec.items()} == {
        "gpu-3": ({"CUDA_VISIBLE_DEVICES": "3"}, {"GPU": 1}, 2),
        "gpu-5": ({"CUDA_VISIBLE_DEVICES": "5"}, {"GPU": 1}, 2)}
    with cluster.client_for("local", device="auto") as client:
        seen = client.run(lambda: os.environ.get("CUDA_VISIBLE_DEVICES"))
        info = client.scheduler_info(n_workers=-1)["workers"].values()
        assert sorted(seen.values()) == ["3", "5"]
        assert [w["resources"] for w in info] == [{"GPU": 1}, {"GPU": 1}]
        assert cluster.model_resources(client, "cuda") == {"GPU": 1}
    with cluster._local_cluster(1, 1, device="cpu") as plain:
        assert [w.get("resources") for w in plain.scheduler_info["workers"].values()] == [{}]


def test_the_restriction_follows_the_device_and_the_workers():
    gpu, cpu = {"resources": {"GPU": 1}}, {"resources": {}}
    assert cluster.resources_for([cpu, gpu], "cuda") == {"GPU": 1}
    assert cluster.resources_for([cpu, gpu], "auto") == {"GPU": 1}
    assert cluster.resources_for([cpu, gpu], "cpu") is None
    assert cluster.resources_for([cpu, {}], "cuda") is None  # no worker could ever run it


@pytest.mark.parametrize("gpu_workers", [True, False])
def test_tile_mode_model_tasks_are_restricted_to_gpu_workers(make_scene, monkeypatch, tmp_path,
                                                            gpu_workers):
    """On a cluster whose workers declare GPU=1, a tile-mode predict for a GPU restricts its
    model tasks, and only those, to the GPU resource (the model runs on the CPU here: the
    decision is driven as for ``cuda``); without GPU workers nothing is restricted. The
    mask is the threaded scheduler's, byte for byte."""
    from distributed import Client, LocalCluster

    from geoseg import prediction

    path, _ = make_scene(200, 230)
    options = dict(tile_size=64, overlap=16, batch_size=2, device="cpu")
    geoseg.predict(path, tmp_path / "threads.tif", **options)
    monkeypatch.setattr(prediction, "model_resources",
                        lambda client, device: cluster.model_resources(client, "cuda"))
    resources = {"GPU": 1} if gpu_workers else None
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, resources=resources,
                      dashboard_address=":0") as local, Client(local) as client:
        client.register_plugin(faults.RecordRestrictions())
        geoseg.predict(path, tmp_path / "cluster.tif", scheduler=local.scheduler_address,
                       **options)
        seen = client.run_on_scheduler(
            lambda dask_scheduler: dask_scheduler.plugins["record-restrictions"].seen)
    infer = {k: v for k, v in seen.items() if "geoseg-infer" in k}
    others = {k: v for k, v in seen.items() if "geoseg-infer" not in k}
    assert infer and others
    assert all(v == ({"GPU": 1} if gpu_workers else None) for v in infer.values()), infer
    assert not any(others.values()), others
    assert (tmp_path / "cluster.tif").read_bytes() == (tmp_path / "threads.tif").read_bytes()
    with rasterio.open(tmp_path / "cluster.tif") as written:
        np.testing.assert_array_equal(geoseg.predict(path, **options).values, written.read(1))


@pytest.mark.parametrize("gpu_workers", [True, False])
def test_a_run_into_a_bucket_frees_the_gpu_while_a_scene_is_vectorized(s3, make_scene,
                                                                      monkeypatch, tmp_path,
                                                                      gpu_workers):
    """On GPU workers a scene whose outputs go to a bucket is two tasks: predict, restricted
    to the GPU, uploads the rasters; vectorize, unrestricted, fetches them and uploads the
    GeoPackage. On CPU workers it is one task. The objects are a local run's bytes."""
    from conftest import run_cli
    from distributed import Client, LocalCluster

    scenes = tmp_path / "scenes"
    scenes.mkdir()
    for k in range(2):
        make_scene(96, 80, seed=k)[0].rename(scenes / f"scene_{k}.tif")
    args = ("--tile-size", 64, "--probabilities", "--quicklook", "--no-progress")
    assert run_cli("run", scenes / "*.tif", "-o", tmp_path / "here", *args).exit_code == 0
    here = {p.name: p.read_bytes() for p in (tmp_path / "here").iterdir()
            if p.name not in ("geoseg-journal.jsonl", "summary.json")}
    monkeypatch.setattr(cluster, "model_resources",
                        lambda client, device: cluster.resources_for(
                            client.scheduler_info(n_workers=-1)["workers"].values(), "cuda"))
    resources = {"GPU": 1} if gpu_workers else None
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, resources=resources,
                      dashboard_address=":0") as local, Client(local) as client:
        client.register_plugin(faults.RecordRestrictions())
        result = run_cli("run", scenes / "*.tif", "-o", f"s3://{s3.bucket}/maps", *args,
                         "--scheduler", local.scheduler_address)
        seen = client.run_on_scheduler(
            lambda dask_scheduler: dask_scheduler.plugins["record-restrictions"].seen)
    assert result.exit_code == 0, result.output
    kinds = {(k.split("-")[1], str(v)) for k, v in seen.items() if "-model-" not in k}
    assert kinds == ({("predict", "{'GPU': 1}"), ("vectorize", "None")} if gpu_workers
                     else {("scene", "None")})
    listed = s3.list_objects_v2(Bucket=s3.bucket, Prefix="maps/")["Contents"]
    there = {o["Key"].removeprefix("maps/"): s3.get_object(Bucket=s3.bucket,
                                                           Key=o["Key"])["Body"].read()
             for o in listed if "geoseg-journal/" not in o["Key"]
             and not o["Key"].endswith("summary.json")}
    assert there == here
