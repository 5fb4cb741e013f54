import json
import subprocess
import sys

import numpy as np
import pytest
import rasterio
from conftest import (
    assert_one_line_error,
    file_size_limit,
    geoseg_done,
    interruptible,
    own_lines,
    run_cli,
)


def test_sample_data_then_predict_writes_outputs_and_reports_paths(tmp_path):
    result = run_cli("sample-data", tmp_path / "data", "--size", 300, "--seed", 5)
    assert result.exit_code == 0, result.output
    scene = tmp_path / "data" / "scene_5.tif"
    assert f"scene: {scene}" in result.output
    dst = tmp_path / "mask.tif"
    result = run_cli("predict", scene, "-o", dst, "--tile-size", 128, "--quicklook", tmp_path / "q.png")
    assert result.exit_code == 0, result.output
    assert f"mask: {dst}" in result.output and "q.png" in result.output
    with rasterio.open(dst) as ds, rasterio.open(scene) as src:
        assert ds.transform == src.transform and ds.crs == src.crs
    # Same command again: the output exists, so it refuses and keeps the file.
    before = dst.read_bytes()
    result = run_cli("predict", scene, "-o", dst)
    assert_one_line_error(result, str(dst), "exists already", "--overwrite")
    assert dst.read_bytes() == before


@pytest.mark.parametrize(("make", "words"), [
    (lambda d: d / "missing.tif", ["missing.tif", "no such file"]),
    (lambda d: (d / "notes.tif").write_text("not a raster") and d / "notes.tif",
     ["notes.tif", "not a raster"]),
    (lambda d: (d / "zero.tif").write_bytes(b"") or d / "zero.tif", ["zero.tif", "empty"]),
])
def test_bad_inputs_give_one_line_errors_and_no_output(tmp_path, make, words):
    src = make(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    result = run_cli("predict", src, "-o", out / "mask.tif")
    assert_one_line_error(result, *words)
    assert list(out.iterdir()) == []


def test_wrong_band_count_and_no_crs_are_one_line_errors(make_raster, tmp_path):
    three = make_raster("three.tif", data=np.ones((3, 40, 40), np.uint16))
    assert_one_line_error(run_cli("predict", three, "-o", tmp_path / "a.tif"),
                          "three.tif", "3 bands but the model needs 4", "--bands")
    nocrs = make_raster("nocrs.tif", crs=None)
    assert_one_line_error(run_cli("predict", nocrs, "-o", tmp_path / "b.tif"),
                          "nocrs.tif", "no CRS", "--allow-no-crs")
    assert run_cli("predict", nocrs, "-o", tmp_path / "b.tif", "--allow-no-crs").exit_code == 0
    assert not (tmp_path / "a.tif").exists()


def test_bad_option_values_are_usage_errors(make_raster, tmp_path):
    path = make_raster()
    assert run_cli("predict", path, "-o", tmp_path / "m.tif", "--bands", "x,y").exit_code == 2
    assert run_cli("predict", path, "-o", tmp_path / "m.tif", "--scheduler", "gpu").exit_code == 2
    assert_one_line_error(run_cli("predict", path, "-o", tmp_path / "m.tif", "--tile-size", 100),
                          "multiple of 8")


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(Exception, match="no such file"):
        run_cli("--debug", "predict", tmp_path / "missing.tif", "-o", tmp_path / "m.tif")


def test_info_describes_rasters_and_models(make_raster):
    result = run_cli("info", make_raster(nodata=0), "--json")
    data = json.loads(result.output)
    assert data["size"] == "80 x 64" and data["bands"] == 4 and data["crs"] == "EPSG:32633"
    result = run_cli("info", "default")
    assert "grass_crop" in result.output and "heldout_miou" in result.output
    assert "default" in run_cli("models").output


def test_help_is_fast_and_does_not_import_torch():
    code = "import sys; from geoseg.cli import cli; cli(['--help'], standalone_mode=False); " \
           "print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().endswith("False")


@pytest.mark.slow
def test_a_full_disk_is_a_one_line_error_and_leaves_nothing(tmp_path):
    run_cli("sample-data", tmp_path, "--size", 512, "--seed", 2)
    out = tmp_path / "out"
    out.mkdir()
    done = geoseg_done("predict", tmp_path / "scene_2.tif", "-o", out / "mask.tif",
                       preexec=file_size_limit(100_000))  # as a nearly full disk
    assert done.returncode == 1
    lines = own_lines(done.stderr)
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith(f"Error: {out / 'mask.tif'}: could not be written"), done.stderr
    assert list(out.iterdir()) == []


def test_missing_output_folders_are_created(make_raster, tmp_path):
    dst = tmp_path / "new" / "deeper" / "mask.tif"
    assert run_cli("predict", make_raster(), "-o", dst).exit_code == 0
    assert dst.exists() and dst.with_suffix(".qml").exists()


def test_vectorize_writes_a_styled_geopackage_and_refuses_bad_masks(tmp_path):
    result = run_cli("sample-data", tmp_path, "--size", 200, "--seed", 3)
    labels = tmp_path / "labels_3.tif"
    dst = tmp_path / "out" / "labels.gpkg"
    result = run_cli("vectorize", labels, "-o", dst, "--min-area", 50, "--chunk-size", 64)
    assert result.exit_code == 0, result.output
    assert f"polygons: {dst}" in result.output and "labels.qml" in result.output
    import geopandas as gpd

    gdf = gpd.read_file(dst, layer="labels")
    assert len(gdf) > 10 and gdf.area_m2.min() >= 50
    assert_one_line_error(run_cli("vectorize", labels, "-o", dst), str(dst), "exists already")
    scene = tmp_path / "scene_3.tif"
    assert_one_line_error(run_cli("vectorize", scene, "-o", tmp_path / "x.gpkg"), "scene_3.tif",
                          "4 bands")
    assert not (tmp_path / "x.gpkg").exists()
    assert_one_line_error(run_cli("vectorize", labels, "-o", tmp_path / "y.gpkg", "--classes",
                              "lake"), "unknown class 'lake'")
    assert run_cli("vectorize", labels, "-o", tmp_path / "z.gpkg", "--simplify", -1).exit_code == 2


def test_run_predicts_and_vectorizes_each_scene_with_a_summary(tmp_path):
    run_cli("sample-data", tmp_path / "a", "--size", 160, "--seed", 1)
    run_cli("sample-data", tmp_path / "b", "--size", 160, "--seed", 2, "--no-nodata")
    out = tmp_path / "out"
    result = run_cli("run", tmp_path / "a" / "scene_1.tif", tmp_path / "b" / "scene_2.tif",
                 "-o", out, "--tile-size", 64, "--probabilities")
    assert result.exit_code == 0, result.output
    assert "water" in result.output and "area (ha)" in result.output
    names = sorted(p.name for p in out.iterdir())
    assert names == ["geoseg-journal.jsonl", "scene_1.gpkg", "scene_1.mask.qml",
                     "scene_1.mask.tif", "scene_1.prob.tif", "scene_1.qml", "scene_2.gpkg",
                     "scene_2.mask.qml", "scene_2.mask.tif",
                     "scene_2.prob.tif", "scene_2.qml", "summary.json"]
    summary = json.loads((out / "summary.json").read_text())
    assert [s["name"] for s in summary["scenes"]] == ["scene_1", "scene_2"]
    import geopandas as gpd

    for scene in summary["scenes"]:
        gdf = gpd.read_file(scene["outputs"]["gpkg"], layer=scene["name"])
        assert gdf.confidence.between(0, 1).all()
        by_class = {c["class_name"]: c["area_m2"] for c in scene["classes"]}
        assert sum(by_class.values()) == pytest.approx(gdf.area_m2.sum(), abs=0.1)
        with rasterio.open(scene["outputs"]["mask"]) as ds:
            valid = (ds.read(1) != 255).sum() * abs(ds.transform.a * ds.transform.e)
        assert sum(by_class.values()) == pytest.approx(valid, abs=0.1)
    # Everything is checked up front: one existing output stops the run before any work.
    (out / "scene_2.gpkg").unlink()
    result = run_cli("run", tmp_path / "b" / "scene_2.tif", tmp_path / "a" / "scene_1.tif",
                 "-o", out)
    assert_one_line_error(result, "exists already")
    assert not (out / "scene_2.gpkg").exists()
    result = run_cli("run", tmp_path / "a" / "scene_1.tif", tmp_path / "a" / "scene_1.tif",
                 "-o", out)
    assert_one_line_error(result, "same name")


def test_an_interrupt_that_lands_in_a_destructor_is_raised_not_lost():
    """Python swallows an exception raised in __del__ (printing a traceback); the CLI
    raises such an interrupt again in ordinary code, so Ctrl-C always ends a command."""
    code = """if True:
        import signal, sys, threading
        from geoseg.cli import app
        sys.unraisablehook = app.redeliver_interrupts(sys.unraisablehook)

        class Closing:
            def __del__(self):
                signal.raise_signal(signal.SIGINT)  # Ctrl-C, just then

        try:
            Closing()
            threading.Event().wait(30)  # the interrupt comes again, in ms, or it is lost
            print("lost")
        except KeyboardInterrupt:
            print("raised")
    """
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          preexec_fn=interruptible)
    assert done.stdout == "raised\n" and "Traceback" not in done.stderr, done.stderr
