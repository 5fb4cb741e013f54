"""Models from elsewhere and for elsewhere: ONNX (Deepness, ukis-csmask), smp hub folders,
TorchGeo and Lightning state dicts, references into the cache, and the exports.

Every model here is a real file: exported by geoseg, saved by segmentation-models-pytorch
or torch, or shipped by ukis-csmask (real cloud/shadow U-Nets, installed as test data by
``make install``). Downloads come from HTTP servers the tests start on 127.0.0.1.
"""

from __future__ import annotations

import dataclasses
import http.server
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from conftest import assert_one_line_error, invoke, run_cli, write_raster

import geoseg
from geoseg.model import Model, load_model
from geoseg.model_export import export_model
from geoseg.model_import import import_model


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    """Each test downloads into a cache of its own."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("GEOSEG_CACHE", str(folder))
    return folder


def torch_model(model: Model) -> Model:
    """The same network, run by torch on the CPU (the reference for its ONNX forms)."""
    return Model(model.network, dataclasses.replace(model.spec, runtime="torch"))


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(a == b))


def mask_of(image: Path, model: object, **kwargs: object) -> np.ndarray:
    return geoseg.predict(image, model=model, device="cpu", **kwargs).values


# --- exports and their round trips ------------------------------------------------------

@pytest.mark.slow
def test_onnx_export_imports_back_and_agrees_with_torch_on_held_out_scenes(make_scene, tmp_path,
                                                                         default_model):
    onnx_file = export_model(default_model, tmp_path / "default.onnx", "onnx")
    imported = import_model(onnx_file, tmp_path / "imported")
    spec, original = imported.spec, default_model.spec
    assert spec.architecture == "onnx" and spec.runtime == "onnxruntime"
    assert spec.source["format"] == "geoseg onnx" and len(spec.source["sha256"]) == 64
    for field in ("bands", "mean", "std", "classes", "tile_size", "resolution", "outputs"):
        assert getattr(spec, field) == getattr(original, field), field
    for seed in (1000, 1001):
        image, _ = make_scene(700, 900, seed=seed, name=f"scene{seed}.tif")
        reference = mask_of(image, torch_model(default_model))
        assert agreement(mask_of(image, tmp_path / "imported"), reference) >= 0.999


def test_deepness_export_as_the_plugin_reads_it_reproduces_geoseg_normalization(tmp_path):
    """The plugin json.loads every metadata value, divides the input by 255 and standardizes
    with its mean and std; that must be geoseg's own normalization, for uint8 and uint16."""
    import onnxruntime as ort

    from geoseg.inference import Predictor

    base = load_model("default")
    for dtype, scale in (("uint8", 1 / 40), ("uint16", 1.0)):
        spec = dataclasses.replace(base.spec, scale=(scale,) * 4, offset=(5.0,) * 4)
        model = Model(base.network, spec)
        path = export_model(model, tmp_path / f"deepness_{dtype}.onnx", "deepness")
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        meta = {k: json.loads(v) for k, v in session.get_modelmeta().custom_metadata_map.items()}
        assert meta["model_type"] == "Segmentor" and meta["tile_size"] == 512
        assert meta["class_names"] == {str(i): n for i, n in enumerate(spec.class_names)}
        assert meta["resolution"] == pytest.approx(spec.resolution * 100)
        shape = session.get_inputs()[0].shape
        assert shape[1:] == [4, 512, 512] and not isinstance(shape[0], int)  # dynamic batch
        rng = np.random.default_rng(0)
        high = 255 if dtype == "uint8" else 8000
        tiles = rng.integers(0, high, (2, 4, 512, 512)).astype(dtype)
        mean = np.array(meta["standardization_mean"], np.float32)[:, None, None]
        std = np.array(meta["standardization_std"], np.float32)[:, None, None]
        plugin_input = ((tiles / 255.0 - mean) / std).astype(np.float32)
        predictor = Predictor(model, "cpu")
        np.testing.assert_allclose(plugin_input, predictor.normalize(tiles).numpy(),
                                   rtol=1e-4, atol=1e-3)
        plugin_probs = session.run(None, {session.get_inputs()[0].name: plugin_input})[0]
        np.testing.assert_allclose(plugin_probs.sum(axis=1), 1.0, atol=1e-4)  # softmax inside
        ours = predictor.predict_proba(tiles)
        top2 = np.sort(ours, axis=1)[:, -2:]
        clear = top2[:, 1] - top2[:, 0] > 0.002  # not a tie that rounding can turn
        assert clear.mean() > 0.9
        np.testing.assert_array_equal(plugin_probs.argmax(1)[clear], ours.argmax(1)[clear])


