"""Batch runs: a real dask-scheduler and dask-worker processes, a worker killed mid-run,
a run interrupted and resumed, failed scenes, the journal."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import faults
import pytest
from conftest import dask_processes, geoseg_process, invoke

from geoseg.errors import ClusterError, InputError
from geoseg.journal import JOURNAL
from geoseg.synthetic import write_sample_data

pytestmark = pytest.mark.slow  # whole runs: clusters, processes, signals

SCENES = 4
SIZE = 384
REPORTS = {JOURNAL, "summary.json"}  # what differs between runs by design (times, order)
TESTS = Path(__file__).resolve().parent

def outputs(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name not in REPORTS}


def assert_same_outputs(folder: Path, reference: dict[str, bytes]) -> None:
    got = outputs(folder)
    assert sorted(got) == sorted(reference)  # no temp file left either (they start with '.')
    assert [n for n in got if got[n] != reference[n]] == []


def journal_events(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / JOURNAL).read_text().splitlines()]


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("scenes")
    for seed in range(SCENES):
        write_sample_data(folder, size=SIZE, seed=seed)
    for labels in folder.glob("labels_*"):
        labels.unlink()
    return folder


@pytest.fixture(scope="module")
def reference_dir(scenes, tmp_path_factory) -> Path:
    """An undisturbed run on the default threads scheduler."""
    out = tmp_path_factory.mktemp("reference")
    result = invoke("run", scenes / "*.tif", "-o", out, "--probabilities", "--no-progress")
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def reference(reference_dir) -> dict[str, bytes]:
    return outputs(reference_dir)


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory):
    """A dask-scheduler and two dask-worker processes (with nannies) on 127.0.0.1; the
    workers can import tests/faults.py."""
    folder = tmp_path_factory.mktemp("cluster")
    info = folder / "scheduler.json"
    path = os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "DASK_DISTRIBUTED__LOGGING__DISTRIBUTED": "error", "PYTHONPATH": path}
    common = dict(env=env, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs = [subprocess.Popen([sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1",
                               "--port", "0", "--no-dashboard", "--scheduler-file", info],
                              **common)]
    for _ in range(2):
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "dask", "worker", "--scheduler-file", info, "--nthreads", "1",
             "--no-dashboard", "--host", "127.0.0.1"], **common))
    with dask_processes(info, procs, workers=2) as address:
        yield address


def test_tcp_cluster_gives_the_bytes_of_the_threads_scheduler(scenes, reference, dask_cluster,
                                                               tmp_path, monkeypatch):
    import shutil

    from geoseg.model import bundled_path

    # Relative paths (scenes, outputs, model), from a folder that is not the workers'.
    shutil.copytree(bundled_path("default"), tmp_path / "model-copy")
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    result = invoke("run", os.path.relpath(scenes, tmp_path) + "/*.tif", "-o", "out",
                    "--model", "model-copy", "--probabilities", "--no-progress",
                    "--scheduler", dask_cluster)
    assert result.exit_code == 0, result.output
    assert "4 scenes: 4 done, 0 skipped, 0 failed" in result.output
    assert_same_outputs(out, reference)
    # One scene, two worker threads: its tiles are shared out instead; same bytes again.
    one = tmp_path / "one"
    result = invoke("run", os.path.relpath(scenes / "scene_2.tif", tmp_path), "-o", "one",
                    "--model", "model-copy", "--probabilities", "--scheduler", dask_cluster)
    assert result.exit_code == 0, result.output
    assert_same_outputs(one, {k: v for k, v in reference.items() if k.startswith("scene_2.")})
    # Every worker got geoseg's set-up (glibc's allocator tuned back: 2x faster tiles) and
    # loaded the model once, however many scenes and tiles it ran.
    from distributed import Client

    from geoseg.inference import cached_predictor
    from geoseg.workers import tune_allocator

    with Client(dask_cluster, timeout=30, set_as_default=False) as client:
        tuned = client.run(lambda: tune_allocator.cache_info().currsize and tune_allocator())
        loads = client.run(lambda: cached_predictor.cache_info().misses)
    assert list(tuned.values()) == [True, True]
    assert list(loads.values()) == [1, 1]


def test_a_worker_killed_mid_run_changes_no_byte(scenes, reference, dask_cluster, tmp_path):
    """The kill lands while a scene's model task waits on a Dask event: mid-scene, with its
    scratch files written, for certain."""
    from distributed import Client

    with Client(dask_cluster, timeout=30, set_as_default=False) as client:
        with faults.model_tasks_paused(client) as paused:
            run = geoseg_process("run", scenes / "*.tif", "-o", tmp_path, "--probabilities",
                                 "--no-progress", "--scheduler", dask_cluster)
            pid = paused()  # a worker, paused mid-scene
            assert list(tmp_path.glob(".*.scratch.tif")), "the scene has not begun writing"
            os.kill(pid, signal.SIGKILL)
        out, err = run.communicate(timeout=300)
        client.run(faults.unpause_model_tasks)  # the worker that lived on
    assert run.returncode == 0, err
    assert "4 scenes: 4 done" in out
    assert_same_outputs(tmp_path, reference)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_run_leaves_whole_files_and_resumes(scenes, reference, tmp_path, sig,
                                                           geoseg_paused):
    # An earlier output of the last scene: the interrupted run never reaches it, so it stays.
    (tmp_path / "scene_3.gpkg").write_bytes(b"earlier")
    # Signalled as the second scene's mask becomes a COG (the first scene made 2 COGs).
    run = geoseg_paused("geoseg.cog:write_cog:3", "run", scenes / "*.tif", "-o", tmp_path,
                        "--probabilities", "--no-progress", "--overwrite")
    assert list(tmp_path.glob(".scene_1.mask.tif.*")), "the second scene is not being written"
    run.send_signal(sig)
    _, err = run.communicate(timeout=60)
    assert run.returncode == 130, err
    assert err.strip().splitlines()[-1] == "Error: interrupted (run it again with --resume to finish)"
    assert "Traceback" not in err
    done = [e["scene"] for e in journal_events(tmp_path) if e["event"] == "done"]
    assert done == ["scene_0"]
    left = outputs(tmp_path)
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]  # no temp file
    assert left.pop("scene_3.gpkg") == b"earlier"
    # Whatever was written is whole: identical to the undisturbed run's file, and only
    # finished scenes are there (a scene begun but unfinished leaves nothing).
    assert [n for n in left if left[n] != reference[n]] == []
    assert {n.split(".")[0] for n in left} == set(done)
    kept = {n: os.stat(tmp_path / n).st_mtime_ns for n in left if n.split(".")[0] in done}

    result = invoke("run", scenes / "*.tif", "-o", tmp_path, "--probabilities", "--no-progress",
                    "--resume")
    assert result.exit_code == 0, result.output
    for name in done:
        assert f"skipped {name} (finished by an earlier run)" in result.output
    assert {n: os.stat(tmp_path / n).st_mtime_ns for n in kept} == kept  # not recomputed
    assert_same_outputs(tmp_path, reference)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["totals"]["skipped"] == len(done)
    assert summary["totals"]["done"] == SCENES - len(done)


def test_a_failed_scene_is_reported_and_the_others_go_on(scenes, reference, reference_dir,
                                                         tmp_path):
    bad = tmp_path / "in" / "broken.tif"
    bad.parent.mkdir()
    bad.write_text("not a raster")
    listing = tmp_path / "scenes.txt"
    listing.write_text(f"# two scenes and a broken file\n{scenes / 'scene_0.tif'}\n\n{bad}\n"
                       f"{scenes / 'scene_1.tif'}\n")
    out = tmp_path / "out"
    result = invoke("run", listing, "-o", out, "--probabilities", "--no-progress")
    assert result.exit_code == 1
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("Error: 1 of 3 scenes failed (first: broken: ") and "broken.tif" in last
    assert "Traceback" not in result.output
    summary = json.loads((out / "summary.json").read_text())
    assert [s["status"] for s in summary["scenes"]] == ["done", "failed", "done"]
    assert not list(out.glob("broken*"))  # nothing written for it
    for name in ("scene_0", "scene_1"):
        assert (out / f"{name}.gpkg").read_bytes() == reference[f"{name}.gpkg"]

    # Fixed, the run resumes with the broken scene only.
    mend_and_resume(listing, out, bad, scenes / "scene_3.tif", reference_dir)


def mend_and_resume(listing: Path, out: Path, bad: Path, good: Path, reference_dir: Path) -> None:
    """Replace the failed scene ``bad`` by ``good``: --resume computes it alone, and its
    mask is ``good``'s of the reference run."""
    import rasterio

    bad.write_bytes(good.read_bytes())
    result = invoke("run", listing, "-o", out, "--probabilities", "--no-progress", "--resume")
    assert result.exit_code == 0, result.output
    assert "skipped scene_0" in result.output and f"done    {bad.stem}" in result.output
    with rasterio.open(out / f"{bad.stem}.mask.tif") as got, \
            rasterio.open(reference_dir / f"{good.stem}.mask.tif") as want:
        assert (got.read() == want.read()).all()


