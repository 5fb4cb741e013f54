import json

import numpy as np
import pytest
import torch

import geoseg
from geoseg.errors import ModelError
from geoseg.model import ClassInfo, Model, ModelSpec, build_network, bundled_path, load_model


def small_spec(**changes):
    base = dict(name="t", bands=("b", "g", "r", "n"), mean=(1.0,) * 4, std=(2.0,) * 4,
                classes=(ClassInfo("a", (1, 2, 3)), ClassInfo("b", (4, 5, 6))), tile_size=64,
                encoder="tu-mobilenetv3_small_100", decoder_channels=(16, 8, 8))
    return ModelSpec(**{**base, **changes})


def test_bundled_default_model_loads_small_and_documented():
    model = geoseg.load_model("default")
    assert isinstance(model.network, torch.nn.Module)
    assert model.spec.bands == ("blue", "green", "red", "nir")
    assert len(model.spec.classes) >= 5
    size = sum(p.stat().st_size for p in bundled_path("default").iterdir())
    assert size <= 10e6
    assert model.spec.metrics["heldout_miou"] >= 0.90


def test_save_and_load_round_trip_keeps_weights_and_card(tmp_path):
    spec = small_spec()
    model = Model(build_network(spec).eval(), spec)
    card = model.save(tmp_path / "mine")
    assert card.name == "mine.json" and (tmp_path / "mine.safetensors").exists()
    loaded = load_model(tmp_path / "mine.safetensors")
    assert loaded.spec == spec
    x = torch.randn(1, 4, 64, 64)
    with torch.inference_mode():
        np.testing.assert_array_equal(model.network(x).numpy(), loaded.network(x).numpy())


def test_weights_that_do_not_match_the_card_are_rejected(tmp_path):
    spec = small_spec()
    Model(build_network(spec), spec).save(tmp_path / "m")
    card = json.loads((tmp_path / "m.json").read_text())
    card["bands"] = ["b", "g", "r"]
    card["mean"], card["std"] = [1, 1, 1], [1, 1, 1]
    (tmp_path / "m.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match="do not match the model card"):
        load_model(tmp_path / "m.json")


@pytest.mark.parametrize(("text", "words"), [
    ("{not json", "not valid JSON"),
    ('{"format": "something-else"}', "format"),
    ('{"format": "geoseg-model/1", "name": "x"}', "malformed model card"),
    ('[1, 2]', "JSON object"),
])
def test_malformed_cards_give_clear_errors(tmp_path, text, words):
    (tmp_path / "bad.json").write_text(text)
    (tmp_path / "bad.safetensors").write_bytes(b"")
    with pytest.raises(ModelError, match=words):
        load_model(tmp_path / "bad.json")


def test_inconsistent_specs_list_every_problem():
    with pytest.raises(ModelError) as info:
        small_spec(mean=(1.0,), std=(0.0,) * 4, tile_size=60)
    assert "means" in str(info.value) and "positive" in str(info.value)
    assert "multiple of 8" in str(info.value)


def test_pickle_checkpoints_are_never_loaded(tmp_path):
    path = tmp_path / "evil.pt"
    path.write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(ModelError, match="pickle"):
        load_model(path)


def test_missing_model_names_the_path(tmp_path):
    with pytest.raises(ModelError, match="no such model"):
        load_model(tmp_path / "nothing")