def test_deepness_metadata_is_read_on_import(tmp_path, default_model, make_scene):
    path = export_model(default_model, tmp_path / "deepness.onnx", "deepness")
    # A Deepness model as its zoo ships them: its metadata only (no geoseg card).
    import onnx

    proto = onnx.load(str(path))
    kept = [p for p in proto.metadata_props if p.key != "geoseg_card"]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    onnx.save(proto, str(tmp_path / "zoo.onnx"))
    result = run_cli("models", "import", tmp_path / "zoo.onnx", "-o", tmp_path / "zoo")
    assert result.exit_code == 0, result.output
    spec = load_model(tmp_path / "zoo").spec
    assert spec.source["format"] == "deepness" and spec.input_size == 512
    assert spec.class_names == default_model.spec.class_names
    assert spec.outputs == "probabilities" and spec.resolution == pytest.approx(2.0)
    # The card's overlap, as Deepness stores it: a whole percentage of the tile.
    assert spec.overlap == round(512 * round(100 * default_model.spec.overlap / 512) / 100)
    assert spec.scale == (1 / 255,) * 4
    np.testing.assert_allclose(spec.raw_mean, default_model.spec.raw_mean, rtol=1e-6)
    np.testing.assert_allclose(spec.raw_std, default_model.spec.raw_std, rtol=1e-6)
    image, _ = make_scene(600, 700)
    same_tiling = {"tile_size": 512, "overlap": spec.overlap}
    assert agreement(mask_of(image, tmp_path / "zoo"),
                     mask_of(image, torch_model(default_model), **same_tiling)) >= 0.999


def test_a_deepness_detector_is_refused_in_one_line(tmp_path, default_model):
    from geoseg.model_export import onnx_graph, with_metadata

    graph = with_metadata(onnx_graph(default_model), {"model_type": json.dumps("Detector")})
    (tmp_path / "det.onnx").write_bytes(graph)
    result = invoke("models", "import", tmp_path / "det.onnx", "-o", tmp_path / "out")
    assert_one_line_error(result, "Deepness Detector model", "Segmentor")
    assert not (tmp_path / "out").exists()


def test_smp_round_trip_both_ways_offline(tmp_path, default_model, make_raster, monkeypatch):
    import segmentation_models_pytorch as smp

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = export_model(default_model, tmp_path / "smp", "smp")
    loaded = smp.from_pretrained(str(folder)).eval()
    x = torch.randn(1, 4, 128, 128)
    with torch.inference_mode():
        np.testing.assert_allclose(loaded(x).numpy(), default_model.network(x).numpy(), atol=1e-5)
    back = import_model(folder, tmp_path / "back")
    assert back.spec.class_names == default_model.spec.class_names
    assert back.spec.mean == default_model.spec.mean and back.spec.source["format"] == "smp"
    image = make_raster(data=np.random.default_rng(4).integers(1, 4000, (4, 256, 256), np.uint16))
    np.testing.assert_array_equal(mask_of(image, torch_model(back)),
                                  mask_of(image, torch_model(default_model)))

    # A folder smp itself saved, whose config names ImageNet weights: nothing downloads.
    torch.manual_seed(1)
    net = smp.Unet("resnet18", encoder_weights=None, in_channels=3, classes=1,
                   encoder_depth=3, decoder_channels=(32, 16, 8), activation="sigmoid")
    net.save_pretrained(str(tmp_path / "hub"))
    config = json.loads((tmp_path / "hub" / "config.json").read_text())
    config["encoder_weights"] = "imagenet"
    (tmp_path / "hub" / "config.json").write_text(json.dumps(config))
    result = run_cli("models", "import", tmp_path / "hub", "-o", tmp_path / "roofs",
                     "--classes", "background,roof=#ff0000", "--mean", "120", "--std", "60")
    assert result.exit_code == 0, result.output
    roofs = load_model(tmp_path / "roofs", runtime="torch")
    assert roofs.spec.outputs == "probabilities" and roofs.spec.class_names == ["background", "roof"]
    rgb = make_raster("rgb.tif", data=np.random.default_rng(5).integers(0, 255, (3, 96, 96), np.uint8))
    probs = geoseg.predict(rgb, model=tmp_path / "roofs", device="cpu")
    with torch.inference_mode():
        p = net.eval()((torch.from_numpy(rasterio.open(rgb).read().astype(np.float32))[None] - 120) / 60)
    p = p[0, 0].numpy()
    # An untrained network sits near 0.5: compare where the answer is clearer than the
    # float16 that tile results travel in (its step is 0.0005 there) and ONNX Runtime's
    # rounding can move.
    clear = np.abs(p - 0.5) > 0.002
    assert clear.mean() > 0.5
    np.testing.assert_array_equal(probs.values[clear], (p[clear] > 0.5).astype(np.uint8))


