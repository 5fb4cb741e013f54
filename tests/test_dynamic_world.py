"""Dynamic World, bundled: exact to the original SavedModel on real Sentinel-2 L1C scenes,
in every form a product comes in, with its normalization, the baseline offset, the
processing level and the bands a scene lacks said in one line.

The scenes are ``tests/data/sentinel2-l1c`` (two real L1C crops, band files at 10 and
20 m; see its README) with the original model's own whole-image answer on them, made by
``workflows/dynamic_world_samples.py`` with TensorFlow (which the tests do not need).
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from conftest import assert_one_line_error, run_cli

import geoseg
from geoseg import dynamic_world
from geoseg.errors import GeoSegWarning

DATA = Path(__file__).parent / "data" / "sentinel2-l1c"
PRODUCTS = sorted(p for p in DATA.glob("S2*") if p.is_dir())
EDGE = 16  # the original pads its whole image with zeros, geoseg mirrors: compared apart
PROBABILITY_SCALE = 250  # the reference's uint8 encoding


def tile_of(product: Path) -> str:
    return product.name.split("_")[5]


def reference(product: Path) -> tuple[np.ndarray, np.ndarray]:
    """The SavedModel's class mask and probabilities on ``product``, whole image."""
    ref = DATA / "dynamic-world" / tile_of(product)
    with rasterio.open(f"{ref}.mask.tif") as ds:
        mask = ds.read(1)
    with rasterio.open(f"{ref}.probabilities.tif") as ds:
        probs = ds.read().astype(np.float32) / PROBABILITY_SCALE
    return mask, probs


def interior(shape: tuple[int, int]) -> np.ndarray:
    inside = np.zeros(shape, bool)
    inside[EDGE:-EDGE, EDGE:-EDGE] = True
    return inside


