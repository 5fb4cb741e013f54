"""Labels from another land-cover product: its codes read as classes by a label map.

ESA WorldCover codes its classes 10, 20, … 100 (uint8), CORINE Land Cover 111 … 523
(uint16, three digits), Dynamic World 0 … 8. ``--label-map`` names them: in a class
raster on any grid (read by nearest neighbour), or in the polygons' class field; codes it
does not name are unlabelled.
"""

import numpy as np
import pytest
import rasterio
from conftest import assert_one_line_error, run_cli, write_raster

import geoseg
from geoseg.errors import InputError
from geoseg.labels import parse_label_map

# The synthetic scene's classes as CORINE-like three-digit codes; built_up (4) gets a code
# that the map below does not name, so its pixels are unlabelled.
CODES = {0: 512, 1: 311, 2: 231, 3: 211, 4: 999, 5: 112}


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """A synthetic scene, its exact labels (a geoseg class raster) and the same labels as
    CORINE-like uint16 codes with a colour table, on the scene's grid."""
    folder = tmp_path_factory.mktemp("scene")
    image, labels = geoseg.write_sample_data(folder, size=192, seed=5)
    with rasterio.open(labels) as ds:
        classes, profile, names = ds.read(1), ds.profile, geoseg.load_model("default").spec.class_names
    codes = np.zeros(classes.shape, np.uint16)
    for k, code in CODES.items():
        codes[classes == k] = code
    path = folder / "corine.tif"
    with rasterio.open(path, "w", **{**profile, "dtype": "uint16", "nodata": 0}) as ds:
        ds.write(codes, 1)
        ds.write_colormap(1, {512: (0, 204, 242, 255), 311: (128, 255, 0, 255),
                              112: (255, 0, 0, 255)})
    return image, labels, path, names, classes


def corine_map(names):
    """The map from CORINE-like codes to the scene's class names, built_up left out."""
    return ",".join(f"{CODES[k]}={names[k]}" for k in (0, 1, 2, 3, 5))


def test_label_maps_take_codes_ranges_and_files(tmp_path):
    assert parse_label_map("10=trees, 20=shrub_and_scrub,50=built").codes == {
        10: "trees", 20: "shrub_and_scrub", 50: "built"}
    ranged = parse_label_map("111..142=built,211=crops,212=crops")
    assert ranged.codes[111] == ranged.codes[142] == "built" and 143 not in ranged.codes
    assert ranged.names == ["built", "crops"]
    listed = tmp_path / "corine.txt"
    listed.write_text("# CORINE level 1\n111..142=built  # artificial surfaces\n"
                      "211..244=crops\n\n311..335=trees,411..423=wetland\n")
    assert parse_label_map(listed).names == ["built", "crops", "trees", "wetland"]
    for bad, words in (("10", "is not CODE=NAME"), ("ten=trees", "is not CODE=NAME"),
                       ("10=", "is not CODE=NAME"), ("10=a,10=b", "names code 10 twice"),
                       ("9..1=x", "is empty or over 65536 codes"), (" , ", "is empty")):
        with pytest.raises(InputError, match=words):
            parse_label_map(bad)


def test_a_code_raster_scores_as_the_classes_it_codes_and_unnamed_codes_are_unlabelled(
        scene, tmp_path):
    _image, labels, corine, names, classes = scene
    mapped = corine_map(names)
    result = run_cli("evaluate", labels, "--labels", corine, "--label-map", mapped,
                     "-o", tmp_path / "scores.json")
    assert result.exit_code == 0, result.output
    scores = geoseg.evaluate(labels, corine, label_map=parse_label_map(mapped))
    assert scores.metrics["overall_accuracy"] == 1.0
    # Every pixel but the unmapped built-up (and the scene's nodata corner) is scored, each as its own class.
    assert scores.confusion.sum() == ((classes != 4) & (classes != 255)).sum()
    np.testing.assert_array_equal(np.diag(scores.confusion)[[0, 1, 2, 3, 5]],
                                  np.bincount(classes.ravel(), minlength=6)[[0, 1, 2, 3, 5]])
    # Without a map the codes are refused, as before.
    assert_one_line_error(run_cli("evaluate", labels, "--labels", corine),
                          "holds class values outside 0..254", named=corine)
    # A malformed map is the CLI's one line.
    assert_one_line_error(run_cli("evaluate", labels, "--labels", corine, "--label-map",
                                  "512=water,x"), "'x' is not CODE=NAME")
    # A name the prediction lacks names the map.
    assert_one_line_error(run_cli("evaluate", labels, "--labels", corine, "--label-map",
                                  "512=sea"), "has class 'sea', which the model does not know",
                          "label map")


