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