def read_probabilities(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read().astype(np.float32) * ds.scales[0]


def assert_the_original(mask: np.ndarray, probs: np.ndarray | None, product: Path) -> None:
    ref_mask, ref_probs = reference(product)
    inside = interior(mask.shape)
    assert (mask == ref_mask)[inside].mean() >= 0.999
    if probs is not None:
        assert np.abs(probs - ref_probs).mean(axis=0)[inside].mean() <= 0.01


def test_the_normalization_is_the_notebooks():
    """single_image_runner.ipynb's steps, verbatim in float64, against the network's own."""
    import torch

    dn = np.concatenate([np.linspace(0, 20000, 2001), [1, 5, 50, 13000, 65535]])
    dn = np.tile(dn[:, None], (1, 9))  # (pixels, bands), as the notebook's image
    p = np.array(dynamic_world.NORM_PERCENTILES)
    image = np.log(dn * 0.005 + 1)
    image = (image - p[:, 0]) / p[:, 1]
    image = np.exp(image * 5 - 1)
    notebook = image / (image + 1)
    ours = dynamic_world.normalize(torch.from_numpy(dn.T[None, :, :, None].astype(np.float32)))
    np.testing.assert_allclose(ours[0, :, :, 0].numpy().T, notebook, atol=2e-6)
    # Below the baseline offset (the darkest water): 0, not the NaN of log of a negative.
    low = dynamic_world.normalize(torch.full((1, 9, 1, 1), -300.0))
    assert torch.equal(low, dynamic_world.normalize(torch.zeros(1, 9, 1, 1)))


@pytest.mark.parametrize("product", PRODUCTS, ids=tile_of)
def test_band_files_give_the_originals_map(product, tmp_path):
    """The product's band folder, with no --model: geoseg chooses Dynamic World and gives
    the SavedModel's whole-image answer, mask and probabilities, on the 10 m grid."""
    out = tmp_path / "mask.tif"
    result = run_cli("predict", product, "-o", out, "--probabilities", tmp_path / "p.tif")
    assert result.exit_code == 0, result.output
    assert "model: dynamic-world" in result.output
    with rasterio.open(out) as ds, rasterio.open(next(product.glob("*_B02_10m.tif"))) as b02:
        assert ds.crs == b02.crs and ds.transform == b02.transform and ds.shape == b02.shape
        mask = ds.read(1)
        colors = ds.colormap(1)
    assert colors[0][:3] == (0x41, 0x9B, 0xDF)  # water, in Dynamic World's palette
    assert_the_original(mask, read_probabilities(tmp_path / "p.tif"), product)
    assert (tmp_path / "mask.qml").is_file()
    # The polygons: classes by Dynamic World's names.
    gpkg = tmp_path / "polygons.gpkg"
    result = run_cli("vectorize", out, "-o", gpkg, "--probabilities", tmp_path / "p.tif")
    assert result.exit_code == 0, result.output
    import geopandas as gpd

    polygons = gpd.read_file(gpkg)
    names = {c.name for c in geoseg.load_model("dynamic-world").spec.classes}
    assert set(polygons["class_name"]) <= names and len(polygons) > 10


def test_files_joined_with_plus_and_a_stac_item_give_the_same_map(tmp_path):
    product = PRODUCTS[0]
    files = sorted(product.glob("*.tif"))
    joined = geoseg.predict("+".join(str(f) for f in files), model="dynamic-world").values
    assets = {}
    for f in files:
        band = f.name.split("_")[2]
        common = dict(dynamic_world.BANDS)[band]
        assets[band] = {"href": str(f), "type": "image/tiff; application=geotiff",
                        "roles": ["data"], "eo:bands": [{"name": band, "common_name": common}]}
    item = {"type": "Feature", "stac_version": "1.0.0", "id": product.name,
            "collection": "sentinel-2-l1c",
            "stac_extensions": ["https://stac-extensions.github.io/eo/v1.1.0/schema.json"],
            "geometry": {"type": "Polygon", "coordinates": [[[12, 55], [12, 56], [13, 56],
                                                             [13, 55], [12, 55]]]},
            "bbox": [12, 55, 13, 56], "properties": {"datetime": "2017-05-27T10:20:31Z"},
            "links": [], "assets": assets}
    path = tmp_path / "item.json"
    path.write_text(json.dumps(item))
    from_item = geoseg.predict(path).values  # chosen by its bands, as the folder is
    assert_the_original(joined, None, product)
    np.testing.assert_array_equal(from_item, joined)


def write_safe(folder: Path, product: Path, level: str = "L1C", offset: int = -1000) -> Path:
    """``product``'s bands as a SAFE of processing baseline 05.10 delivers them: JPEG 2000
    files under GRANULE/*/IMG_DATA holding DN - offset, and MTD_MSI{level}.xml with the
    quantification value and RADIO_ADD_OFFSET (BOA_ADD_OFFSET for L2A) of every band."""
    tile = tile_of(product)
    safe = folder / f"S2B_MSI{level}_20240611T100559_N0510_R022_{tile}_20240611T130000.SAFE"
    granule = safe / "GRANULE" / f"{level}_{tile}_A037000_20240611T100829" / "IMG_DATA"
    granule.mkdir(parents=True)
    for f in sorted(product.glob("*.tif")):
        band = f.name.split("_")[2]
        with rasterio.open(f) as src:
            data, profile = src.read(1), src.profile
        stored = np.where(data > 0, data.astype(np.int32) - offset, 0).astype(np.uint16)
        profile.update(driver="JP2OpenJPEG", QUALITY=100, REVERSIBLE="YES")
        for key in ("compress", "predictor", "tiled", "interleave", "blockxsize", "blockysize"):
            profile.pop(key, None)
        with rasterio.open(granule / f"{tile}_20240611T100559_{band}.jp2", "w", **profile) as ds:
            ds.write(stored, 1)
    if level == "L2A":
        rule, tag, listing = ('<QUANTIFICATION_VALUES_LIST><BOA_QUANTIFICATION_VALUE unit="none">'
                              '10000</BOA_QUANTIFICATION_VALUE></QUANTIFICATION_VALUES_LIST>',
                              "BOA_ADD_OFFSET", "BOA_ADD_OFFSET_VALUES_LIST")
    else:
        rule, tag, listing = ('<QUANTIFICATION_VALUE unit="none">10000</QUANTIFICATION_VALUE>',
                              "RADIO_ADD_OFFSET", "Radiometric_Offset_List")
    rule += f"<{listing}>" + "".join(f'<{tag} band_id="{k}">{offset}</{tag}>'
                                     for k in range(13)) + f"</{listing}>"
    ns = f"https://psd-14.sentinel2.eo.esa.int/PSD/User_Product_Level-{level[1:]}.xsd"
    (safe / f"MTD_MSI{level}.xml").write_text(
        f'<?xml version="1.0" encoding="UTF-8"?><n1:Level-{level[1:]}_User_Product '
        f'xmlns:n1="{ns}"><n1:General_Info><Product_Image_Characteristics>{rule}'
        f"</Product_Image_Characteristics></n1:General_Info></n1:Level-{level[1:]}_User_Product>")
    return safe


def test_a_safe_of_baseline_04_takes_its_offset_off_folder_and_zip(tmp_path):
    """DN + 1000 as stored since baseline 04.00, the offset in the product's metadata: the
    same map as the baseline 02.05 product it was made from, as a folder and as a zip."""
    product = PRODUCTS[1]
    safe = write_safe(tmp_path, product)
    zipped = shutil.make_archive(str(tmp_path / safe.stem), "zip", tmp_path, safe.name)
    with warnings.catch_warnings():
        warnings.simplefilter("error", GeoSegWarning)  # an L1C product: nothing to say
        for form in (safe, Path(zipped)):
            out = tmp_path / f"{form.name}.tif"
            mask = geoseg.predict(form, out, probabilities_path=tmp_path / f"{out.stem}.p.tif")
            assert_the_original(mask.values, read_probabilities(tmp_path / f"{out.stem}.p.tif"),
                                product)


def test_an_l2a_product_is_told_the_model_was_made_for_l1c_and_runs(tmp_path):
    safe = write_safe(tmp_path, PRODUCTS[0], level="L2A")
    result = run_cli("predict", safe, "-o", tmp_path / "mask.tif")
    assert result.exit_code == 0, result.output
    told = [line for line in result.output.splitlines() if line.startswith("Warning")]
    assert len(told) == 1 and "Sentinel-2 L2A scene" in told[0] and "made for L1C" in told[0]
    assert (tmp_path / "mask.tif").is_file()


def test_scenes_without_its_bands_are_one_line_errors(tmp_path):
    product = PRODUCTS[0]
    # A Sentinel-2 scene of its 10 m bands only, with no --model: the bands it lacks.
    four = [str(f) for f in sorted(product.glob("*_10m.tif"))]
    result = run_cli("predict", "+".join(four), "-o", tmp_path / "a.tif")
    assert_one_line_error(result, "Sentinel-2 scene", "B05 (rededge071)", "B12 (swir22)",
                          "dynamic-world", "--model")
    # Landsat's bands given to Dynamic World: no red edge.
    landsat = tmp_path / "LC09_L1TP_190027_20240611_20240611_02_T1"
    landsat.mkdir()
    for f, oli in zip(sorted(product.glob("*_10m.tif")), ("B2", "B3", "B4", "B5"), strict=True):
        shutil.copyfile(f, landsat / f"{landsat.name}_{oli}.TIF")
    result = run_cli("predict", landsat, "--model", "dynamic-world", "-o", tmp_path / "b.tif")
    assert_one_line_error(result, "B05 (rededge071)", "B06 (rededge075)", "B11 (swir16)")
    # Four unnamed bands: how many it has and which nine the model reads.
    plain = tmp_path / "plain.tif"
    with rasterio.open(four[0]) as src:
        profile = src.profile | {"count": 4}
        data = src.read(1)
    with rasterio.open(plain, "w", **profile) as ds:
        ds.write(np.stack([data] * 4))
    result = run_cli("predict", plain, "--model", "dynamic-world", "-o", tmp_path / "c.tif")
    assert_one_line_error(result, "has 4 bands", "needs 9", "B02, B03")
    assert not list(tmp_path.glob("[abc].*"))


def test_torch_and_onnx_forms_agree():
    """The torch network (GPUs, fine-tuning) and the ONNX graph (CPUs) on a real scene."""
    import dataclasses

    model = geoseg.load_model("dynamic-world")
    assert model.onnx is not None and model.network is not None
    on_torch = geoseg.Model(model.network, dataclasses.replace(model.spec, runtime="torch"))
    for product in PRODUCTS:
        a = geoseg.predict(product, model=model).values
        b = geoseg.predict(product, model=on_torch).values
        assert (a == b).mean() >= 0.999


def test_the_card_says_what_the_model_reads(tmp_path):
    result = run_cli("info", "dynamic-world", "--json")
    assert result.exit_code == 0, result.output
    card = json.loads(result.output)
    assert card["bands"] == ["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B11", "B12"]
    assert card["band_names"][3] == "B05 rededge071"
    assert card["processing_level"] == "L1C" and card["resolution"] == 10.0
    assert [c["name"] for c in card["classes"]] == [n for n, _ in dynamic_world.CLASSES]
    assert card["overlap"] >= 2 * card["context"] >= 2 * dynamic_world.CONTEXT
    folder = Path(card["model_card"]).parent
    assert "Apache License" in (folder / "LICENSE").read_text()
    assert "World Resources Institute" in (folder / "NOTICE").read_text()
    listing = run_cli("models").output
    assert f"dynamic-world: DynamicWorld, tile {card['tile_size']} px, resolution 10.0 m" in listing


def test_deepness_export_runs_as_the_plugin_runs_it(tmp_path):
    """The plugin divides by 255 and standardizes with the metadata's mean and std: the
    graph, normalization inside, then gives Dynamic World's answer on digital numbers."""
    import onnxruntime as ort
    import torch

    model = geoseg.load_model("dynamic-world")
    result = run_cli("models", "export", "dynamic-world", "-o", tmp_path / "dw.onnx",
                     "--format", "deepness")
    assert result.exit_code == 0, result.output
    session = ort.InferenceSession(str(tmp_path / "dw.onnx"), providers=["CPUExecutionProvider"])
    meta = {k: json.loads(v) for k, v in session.get_modelmeta().custom_metadata_map.items()}
    assert meta["model_type"] == "Segmentor" and meta["resolution"] == pytest.approx(1000)
    size = meta["tile_size"]
    dn = stack_tile(size)
    mean = np.array(meta["standardization_mean"], np.float32)[:, None, None]
    std = np.array(meta["standardization_std"], np.float32)[:, None, None]
    plugin_input = ((dn / 255.0 - mean) / std).astype(np.float32)
    probs = session.run(None, {session.get_inputs()[0].name: plugin_input})[0]
    with torch.no_grad():
        ours = torch.softmax(model.network(torch.from_numpy(dn)), 1).numpy()
    assert (probs.argmax(1) == ours.argmax(1)).mean() >= 0.999
    assert np.abs(probs - ours).max() < 1e-3


def first_scene() -> tuple[np.ndarray, object]:
    """The first real product's nine bands as geoseg reads them onto its 10 m grid
    (float32 digital numbers), and that grid."""
    from geoseg.sources import open_source

    source = open_source(PRODUCTS[0], want=geoseg.load_model("dynamic-world").spec.bands)
    with source.open() as ds:
        return ds.read(list(source.bands), out_dtype="float32"), source.grid


def stack_tile(size: int) -> np.ndarray:
    """A ``(1, 9, size, size)`` tile of a real scene's digital numbers, mirrored to fill it."""
    dn, _ = first_scene()
    reps = -(-size // dn.shape[1])
    tiled = np.concatenate([dn, dn[:, ::-1]] * reps, axis=1)[:, :size]
    tiled = np.concatenate([tiled, tiled[:, :, ::-1]] * reps, axis=2)[:, :, :size]
    return np.ascontiguousarray(tiled[None])


def cloudy_stack(path: Path) -> Path:
    """A real scene's nine bands on its 10 m grid, named, with three bright, soft-edged
    blobs over it (clouds, to a cloud model)."""
    dn, grid = first_scene()
    yy, xx = np.mgrid[:dn.shape[1], :dn.shape[2]]
    blob = np.zeros(dn.shape[1:], np.float32)
    for cy, cx, r in ((60, 60, 14), (170, 120, 20), (80, 200, 10)):
        blob = np.maximum(blob, np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r)))
    cloudy = (dn * (1 - blob) + 6500 * blob).astype(np.uint16)
    with rasterio.open(path, "w", driver="GTiff", width=dn.shape[2], height=dn.shape[1],
                       count=9, dtype="uint16", crs=grid.crs, transform=grid.transform) as ds:
        ds.write(cloudy)
        ds.descriptions = tuple(s2 for s2, _ in dynamic_world.BANDS)
    return path


