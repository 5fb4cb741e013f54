"""geoseg's QGIS plugin in real QGIS, headless: its Processing provider in qgis_process and
in PyQGIS, running the geoseg CLI of this environment out of process.

QGIS's Python is the system python3 (Debian's ``python3-qgis``); ``qgis_process`` comes
with Debian's ``qgis``. Without them these tests are skipped.
"""

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from conftest import run_cli
from test_qgis import qgis_available

import geoseg

ROOT = Path(__file__).resolve().parents[1]
SYSTEM_PYTHON = "/usr/bin/python3"
DRIVER = Path(__file__).with_name("qgis_plugin_run.py")
GEOSEG = str(Path(sys.executable).with_name("geoseg"))
PRODUCT = sorted((ROOT / "tests" / "data" / "sentinel2-l1c").glob("S2*"))[0]


def qgis_process_binary() -> str | None:
    # Debian's qgis_process wrapper passes --noversioncheck, which qgis_process.bin of
    # QGIS 3.22 refuses; the binary itself works.
    for name in ("qgis_process.bin", "qgis_process"):
        found = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists()
                                       else None)
        if found:
            return found
    return None


QGIS_PROCESS = qgis_process_binary()
pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not qgis_available() or QGIS_PROCESS is None,
    reason="QGIS is not installed (apt-get install -y qgis python3-qgis)")]


def qgis_env(profile: Path, plugins: Path = ROOT / "qgis_plugin") -> dict[str, str]:
    return {**os.environ, "QT_QPA_PLATFORM": "offscreen", "QGIS_CUSTOM_CONFIG_PATH": str(profile),
            "QGIS_PLUGINPATH": str(plugins), "GEOSEG_EXECUTABLE": GEOSEG,
            "XDG_RUNTIME_DIR": str(profile)}


