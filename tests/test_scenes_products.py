"""Scenes as products come: one file per band (Sentinel-2 at 10 and 20 m, Landsat's SR_B*),
STAC Items and ItemCollections (local, with relative and absolute hrefs, and over HTTP),
a product's scale and offset, nodata per band, and files whose extension lies."""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from affine import Affine
from conftest import UTM, assert_one_line_error, invoke, run_cli, write_classes, write_raster
from rasterio.enums import Resampling

import geoseg
from geoseg.errors import GeoSegWarning, InputError
from geoseg.synthetic import sample_scene

TEN = Affine(10.0, 0.0, 600_000.0, 0.0, -10.0, 5_100_000.0)
TWENTY = TEN * Affine.scale(2)
SIZE = 192
TILE = ["--tile-size", "128"]
# These scenes are geoseg's synthetic scene cut into Sentinel-2-named files, four bands:
# the demonstration model reads them (left to choose, geoseg would say that a Sentinel-2
# scene of four bands lacks the nine Dynamic World reads).
DEMO = ["--model", "default", *TILE]
# Sentinel-2's names for the default model's bands: B8A (narrow NIR, 20 m) stands in for nir.
FILES = {"blue": "T33UUP_20240611_B02_10m.tif", "green": "T33UUP_20240611_B03_10m.jp2",
         "red": "T33UUP_20240611_B04_10m.tif", "nir": "T33UUP_20240611_B8A_20m.tif"}


