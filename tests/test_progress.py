"""The machine-readable side of the CLI: ``geoseg --progress-json`` events, ``geoseg
doctor``, and the QGIS plugin's runner that reads them (it needs no QGIS, so it is tested
here against the real CLI in a real process)."""

import json
import os
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import geoseg_done, run_cli, write_raster

import geoseg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "qgis_plugin"))
from geoseg_qgis import runner  # noqa: E402

GEOSEG = str(Path(sys.executable).with_name("geoseg"))


def events(stderr: str) -> list[dict]:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert all(line.startswith("{") for line in lines), stderr  # nothing but JSON lines
    return [json.loads(line) for line in lines]


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    image, labels = geoseg.write_sample_data(tmp_path_factory.mktemp("scene"), size=512, seed=8)
    return image, labels


def test_predict_reports_progress_to_the_end_and_results_stay_on_stdout(scene, tmp_path):
    image, _ = scene
    done = geoseg_done("--progress-json", "predict", image, "-o", tmp_path / "m.tif",
                       "--model", "default", "--tile-size", "64")
    assert done.returncode == 0, done.stderr
    said = events(done.stderr)
    fractions = [e["fraction"] for e in said if e["event"] == "progress"]
    assert fractions[0] == 0.0 and fractions[-1] == 1.0 and len(set(fractions)) >= 5
    assert fractions == sorted(fractions)
    assert all(e["stage"] == "predict" for e in said if e["event"] == "progress")
    assert done.stdout.splitlines()[0].startswith("mask: ")
    # On a Dask cluster, the scheduler's count of the tasks done.
    local = geoseg_done("--progress-json", "predict", image, "-o", tmp_path / "l.tif",
                        "--model", "default", "--tile-size", "128", "--scheduler", "local",
                        "--workers", "1")
    assert local.returncode == 0, local.stderr
    said = [e for e in events(local.stderr) if e["event"] == "progress"]
    assert said[-1]["fraction"] == 1.0 and len({e["fraction"] for e in said}) >= 3
    assert [e["fraction"] for e in said] == sorted(e["fraction"] for e in said)


def test_errors_and_warnings_are_events_with_the_clis_words(scene, tmp_path):
    image, _ = scene
    text = tmp_path / "notes.tif"
    text.write_text("not a raster")
    failed = geoseg_done("--progress-json", "predict", text, "-o", tmp_path / "x.tif")
    assert failed.returncode == 1
    [error] = events(failed.stderr)
    plain = run_cli("predict", text, "-o", tmp_path / "x.tif").output.strip()
    assert error == {"event": "error", "message": plain[len("Error: "):], "exit_code": 1}
    # A usage error too, with click's exit code.
    usage = geoseg_done("--progress-json", "predict", image, "-o", tmp_path / "x.tif",
                        "--tile-size", "zero")
    [error] = events(usage.stderr)
    assert error["exit_code"] == usage.returncode == 2 and "--tile-size" in error["message"]
    # A warning: a scene that is not geoseg's own gets the demonstration model, and is told.
    other = write_raster(tmp_path / "other.tif",
                         np.random.default_rng(0).integers(0, 3000, (4, 128, 128), np.uint16))
    warned = geoseg_done("--progress-json", "predict", other, "-o", tmp_path / "y.tif")
    assert warned.returncode == 0, warned.stderr
    [warning] = [e for e in events(warned.stderr) if e["event"] == "warning"]
    plain = [line for line in run_cli("predict", other, "-o", tmp_path / "z.tif").output
             .splitlines() if line.startswith("Warning: ")]
    assert plain == [f"Warning: {warning['message']}"] and "demonstration" in plain[0]


def test_training_progress_runs_over_all_epochs(scene, tmp_path):
    image, labels = scene
    done = geoseg_done("--progress-json", "train", image, "--labels", labels, "-o",
                       tmp_path / "m", "--chip-size", "64", "--epochs", "2",
                       "--steps-per-epoch", "4", "--batch-size", "2")
    assert done.returncode == 0, done.stderr
    said = events(done.stderr)
    fractions = [e["fraction"] for e in said if e["event"] == "progress"]
    assert fractions[0] == 0.0 and 0.5 in fractions and fractions[-1] == 1.0
    assert fractions == sorted(fractions)
    assert any(e["event"] == "log" and e["message"].startswith("epoch 2/2") for e in said)