def test_a_code_raster_on_another_grid_is_read_by_nearest_neighbour(scene, tmp_path):
    """Codes in geographic coordinates at a coarser grid: nearest neighbour keeps every
    code a code (an average of 311 and 512 would be no class at all)."""
    from rasterio.warp import Resampling, calculate_default_transform, reproject

    _image, labels, corine, names, classes = scene
    with rasterio.open(corine) as src:
        transform, width, height = calculate_default_transform(
            src.crs, "EPSG:4326", src.width, src.height, *src.bounds)
        codes = np.zeros((height, width), np.uint16)
        reproject(rasterio.band(src, 1), codes, dst_transform=transform, dst_crs="EPSG:4326",
                  resampling=Resampling.nearest)
    moved = write_raster(tmp_path / "corine_4326.tif", codes, crs="EPSG:4326",
                         transform=transform, nodata=0)
    scores = geoseg.evaluate(labels, moved, label_map=parse_label_map(corine_map(names)))
    assert scores.metrics["overall_accuracy"] > 0.95  # two nearest-neighbour warps apart
    assert abs(scores.confusion.sum() - ((classes != 4) & (classes != 255)).sum()) < 0.03 * classes.size


def test_polygons_with_a_code_field_and_training_on_codes(scene, tmp_path):
    image, labels, corine, names, classes = scene
    polygons = geoseg.vectorize(labels)
    polygons["code"] = [CODES[k] for k in polygons["class_id"]]
    gpkg = tmp_path / "corine.gpkg"
    polygons[["code", "geometry"]].to_file(gpkg, layer="corine")
    mapped = parse_label_map(corine_map(names))
    scores = geoseg.evaluate(labels, gpkg, class_field="code", label_map=mapped)
    assert scores.metrics["overall_accuracy"] == 1.0
    assert scores.confusion.sum() == ((classes != 4) & (classes != 255)).sum()
    # Without a class field there is nothing to read codes from.
    with pytest.raises(InputError, match="reads the codes of a class field"):
        geoseg.evaluate(labels, gpkg, label_map=mapped)

    # Training on the codes: the classes are the map's names in its order, coloured as
    # the code raster colours their codes (the others from the palette).
    water, built = names[0], names[5]
    result = run_cli("train", image, "--labels", corine, "--label-map",
                     f"512={water},311..312={names[1]},112={built}", "-o", tmp_path / "m",
                     "--chip-size", "64", "--epochs", "1", "--steps-per-epoch", "3",
                     "--batch-size", "2")
    assert result.exit_code == 0, result.output
    spec = geoseg.load_model(tmp_path / "m").spec
    assert spec.class_names == [water, names[1], built]
    assert spec.colors[0] == (0, 204, 242) and spec.colors[2] == (255, 0, 0)
    pixels = spec.metrics["training"]["labelled_pixels"]
    assert sum(pixels["training"].values()) + sum(pixels["validation"].values()) == (
        np.isin(classes, (0, 1, 5)).sum())


def test_code_255_survives_a_warp_and_odd_maps_are_one_line_errors(scene, tmp_path):
    """A uint8 product without nodata whose code 255 is a class: the warp marks its
    outside with a value the map does not name, so 255 stays labelled."""
    from rasterio.warp import Resampling, calculate_default_transform, reproject

    from geoseg.grid import Grid
    from geoseg.labels import open_labels

    _, labels, _, names, classes = scene
    codes = np.where(classes == 0, 255, 10).astype(np.uint8)  # water is 255, the rest 10
    with rasterio.open(labels) as src:
        grid = Grid.of(src)
        transform, width, height = calculate_default_transform(
            src.crs, "EPSG:4326", src.width, src.height, *src.bounds)
        moved = np.zeros((height, width), np.uint8)
        reproject(codes, moved, src_transform=src.transform, src_crs=src.crs,
                  dst_transform=transform, dst_crs="EPSG:4326", resampling=Resampling.nearest)
    path = write_raster(tmp_path / "codes_4326.tif", moved, crs="EPSG:4326", transform=transform)
    read = open_labels(path, grid, names, label_map=parse_label_map(
        f"255={names[0]},10={names[1]}")).read(0, 0, grid.height, grid.width)
    inside = classes != 255
    assert (read[inside] == np.where(classes[inside] == 0, 0, 1)).mean() > 0.95
    # Ranges with spaces, signs, long inline maps; too many classes or odd digits refused.
    assert parse_label_map("1 .. 3=x, -2=y").codes == {1: "x", 2: "x", 3: "x", -2: "y"}
    assert len(parse_label_map(",".join(f"{i}=c{i % 7}" for i in range(400))).names) == 7
    for bad, words in (("+-5=x", "is not CODE=NAME"), ("²=x", "is not CODE=NAME"),
                       (",".join(f"{i}=c{i}" for i in range(300)),
                        "names 300 classes; a class mask holds at most 255")):
        with pytest.raises(InputError, match=words):
            parse_label_map(bad)
