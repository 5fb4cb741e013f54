"""The benchmarks run end to end on tiny inputs, and what they measure means what it says."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def bench(tmp_path, *args):
    env = {**os.environ, "GEOSEG_BENCH_RESULTS": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "benchmarks", *args], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_efficiency_times_the_model_on_exactly_the_tiles_the_pipeline_runs(tmp_path):
    printed = bench(tmp_path, "efficiency", "--size", "600", "--tile-size", "256",
                    "--batch-size", "2", "--rounds", "1")
    result = json.loads((tmp_path / "efficiency-cpu.json").read_text())
    assert result["tiles"] == 9 and result["batches"] == 6  # 3 x 3 tiles, rows of 3 in 2s
    assert 0 < result["efficiency"] < 1.5
    assert "efficiency" in printed and "read tiles" in printed


def test_peers_show_the_naive_loop_has_seams_and_geoseg_has_none(tmp_path):
    bench(tmp_path, "peers", "--size", "1024", "--tile-size", "256", "--rounds", "1")
    runs = {r["method"]: r for r in json.loads((tmp_path / "peers-cpu.json").read_text())["runs"]}
    ours, naive = runs["geoseg"], runs["naive loop"]
    # Near its tile edges the naive loop leaves the whole-image pass; near ours, the blend
    # keeps the classes as they are anywhere else.
    assert naive["agree_at_own_edges"] < naive["agree_whole"] - 0.002
    assert ours["agree_at_own_edges"] > naive["agree_at_own_edges"]
    assert ours["agree_at_own_edges"] >= ours["agree_whole"] - 0.002
    assert ours["miou"] > 0.9


def test_train_compares_geoseg_with_a_plain_loop_on_the_same_network(tmp_path):
    printed = bench(tmp_path, "train", "--size", "256", "--steps", "2", "--batch-size", "2",
                    "--chip-size", "64")
    result = json.loads((tmp_path / "train.json").read_text())
    assert result["geoseg_samples_per_s"] > 0 and result["plain_loop_samples_per_s"] > 0
    assert result["fraction"] == pytest.approx(
        result["geoseg_samples_per_s"] / result["plain_loop_samples_per_s"], abs=1e-3)
    assert "geoseg / plain" in printed


def test_sparse_scores_each_sampling_on_the_held_out_scene(tmp_path):
    bench(tmp_path, "sparse", "--size", "512", "--corner", "256", "--seed", "4", "--epochs",
          "1", "--steps", "2", "--batch-size", "2", "--chip-size", "64")
    result = json.loads((tmp_path / "sparse.json").read_text())
    assert [r["run"] for r in result["runs"]] == [
        "uniform, unweighted (before)", "around labels", "around labels + labelled area",
        "labelled area, unweighted"]
    assert 0 < result["labelled_share"] < 0.01
    assert all(0 <= r["iou"] <= 1 for r in result["runs"])


def test_pretrained_compares_encoder_weights_with_scratch_in_equal_steps(tmp_path):
    printed = bench(tmp_path, "pretrained", "--size", "256", "--corner", "128",
                    "--pretrain-steps", "4", "--steps", "2", "--chip-size", "64")
    result = json.loads((tmp_path / "pretrained.json").read_text())
    assert [r["run"] for r in result["runs"]] == ["from scratch", "from pretrained encoder"]
    assert all(0 <= r["miou"] <= 1 for r in result["runs"])
    assert "from pretrained encoder" in printed


def test_cpu_scores_each_lever_and_says_whether_the_goals_are_met(tmp_path):
    printed = bench(tmp_path, "cpu", "--size", "600", "--rounds", "1", "--startup-runs", "1")
    result = json.loads((tmp_path / "cpu.json").read_text())
    runs = {r["setting"]: r for r in result["runs"]}
    assert set(runs) == {"default (int8, overlap 16)", "float graph", "int8, overlap 32",
                         "int8, tile 1024"}
    assert all(r["miou"] > 0.9 and r["mpx_per_s"] > 0 for r in runs.values())
    assert set(result["startup_s"]) == {"geoseg --help", "geoseg predict 64²"}
    assert result["startup_meets_goal"] == (max(result["startup_s"].values()) <= 2.0)
    assert "goal: ≥ 3.0 Mpx/s" in printed and "start-up, geoseg --help" in printed


def test_vectorize_races_geoseg_against_its_peers_on_equal_output(tmp_path):
    printed = bench(tmp_path, "vectorize", "--sizes", "300", "--repeats", "1")
    result = json.loads((tmp_path / "vectorize.json").read_text())
    (run,) = result["runs"]
    # The rasterio + geopandas script always runs; gdal_polygonize.py where installed.
    assert run["rasterio_same_count_and_areas"] and run["same_as_peers"]
    assert run["polygons"] == run["rasterio_polygons"] > 10
    fastest = run["fastest_peer"]
    assert run[f"{fastest}_seconds"] == min(run[f"{n}_seconds"] for n in ("gdal", "rasterio")
                                            if f"{n}_seconds" in run)
    assert run["vs_fastest_peer"] == pytest.approx(
        run[f"{fastest}_seconds"] / run["geoseg_seconds"], abs=0.006)
    assert run["meets_goal"] == (run["vs_fastest_peer"] >= result["goal"])
    assert "vs fastest peer" in printed


def test_storage_runs_each_route_on_each_scheduler_and_checks_the_bucket_bytes(tmp_path):
    printed = bench(tmp_path, "storage", "--scenes", "2", "--size", "128")
    result = json.loads((tmp_path / "storage.json").read_text())
    runs = result["runs"]
    routes = ["local → local", "local → bucket", "bucket → bucket"]
    assert [(r["route"], r["scheduler"]) for r in runs] == [
        (route, scheduler) for scheduler in ("threads", "local, 2 workers") for route in routes]
    for r in runs:
        base = next(b for b in runs if b["scheduler"] == r["scheduler"]
                    and b["route"] == "local → local")
        assert r["speed_vs_local"] == pytest.approx(base["wall_s"] / r["wall_s"], abs=0.006)
        assert r["wall_s"] > 0 and r["mpx_per_s"] > 0 and r["output_mb"] > 0
        if r["route"] == "local → local":
            assert r["same_as_local"] is None
            continue
        check = r["same_as_local"]
        # Every output uploaded as written locally: masks, probabilities, GeoPackages and
        # styles (2 scenes × 5); from bucket sources the rasters only (the GeoPackage bears
        # its source's modification time).
        assert check["identical"], check
        if r["route"] == "local → bucket":
            assert check["files"] == 10 and check["compared"] == "all outputs"
        else:
            assert check["files"] == 4 and check["compared"] == "masks and probabilities"
            assert check["gpkg_differing_beyond_last_change"] == []
    assert "bucket → bucket" in printed and "vs local" in printed and "yes, 10 files" in printed


def test_dynamic_world_runs_geoseg_on_real_scenes_and_says_when_the_original_cannot(tmp_path):
    """Without a TensorFlow environment only geoseg runs; the JSON says the original did not."""
    bench(tmp_path, "dynamic_world", "--sizes", "0", "640", "--tensorflow",
          str(tmp_path / "no-python"))
    result = json.loads((tmp_path / "dynamic_world.json").read_text())
    assert result["original"].startswith("not run")
    assert [r["scene"] for r in result["runs"]] == ["T33UUB", "T49JGM", "mirrored 640²"]
    assert all(r["geoseg_seconds"] > 0 and r["geoseg_peak_rss_mib"] > 0 for r in result["runs"])
    assert all("original_seconds" not in r for r in result["runs"])


def test_student_scores_a_taught_unet_on_held_out_columns(tmp_path):
    """A short run on the real samples: the student trains on their left two thirds and is
    scored on the right third against the teacher's confident pixels there."""
    printed = bench(tmp_path, "student", "--min-confidence", "0.4", "--train-options",
                    "--epochs 1 --steps-per-epoch 2 --chip-size 64 --batch-size 2")
    result = json.loads((tmp_path / "student.json").read_text())
    [run] = result["runs"]
    assert run["min_confidence"] == 0.4 and run["train_seconds"] > 0
    assert [p["product"] for p in run["products"]] == ["T33UUB", "T49JGM"]
    for product in run["products"]:
        assert product["held_out_columns"] == "170.."  # 256 px: the right third kept apart
        assert product["confident_pixels"] > 0 and 0 <= product["agreement_confident"] <= 1
        assert set(product["iou"]) <= {"water", "trees", "grass", "flooded_vegetation",
                                       "crops", "shrub_and_scrub", "built", "bare",
                                       "snow_and_ice"}
    assert "held-out right 33% of each product" in printed