def test_a_taught_run_reports_the_teachers_map_then_training(tmp_path):
    product = sorted((ROOT / "tests" / "data" / "sentinel2-l1c").glob("S2*"))[0]
    four = "+".join(str(next(product.glob(f"*_{b}_10m.tif"))) for b in ("B02", "B03", "B04",
                                                                         "B08"))
    done = geoseg_done("--progress-json", "train", four, "--teacher-image", product,
                       "--labels-from", "dynamic-world", "-o", tmp_path / "m", "--chip-size",
                       "64", "--epochs", "2", "--steps-per-epoch", "4", "--batch-size", "2")
    assert done.returncode == 0, done.stderr
    said = [e for e in events(done.stderr) if e["event"] == "progress"]
    fractions = [e["fraction"] for e in said]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    teacher = [e["fraction"] for e in said if e["stage"] == "predict"]
    assert teacher and max(teacher) == 0.1  # the teacher's map: the first tenth
    assert min(e["fraction"] for e in said if e["stage"].startswith("epoch")) >= 0.1


def test_doctor_reports_the_environment_and_what_is_wrong(tmp_path):
    done = run_cli("doctor")
    assert done.exit_code == 0, done.output
    for name in ("geoseg", "gdal", "proj", "rasterio", "torch", "onnxruntime", "dask", "cuda",
                 "bundled models", "download cache"):
        assert any(line.startswith(name + " ") for line in done.output.splitlines()), name
    assert done.output.strip().endswith("ok: geoseg can run here")
    blocked = tmp_path / "file"
    blocked.write_text("a file where the cache folder should be")
    env = {**os.environ, "GEOSEG_CACHE": str(blocked / "cache")}
    bad = geoseg_done("doctor", env=env)
    assert bad.returncode == 1
    assert bad.stderr.strip() == (f"Error: the download cache {blocked / 'cache'} is not "
                                  f"writable (set $GEOSEG_CACHE)")


def test_the_plugins_runner_finds_geoseg_and_relays_its_events(scene, tmp_path, monkeypatch):
    # Found from a venv's folder, the executable itself, $GEOSEG_EXECUTABLE or PATH.
    venv = Path(GEOSEG).parent.parent
    assert runner.find_geoseg(str(venv)) == GEOSEG
    assert runner.find_geoseg(GEOSEG) == GEOSEG
    monkeypatch.setenv("GEOSEG_EXECUTABLE", str(venv))
    assert runner.find_geoseg("") == GEOSEG
    monkeypatch.delenv("GEOSEG_EXECUTABLE")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(runner.GeosegNotFound, match="the plugin's setting \\(/nowhere\\)"):
        runner.find_geoseg("/nowhere")
    monkeypatch.undo()

    image, _ = scene
    seen: dict[str, list] = {"progress": [], "info": [], "warning": []}
    outcome = runner.run(
        ["predict", str(image), "-o", str(tmp_path / "m.tif"), "--model", "default",
         "--tile-size", "64"], executable=GEOSEG,
        on_progress=lambda f, _s: seen["progress"].append(f), on_info=seen["info"].append,
        on_warning=seen["warning"].append, is_cancelled=lambda: False)
    assert outcome.returncode == 0 and not outcome.error and not outcome.cancelled
    assert seen["progress"][-1] == 1.0 and len(set(seen["progress"])) >= 5
    assert any(line.startswith("mask: ") for line in outcome.stdout)

    # Cancelled at its first progress past 0: stopped, nothing written.
    big, _ = geoseg.write_sample_data(tmp_path / "big", size=2048, seed=9)
    started = threading.Event()
    outcome = runner.run(
        ["predict", str(big), "-o", str(tmp_path / "c.tif"), "--model", "default",
         "--tile-size", "64"], executable=GEOSEG,
        on_progress=lambda f, _s: started.set() if f > 0 else None, on_info=lambda _l: None,
        on_warning=lambda _w: None, is_cancelled=started.is_set)
    assert outcome.cancelled and outcome.returncode == 130
    assert not list(tmp_path.glob("c.*"))

    # Errors: the CLI's line.
    outcome = runner.run(["predict", str(tmp_path / "none.tif"), "-o", str(tmp_path / "e.tif")],
                         executable=GEOSEG, on_progress=lambda *_: None,
                         on_info=lambda _l: None, on_warning=lambda _w: None,
                         is_cancelled=lambda: False)
    assert outcome.returncode == 1 and outcome.error.endswith("none.tif: no such file")
    assert runner.flag_args([("--a", 1), ("--b", None), ("--c", True), ("--d", False),
                             ("--e", "")]) == ["--a", "1", "--c"]