def bands_of(image: np.ndarray) -> dict[str, np.ndarray]:
    """A 4-band 10 m image as band files' data: blue, green, red at 10 m, nir at 20 m."""
    nir20 = image[3].reshape(SIZE // 2, 2, SIZE // 2, 2).mean(axis=(1, 3)).round()
    return {"blue": image[0], "green": image[1], "red": image[2],
            "nir": nir20.astype(image.dtype)}


def write_product(folder: Path, data: dict[str, np.ndarray], nodata: float | None = 0
                  ) -> dict[str, Path]:
    """Band files named as Sentinel-2's (the green one a GeoTIFF named .jp2, as real test
    data has them)."""
    folder.mkdir(parents=True, exist_ok=True)
    return {name: write_raster(folder / FILES[name], data[name], nodata=nodata,
                               transform=TWENTY if name == "nir" else TEN)
            for name in FILES}


def prestacked(files: dict[str, Path], path: Path, dtype: str = "uint16") -> Path:
    """The bands on the 10 m grid as one GeoTIFF, resampled (bilinear) by rasterio's own
    reads: what ``gdalbuildvrt -separate -resolution highest`` and a translate would give."""
    layers = []
    for name in ("blue", "green", "red", "nir"):
        with rasterio.open(files[name]) as ds:
            layers.append(ds.read(1, out_shape=(SIZE, SIZE), resampling=Resampling.bilinear))
    return write_raster(path, np.stack(layers).astype(dtype), transform=TEN, nodata=0)


def mask_of(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read(1)


def item(item_id: str, hrefs: dict[str, str], raster: dict[str, Any] | None = None,
         extra_assets: bool = True) -> dict[str, Any]:
    """A STAC 1.0 Item whose assets are the band files (``eo:bands`` common names,
    optionally ``raster:bands``), plus a true-colour and a thumbnail asset that are no data."""
    code = {"blue": "B02", "green": "B03", "red": "B04", "nir": "B8A"}
    assets: dict[str, Any] = {}
    for name, href in hrefs.items():
        assets[code[name]] = {"href": href, "type": "image/tiff; application=geotiff",
                              "roles": ["data"],
                              "eo:bands": [{"name": code[name], "common_name":
                                            "nir08" if name == "nir" else name}]}
        if raster is not None:
            assets[code[name]]["raster:bands"] = [raster]
    if extra_assets:
        assets["visual"] = {"href": hrefs["red"], "type": "image/tiff; application=geotiff",
                            "roles": ["visual"]}
        assets["thumbnail"] = {"href": "thumb.png", "type": "image/png", "roles": ["thumbnail"]}
    return {"type": "Feature", "stac_version": "1.0.0", "id": item_id,
            "stac_extensions": ["https://stac-extensions.github.io/eo/v1.1.0/schema.json"],
            "geometry": {"type": "Polygon", "coordinates": [[[15, 46], [15, 47], [16, 47],
                                                             [16, 46], [15, 46]]]},
            "bbox": [15, 46, 16, 47], "properties": {"datetime": "2024-06-11T10:00:00Z"},
            "links": [], "assets": assets}


def write_json(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data))
    return path


def l2a_product(folder: Path, image: np.ndarray) -> tuple[dict[str, Path], Path]:
    """The scene as Sentinel-2 L2A stores it from processing baseline 04.00 on
    (reflectance × 10 000 + 1000) and its STAC Item, which says so (raster:bands scale
    0.0001, offset −0.1)."""
    dn = bands_of(image)
    files = write_product(folder, {n: (v + 1000).astype(np.uint16) for n, v in dn.items()})
    raster = {"scale": 0.0001, "offset": -0.1, "nodata": 0, "data_type": "uint16"}
    return files, write_json(folder / "item.json", item(
        "S2B_MSIL2A_N0510", {n: f.name for n, f in files.items()}, raster))


@pytest.fixture(scope="module")
def product(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One Sentinel-2-like scene as band files (10 m and 20 m), and the mask geoseg
    predicts for the same data pre-stacked on the 10 m grid."""
    root = tmp_path_factory.mktemp("product")
    image, labels = sample_scene(SIZE, seed=5, nodata_corner=False).render(0, 0, SIZE, SIZE)
    files = write_product(root / "S2", bands_of(image))
    stacked = prestacked(files, root / "stacked.tif")
    reference = root / "reference.tif"
    assert run_cli("predict", stacked, "-o", reference, *DEMO).exit_code == 0
    label_path = write_classes(root / "labels.tif", labels, geoseg.load_model().spec.class_names,
                               transform=TEN)
    return {"root": root, "image": image, "files": files, "stacked": stacked,
            "reference": mask_of(reference), "labels": label_path}


def test_band_files_at_10_and_20_m_give_the_mask_of_the_prestacked_scene(product, tmp_path):
    files = product["files"]
    forms = {
        "files": [str(files[n]) for n in ("red", "nir", "blue", "green")],  # named, any order
        "plus": ["+".join(str(files[n]) for n in ("nir", "green", "red", "blue"))],
        "folder": [str(files["blue"].parent)],
    }
    # Files whose names say nothing, named by the user instead.
    plain = {}
    for k, name in enumerate(("blue", "green", "red", "nir")):
        plain[name] = shutil.copy(files[name], tmp_path / f"layer_{k}.tif")
    forms["named"] = ["+".join(f"{n}={plain[n]}" for n in ("nir", "red", "green", "blue"))]
    for form, args in forms.items():
        out = tmp_path / f"{form}.tif"
        result = run_cli("predict", *args, "-o", out, "--model", "default", *TILE)
        assert result.exit_code == 0, (form, result.output)
        with rasterio.open(out) as ds:  # the 10 m grid exactly
            assert ds.transform == TEN and ds.crs == UTM and ds.shape == (SIZE, SIZE), form
        np.testing.assert_array_equal(mask_of(out), product["reference"], err_msg=form)

    # Without names, several 1-band files stay what they were, tiles of one mosaic, and
    # the error says how to give them as bands.
    result = invoke("predict", *plain.values(), "-o", tmp_path / "tiles.tif")
    assert_one_line_error(result, "single-band files, taken as tiles of a mosaic",
                          "blue=a.tif+green=b.tif")


def test_tiles_whose_names_look_like_bands_stay_a_mosaic(product, tmp_path):
    """Blocks named B1 and B2 side by side are tiles: band files of one product cover one
    area."""
    image = product["image"]
    left = write_raster(tmp_path / "block_B1.tif", image[:, :, :96], transform=TEN, nodata=0)
    right = write_raster(tmp_path / "block_B2.tif", image[:, :, 96:], nodata=0,
                         transform=TEN * Affine.translation(96, 0))
    for args in ([left, right], [tmp_path]):
        mask = geoseg.predict([str(a) for a in args], model="default", tile_size=128)
        assert mask.shape == (SIZE, SIZE) and mask.rio.transform() == TEN


def test_the_scene_grid_can_be_a_resolution_the_user_asks_for(product, tmp_path):
    files = product["files"]
    args = [str(files[n]) for n in ("blue", "green", "red", "nir")]
    out = tmp_path / "coarse.tif"
    result = run_cli("predict", *args, "-o", out, "--resolution", 20, "--resampling", "average",
                     *DEMO)
    assert result.exit_code == 0, result.output
    with rasterio.open(out) as ds:
        assert ds.transform == TWENTY and ds.shape == (SIZE // 2, SIZE // 2)
    # The same grid by hand: every band averaged onto 20 m, then predicted.
    layers = []
    for name in ("blue", "green", "red", "nir"):
        with rasterio.open(files[name]) as ds:
            layers.append(ds.read(1, out_shape=(SIZE // 2, SIZE // 2),
                                  resampling=Resampling.average))
    by_hand = write_raster(tmp_path / "by_hand.tif", np.stack(layers), transform=TWENTY, nodata=0)
    assert run_cli("predict", by_hand, "-o", tmp_path / "ref20.tif", *DEMO).exit_code == 0
    np.testing.assert_array_equal(mask_of(out), mask_of(tmp_path / "ref20.tif"))


def test_a_landsat_collection_2_folder_is_one_scene(product, tmp_path):
    image = product["image"]
    folder = tmp_path / "LC09_L2SP_190027_20240611_20240613_02_T1"
    folder.mkdir()
    stem = folder.name
    for k, band in enumerate(("SR_B2", "SR_B3", "SR_B4", "SR_B5")):  # OLI: B5 is the NIR
        write_raster(folder / f"{stem}_{band}.TIF", image[k], transform=TEN, nodata=0)
    write_raster(folder / f"{stem}_QA_PIXEL.TIF", np.ones((SIZE, SIZE), np.uint16), transform=TEN)
    write_raster(folder / f"{stem}_SR_QA_AEROSOL.TIF", np.ones((SIZE, SIZE), np.uint8),
                 transform=TEN)  # not the coastal band, whatever "aerosol" says
    write_raster(folder / f"{stem}_SR_B1.TIF", image[0], transform=TEN, nodata=0)  # coastal
    stacked = write_raster(tmp_path / "stacked.tif", image, transform=TEN, nodata=0)
    assert run_cli("predict", stacked, "-o", tmp_path / "ref.tif", *DEMO).exit_code == 0
    out = tmp_path / "out"
    result = run_cli("run", folder, "-o", out, "--no-progress", *DEMO)
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(mask_of(out / f"{stem}.mask.tif"), mask_of(tmp_path / "ref.tif"))


def test_stac_items_with_relative_and_absolute_hrefs_give_the_same_mask(product, tmp_path):
    files = product["files"]
    beside = tmp_path / "items"  # hrefs relative to the Item's own place: ../../…/B02.tif
    beside.mkdir()
    relative = write_json(beside / "item.json", item("S2A_33UUP_20240611", {
        n: os.path.relpath(f, beside) for n, f in files.items()}))
    assert os.path.relpath(files["blue"], beside).startswith("..")
    elsewhere = tmp_path / "catalog"
    elsewhere.mkdir()
    absolute = write_json(elsewhere / "S2A_33UUP_20240611.json",
                          item("S2A_33UUP_20240611", {n: str(f) for n, f in files.items()}))
    for path in (relative, absolute):
        out = tmp_path / f"{path.parent.name}.tif"
        result = run_cli("predict", path, "-o", out, *DEMO)
        assert result.exit_code == 0, result.output
        np.testing.assert_array_equal(mask_of(out), product["reference"])
    # A folder holding one Item is that Item; assets can be chosen by key.
    result = run_cli("predict", elsewhere, "-o", tmp_path / "folder.tif", *DEMO,
                     "--assets", "B02,B03,B04,B8A")
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(mask_of(tmp_path / "folder.tif"), product["reference"])


def test_a_stac_item_served_over_http_reads_its_assets_through_gdal(product, tmp_path,
                                                                    flaky_http, monkeypatch):
    files = product["files"]
    served = tmp_path / "served"
    shutil.copytree(files["blue"].parent, served)
    write_json(served / "item.json",
               item("S2A_33UUP_20240611", {n: f.name for n, f in files.items()}))
    url, requests = flaky_http(served)
    monkeypatch.setenv("GDAL_HTTP_RETRY_DELAY", "0.01")  # a third of the requests fail (503)
    mask = geoseg.predict(f"{url}/item.json", tmp_path / "remote.tif", model="default", tile_size=128)
    np.testing.assert_array_equal(mask.values, product["reference"])
    assert requests() > 8  # the Item and windows of every band were read over HTTP

    # A missing Item, and an Item whose asset is missing, are one line naming the URL.
    monkeypatch.setenv("GDAL_HTTP_MAX_RETRY", "2")
    result = invoke("predict", f"{url}/gone.json", "-o", tmp_path / "a.tif")
    assert_one_line_error(result, "HTTP 404", named=f"{url}/gone.json")
    broken = item("S2A_33UUP_20240611", {**{n: f.name for n, f in files.items()},
                                          "red": "missing_B04.tif"})
    write_json(served / "broken.json", broken)
    result = invoke("predict", f"{url}/broken.json", "-o", tmp_path / "b.tif")
    assert_one_line_error(result, f"{url}/missing_B04.tif", "no such file")
    assert not (tmp_path / "a.tif").exists() and not (tmp_path / "b.tif").exists()


def test_run_over_an_item_collection_names_each_scene_by_its_item_and_resumes(product,
                                                                              tmp_path):
    files = product["files"]
    hrefs = {n: str(f) for n, f in files.items()}
    ids = ["S2A_33UUP_20240611", "S2B_33UUP_20240614"]
    collection = write_json(tmp_path / "search.json", {
        "type": "FeatureCollection", "features": [item(i, hrefs) for i in ids]})
    out = tmp_path / "out"
    args = ["run", collection, "-o", out, "--no-progress", *DEMO]
    result = run_cli(*args)
    assert result.exit_code == 0, result.output
    assert "2 scenes: 2 done, 0 skipped, 0 failed" in result.output
    for i in ids:
        np.testing.assert_array_equal(mask_of(out / f"{i}.mask.tif"), product["reference"])
        assert (out / f"{i}.gpkg").is_file()
    result = run_cli(*args, "--resume")
    assert result.exit_code == 0, result.output
    assert all(f"skipped {i} (finished by an earlier run)" in result.output for i in ids)


def physical_model(folder: Path, **card: Any) -> Path:
    """The bundled model's float network, told that it reads reflectance (0…1) rather than
    digital numbers (reflectance × 10 000, as the synthetic scenes store it): its mean and
    std / 10 000. (Its int8 CPU graph would turn the last digits of rounding, which differ
    between the forms compared here, into class flips.)"""
    shutil.copytree(Path(geoseg.__file__).parent / "models" / "default", folder)
    (folder / "model.onnx").unlink()
    spec = json.loads((folder / "model.json").read_text())
    spec.update(mean=[m / 1e4 for m in spec["mean"]], std=[s / 1e4 for s in spec["std"]],
                name="reflectance", runtime="torch", quantization={}, **card)
    (folder / "model.json").write_text(json.dumps(spec))
    return folder


def test_an_l2a_item_with_the_baseline_offset_gives_the_mask_of_its_reflectance(product,
                                                                                tmp_path):
    l2a, l2a_item = l2a_product(tmp_path / "L2A", product["image"])
    dn = bands_of(product["image"])
    reflectance = {n: np.where(v > 0, v / 1e4, np.nan).astype(np.float32) for n, v in dn.items()}
    float_files = write_product(tmp_path / "float", reflectance, nodata=np.nan)
    with rasterio.open(float_files["nir"]) as ds:  # resampled as reflectance, not as DN
        assert ds.dtypes[0] == "float32"
    info = json.loads(run_cli("info", l2a_item, "--json").output)  # what the Item declares
    assert info["band_names"] == ["blue", "green", "red", "nir08"] and info["size"] == "192 x 192"
    assert info["scale"] == [0.0001] * 4 and info["offset"] == [-0.1] * 4
    # A model that reads reflectance, imported as users import theirs; its float network
    # (the bundled int8 graph would turn the last digits of rounding into class flips).
    default = geoseg.load_model().spec
    result = run_cli("models", "import", Path(geoseg.__file__).parent / "models" / "default" /
                     "model.safetensors", "-o", tmp_path / "model", "--units", "reflectance",
                     "--mean", ",".join(repr(m / 1e4) for m in default.mean),
                     "--std", ",".join(repr(v / 1e4) for v in default.std), "--runtime", "torch")
    assert result.exit_code == 0, result.output
    model = tmp_path / "model"
    assert geoseg.load_model(model).spec.units == "reflectance"
    assert run_cli("predict", *float_files.values(), "--model", model, "-o", tmp_path / "ref.tif",
                   "--probabilities", tmp_path / "ref.prob.tif", *TILE).exit_code == 0
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        mask = geoseg.predict(l2a_item, tmp_path / "l2a.tif", model=model, tile_size=128)
    assert not [w for w in said if issubclass(w.category, GeoSegWarning)]
    expected = mask_of(tmp_path / "ref.tif")
    # The network sees the same values up to rounding (v × s + o, then normalized, against
    # mean and std folded into the stored units; the 20 m band resampled as integers, not
    # as reflectance): a pixel may differ only where its two classes are a near tie.
    differ = mask.values != expected
    assert differ.mean() < 0.002
    with rasterio.open(tmp_path / "ref.prob.tif") as ds:
        probs = ds.read().astype(np.float32) / 254
    rows, cols = np.nonzero(differ)
    ours, theirs = mask.values[differ], expected[differ]
    assert np.all(np.abs(probs[ours, rows, cols] - probs[theirs, rows, cols]) <= 0.02)
    # An Item that declares no rule but names its processing baseline (as Planetary
    # Computer's do) gets ESA's rule for that baseline.
    unsaid = item("S2B_MSIL2A_N0510", {n: f.name for n, f in l2a.items()})
    unsaid["properties"].update({"s2:processing_baseline": "05.10", "s2:product_type": "S2MSI2A"})
    pc_item = write_json(l2a_item.with_name("pc.json"), unsaid)
    pc = geoseg.predict(pc_item, tmp_path / "pc.tif", model=model, tile_size=128)
    np.testing.assert_array_equal(pc.values, mask.values)
    # The old default model reads digital numbers and names no units: the declared offset
    # is one it cannot apply, and it says so.
    with pytest.warns(GeoSegWarning, match="names no units"):
        geoseg.predict(l2a_item, tmp_path / "raw.tif", model="default", tile_size=128)
    # A model whose card converts digital numbers (scale 0.0001, the pre-04.00 rule) gets
    # the scene's own offset, silently: the same units, the product's zero point.
    dn_model = physical_model(tmp_path / "dn_model", scale=[1e-4] * 4, offset=[0.0] * 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error", GeoSegWarning)
        mask = geoseg.predict(l2a_item, tmp_path / "dn.tif", model=dn_model, tile_size=128)
    assert (mask.values == expected).mean() > 0.9999
    # A scale that differs from the card's is another unit: the scene's wins, and it is said.
    pct_model = physical_model(tmp_path / "pct_model", scale=[1e-2] * 4, offset=[0.0] * 4)
    with pytest.warns(GeoSegWarning, match="the scene's own scale and offset are used"):
        geoseg.predict(l2a_item, tmp_path / "pct.tif", model=pct_model, tile_size=128)
    # The band files without their Item declare nothing: integers for a reflectance model.
    with pytest.warns(GeoSegWarning, match="stores integers and declares no scale or offset"):
        geoseg.predict(list(map(str, l2a.values())), tmp_path / "bare.tif", model=model,
                       tile_size=128)


def test_a_pixel_is_nodata_where_any_band_says_so(product, tmp_path):
    data = bands_of(product["image"])
    data["nir"][:20, :20] = 0  # 20 m pixels: the top-left 400 m × 400 m
    data["blue"][150:, 150:] = 0
    files = write_product(tmp_path / "S2", data)
    # The red band has no nodata value but a mask of its own (GDAL's internal mask).
    red = write_raster(files["red"], data["red"], transform=TEN)
    with rasterio.open(red, "r+") as ds:
        hidden = np.full((SIZE, SIZE), 255, np.uint8)
        hidden[100:120, :30] = 0
        ds.write_mask(hidden)
    mask = geoseg.predict(list(map(str, files.values())), tmp_path / "m.tif", model="default",
                          tile_size=128).values
    assert (mask[:38, :38] == 255).all() and (mask[152:, 152:] == 255).all()
    assert (mask[100:120, :30] == 255).all() and (mask[60:140, 60:140] != 255).all()
    assert (mask[90:100, :30] != 255).all() and (mask[120:130, :30] != 255).all()


@pytest.mark.parametrize("case", ["missing band", "another crs", "no assets", "bad asset key",
                                  "collection", "no grid overlap"])
def test_bad_scenes_are_one_line_errors(case, product, tmp_path):
    files = product["files"]
    out = tmp_path / "mask.tif"
    if case == "missing band":
        args = ["+".join(str(files[n]) for n in ("blue", "green", "red"))]
        words = ["lacks the nir band the model needs (it has blue, green, red)"]
    elif case == "another crs":
        moved = write_raster(tmp_path / "T32_B8A_20m.tif", np.ones((96, 96), np.uint16),
                             crs="EPSG:32632", transform=TWENTY)
        args = ["+".join([str(files["blue"]), str(files["green"]), str(files["red"]), str(moved)])]
        words = ["is in EPSG:32632 but", "is in EPSG:32633", "share one CRS"]
    elif case == "no assets":
        bare = item("EMPTY", {n: str(f) for n, f in files.items()}, extra_assets=False)
        bare["assets"] = {}
        args, words = [write_json(tmp_path / "empty.json", bare)], ["STAC Item 'EMPTY' has no assets"]
    elif case == "bad asset key":
        args = [write_json(tmp_path / "i.json", item("I", {n: str(f) for n, f in files.items()})),
                "--assets", "B02,B99"]
        words = ["has no asset 'B99' (it has B02, B03, B04, B8A, visual, thumbnail)"]
    elif case == "collection":
        args = [write_json(tmp_path / "c.json", {"type": "Collection", "id": "c",
                                                 "stac_version": "1.0.0", "links": []})]
        words = ["is a STAC Collection: give its Items"]
    else:
        small = write_raster(tmp_path / "T33_B8A_20m.tif", np.ones((40, 40), np.uint16),
                             transform=TWENTY)
        args = ["+".join([str(files["blue"]), str(files["green"]), str(files["red"]), str(small)])]
        words = ["every band of a scene must cover it"]
    result = invoke("predict", *args, "-o", out, "--model", "default")
    assert_one_line_error(result, *words)
    assert not out.exists()


def test_open_source_matches_bands_by_name_and_refuses_an_unknown_one(product):
    files = product["files"]
    src = geoseg.sources.open_source([str(files[n]) for n in ("nir", "red", "green", "blue")],
                                     want=("red", "nir"))
    assert src.band_names == ("red", "nir08") and src.grid.transform == TEN
    with pytest.raises(InputError, match="no band name geoseg knows"):
        geoseg.sources.open_source([f"infrared={files['nir']}+red={files['red']}"])


@pytest.mark.slow
def test_train_and_evaluate_take_the_same_scene_forms(product, tmp_path):
    l2a, l2a_item = l2a_product(tmp_path / "L2A", product["image"])
    result = run_cli("train", l2a_item, "--labels", product["labels"], "-o", tmp_path / "model",
                     "--chip-size", "64", "--epochs", "2", "--steps-per-epoch", "10",
                     "--batch-size", "4")
    assert result.exit_code == 0, result.output
    spec = geoseg.load_model(tmp_path / "model").spec
    assert spec.bands == ("blue", "green", "red", "nir08") and spec.units == "physical"
    assert spec.scale == (0.0001,) * 4 and spec.offset == (-0.1,) * 4
    assert all(0.0 < m < 1.0 for m in spec.mean)  # learnt on reflectance, not on numbers
    # The card's scale and offset are those of the product: the Item's band files given
    # without their Item (so declaring nothing) are read by the same rule, to the same scores.
    stack = "+".join(str(l2a[n]) for n in ("blue", "green", "red", "nir"))
    scores = []
    for k, scene in enumerate((l2a_item, stack)):
        report = tmp_path / f"scores_{k}.json"
        result = run_cli("evaluate", scene, "--labels", product["labels"], "--model",
                         tmp_path / "model", "-o", report)
        assert result.exit_code == 0, result.output
        scores.append(json.loads(report.read_text())["miou"])
    assert 0 < scores[0] == scores[1] <= 1


def write_safe(folder: Path, image: np.ndarray, level: str, offset: int) -> Path:
    """A Sentinel-2 product as the Copernicus Data Space delivers it (unzipped): real
    JPEG 2000 band files at 10, 20 and 60 m under GRANULE/*/IMG_DATA, beside the
    products of the bands (TCI, AOT, WVP, SCL), and MTD_MSIL1C/2A.xml with the
    quantification value and, when ``offset`` is not 0, the per-band offsets."""
    safe = folder / f"S2B_MSI{level}_20240611T100559_N0510_R022_T33UUP_20240611T130000.SAFE"
    stem = "T33UUP_20240611T100559"
    granule = safe / "GRANULE" / f"{level}_T33UUP_A037000_20240611T100829" / "IMG_DATA"
    dn = {"B02": image[0], "B03": image[1], "B04": image[2], "B08": image[3]}
    if level == "L2A":
        files = {f"R10m/{stem}_{b}_10m.jp2": (v, TEN) for b, v in dn.items()}
        files[f"R10m/{stem}_TCI_10m.jp2"] = (image[2] // 16, TEN)
        files[f"R10m/{stem}_WVP_10m.jp2"] = (image[0], TEN)
        files[f"R20m/{stem}_B8A_20m.jp2"] = (image[3, ::2, ::2], TWENTY)
        files[f"R20m/{stem}_B02_20m.jp2"] = (image[0, ::2, ::2], TWENTY)
        files[f"R20m/{stem}_SCL_20m.jp2"] = (np.full((96, 96), 4, np.uint16), TWENTY)
        files[f"R60m/{stem}_B01_60m.jp2"] = (image[0, ::6, ::6], TEN * Affine.scale(6))
    else:
        files = {f"{stem}_{b}.jp2": (v, TEN) for b, v in dn.items()}
        files[f"{stem}_TCI.jp2"] = (image[2] // 16, TEN)
    for name, (data, transform) in files.items():
        path = granule / name
        path.parent.mkdir(parents=True, exist_ok=True)
        stored = np.where(data > 0, data.astype(np.int32) - offset, 0).astype(np.uint16)
        with rasterio.open(path, "w", driver="JP2OpenJPEG", width=data.shape[1],
                           height=data.shape[0], count=1, dtype="uint16", crs=UTM,
                           transform=transform, nodata=0, QUALITY=100, REVERSIBLE="YES") as ds:
            ds.write(stored, 1)
    if level == "L2A":
        rule = ('<QUANTIFICATION_VALUES_LIST><BOA_QUANTIFICATION_VALUE unit="none">10000'
                '</BOA_QUANTIFICATION_VALUE><AOT_QUANTIFICATION_VALUE unit="none">1000.0'
                '</AOT_QUANTIFICATION_VALUE></QUANTIFICATION_VALUES_LIST>')
        tag, listing = "BOA_ADD_OFFSET", "BOA_ADD_OFFSET_VALUES_LIST"
    else:
        rule = '<QUANTIFICATION_VALUE unit="none">10000</QUANTIFICATION_VALUE>'
        tag, listing = "RADIO_ADD_OFFSET", "Radiometric_Offset_List"
    if offset:
        rule += (f"<{listing}>" + "".join(f'<{tag} band_id="{k}">{offset}</{tag}>'
                                          for k in range(13)) + f"</{listing}>")
    ns = f"https://psd-14.sentinel2.eo.esa.int/PSD/User_Product_Level-{level[1:]}.xsd"
    (safe / f"MTD_MSI{level}.xml").write_text(
        f'<?xml version="1.0" encoding="UTF-8"?><n1:Level-{level[1:]}_User_Product xmlns:n1="{ns}">'
        f"<n1:General_Info><Product_Image_Characteristics>{rule}"
        f"</Product_Image_Characteristics></n1:General_Info></n1:Level-{level[1:]}_User_Product>")
    return safe


@pytest.mark.parametrize(("level", "offset"), [("L2A", -1000), ("L1C", -1000), ("L2A", 0)])
def test_a_sentinel_2_safe_product_folder_or_zip_is_one_scene_in_reflectance(
        level, offset, product, tmp_path):
    """The SAFE's metadata gives the rule (value + offset) / 10 000: a reflectance model
    reads every baseline alike, from the folder and from the zip, on the 10 m grid."""
    image = product["image"]
    safe = write_safe(tmp_path, image, level, offset)
    reflectance = np.where(image > 0, image / 1e4, np.nan).astype(np.float32)
    ref_image = write_raster(tmp_path / "reflectance.tif", reflectance, transform=TEN,
                             nodata=np.nan)
    model = physical_model(tmp_path / "model", units="reflectance")
    expected = geoseg.predict(ref_image, tmp_path / "ref.tif", model=model, tile_size=128).values
    zipped = shutil.make_archive(str(tmp_path / safe.stem), "zip", tmp_path, safe.name)
    masks = {}
    for form in (safe, Path(zipped), safe / f"MTD_MSI{level}.xml"):
        info = json.loads(run_cli("info", form, "--json").output)
        assert info["band_names"] == ["blue", "green", "red", "nir", "nir08", "coastal"][
            :6 if level == "L2A" else 4]
        assert info["scale"][0] == 0.0001 and info["offset"][0] == pytest.approx(offset / 1e4)
        out = tmp_path / f"{form.name}.tif"
        result = run_cli("predict", form, "--model", model, "-o", out, *TILE)
        assert result.exit_code == 0, result.output
        with rasterio.open(out) as ds:
            assert ds.transform == TEN and ds.shape == (SIZE, SIZE)
            masks[form.name] = ds.read(1)
        assert (masks[form.name] == expected).mean() > 0.9999
    assert len({m.tobytes() for m in masks.values()}) == 1  # folder and zip alike
    # The bundled model reads numbers as stored: told of an offset it does not apply.
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        geoseg.predict(safe, tmp_path / "raw.tif", model="default", tile_size=128)
    told = [str(w.message) for w in said if issubclass(w.category, GeoSegWarning)]
    assert bool(told) == (offset != 0) and all("offset included" in t for t in told)
    # geoseg run names the scene after the product.
    result = run_cli("run", zipped, "-o", tmp_path / "out", "--model", model, "--no-progress",
                     *TILE)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / f"{safe.stem}.mask.tif").is_file()


@pytest.mark.parametrize(("files", "expected"), [
    # Earth Engine's Sentinel-2 exports: one B8A names the mission for every B5.
    (["B1", "B2", "B3", "B4", "B5", "B8", "B8A", "B11", "B12"],
     ["coastal", "blue", "green", "red", "rededge071", "nir", "nir08", "swir16", "swir22"]),
    # Without such a band, ids that mean other bands in Landsat's numbering are not guessed.
    (["B2", "B3", "B4", "B5"], ["blue", "green", "red", None]),
    (["LC09_L2SP_190027_20240611_20240613_02_T1_SR_B5", "LT05_L2SP_190027_19990611_SR_B4",
      "LC08_L1TP_190027_20240611_B10"], ["nir08", "nir08", "lwir11"]),
    (["HLS.L30.T33UUP.2024163T100559.v2.0.B05", "HLS.S30.T33UUP.2024163T100559.v2.0.B05",
      "HLS.L30.T33UUP.2024163T100559.v2.0.B11"], ["nir08", "rededge071", "lwir12"]),
    (["T33UUP_20240611T100559_WVP_10m", "LC08_x_SR_QA_AEROSOL", "img_red_edge", "swir_1",
      "scene_nir", "ortho_2020_red"], [None, None, "rededge", "swir16", "nir", "red"]),
])
def test_band_names_in_file_names_follow_the_missions_numbering(files, expected):
    from geoseg.bands import names_in_files

    if files[0].startswith("B"):
        assert names_in_files([f"{f}.tif" for f in files]) == expected
    else:
        assert [names_in_files([f"{f}.tif"])[0] for f in files] == expected


def test_earth_search_items_red_edges_and_their_offset_flag(tmp_path):
    """Earth Search v1 Items call every red-edge band "rededge" (the band's own name says
    which), and keep raster:bands offset −0.1 where earthsearch:boa_offset_applied says
    the values have it taken off already."""
    from geoseg import stac

    assets = {}
    for key, code, wavelength in (("rededge1", "B05", 0.704), ("rededge2", "B06", 0.74),
                                  ("rededge3", "B07", 0.783), ("red", "B04", 0.665)):
        write_raster(tmp_path / f"{code}.tif", np.ones((8, 8), np.uint16), transform=TWENTY)
        assets[key] = {"href": f"./{code}.tif", "type": "image/tiff; application=geotiff",
                       "roles": ["data"], "eo:bands": [{
                           "name": key if key != "rededge2" else code, "center_wavelength":
                           wavelength, "common_name": "rededge" if key != "red" else "red"}],
                       "raster:bands": [{"nodata": 0, "scale": 0.0001, "offset": -0.1}]}
    data = {"type": "Feature", "stac_version": "1.0.0", "id": "S2B_33UUP_20220611_0_L2A",
            "geometry": None, "links": [], "assets": assets, "properties": {
                "datetime": "2022-06-11T10:00:00Z", "platform": "sentinel-2b",
                "earthsearch:boa_offset_applied": True}}
    path = write_json(tmp_path / "item.json", data)
    _, bands = stac.item_bands(str(path))
    assert [b.name for b in bands] == ["rededge071", "rededge075", "rededge078", "red"]
    assert {b.offset for b in bands} == {0.0} and {b.scale for b in bands} == {0.0001}
    data["properties"]["earthsearch:boa_offset_applied"] = False
    _, bands = stac.item_bands(str(write_json(path, data)))
    assert {b.offset for b in bands} == {-0.1}


def test_stack_grids_and_inputs_that_are_no_stac(product, tmp_path):
    from geoseg import stac

    # A Landsat-sized 30 m band at 50 m: the grid keeps to whole pixels inside the data.
    band = write_raster(tmp_path / "LC09_x_SR_B4.TIF", np.ones((391, 385), np.uint16),
                        transform=Affine(30.0, 0, 600_000.0, 0, -30.0, 5_100_000.0))
    src = geoseg.sources.open_source(str(band), resolution=50)
    assert src.grid.shape == (234, 231) and src.grid.transform.a == 50
    # A raster under a URL's /items/ is a raster; JSON beside tiles is no Item.
    assert stac.is_stac("https://host/v1/collections/s2/items/S2B_33UUP") and not stac.is_stac(
        "https://host/data/items/x.tif")
    tiles = tmp_path / "tiles"
    tiles.mkdir()
    (tiles / "index.json").write_text("[1, 2")
    write_raster(tiles / "a.tif", product["image"], transform=TEN, nodata=0)
    assert geoseg.sources.open_source(str(tiles)).grid.transform == TEN
    # A band that is not north-up is one clear error.
    flipped = write_raster(tmp_path / "T33_B8A_20m.tif", np.ones((96, 96), np.uint16),
                           transform=Affine(20.0, 0, 600_000.0, 0, 20.0, 5_098_080.0))
    files = product["files"]
    with pytest.raises(InputError, match="is not north-up"):
        geoseg.sources.open_source(f"{files['blue']}+{files['green']}+{files['red']}+{flipped}")