# --- state dicts ------------------------------------------------------------------------

def small_unet(**kwargs: object) -> torch.nn.Module:
    import segmentation_models_pytorch as smp

    torch.manual_seed(0)
    return smp.Unet("resnet18", encoder_weights=None, in_channels=4, classes=3, encoder_depth=3,
                    decoder_channels=(32, 16, 8), **kwargs).eval()


def test_torchgeo_and_lightning_state_dicts_import(tmp_path, make_raster):
    net = small_unet()
    state = net.state_dict()
    torch.save(state, tmp_path / "torchgeo.pth")  # TorchGeo's weights: a plain state dict
    lightning = {"epoch": 3, "global_step": 120, "state_dict": {
        **{f"model.{k}": v for k, v in state.items()},
        "criterion.weight": torch.ones(3)},  # a loss's buffer beside the network
        "hyper_parameters": {"model": "unet", "backbone": "resnet18", "in_channels": 4,
                             "num_classes": 3, "lr": 1e-3}}
    torch.save(lightning, tmp_path / "epoch=3.ckpt")
    image = make_raster(data=np.random.default_rng(6).integers(0, 3000, (4, 128, 128), np.uint16))
    with torch.inference_mode():
        x = (torch.from_numpy(rasterio.open(image).read().astype(np.float32))[None] - 1500) / 900
        probs = torch.softmax(net(x), 1)[0].numpy()
    expected = probs.argmax(0)
    top2 = np.sort(probs, axis=0)[-2:]
    clear = top2[1] - top2[0] > 0.002  # beyond float16 tile results and runtime rounding
    assert clear.mean() > 0.5
    settings = ["--mean", "1500", "--std", "900", "--classes", "a,b,c"]
    result = run_cli("models", "import", tmp_path / "torchgeo.pth", "-o", tmp_path / "tg",
                     "--encoder", "resnet18", *settings)
    assert result.exit_code == 0, result.output
    result = run_cli("models", "import", tmp_path / "epoch=3.ckpt", "-o", tmp_path / "pl", *settings)
    assert result.exit_code == 0, result.output
    for folder, fmt in ((tmp_path / "tg", "state_dict"), (tmp_path / "pl", "lightning")):
        model = load_model(folder)
        assert model.spec.source["format"] == fmt and model.spec.decoder_channels == (32, 16, 8)
        assert (folder / "model.onnx").exists() and model.spec.runtime == "onnxruntime"
        np.testing.assert_array_equal(mask_of(image, folder)[clear], expected[clear])
    # Without the encoder a bare state dict cannot be built: one line says what to give.
    result = invoke("models", "import", tmp_path / "torchgeo.pth", "-o", tmp_path / "x")
    assert_one_line_error(result, "--encoder")


