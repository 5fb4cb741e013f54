import numpy as np
import pytest
import torch

import geoseg
from geoseg.devices import select_device
from geoseg.errors import DeviceError, EnvError, InputError
from geoseg.inference import ModelHandle, Predictor


def test_device_choice():
    assert select_device("cpu") == "cpu"
    assert select_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(InputError, match="unknown device 'tpu'"):
        select_device("tpu")
    if not torch.cuda.is_available():  # the machine's problem, not the input's
        with pytest.raises(DeviceError, match="device=cuda asked for, but no CUDA GPU") as info:
            select_device("cuda")
        assert isinstance(info.value, EnvError) and not isinstance(info.value, InputError)
        assert info.value.text("cli").startswith("--device cuda asked for")


@pytest.mark.parametrize("tta", [False, True])
def test_probabilities_are_normalized_per_pixel(default_model, tta):
    predictor = Predictor(default_model, "cpu", tta=tta)
    tiles = np.random.default_rng(0).uniform(200, 4000, (2, 4, 64, 64)).astype(np.float32)
    probs = predictor.predict_proba(tiles)
    assert probs.shape == (2, len(default_model.spec.classes), 64, 64)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_tta_is_flip_equivariant(default_model):
    predictor = Predictor(default_model, "cpu", tta=True)
    x = np.random.default_rng(1).uniform(200, 4000, (1, 4, 64, 64)).astype(np.float32)
    flipped = predictor.predict_proba(x[..., ::-1])[..., ::-1]
    np.testing.assert_allclose(predictor.predict_proba(x), flipped, atol=1e-5)


def test_invalid_pixels_are_fed_as_the_band_mean(default_model):
    predictor = Predictor(default_model, "cpu")
    tiles = np.full((1, 4, 8, 8), 12345.0, np.float32)
    valid = np.zeros((1, 8, 8), bool)
    assert not predictor.normalize(tiles, valid).any()


def test_in_memory_models_travel_as_bytes_and_load_identically():
    from geoseg.model import Model

    model = geoseg.load_model("default")  # not the fixture: a Predictor made it channels-last
    copy = Model(model.network, model.spec)  # no path: must travel by value
    handle = ModelHandle.of(copy)
    assert handle.path is None and handle.weights
    loaded = handle.load()
    x = torch.randn(1, 4, 64, 64)
    with torch.inference_mode():
        np.testing.assert_array_equal(loaded.network(x).numpy(), model.network(x).numpy())
    assert ModelHandle.of(copy) == handle and hash(ModelHandle.of(copy)) == hash(handle)


def test_a_process_never_reuses_a_model_whose_files_changed(make_raster, tmp_path):
    """Predict keeps one loaded model per process; an edited card or new weights are read
    again (a card that no longer fits the weights is an error, as on a first load)."""
    import json
    import shutil

    from geoseg.errors import ModelError
    from geoseg.model import bundled_path

    model = shutil.copytree(bundled_path("default"), tmp_path / "mine")
    image = make_raster(data=np.random.default_rng(0).integers(1, 4000, (4, 64, 64), np.uint16))
    first = ModelHandle.of_path(model / "model.json")
    assert geoseg.predict(image, model=model).values.shape == (64, 64)
    card = json.loads((model / "model.json").read_text())
    card["classes"].append({"name": "extra", "color": [1, 2, 3]})
    (model / "model.json").write_text(json.dumps(card))
    assert ModelHandle.of_path(model / "model.json") != first
    # The CPU runs the ONNX graph, checked against the card as torch weights are.
    with pytest.raises(ModelError, match="ONNX graph does not match the model card"):
        geoseg.predict(image, model=model)


@pytest.mark.parametrize(("channels", "outputs"), [(6, "logits"), (6, "probabilities"),
                                                   (1, "logits"), (1, "probabilities")])
def test_host_and_device_probabilities_agree(channels, outputs):
    """ONNX Runtime's outputs become probabilities in numpy, torch's on the device: one
    meaning, two implementations, so they are held to each other."""
    from geoseg.runtimes import probabilities_of, to_probabilities

    rng = np.random.default_rng(3)
    out = rng.normal(0, 4, (2, channels, 16, 16)).astype(np.float32)
    if outputs == "probabilities":
        out = rng.uniform(0, 1, out.shape).astype(np.float32)
    weights = rng.uniform(0, 1, (2, 16, 16)).astype(np.float32)
    n_classes = 2 if channels == 1 else channels
    want = to_probabilities(torch.from_numpy(out), outputs, n_classes).numpy() * weights[:, None]
    np.testing.assert_allclose(probabilities_of(out.copy(), outputs, n_classes, weights), want,
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("tta", [False, True])
def test_onnx_runtime_and_torch_give_the_same_probabilities(default_model, tta):
    """The default network as a float ONNX graph on ONNX Runtime (numpy around it) against
    the same torch network (torch around it): nodata, blend weights and flips included."""
    import dataclasses

    from geoseg.model import Model
    from geoseg.model_export import onnx_graph

    rng = np.random.default_rng(4)
    tiles = rng.integers(200, 4000, (2, 4, 64, 64)).astype(np.uint16)
    valid = np.ones((2, 64, 64), bool)
    valid[0, :10] = False
    weights = rng.uniform(0.1, 1, (2, 64, 64)).astype(np.float32)
    float_spec = dataclasses.replace(default_model.spec, quantization={})
    graph = onnx_graph(Model(default_model.network, float_spec))  # exported from torch
    onnx = Predictor(Model(None, float_spec, onnx=graph), "cpu", tta=tta)
    torch_spec = dataclasses.replace(float_spec, runtime="torch")
    with_torch = Predictor(Model(default_model.network, torch_spec), "cpu", tta=tta)
    assert onnx.on_host and not with_torch.on_host
    got = onnx.predict_proba(tiles, valid, weights, scale=(2.0,) * 4, offset=(-1.0,) * 4)
    want = with_torch.predict_proba(tiles, valid, weights, scale=(2.0,) * 4, offset=(-1.0,) * 4)
    np.testing.assert_allclose(got, want, atol=2e-4)


def test_onnx_models_predict_without_importing_torch(make_scene, tmp_path):
    """A scene predicted with an ONNX Runtime model on the CPU never imports torch (over a
    second of every command's start-up)."""
    import os
    import subprocess
    import sys

    path, _ = make_scene(96, 80)
    code = ("import sys, geoseg\n"
            f"geoseg.predict({str(path)!r}, {str(tmp_path / 'mask.tif')!r}, device='auto')\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'onnx')))")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # no GPU, on any machine
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, check=True)
    assert done.stdout.strip() == "[]", done.stdout
    assert (tmp_path / "mask.tif").exists()