def test_a_chained_cloud_mask_makes_its_classes_nodata_in_one_pass(tmp_path):
    """ukis-csmask's cloud and shadow network brought in with models import, run beside
    Dynamic World on the same tiles: its clouds become nodata, counted in the mask's tags,
    the polygons' layer description and a run's summary; elsewhere the map is unchanged."""
    from test_model_formats import ukis_folder

    folder = ukis_folder()
    if folder is None:
        pytest.skip("ukis-csmask is not installed (make install adds it as test data)")
    result = run_cli("models", "import", folder / "model_4b_l1c.onnx", "-o", tmp_path / "clouds",
                     "--classes", "clear,cloud,shadow", "--scale", "0.0001")
    assert result.exit_code == 0, result.output
    scene = cloudy_stack(tmp_path / "cloudy.tif")
    mask_path = tmp_path / "masked.tif"
    result = run_cli("predict", scene, "-o", mask_path, "--mask-with",
                     f"{tmp_path / 'clouds'}:cloud,shadow")
    assert result.exit_code == 0, result.output
    alone = geoseg.predict(scene, tile_size=256).values  # the same tiles, no mask
    clouds = np.isin(geoseg.predict(scene, model=tmp_path / "clouds", overlap=64).values, (1, 2))
    with rasterio.open(mask_path) as ds:
        masked, tags = ds.read(1), ds.tags()
    nodata = masked == 255
    assert int(tags["MASKED_PIXELS"]) == nodata.sum() > 0.02 * masked.size
    assert tags["MASKED_BY"].endswith(":cloud,shadow")
    # Where the cloud model alone, on the same tiles, says cloud or shadow: nodata (its
    # tiles blend a little differently there: Dynamic World's keep out of its reach).
    assert (nodata == clouds).mean() > 0.99
    np.testing.assert_array_equal(masked[~nodata], alone[~nodata])
    # The polygons' layer says what was masked.
    gpkg = tmp_path / "polygons.gpkg"
    assert run_cli("vectorize", mask_path, "-o", gpkg).exit_code == 0
    import sqlite3

    with sqlite3.connect(gpkg) as con:
        [(description,)] = con.execute("SELECT description FROM gpkg_contents "
                                       "WHERE table_name = 'polygons'").fetchall()
    assert f"{nodata.sum()} pixels" in description and "cloud,shadow" in description
    # A run counts them per scene and in its totals.
    result = run_cli("run", scene, "-o", tmp_path / "run", "--no-progress", "--mask-with",
                     f"{tmp_path / 'clouds'}:cloud,shadow")
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["model"] == "dynamic-world"
    assert summary["scenes"][0]["masked_pixels"] == summary["totals"]["pixels_masked"] == (
        nodata.sum())
    # A class the mask model lacks, or no classes: one line, before any work.
    for bad, words in ((f"{tmp_path / 'clouds'}:haze", "has no class 'haze' (it has clear, "
                                                         "cloud, shadow)"),
                       ("clouds", "--mask-with takes MODEL:CLASS,CLASS")):
        result = run_cli("predict", scene, "-o", tmp_path / "bad.tif", "--mask-with", bad)
        assert_one_line_error(result, words)
    assert not (tmp_path / "bad.tif").exists()


def test_without_a_model_other_scenes_get_the_demonstration_model_and_are_told(tmp_path):
    """A scene that is no Sentinel-2 one gets the demonstration model with a warning, in
    predict and in run; geoseg's own synthetic scenes get it silently."""
    plain = tmp_path / "ortho.tif"
    _, grid = first_scene()
    with rasterio.open(plain, "w", driver="GTiff", width=64, height=64, count=4, dtype="uint16",
                       crs=grid.crs, transform=grid.transform) as ds:
        ds.write(np.random.default_rng(0).integers(200, 3000, (4, 64, 64), dtype=np.uint16))
    synthetic, _ = geoseg.write_sample_data(tmp_path / "synthetic", size=64, seed=1)
    for scene, told in ((plain, True), (synthetic, False)):
        for args in (["predict", scene, "-o", tmp_path / f"{scene.stem}.mask.tif"],
                     ["run", scene, "-o", tmp_path / f"run-{scene.stem}", "--no-progress"]):
            result = run_cli(*args)
            assert result.exit_code == 0, result.output
            warned = [line for line in result.output.splitlines() if line.startswith("Warning")]
            assert len(warned) == told and all("demonstration model 'default'" in w
                                               for w in warned), result.output
