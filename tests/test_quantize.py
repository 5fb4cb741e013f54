"""``geoseg models quantize``: an int8 CPU graph calibrated on the user's scenes, that gives
the float model's classes, keeps the network for GPUs, and refuses bad input in one line."""

import dataclasses
import json

import numpy as np
import onnx
import pytest
import rasterio
from conftest import assert_one_line_error, invoke, run_cli

import geoseg
from geoseg.model import Model, load_model


@pytest.fixture(scope="module")
def float_model(tmp_path_factory):
    """The default network as a float model (its card says torch runs it on CPUs)."""
    default = load_model("default")
    spec = dataclasses.replace(default.spec, quantization={}, runtime="torch")
    folder = tmp_path_factory.mktemp("float")
    Model(default.network, spec).save(folder)
    return folder


def test_an_int8_model_gives_the_float_models_classes(float_model, make_scene, tmp_path):
    calibration = [make_scene(600, 600, seed=s, name=f"cal{s}.tif")[0] for s in (21, 22)]
    out = tmp_path / "int8"
    result = run_cli("models", "quantize", float_model, *calibration, "-o", out,
                     "--tiles", 8, "--check", 2)
    assert result.exit_code == 0, result.output
    assert "int8, calibrated on 8 tiles, same class as the float graph on" in result.output
    card = json.loads((out / "model.json").read_text())
    assert card["runtime"] == "onnxruntime"
    assert card["quantization"]["calibration"]["tiles"] == 8
    assert card["quantization"]["calibration"]["scenes"] == ["cal21.tif", "cal22.tif"]
    assert 0.95 < card["quantization"]["agreement_with_float"] <= 1
    ops = {n.op_type for n in onnx.load(out / "model.onnx").graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    # The network GPUs run is the float one, unchanged.
    assert (out / "model.safetensors").read_bytes() == (float_model / "model.safetensors").read_bytes()

    scene, labels = make_scene(700, 500, seed=23)  # never calibrated on
    masks = {}
    for name, model in (("float", float_model), ("int8", out)):
        geoseg.predict(scene, tmp_path / f"{name}.tif", model=model, device="cpu")
        with rasterio.open(tmp_path / f"{name}.tif") as ds:
            masks[name] = ds.read(1)
    data = labels != 255
    assert np.array_equal(masks["float"] == 255, masks["int8"] == 255)  # nodata stays
    assert (masks["float"] == masks["int8"])[data].mean() > 0.99
    assert (masks["int8"] == labels)[data].mean() > 0.95


def test_bad_calibration_is_one_line_and_writes_nothing(float_model, make_scene, make_raster,
                                                        tmp_path):
    scene, _ = make_scene(600, 600)
    three = make_raster("three.tif", np.ones((3, 600, 600), np.uint16))
    result = invoke("models", "quantize", float_model, three, "-o", tmp_path / "a")
    assert_one_line_error(result, "band", named=three)
    empty = make_raster("empty.tif", np.zeros((4, 600, 600), np.uint16), nodata=0)
    result = invoke("models", "quantize", float_model, empty, "-o", tmp_path / "b")
    assert_one_line_error(result, "too little data", named=empty)
    result = invoke("models", "quantize", "default", scene, "-o", tmp_path / "c")
    assert_one_line_error(result, "quantized already")
    assert not any((tmp_path / n).exists() for n in "abc")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "model.json").write_text("{}")
    result = invoke("models", "quantize", float_model, scene, "-o", tmp_path / "d")
    assert_one_line_error(result, "--overwrite")
    assert (tmp_path / "d" / "model.json").read_text() == "{}"