def test_resume_checks_outputs_settings_and_the_folder_lock(scenes, tmp_path):
    import fcntl

    scene = scenes / "scene_0.tif"
    args = ["run", scene, "-o", tmp_path, "--no-progress", "--tile-size", 128]
    assert invoke(*args).exit_code == 0
    mask = tmp_path / "scene_0.mask.tif"
    good = mask.read_bytes()
    # Without --resume or --overwrite the earlier run is an existing output.
    result = invoke(*args)
    assert result.exit_code == 1 and "use --resume to finish it" in result.output
    # Other settings than the journal's: refused, nothing touched.
    result = invoke(*args[:-1], 256, "--resume")
    assert result.exit_code == 1 and "other settings (tile_size differ)" in result.output
    # A changed output is not mistaken for a finished one; a torn journal line is ignored.
    mask.write_bytes(good[:-100])
    with open(tmp_path / JOURNAL, "a") as f:
        f.write('{"event":"done","scene":"scene_0","sou')
    result = invoke(*args, "--resume")
    assert result.exit_code == 0, result.output
    assert "redo    scene_0 (its mask output changed)" in result.output
    assert mask.read_bytes() == good
    lines = (tmp_path / JOURNAL).read_text().splitlines()
    torn = [ln for ln in lines if not ln.endswith("}")]
    assert len(torn) == 1 and json.loads(lines[-1])["event"] == "done"  # later lines whole
    # A second run into a folder another run holds is refused.
    with open(tmp_path / JOURNAL) as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        result = invoke(*args, "--resume")
    assert result.exit_code == 1 and "another geoseg run is writing into this folder" in result.output
    # Other settings with --overwrite start the run again (a config may say resume: true).
    result = invoke(*args[:-1], 256, "--resume", "--overwrite")
    assert result.exit_code == 0, result.output
    assert "done    scene_0" in result.output
    assert len([e for e in journal_events(tmp_path) if e["event"] == "run"]) == 1
    # Temp files a killed run left beside its outputs go; other hidden files stay.
    (tmp_path / ".scene_0.mask.tif.1a2b3c4d.tmp.scratch.tif").write_bytes(b"x")
    (tmp_path / ".keep").write_bytes(b"x")
    assert invoke(*args[:-1], 256, "--resume").exit_code == 0
    assert sorted(n for n in os.listdir(tmp_path) if n.startswith(".")) == [".keep"]