def test_a_malicious_pickle_is_refused_and_runs_nothing(tmp_path):
    import pickle

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (Path.write_text, (marker, "ran"))

    with open(tmp_path / "evil.pth", "wb") as f:
        pickle.dump({"state_dict": {"w": Payload()}}, f)
    result = invoke("models", "import", tmp_path / "evil.pth", "-o", tmp_path / "out",
                    "--encoder", "resnet18")
    assert_one_line_error(result, "unpickling", "--trust-pickle")
    assert not marker.exists() and not (tmp_path / "out").exists()


# --- ONNX safety and checks -------------------------------------------------------------

def test_onnx_external_data_must_stay_in_the_model_folder(tmp_path, default_model):
    import onnx

    from geoseg.model_export import onnx_graph

    proto = onnx.load_from_string(onnx_graph(default_model))
    inside = tmp_path / "inside"
    inside.mkdir()
    onnx.save(proto, str(inside / "m.onnx"), save_as_external_data=True, location="m.data",
              size_threshold=0)
    imported = import_model(inside / "m.onnx", tmp_path / "ok")  # data read in: one file
    assert (tmp_path / "ok" / "model.onnx").stat().st_size > 400_000 and imported.onnx
    bad = onnx.load(str(inside / "m.onnx"), load_external_data=False)
    for tensor in bad.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../x.dat"  # a file beside the folder: not the model's
    onnx.save(bad, str(inside / "bad.onnx"))
    (tmp_path / "x.dat").write_bytes((inside / "m.data").read_bytes())
    result = invoke("models", "import", inside / "bad.onnx", "-o", tmp_path / "bad")
    assert_one_line_error(result, "outside the model's folder")
    assert not (tmp_path / "bad").exists()


def test_import_checks_classes_against_the_network_in_one_line(tmp_path, default_model):
    path = export_model(default_model, tmp_path / "m.onnx", "onnx")
    result = invoke("models", "import", path, "-o", tmp_path / "out", "--classes", "a,b")
    assert_one_line_error(result, "6 output channels", "2 class names")
    assert not (tmp_path / "out").exists()


def test_an_onnx_file_given_as_model_says_to_import_it(tmp_path, default_model, make_raster):
    path = export_model(default_model, tmp_path / "m.onnx", "onnx")
    result = invoke("predict", make_raster(), "-o", tmp_path / "mask.tif", "--model", path)
    assert_one_line_error(result, "geoseg models import")


def test_info_shows_the_format_runtime_inputs_and_outputs(tmp_path, default_model):
    import_model(export_model(default_model, tmp_path / "m.onnx", "onnx"), tmp_path / "m")
    result = run_cli("info", tmp_path / "m", "--json")
    data = json.loads(result.output)
    assert data["network"] == "ONNX graph" and data["runtime_cpu"] == "onnxruntime"
    assert data["input"].startswith("input ['batch', 4, 'height', 'width']")
    assert "(logits)" in data["output"] and data["source"]["format"] == "geoseg onnx"


# --- references and the cache -----------------------------------------------------------