def qgis_process(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([QGIS_PROCESS, *args], capture_output=True, text=True, env=env,
                          timeout=600)


def pyqgis(env: dict[str, str], *args: str) -> dict:
    out = subprocess.run([SYSTEM_PYTHON, str(DRIVER), *args], capture_output=True, text=True,
                         env=env, timeout=600)
    assert out.returncode == 0 and out.stdout.strip(), out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def profile(tmp_path_factory):
    """A fresh QGIS profile with the plugin enabled for qgis_process."""
    folder = tmp_path_factory.mktemp("qgis-profile")
    env = qgis_env(folder)
    enabled = qgis_process(env, "plugins", "enable", "geoseg_qgis")
    assert enabled.returncode == 0, enabled.stdout + enabled.stderr
    return env


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scene")
    image, _ = geoseg.write_sample_data(folder, size=512, seed=3)
    return image


def test_qgis_process_lists_the_algorithms(profile):
    listed = qgis_process(profile, "list")
    assert listed.returncode == 0, listed.stderr
    for algorithm in ("predict", "vectorize", "run", "train", "evaluate", "import_model",
                      "export_model", "doctor"):
        assert f"geoseg:{algorithm}\t" in listed.stdout
    helped = qgis_process(profile, "help", "geoseg:predict")
    assert "MODEL" in helped.stdout and "PROBABILITIES" in helped.stdout


def test_predict_on_a_real_product_loads_styled_and_doctor_reports(profile, tmp_path):
    mask = tmp_path / "t33uub.tif"
    done = qgis_process(profile, "run", "geoseg:predict", "--", f"SCENE={PRODUCT}",
                        f"OUTPUT={mask}", f"PROBABILITIES={tmp_path / 'prob.tif'}")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    # The same map as the CLI's.
    cli_mask = tmp_path / "cli.tif"
    assert run_cli("predict", PRODUCT, "-o", cli_mask).exit_code == 0
    with rasterio.open(mask) as ours, rasterio.open(cli_mask) as theirs:
        np.testing.assert_array_equal(ours.read(1), theirs.read(1))
        assert (ours.crs, ours.transform) == (theirs.crs, theirs.transform)
    assert (tmp_path / "prob.tif").exists()
    # PyQGIS loads it styled: paletted, Dynamic World's class names and colours.
    loaded = pyqgis(profile, "layer", str(mask))
    assert loaded["valid"] and loaded["renderer"] == "paletted"
    assert loaded["classes"][:3] == ["water", "trees", "grass"]
    assert loaded["colors"][0] == "#419bdf"
    doctor = qgis_process(profile, "--json", "run", "geoseg:doctor")
    assert doctor.returncode == 0, doctor.stderr
    results = json.loads(doctor.stdout)["results"]
    assert results["EXECUTABLE"] == GEOSEG and "onnxruntime" in results["REPORT"]
    assert "ok: geoseg can run here" in results["REPORT"]


def test_a_modeler_chain_predict_then_vectorize_gives_the_clis_geopackage(profile, tmp_path,
                                                                           scene):
    saved = pyqgis(profile, "model", str(tmp_path / "map.model3"))
    assert saved["saved"] and saved["parameters"][0] == "image"
    done = qgis_process(profile, "run", str(tmp_path / "map.model3"), "--",
                        f"image={scene}", f"vectorize:polygons={tmp_path / 'model.gpkg'}")
    assert done.returncode == 0, done.stdout + done.stderr
    assert run_cli("predict", scene, "-o", tmp_path / "cli.mask.tif", "--model", "default",
                   "--tile-size", 256).exit_code == 0
    assert run_cli("vectorize", tmp_path / "cli.mask.tif", "-o", tmp_path / "cli.gpkg").exit_code == 0
    ours, theirs = gpd.read_file(tmp_path / "model.gpkg"), gpd.read_file(tmp_path / "cli.gpkg")
    assert len(ours) == len(theirs) > 0
    assert list(ours["class_name"]) == list(theirs["class_name"])
    np.testing.assert_allclose(ours["area_m2"], theirs["area_m2"])
    assert ours.geometry.geom_equals_exact(theirs.geometry, 1e-9).all()
    styled = pyqgis(profile, "layer", str(tmp_path / "model.gpkg"))
    assert styled["renderer"] == "categorizedSymbol" and "water" in styled["categories"]


def test_progress_reaches_the_feedback_and_cancel_leaves_no_output(profile, tmp_path,
                                                                    scene):
    ran = pyqgis(profile, "run", "geoseg:predict", json.dumps(
        {"INPUT": str(scene), "MODEL": "default", "TILE_SIZE": 64,
         "OUTPUT": str(tmp_path / "whole.tif")}))
    assert ran["results"]["OUTPUT"] == str(tmp_path / "whole.tif")
    assert len(set(ran["progress"])) >= 5 and max(ran["progress"]) == 100
    # Cancelled at the first progress the feedback gets, mid-run: no output at all.
    big = tmp_path / "big"
    image, _ = geoseg.write_sample_data(big, size=2048, seed=4)
    cancelled = pyqgis(profile, "run", "geoseg:predict", json.dumps(
        {"INPUT": str(image), "MODEL": "default", "TILE_SIZE": 64,
         "OUTPUT": str(tmp_path / "cancelled.tif")}), "--cancel-at-progress")
    assert cancelled["cancelled"] and 0 < cancelled["progress"][-1] < 100
    assert "cancelled: geoseg stopped, and left no partial output" in cancelled["log"]
    assert not list(tmp_path.glob("cancelled*"))


def test_bad_inputs_are_one_line_algorithm_errors(profile, tmp_path):
    """The algorithm's error is the CLI's one line, word for word, and no traceback."""
    text = tmp_path / "notes.tif"
    text.write_text("not a raster")
    for parameters, cli in (
            ([f"SCENE={text}"], [text]),
            ([f"SCENE={PRODUCT}", "MODEL=/no/such/model"], [PRODUCT, "--model", "/no/such/model"])):
        done = qgis_process(profile, "run", "geoseg:predict", "--", *parameters,
                            f"OUTPUT={tmp_path / 'out.tif'}")
        assert done.returncode != 0
        said = done.stdout + done.stderr
        [line] = run_cli("predict", *cli, "-o", tmp_path / "cli.tif").output.splitlines()
        assert line.startswith("Error: ")
        assert f"ERROR:\t{line[len('Error: '):]}" in said.splitlines(), said
        assert "Traceback" not in said
        assert not (tmp_path / "out.tif").exists() and not (tmp_path / "cli.tif").exists()


def test_one_layer_of_many_or_a_filtered_layer_is_refused_not_misread(profile, tmp_path,
                                                                        scene):
    """geoseg reads a file's first layer: a label layer that is another is refused."""
    labels = scene.with_name(scene.name.replace("scene_", "labels_"))
    polygons = geoseg.vectorize(labels)
    gpkg = tmp_path / "two.gpkg"
    polygons.iloc[:5].to_file(gpkg, layer="first")
    polygons.to_file(gpkg, layer="second")
    for source, words in ((f"{gpkg}|layername=second", "is one of several layers of"),
                          (f"{labels}", None)):
        done = pyqgis(profile, "run", "geoseg:evaluate", json.dumps(
            {"INPUT": str(labels), "LABELS": source, "CLASS_FIELD": "class_name",
             "OUTPUT": str(tmp_path / "s.json")}))
        if words is None:
            assert done["results"]["MIOU"] == 1.0
        else:
            assert words in done["error"] and "\n" not in done["error"].strip()
            assert "Traceback" not in done["error"]


def test_the_plugin_zip_installs_into_a_fresh_profile(tmp_path):
    built = subprocess.run(["make", "-s", "qgis-plugin", f"QGIS_PLUGIN_DIST={tmp_path}"],
                           cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert built.returncode == 0, built.stderr
    [archive] = tmp_path.glob("geoseg_qgis-*.zip")
    with zipfile.ZipFile(archive) as zipped:
        names = zipped.namelist()
        assert "geoseg_qgis/metadata.txt" in names and "geoseg_qgis/icon.svg" in names
        assert not [n for n in names if "__pycache__" in n]
        # As "Install from ZIP" does: into the profile's plugin folder.
        profile = tmp_path / "profile"
        plugins = profile / "profiles" / "default" / "python" / "plugins"
        zipped.extractall(plugins)
    env = qgis_env(profile, plugins=tmp_path / "nowhere")
    env.pop("QGIS_PLUGINPATH")
    enabled = qgis_process(env, "plugins", "enable", "geoseg_qgis")
    assert enabled.returncode == 0, enabled.stdout + enabled.stderr
    listed = qgis_process(env, "list")
    assert "geoseg:predict\t" in listed.stdout


def test_train_evaluate_export_import_and_run_through_the_provider(profile, tmp_path, scene):
    """Every other algorithm, each with its parameters as a QGIS user gives them."""
    labels = scene.with_name(scene.name.replace("scene_", "labels_"))
    trained = pyqgis(profile, "run", "geoseg:train", json.dumps(
        {"IMAGE": str(scene), "LABELS": str(labels), "EPOCHS": 1, "CHIP_SIZE": 64,
         "OUTPUT": str(tmp_path / "model")}))
    assert "error" not in trained, trained
    assert 0 < trained["results"]["VAL_MIOU"] <= 1
    assert geoseg.load_model(tmp_path / "model").spec.metrics["best_epoch"] == 1

    assert run_cli("predict", scene, "--model", tmp_path / "model", "-o",
                   tmp_path / "m.tif").exit_code == 0
    scored = pyqgis(profile, "run", "geoseg:evaluate", json.dumps(
        {"INPUT": str(tmp_path / "m.tif"), "LABELS": str(labels),
         "OUTPUT": str(tmp_path / "scores.json")}))
    expected = geoseg.evaluate(tmp_path / "m.tif", labels).metrics
    assert scored["results"]["MIOU"] == pytest.approx(expected["miou"])
    assert json.loads((tmp_path / "scores.json").read_text())["miou"] == (
        pytest.approx(expected["miou"]))

    exported = pyqgis(profile, "run", "geoseg:export_model", json.dumps(
        {"MODEL": str(tmp_path / "model"), "FORMAT": 1, "OUTPUT": str(tmp_path / "d.onnx")}))
    assert exported["results"]["OUTPUT"] == str(tmp_path / "d.onnx")
    imported = pyqgis(profile, "run", "geoseg:import_model", json.dumps(
        {"INPUT": str(tmp_path / "d.onnx"), "OUTPUT": str(tmp_path / "back")}))
    assert "error" not in imported, imported
    assert geoseg.load_model(tmp_path / "back").spec.class_names == (
        geoseg.load_model(tmp_path / "model").spec.class_names)

    ran = pyqgis(profile, "run", "geoseg:run", json.dumps(
        {"SCENES": str(scene), "MODEL": "default", "OUTPUT": str(tmp_path / "run")}))
    assert "error" not in ran, ran
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert ran["results"]["SUMMARY"] == str(tmp_path / "run" / "summary.json")
    assert [s["status"] for s in summary["scenes"]] == ["done"]


def test_outputs_to_object_storage_are_passed_on(profile, tmp_path, scene, s3):
    """A destination given as s3://BUCKET/KEY reaches geoseg as it is (QGIS does not take
    it for a local path), and the mask lands in the bucket."""
    env = {**profile, **{k: v for k, v in os.environ.items() if k.startswith(("AWS_", "CPL_"))}}
    key = f"s3://{s3.bucket}/maps/scene.mask.tif"
    done = qgis_process(env, "run", "geoseg:predict", "--", f"INPUT={scene}",
                        "MODEL=default", "TILE_SIZE=256", f"OUTPUT={key}")
    assert done.returncode == 0, done.stdout + done.stderr
    listed = {o["Key"] for o in s3.list_objects_v2(Bucket=s3.bucket)["Contents"]}
    assert {"maps/scene.mask.tif", "maps/scene.mask.qml"} <= listed
    ran = qgis_process(env, "run", "geoseg:run", "--", f"SCENES={scene}", "MODEL=default",
                       f"OUTPUT=s3://{s3.bucket}/run")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    listed = {o["Key"] for o in s3.list_objects_v2(Bucket=s3.bucket)["Contents"]}
    assert "run/summary.json" in listed