def test_a_run_that_cannot_start_leaves_nothing(scenes, tmp_path):
    import geoseg

    out = tmp_path / "new"
    with pytest.raises(ClusterError, match="cannot reach Dask scheduler"):  # not the input's
        geoseg.run([scenes / "scene_0.tif"], out, scheduler="tcp://127.0.0.1:9")
    assert not out.exists()  # nor a journal that would refuse a plain rerun


def test_scenes_from_a_yaml_config_with_globs(scenes, tmp_path):
    out = tmp_path / "out"
    config = tmp_path / "batch.yaml"
    config.write_text(f"scenes:\n  - {scenes}/scene_[01].tif\noutput: {out}\ntile-size: 128\n"
                      "min-area: 50\n")
    result = invoke("run", "--config", config, "--no-progress")
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert [s["name"] for s in summary["scenes"]] == ["scene_0", "scene_1"]
    assert summary["options"]["tile_size"] == 128 and summary["options"]["min_area"] == 50
    result = invoke("run", tmp_path / "nothing-*.tif", "-o", tmp_path / "o2")
    assert result.exit_code == 1 and "nothing-*.tif: matches no file" in result.output
    assert not (tmp_path / "o2").exists()
    # Dots in names are kept: these two do not collide.
    from geoseg.scenes import plan, scene_name

    assert scene_name("ortho.2024-05.tif") == "ortho.2024-05"
    assert [s.name for s in plan(["a/ortho.2024-05.tif", "a/ortho.2024-06.tif"], "o",
                                 probabilities=False, quicklook=False)] == \
        ["ortho.2024-05", "ortho.2024-06"]
    assert scene_name("/vsicurl/https://host/x.tif?sig=a") == "x"
    with pytest.raises(InputError, match=r"would write x\.mask\.qml"):  # x's mask style
        plan(["a/x.tif", "a/x.mask.tif"], "o", probabilities=False, quicklook=False)