class Served:
    """A local HTTP server over a folder that counts requests and can misbehave."""

    def __init__(self, root: Path) -> None:
        self.root, self.requests = root, []
        self.truncate: set[str] = set()
        served = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                served.requests.append(self.path)
                path = served.root / self.path.lstrip("/")
                if not path.is_file():
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = path.read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.path in served.truncate:
                    self.wfile.write(data[: len(data) // 2])  # then the connection closes
                    self.close_connection = True
                    return
                self.wfile.write(data)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def served(tmp_path) -> Iterator[Served]:
    root = tmp_path / "www"
    root.mkdir()
    server = Served(root)
    yield server
    server.server.shutdown()
    server.server.server_close()


def cached_files(cache: Path) -> list[Path]:
    """The files the cache holds (not its lock files, nor its notes of files not there)."""
    return [p for p in cache.rglob("*") if p.is_file() and not p.name.endswith((".lock", ".absent"))]


def test_a_url_is_downloaded_once_then_used_from_the_cache(tmp_path, served, cache, default_model):
    import hashlib

    data = export_model(default_model, served.root / "m.onnx", "onnx").read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    url = f"{served.url}/m.onnx"
    result = run_cli("models", "import", url, "-o", tmp_path / "a", "--sha256", digest)
    assert result.exit_code == 0, result.output
    # The model, and a look for a JSON beside it (none: the cache remembers that).
    assert served.requests == ["/m.onnx", "/m.json"]
    assert [p.name for p in cached_files(cache)] == ["m.onnx"]
    (served.root / "m.onnx").unlink()  # offline from now on: the cache answers
    result = run_cli("models", "import", url, "-o", tmp_path / "b", "--sha256", digest)
    assert result.exit_code == 0, result.output
    assert served.requests == ["/m.onnx", "/m.json"]
    assert load_model(tmp_path / "b").spec.source == {**load_model(tmp_path / "b").spec.source,
                                                      "origin": url, "sha256": digest}


@pytest.mark.parametrize("fault", ["404", "truncated", "sha256"])
def test_a_failed_download_says_so_in_one_line_and_leaves_an_empty_cache(tmp_path, served, cache,
                                                                       default_model, fault):
    export_model(default_model, served.root / "m.onnx", "onnx")
    url = f"{served.url}/{'missing' if fault == '404' else 'm'}.onnx"
    if fault == "truncated":
        served.truncate.add("/m.onnx")
    extra = ["--sha256", "0" * 64] if fault == "sha256" else []
    result = invoke("models", "import", url, "-o", tmp_path / "out", *extra)
    words = {"404": ["HTTP 404"], "truncated": ["cut short"], "sha256": ["sha256 mismatch"]}[fault]
    assert_one_line_error(result, *words, "nothing was kept")
    assert cached_files(cache) == [] and not (tmp_path / "out").exists()


def test_hf_references_read_the_hub_at_HF_ENDPOINT(tmp_path, served, monkeypatch, default_model):
    export_model(default_model, served.root / "org" / "repo" / "resolve" / "v1", "smp")
    monkeypatch.setenv("HF_ENDPOINT", served.url)
    result = run_cli("models", "import", "hf://org/repo@v1", "-o", tmp_path / "m")
    assert result.exit_code == 0, result.output
    assert sorted(served.requests) == ["/org/repo/resolve/v1/config.json",
                                       "/org/repo/resolve/v1/geoseg.json",
                                       "/org/repo/resolve/v1/model.safetensors"]
    assert load_model(tmp_path / "m").spec.class_names == default_model.spec.class_names
    result = invoke("models", "import", "ftp://host/m.onnx", "-o", tmp_path / "x")
    assert_one_line_error(result, "https://", "hf://")


@pytest.mark.slow
def test_two_imports_of_one_url_at_once_leave_one_good_copy(tmp_path, served, cache, default_model):
    data = export_model(default_model, served.root / "m.onnx", "onnx").read_bytes()
    url = f"{served.url}/m.onnx"
    env = {**__import__("os").environ, "GEOSEG_CACHE": str(cache)}
    processes = [subprocess.Popen([sys.executable, "-m", "geoseg.cli", "models", "import", url,
                                   "-o", str(tmp_path / name)], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for name in ("a", "b")]
    for p in processes:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    files = cached_files(cache)
    assert [p.name for p in files] == ["m.onnx"] and files[0].read_bytes() == data
    # The second waited for the first, then found it (and that there is no JSON beside).
    assert served.requests == ["/m.onnx", "/m.json"]
    for name in ("a", "b"):
        assert (tmp_path / name / "model.onnx").exists()


# --- a real model: ukis-csmask's cloud and shadow U-Net ----------------------------------

def ukis_folder() -> Path | None:
    try:
        import importlib.metadata

        files = importlib.metadata.files("ukis-csmask") or []
    except Exception:
        return None
    for f in files:
        if str(f).endswith("model_4b_l1c.onnx"):
            return Path(str(f.locate())).parent
    return None


@pytest.mark.slow
@pytest.mark.skipif(ukis_folder() is None, reason="ukis-csmask is not installed (make install "
                                                  "adds it, without dependencies, as test data)")
def test_ukis_csmask_model_agrees_with_csmask_on_a_real_sentinel2_scene(tmp_path):
    """Sentinel-2 reflectances (xarray-spatial's real subset, mirrored to 400 x 600 px),
    once as they are (clear: unambiguous) and once with bright blobs over them (clouds,
    whose edges the model answers differently as the tiling moves): geoseg's mask must
    agree with CSmask's own at least as well as CSmask agrees with itself when only its
    overlap changes (20 % and 25 %), less 2 points, and by 98 % on the clear scene."""
    from test_real_imagery import sentinel2_files

    from benchmarks.csmask import csmask, scene

    if not {"blue", "green", "red", "nir"} <= set(sentinel2_files()):
        pytest.skip("xarray-spatial is not installed")
    dn, crs, transform = scene(clouds=False)
    cloudy, _, _ = scene()

    result = run_cli("models", "import", ukis_folder() / "model_4b_l1c.onnx", "-o",
                     tmp_path / "csmask", "--classes", "clear,cloud=#ffffff,shadow=#404040",
                     "--scale", "0.0001")
    assert result.exit_code == 0, result.output
    assert "input 256 px" in result.output

    for name, image in (("clear", dn), ("cloudy", cloudy)):
        path = write_raster(tmp_path / f"{name}.tif", image, crs=crs, transform=transform)
        result = run_cli("predict", path, "-o", tmp_path / f"{name}.mask.tif", "--model",
                         tmp_path / "csmask", "--no-progress")
        assert result.exit_code == 0, result.output
        with rasterio.open(tmp_path / f"{name}.mask.tif") as ds, rasterio.open(path) as src:
            ours = ds.read(1)
            assert ds.transform == src.transform and ds.crs == src.crs
        theirs, theirs_25 = csmask(image, 0.2), csmask(image, 0.25)
        itself = agreement(theirs, theirs_25)
        assert agreement(ours, theirs) >= itself - 0.02, (name, itself)
        if name == "clear":
            assert agreement(ours, theirs) >= 0.98
        else:
            assert (theirs == 1).mean() > 0.02  # the blobs are clouds to CSmask too


@pytest.mark.slow
def test_an_imported_onnx_model_runs_the_same_on_a_dask_cluster(tmp_path, default_model,
                                                              make_scene):
    """Workers load the imported graph by its path, once per process, as any model."""
    import_model(export_model(default_model, tmp_path / "m.onnx", "onnx"), tmp_path / "m")
    image, _ = make_scene(300, 500)
    here = mask_of(image, tmp_path / "m")
    summary = geoseg.run([image], tmp_path / "out", model=tmp_path / "m", scheduler="local",
                         workers=2)
    assert summary["totals"]["failed"] == 0
    with rasterio.open(tmp_path / "out" / "scene.mask.tif") as ds:
        np.testing.assert_array_equal(ds.read(1), here)


def test_a_yaml_card_says_what_the_source_does_not_and_flags_win(tmp_path):
    torch.save(small_unet().state_dict(), tmp_path / "weights.pth")
    (tmp_path / "card.yaml").write_text(
        "encoder: resnet18\nbands: [blue, green, red, nir]\nmean: 1500\nstd: [900, 900, 950, 1000]\n"
        "classes: [a, b, c]\nresolution: 10\n")
    result = run_cli("models", "import", tmp_path / "weights.pth", "-o", tmp_path / "m",
                     "--card", tmp_path / "card.yaml", "--classes", "water=#0000ff,land,cloud")
    assert result.exit_code == 0, result.output
    spec = load_model(tmp_path / "m").spec
    assert spec.bands == ("blue", "green", "red", "nir") and spec.resolution == 10
    assert spec.mean == (1500,) * 4 and spec.std == (900, 900, 950, 1000)
    assert spec.class_names == ["water", "land", "cloud"] and spec.colors[0] == (0, 0, 255)
    (tmp_path / "bad.yaml").write_text("encoder: resnet18\nlearning_rate: 3\n")
    result = invoke("models", "import", tmp_path / "weights.pth", "-o", tmp_path / "x",
                    "--card", tmp_path / "bad.yaml")
    assert_one_line_error(result, "unknown setting 'learning_rate'", named=tmp_path / "bad.yaml")
