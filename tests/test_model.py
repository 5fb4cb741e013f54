import json

import numpy as np
import pytest
import rasterio
import torch
from conftest import assert_one_line_error, invoke
from hypothesis import given, settings
from hypothesis import strategies as st

import geoseg
from geoseg.errors import ModelError
from geoseg.model import (
    ClassInfo,
    Model,
    ModelSpec,
    build_network,
    bundled_path,
    check_shapes,
    load_model,
    read_spec,
)


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
    ('{"format": "geoseg-model/1", "name": "x"}', "malformed model card: bands, mean"),
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


class _RunsCode:
    """Unpickling this writes a file: what a malicious checkpoint could do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _default_card(path):
    path.write_text(json.dumps(load_model("default").spec.to_dict()))
    return path


def test_pickles_are_refused_without_trust_and_never_unpickled(tmp_path, make_raster):
    marker = tmp_path / "code-ran"
    torch.save({"state_dict": _RunsCode(marker)}, tmp_path / "evil.pt")
    _default_card(tmp_path / "evil.json")
    with pytest.raises(ModelError, match=r"pickle checkpoint.*also take trust_pickle=True\)"):
        load_model(tmp_path / "evil.pt")
    result = invoke("predict", make_raster(), "-o", tmp_path / "m.tif", "--model",
                    tmp_path / "evil.pt")
    assert_one_line_error(result, "also take --trust-pickle)", named=tmp_path / "evil.pt")
    assert not marker.exists() and not (tmp_path / "m.tif").exists()


def test_a_trusted_lightning_style_checkpoint_loads_like_its_safetensors(tmp_path, make_raster):
    default = load_model("default")
    state = {"model." + k: v for k, v in default.network.state_dict().items()}
    torch.save({"epoch": 3, "state_dict": state}, tmp_path / "ck.ckpt")
    _default_card(tmp_path / "ck.json")
    loaded = load_model(tmp_path / "ck.ckpt", trust_pickle=True)
    assert loaded.spec == default.spec  # its card
    assert loaded.to_bytes()[1] == default.to_bytes()[1]  # and tensors
    image = make_raster()
    result = invoke("predict", image, "-o", tmp_path / "a.tif", "--model",
                    str(tmp_path / "ck.ckpt"), "--trust-pickle")
    assert result.exit_code == 0, result.output
    # A checkpoint has the network alone, so it runs in torch: so does the default's here
    # (its own CPU graph is int8).
    geoseg.predict(image, tmp_path / "b.tif", model=Model(default.network, default.spec))
    with rasterio.open(tmp_path / "a.tif") as a, rasterio.open(tmp_path / "b.tif") as b:
        np.testing.assert_array_equal(a.read(), b.read())
    # Even trusted, a pickle must hold tensors that fit its card.
    torch.save(["not", "weights"], tmp_path / "odd.pth")
    _default_card(tmp_path / "odd.json")
    with pytest.raises(ModelError, match="no state dict"):
        load_model(tmp_path / "odd.pth", trust_pickle=True)


def test_classes_that_do_not_match_the_weights_are_rejected(tmp_path):
    spec = small_spec()
    Model(build_network(spec), spec).save(tmp_path / "m")
    card = json.loads((tmp_path / "m.json").read_text())
    card["classes"].append({"name": "c", "color": [7, 8, 9]})
    (tmp_path / "m.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match="do not match the model card") as info:
        load_model(tmp_path / "m.json")
    assert "m.safetensors" in str(info.value)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True)
    | st.sampled_from([0, -1, 1, 3, 8, 64, 10**400, 1e308, "", "x"]) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_any_card_either_loads_sound_or_raises_a_model_error(data):
    """Fuzz the card reader from a valid card: keys dropped, values replaced by any JSON."""
    card = small_spec().to_dict()
    for key in data.draw(st.lists(st.sampled_from(sorted(card)), max_size=3, unique=True)):
        if data.draw(st.booleans()):
            del card[key]
        else:
            card[key] = data.draw(_json)
    if data.draw(st.booleans()):
        card[data.draw(st.text(max_size=6))] = data.draw(_json)
    try:
        spec = ModelSpec.from_dict(json.loads(json.dumps(card)))
    except ModelError:
        return
    assert spec.problems() == [] and len(spec.mean) == len(spec.bands)
    assert ModelSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ModelError):  # its network is built on the meta device: no memory
        check_shapes(spec, {}, "weights")


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=200) | _json.map(json.dumps))
def test_any_card_file_content_gives_a_spec_or_a_model_error_naming_it(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("card") / "m.json"
    path.write_text(text)
    try:
        read_spec(path)
    except ModelError as exc:
        assert str(path) in str(exc)


def test_hostile_cards_are_model_errors_not_crashes(tmp_path):
    (tmp_path / "deep.json").write_text("[" * 100_000)
    with pytest.raises(ModelError, match="nested too deeply"):
        read_spec(tmp_path / "deep.json")
    # A card that asks for an enormous network is refused by its checks, and one that is
    # merely big is compared with the weights before anything is allocated.
    with pytest.raises(ModelError, match="decoder_channels must be 1 to 4096"):
        small_spec(decoder_channels=(2**31, 8, 8))
    Model(build_network(small_spec()), small_spec()).save(tmp_path / "m")
    card = json.loads((tmp_path / "m.json").read_text())
    card["decoder_channels"] = [4096, 4096, 4096]
    (tmp_path / "m.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match=r"do not match the model card \(decoder"):
        load_model(tmp_path / "m.json")


def test_a_changed_network_saves_as_what_it_is(tmp_path):
    """The default's card says int8 on ONNX Runtime; once its network changes (fine-tuning
    in a notebook) that graph is stale: the saved model is the network, on torch, and its
    card claims no quantization."""
    model = load_model("default")
    with torch.no_grad():
        next(model.network.parameters()).add_(0.01)
    loaded = load_model(model.save(tmp_path / "changed"))
    assert loaded.spec.runtime == "torch" and loaded.spec.quantization == {}
    assert loaded.graph is None and not (tmp_path / "changed.onnx").exists()
    x = torch.randn(1, 4, 64, 64)
    with torch.inference_mode():
        np.testing.assert_array_equal(loaded.network(x).numpy(), model.network(x).numpy())


def test_a_folder_named_as_a_bundled_model_hides_it_only_when_it_holds_a_model(
        tmp_path, monkeypatch, default_model):
    """``dynamic-world/`` of someone's outputs in the working directory leaves the bundled
    model in reach; a folder of that name with a saved model in it is the user's model."""
    from geoseg.model import bundled_path, resolve_model_path

    monkeypatch.chdir(tmp_path)
    (tmp_path / "dynamic-world").mkdir()
    (tmp_path / "dynamic-world" / "T33UUB.mask.tif").write_bytes(b"not a model")
    assert resolve_model_path("dynamic-world") == bundled_path("dynamic-world") / "model.json"
    (tmp_path / "default").mkdir()
    default_model.save(tmp_path / "default")
    assert resolve_model_path("default").resolve() == tmp_path / "default" / "model.json"