def test_gpu_workers_get_one_model_task_at_a_time(scenes, reference, tmp_path):
    """A worker declaring GPU=1 runs one model task at a time even with two threads (the
    model runs on CPU here: the scheduling is what is tested)."""
    from distributed import Client, LocalCluster

    import geoseg
    from geoseg.cluster import model_resources

    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, resources={"GPU": 1},
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        assert model_resources(client, "auto") == {"GPU": 1}
        assert model_resources(client, "cpu") is None
        client.register_plugin(faults.CountModelTasks())
        broken = tmp_path / "in" / "broken.tif"
        broken.parent.mkdir()
        broken.write_text("not a raster")
        summary = geoseg.run([*(scenes / f"scene_{i}.tif" for i in range(3)), broken],
                             tmp_path / "out", probabilities=True,
                             scheduler=cluster.scheduler_address)
        assert summary["totals"]["done"] == 3
        counts = client.run(lambda dask_worker: vars(dask_worker.plugins["count-model-tasks"]))
    assert [(c["seen"], c["most"]) for c in counts.values()] == [(4, 1)]
    # A scene's error comes back from the worker as its one line, as on threads.
    failed = summary["scenes"][3]
    assert failed["status"] == "failed" and failed["error"].endswith(
        "broken.tif: not a raster GDAL can read")
    tmp_path = tmp_path / "out"
    assert_same_outputs(tmp_path, {k: v for k, v in reference.items()
                                   if k.startswith(("scene_0.", "scene_1.", "scene_2."))})
    with LocalCluster(n_workers=1, processes=False, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        assert model_resources(client, "cuda") is None  # no worker could ever run it


WORKFLOWS = Path(__file__).resolve().parent.parent / "workflows"


def test_the_batch_workflows_run_and_resume(tmp_path, monkeypatch):
    script = [sys.executable, str(WORKFLOWS / "batch_local_cluster.py"), "--sample-scenes", "3",
              "--sample-size", "192", "--workers", "2"]
    first = subprocess.run(script, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    assert "3 scenes: 3 done" in first.stdout
    again = subprocess.run(script, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "3 scenes: 0 done, 3 skipped" in again.stdout
    # The YAML manifest, with the scheduler overridden by a flag (flags win).
    import shutil

    shutil.move(tmp_path / "batch-output", tmp_path / "by-script")
    monkeypatch.chdir(tmp_path)
    result = invoke("run", "--config", WORKFLOWS / "batch.yaml", "--scheduler", "threads",
                    "--no-progress")
    assert result.exit_code == 0, result.output
    for name in ("scene_0.mask.tif", "scene_2.gpkg", "scene_1.prob.tif"):
        assert (tmp_path / "batch-output" / name).read_bytes() == \
            (tmp_path / "by-script" / name).read_bytes()


def crack_a_middle_block(src: Path, dst: Path) -> Path:
    """``src`` rewritten as DEFLATE tiles of 64 px with one middle tile's bytes garbled: it
    opens and its last block reads (so it passes the checks up front), and the tile task
    that reads the middle fails."""
    import rasterio

    with rasterio.open(src) as ds:
        profile = {**ds.profile, "compress": "deflate", "tiled": True,
                   "blockxsize": 64, "blockysize": 64}
        data = ds.read()
    with rasterio.open(dst, "w", **profile) as out:
        out.write(data)
    with rasterio.open(dst) as ds:
        offset = int(ds.get_tag_item("BLOCK_OFFSET_2_2", "TIFF", bidx=1))
    with open(dst, "r+b") as f:
        f.seek(offset)
        f.write(b"\xff" * 64)
    return dst


def test_an_error_inside_one_tile_fails_that_scene_only_and_resume_finishes(
        scenes, reference, reference_dir, tmp_path):

    import geoseg
    from geoseg.errors import RasterReadError

    (tmp_path / "in").mkdir()
    cracked = crack_a_middle_block(scenes / "scene_2.tif", tmp_path / "in" / "cracked.tif")
    with pytest.raises(RasterReadError, match="cannot be read") as info:
        geoseg.predict(cracked, tmp_path / "api" / "mask.tif")
    assert str(info.value).startswith(f"{cracked}: ") and not (tmp_path / "api").exists()

    listing = tmp_path / "scenes.txt"
    listing.write_text(f"{scenes / 'scene_0.tif'}\n{cracked}\n{scenes / 'scene_1.tif'}\n")
    out = tmp_path / "out"
    result = invoke("run", listing, "-o", out, "--probabilities", "--no-progress")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"failed  cracked: {cracked}: cannot be read" in result.output
    assert result.output.strip().splitlines()[-1].startswith("Error: 1 of 3 scenes failed")
    assert not list(out.glob("cracked*")) and not list(out.glob(".*"))  # no partial output
    events = [(e["event"], e.get("scene")) for e in journal_events(out)]
    assert events[0][0] == "run" and sorted(e for e in events[1:] if e[0] != "start") == [
        ("done", "scene_0"), ("done", "scene_1"), ("failed", "cracked")]
    for name in ("scene_0", "scene_1"):
        assert (out / f"{name}.mask.tif").read_bytes() == reference[f"{name}.mask.tif"]

    mend_and_resume(listing, out, cracked, scenes / "scene_2.tif", reference_dir)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_predict_stopped_while_writing_leaves_the_earlier_outputs(tmp_path, sig, geoseg_paused):
    write_sample_data(tmp_path, size=600, seed=9)
    out = tmp_path / "out"
    out.mkdir()
    earlier = {"mask.tif": b"earlier mask", "mask.qml": b"<qgis/>", "prob.tif": b"earlier"}
    for name, data in earlier.items():
        (out / name).write_bytes(data)
    # Signalled as the mask becomes a COG: its blocks and the probabilities' are written.
    run = geoseg_paused("geoseg.cog:write_cog:1", "predict", tmp_path / "scene_9.tif",
                        "-o", out / "mask.tif", "--probabilities", out / "prob.tif",
                        "--overwrite", "--no-progress")
    assert list(out.glob(".mask.tif.*.scratch.tif")) and list(out.glob(".prob.tif.*"))
    run.send_signal(sig)
    _, err = run.communicate(timeout=60)
    assert run.returncode == 130, err
    assert err.strip().splitlines() == ["Error: interrupted"]
    assert {p.name: p.read_bytes() for p in out.iterdir()} == earlier  # no temp file either
