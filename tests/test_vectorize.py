"""Vectorizing masks: exact polygons across chunk borders, true areas, GeoPackage output."""

import sqlite3

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import shapely
from affine import Affine
from conftest import TRANSFORM, UTM, write_classes, write_raster
from pyproj import Geod
from rasterio import features
from scipy import ndimage

import geoseg
from geoseg.errors import GeoSegError, InputError, OutputExistsError
from geoseg.vector import vectorize

NAMES = ["water", "forest", "field", "town"]
COLORS = [(30, 90, 200), (20, 110, 40), (220, 200, 90), (200, 40, 40)]


def blobs(height: int, width: int, seed: int = 0, n_classes: int = 4) -> np.ndarray:
    """A land-cover-like mask: smooth random fields, nested regions, holes, specks, nodata."""
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.random((height, width)), 3)
    edges = np.quantile(field, np.linspace(0, 1, n_classes + 1)[1:-1])
    mask = np.digitize(field, edges).astype(np.uint8)
    specks = rng.random((height, width)) < 0.01
    mask[specks] = rng.integers(0, n_classes, specks.sum())
    mask[: height // 5, : width // 4] = 255  # a nodata corner
    return mask


def rasterize_back(gdf, shape, transform):
    return features.rasterize(zip(gdf.geometry, gdf.class_id, strict=True), out_shape=shape,
                              transform=transform, fill=255, dtype="uint8")


def components(mask):
    return sum(ndimage.label(mask == k)[1] for k in np.unique(mask) if k != 255)


@pytest.mark.parametrize("chunk", [16, 37, 64, 4096])
def test_polygons_rasterize_back_to_the_mask_whatever_the_chunk_size(tmp_path, chunk):
    mask = blobs(150, 170)
    path = write_classes(tmp_path / "mask.tif", mask, NAMES, COLORS)
    gdf = vectorize(path, chunk_size=chunk)
    assert (rasterize_back(gdf, mask.shape, TRANSFORM) == mask).all()
    # One polygon per 4-connected region of one class, as GDAL draws it.
    assert len(gdf) == components(mask)
    assert shapely.is_valid(gdf.geometry.values).all()
    assert set(gdf.geom_type) == {"Polygon"}
    whole = sorted(shapely.normalize(shapely.geometry.shape(g)).wkt for g, _ in features.shapes(
        mask, mask=mask != 255, transform=TRANSFORM))
    assert sorted(shapely.normalize(g).wkt for g in gdf.geometry) == whole


def test_no_polygon_shares_an_edge_with_one_of_its_own_class(tmp_path):
    mask = blobs(120, 140, seed=3)
    gdf = vectorize(write_classes(tmp_path / "m.tif", mask, NAMES, COLORS), chunk_size=16)
    geoms = gdf.geometry.values
    a, b = shapely.STRtree(geoms).query(geoms, predicate="intersects")
    pairs = (a < b) & (gdf.class_id.values[a] == gdf.class_id.values[b])
    shared = shapely.length(shapely.intersection(geoms[a[pairs]], geoms[b[pairs]]))
    assert pairs.any() and (shared == 0).all()  # corners may touch, edges never


def test_attributes_and_projected_areas(tmp_path):
    mask = blobs(100, 120, seed=1)
    gdf = vectorize(write_classes(tmp_path / "m.tif", mask, NAMES, COLORS), chunk_size=32)
    assert list(gdf.columns) == ["class_id", "class_name", "area_m2", "perimeter_m", "geometry"]
    assert gdf.crs == UTM
    assert (gdf.class_name == np.array(NAMES)[gdf.class_id]).all()
    pixel_area = abs(TRANSFORM.a * TRANSFORM.e)
    for k in range(4):
        assert gdf.area_m2[gdf.class_id == k].sum() == pytest.approx(
            (mask == k).sum() * pixel_area, rel=1e-12)
    np.testing.assert_allclose(gdf.perimeter_m, gdf.geometry.length, rtol=1e-12)


def test_a_crs_in_feet_gives_square_metres(tmp_path):
    mask = blobs(40, 50, seed=2)
    feet = Affine(3.0, 0, 2_000_000, 0, -3.0, 500_000)
    gdf = vectorize(write_classes(tmp_path / "m.tif", mask, NAMES, COLORS, crs="EPSG:2263",
                                  transform=feet))
    assert gdf.area_m2.sum() == pytest.approx((mask != 255).sum() * 9 * 0.3048006096**2,
                                              rel=1e-6)


def test_geographic_areas_are_geodesic(tmp_path):
    mask = blobs(90, 120, seed=4)
    deg = Affine(0.001, 0, 10.0, 0, -0.001, 60.0)  # ~55 m x 111 m pixels at 60° N
    gdf = vectorize(write_classes(tmp_path / "m.tif", mask, NAMES, COLORS, crs="EPSG:4326",
                                  transform=deg),
                    chunk_size=40)
    geod = Geod(ellps="WGS84")
    for k in range(4):
        rows, _ = np.nonzero(mask == k)
        reference = 0.0
        for r, count in zip(*np.unique(rows, return_counts=True), strict=True):
            lat0, lat1 = 60.0 - 0.001 * (r + 1), 60.0 - 0.001 * r
            cell, _ = geod.polygon_area_perimeter([10.0, 10.001, 10.001, 10.0],
                                                  [lat0, lat0, lat1, lat1])
            reference += abs(cell) * count
        assert gdf.area_m2[gdf.class_id == k].sum() == pytest.approx(reference, rel=0.005)
    # The pixels are half as wide as tall there: a planar "area" in degrees is far off.
    assert gdf.area_m2.sum() > 1e6


def test_confidence_is_the_mean_probability_of_the_predicted_class(tmp_path):
    mask = np.zeros((20, 30), np.uint8)
    mask[5:15, 5:20] = 1
    probs = np.zeros((2, 20, 30), np.uint8)
    probs[0] = 200
    probs[1, 5:15, 5:20] = np.linspace(127, 254, 15).astype(np.uint8)
    path = write_classes(tmp_path / "m.tif", mask, NAMES, COLORS)
    prob_path = write_raster(tmp_path / "p.tif", probs, nodata=255)
    gdf = vectorize(path, probabilities=prob_path, chunk_size=16)
    by_class = gdf.set_index("class_id").confidence
    assert by_class[0] == pytest.approx(200 / 254)
    assert by_class[1] == pytest.approx(probs[1, 5:15, 5:20].mean() / 254)


def test_min_area_merges_specks_into_their_neighbour_and_leaves_no_gap(tmp_path):
    mask = blobs(100, 100, seed=5)
    path = write_classes(tmp_path / "m.tif", mask, NAMES, COLORS)
    full = vectorize(path)
    pixel_area = abs(TRANSFORM.a * TRANSFORM.e)
    merged = vectorize(path, min_area=20 * pixel_area, chunk_size=32)
    assert len(merged) < len(full)
    assert merged.area_m2.min() >= 20 * pixel_area
    assert merged.area_m2.sum() == pytest.approx(full.area_m2.sum())  # nothing dropped
    assert shapely.is_valid(merged.geometry.values).all()
    back = rasterize_back(merged, mask.shape, TRANSFORM)
    assert ((back == 255) == (mask == 255)).all()
    # Only pixels of regions below the threshold changed class.
    small = np.zeros(mask.shape, bool)
    for k in range(4):
        labels, _ = ndimage.label(mask == k)
        sizes = np.bincount(labels.ravel())
        small |= (labels > 0) & (sizes[labels] < 20)
    assert (back != mask).any() and not ((back != mask) & ~small).any()


def test_min_area_drops_isolated_specks(tmp_path):
    mask = np.full((30, 30), 255, np.uint8)
    mask[2:4, 2:4] = 1  # 4 pixels, nodata all around
    mask[10:30, 10:30] = 0
    gdf = vectorize(write_classes(tmp_path / "m.tif", mask, NAMES, COLORS), min_area=5 * 4.0)
    assert gdf.class_id.tolist() == [0]


def test_simplify_keeps_neighbours_sharing_one_border(tmp_path):
    mask = blobs(120, 120, seed=6)
    path = write_classes(tmp_path / "m.tif", mask, NAMES, COLORS)
    full = vectorize(path, chunk_size=40)
    simple = vectorize(path, simplify=4.0, chunk_size=40)
    assert len(simple) == len(full)
    assert shapely.get_num_coordinates(simple.geometry.values).sum() < 0.7 * shapely.get_num_coordinates(
        full.geometry.values).sum()
    assert shapely.is_valid(simple.geometry.values).all()
    assert shapely.coverage_is_valid(simple.geometry.values)  # no overlaps
    # no new gaps: the outline of everything moved only where it met nodata
    assert simple.area_m2.sum() == pytest.approx(full.area_m2.sum(), rel=0.01)


def test_classes_keep_a_subset_by_name_or_id(tmp_path):
    path = write_classes(tmp_path / "m.tif", blobs(60, 60), NAMES, COLORS)
    assert set(vectorize(path, classes=["water", 3]).class_id) == {0, 3}
    with pytest.raises(InputError, match="unknown class 'lake'"):
        vectorize(path, classes=["lake"])


def test_geopackage_is_styled_indexed_and_in_the_mask_crs(tmp_path):
    mask = blobs(80, 90)
    dst = tmp_path / "out" / "landcover.gpkg"
    gdf = vectorize(write_classes(tmp_path / "m.tif", mask, NAMES, COLORS), dst, chunk_size=32)
    back = gpd.read_file(dst, layer="landcover")
    assert len(back) == len(gdf) and back.crs == UTM
    assert shapely.is_valid(back.geometry.values).all()
    assert (back.class_name == gdf.class_name).all()
    with sqlite3.connect(dst) as con:
        assert con.execute("SELECT srs_id FROM gpkg_geometry_columns").fetchone()[0] == 32633
        assert con.execute("SELECT COUNT(*) FROM gpkg_extensions WHERE extension_name = "
                           "'gpkg_rtree_index'").fetchone()[0] == 1
        name, qml, default = con.execute(
            "SELECT f_table_name, styleQML, useAsDefault FROM layer_styles").fetchone()
    assert name == "landcover" and default == 1
    assert 'type="categorizedSymbol"' in qml and 'label="forest"' in qml
    assert 'value="20,110,40,255"' in qml  # the mask's own colour for class 1
    assert (tmp_path / "out" / "landcover.qml").read_text() == qml
    assert pyogrio.list_layers(dst)[:, 0].tolist().count("landcover") == 1
    assert not list((tmp_path / "out").glob(".*"))  # no temp files left


def test_geopackage_reads_back_through_gdal_with_a_working_spatial_index(tmp_path):
    mask = blobs(90, 110, seed=9)
    dst = tmp_path / "cover.gpkg"
    gdf = vectorize(write_classes(tmp_path / "m.tif", mask, NAMES, COLORS), dst, chunk_size=40)
    info = pyogrio.read_info(dst, layer="cover")
    assert info["features"] == len(gdf) and info["geometry_type"] == "Polygon"
    assert info["capabilities"]["fast_spatial_filter"]
    assert list(info["fields"]) == ["class_id", "class_name", "area_m2", "perimeter_m"]
    assert list(info["dtypes"]) == ["int32", "object", "float64", "float64"]
    np.testing.assert_array_equal(info["total_bounds"], gdf.total_bounds)
    back = pyogrio.read_dataframe(dst, layer="cover")
    assert (shapely.to_wkb(back.geometry.values) == shapely.to_wkb(gdf.geometry.values)).all()
    assert back.drop(columns="geometry").equals(gdf.drop(columns="geometry"))
    # The R-tree holds every polygon's box; GDAL filters a window with it.
    x0, y0, x1, y1 = gdf.total_bounds
    window = (x0 + (x1 - x0) / 3, y0 + (y1 - y0) / 3, x0 + (x1 - x0) / 2, y0 + (y1 - y0) / 2)
    hits = pyogrio.read_dataframe(dst, layer="cover", bbox=window)
    meets = shapely.intersects(gdf.geometry.values, shapely.box(*window))
    assert 0 < len(hits) == meets.sum() < len(gdf)
    with sqlite3.connect(dst) as con:
        boxes = con.execute("SELECT minx, miny, maxx, maxy FROM rtree_cover_geom ORDER BY id")
        np.testing.assert_array_equal(boxes.fetchall(), shapely.bounds(gdf.geometry.values))
        assert con.execute("PRAGMA application_id").fetchone()[0] == 0x47504B47
        assert con.execute("SELECT srs_id FROM gpkg_spatial_ref_sys ORDER BY srs_id"
                           ).fetchall() == [(-1,), (0,), (4326,), (32633,)]
        assert con.execute("SELECT feature_count FROM gpkg_ogr_contents").fetchone()[0] == len(gdf)


def test_geopackage_stays_editable_by_gdal(tmp_path):
    """The spatial index and feature count triggers are GDAL's: an edit keeps both true."""
    dst = tmp_path / "cover.gpkg"
    gdf = vectorize(write_classes(tmp_path / "m.tif", blobs(40, 50), NAMES, COLORS), dst)
    extra = shapely.box(0, 0, 1, 1)
    pyogrio.write_dataframe(gpd.GeoDataFrame({"class_id": [1]}, geometry=[extra], crs=UTM), dst,
                            layer="cover", append=True)
    assert pyogrio.read_info(dst, layer="cover")["features"] == len(gdf) + 1
    assert len(pyogrio.read_dataframe(dst, layer="cover", bbox=(0, 0, 2, 2))) == 1


@pytest.mark.parametrize("crs", [None, "+proj=tmerc +lon_0=15.5 +k=0.9996 +x_0=500000 "
                                       "+datum=WGS84 +units=m", "EPSG:4326"])
def test_geopackage_keeps_any_crs_or_none(tmp_path, crs):
    transform = Affine(0.001, 0, 10.0, 0, -0.001, 60.0) if crs == "EPSG:4326" else TRANSFORM
    path = write_classes(tmp_path / "m.tif", blobs(30, 40), NAMES, COLORS, crs=crs,
                         transform=transform)
    gdf = vectorize(path, tmp_path / "out.gpkg", allow_no_crs=True)
    back = gpd.read_file(tmp_path / "out.gpkg", layer="out")
    assert len(back) == len(gdf)
    if crs is None:
        assert back.crs is None
    else:
        assert back.crs.equals(gdf.crs)


def test_existing_output_is_kept_without_overwrite(tmp_path):
    path = write_classes(tmp_path / "m.tif", blobs(40, 40), NAMES, COLORS)
    dst = tmp_path / "out.gpkg"
    dst.write_text("precious")
    with pytest.raises(OutputExistsError):
        vectorize(path, dst)
    assert dst.read_text() == "precious"
    vectorize(path, dst, overwrite=True)
    assert len(gpd.read_file(dst, layer="out")) > 0


def test_a_dataarray_from_predict_vectorizes_like_its_file(make_scene, tmp_path):
    path, _ = make_scene(160, 200)
    lazy = geoseg.predict(path, tile_size=64)
    from_array = vectorize(lazy.chunk({"y": 50, "x": 70}), chunk_size=48)
    written = geoseg.predict(path, tmp_path / "mask.tif", tile_size=64)
    from_file = vectorize(tmp_path / "mask.tif", chunk_size=100)
    assert (written.values == lazy.values).all()
    assert sorted(shapely.to_wkt(shapely.normalize(from_array.geometry.values))) == sorted(
        shapely.to_wkt(shapely.normalize(from_file.geometry.values)))
    assert from_array.class_name.iloc[0] in geoseg.load_model("default").spec.class_names


@pytest.mark.parametrize("scheduler", ["processes", "sync"])
def test_schedulers_give_the_same_polygons(tmp_path, scheduler):
    path = write_classes(tmp_path / "m.tif", blobs(90, 90, seed=8), NAMES, COLORS)
    ref = vectorize(path, chunk_size=30)
    other = vectorize(path, chunk_size=30, scheduler=scheduler, workers=2)
    assert (shapely.to_wkb(ref.geometry.values) == shapely.to_wkb(other.geometry.values)).all()


@pytest.mark.parametrize("chunk", [37, 4096])
def test_chunks_polygonized_in_process_equal_dask_s(tmp_path, chunk):
    """Threads and sync skip Dask; the processes scheduler computes the same chunk
    functions as Dask tasks: one chunk or many, the polygons are the same bytes."""
    path = write_classes(tmp_path / "m.tif", blobs(150, 170, seed=12), NAMES, COLORS)
    here = vectorize(path, chunk_size=chunk)
    by_dask = vectorize(path, chunk_size=chunk, scheduler="processes", workers=2)
    assert (shapely.to_wkb(here.geometry.values) == shapely.to_wkb(by_dask.geometry.values)).all()
    assert here.drop(columns="geometry").equals(by_dask.drop(columns="geometry"))


def test_vectorize_command_imports_only_what_it_uses(tmp_path):
    """No torch, Dask, pandas or GDAL vector bindings for a mask file on the default scheduler:
    their imports would cost more than vectorizing a small mask."""
    import subprocess
    import sys
    from pathlib import Path

    path = write_classes(tmp_path / "m.tif", blobs(60, 70), NAMES, COLORS)
    heavy = ("torch", "dask", "distributed", "pandas", "geopandas", "pyogrio", "fiona",
             "xarray", "scipy", "pyproj")
    code = ("import sys\nfrom geoseg.cli import cli\n"
            "cli.main(['vectorize', sys.argv[1], '-o', sys.argv[2], '--no-progress'], "
            "standalone_mode=False)\n"
            f"print(sorted(m for m in {heavy!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, str(path), str(tmp_path / "out.gpkg")],
                         cwd=Path(__file__).resolve().parents[1], capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"
    assert len(gpd.read_file(tmp_path / "out.gpkg", layer="out")) == components(
        blobs(60, 70))


def test_bad_masks_are_refused_with_the_file_named(tmp_path):
    rgb = write_raster(tmp_path / "rgb.tif", np.zeros((3, 20, 20), np.uint8))
    with pytest.raises(InputError, match=r"rgb\.tif.*3 bands"):
        vectorize(rgb)
    floats = write_raster(tmp_path / "f.tif", np.zeros((20, 20), np.float32))
    with pytest.raises(InputError, match="float32"):
        vectorize(floats)
    big = write_raster(tmp_path / "big.tif", np.full((20, 20), 300, np.uint16))
    with pytest.raises(InputError, match="class value 300"):
        vectorize(big)
    with pytest.raises(GeoSegError, match=r"missing\.tif"):
        vectorize(tmp_path / "missing.tif")


def test_an_all_nodata_mask_gives_an_empty_styled_layer(tmp_path):
    path = write_classes(tmp_path / "m.tif", np.full((40, 50), 255, np.uint8), NAMES, COLORS)
    dst = tmp_path / "empty.gpkg"
    gdf = vectorize(path, dst, min_area=10, simplify=1.0, chunk_size=16)
    assert len(gdf) == 0 and list(gdf.columns)[:4] == ["class_id", "class_name", "area_m2",
                                                       "perimeter_m"]
    back = gpd.read_file(dst, layer="empty")
    assert len(back) == 0 and back.crs == UTM


def test_tiny_chunks_join_every_region_whatever_its_shape(tmp_path, monkeypatch):
    """Chunks of 2-3 px cut almost every region, in rows and columns, many times."""
    from geoseg import vector

    monkeypatch.setattr(vector, "MIN_CHUNK", 1)
    rng = np.random.default_rng(11)
    for _ in range(60):
        h, w = rng.integers(2, 10, 2)
        mask = rng.integers(0, 3, (h, w)).astype(np.uint8)
        mask[rng.random((h, w)) < 0.1] = 255
        path = write_classes(tmp_path / "m.tif", mask, NAMES, COLORS)
        gdf = vectorize(path, chunk_size=int(rng.integers(2, 4)))
        assert len(gdf) == components(mask)
        assert (rasterize_back(gdf, mask.shape, TRANSFORM) == mask).all()
        assert shapely.is_valid(gdf.geometry.values).all()


def same_class_edges(gdf):
    geoms = gdf.geometry.values
    a, b = shapely.STRtree(geoms).query(geoms, predicate="intersects")
    pairs = (a < b) & (gdf.class_id.values[a] == gdf.class_id.values[b])
    return shapely.length(shapely.intersection(geoms[a[pairs]], geoms[b[pairs]])).sum()


def test_min_area_joins_same_class_polygons_that_a_merged_speck_connects(tmp_path):
    mask = np.zeros((20, 19), np.uint8)
    mask[:, 2:9] = 1
    mask[:, 10:18] = 1
    mask[:10, 9], mask[12:, 9], mask[10:12, 9] = 3, 4, 2  # a 2-px speck of 2 between
    gdf = vectorize(write_classes(tmp_path / "m.tif", mask, NAMES, COLORS), min_area=12)
    assert same_class_edges(gdf) == 0
    back = rasterize_back(gdf, mask.shape, TRANSFORM)
    assert back[10, 9] == 1 and (gdf.class_id == 1).sum() == 1


@pytest.mark.parametrize("options", [{"min_area": 24 * 4.0}, {"simplify": 3.0},
                                     {"min_area": 40.0, "simplify": 2.0}])
def test_min_area_and_simplify_do_not_depend_on_the_chunking(tmp_path, options):
    path = write_classes(tmp_path / "m.tif", blobs(80, 90, seed=0), NAMES, COLORS)
    runs = [vectorize(path, chunk_size=c, **options) for c in (16, 37, 4096)]
    wkt = [sorted(shapely.to_wkt(shapely.normalize(r.geometry.values))) for r in runs]
    assert wkt[0] == wkt[1] == wkt[2]
    assert all(same_class_edges(r) == 0 for r in runs)
    geoms = runs[0].geometry.values
    assert shapely.area(geoms).sum() == pytest.approx(shapely.union_all(geoms).area)  # no overlap
    if "simplify" in options:  # neighbours share exactly the same vertices
        assert shapely.coverage_is_valid(geoms)


def test_geographic_areas_stay_true_after_simplify(tmp_path):
    deg = Affine(0.001, 0, 10.0, 0, -0.001, 60.0)
    path = write_classes(tmp_path / "m.tif", blobs(60, 70, seed=4), NAMES, COLORS,
                         crs="EPSG:4326", transform=deg)
    plain = vectorize(path)
    simple = vectorize(path, simplify=0.0015)
    geod = Geod(ellps="WGS84")
    for g, area in zip(simple.geometry, simple.area_m2, strict=True):
        exterior = abs(geod.geometry_area_perimeter(shapely.Polygon(g.exterior.coords))[0])
        holes = sum(abs(geod.geometry_area_perimeter(shapely.Polygon(h.coords))[0])
                    for h in g.interiors)
        assert area == pytest.approx(exterior - holes, rel=1e-3)
    assert simple.area_m2.sum() == pytest.approx(plain.area_m2.sum(), rel=0.01)


def test_a_geopackage_style_may_not_replace_the_mask_style(tmp_path):
    path = write_classes(tmp_path / "scene.mask.tif", blobs(30, 30), NAMES, COLORS)
    (tmp_path / "scene.mask.qml").write_text("raster style")
    with pytest.raises(InputError, match="styles the mask"):
        vectorize(path, tmp_path / "scene.mask.gpkg", overwrite=True)
    assert (tmp_path / "scene.mask.qml").read_text() == "raster style"


def test_dataarrays_use_their_coordinates_and_integer_values(tmp_path):
    import rioxarray

    mask = blobs(60, 80, seed=2)
    path = write_classes(tmp_path / "m.tif", mask, NAMES, COLORS)
    coarse = rioxarray.open_rasterio(path).squeeze("band", drop=True).coarsen(
        x=2, y=2, boundary="trim").max()
    gdf = vectorize(coarse)
    assert gdf.area_m2.sum() == pytest.approx(
        (coarse.values != 255).sum() * 16.0)  # 4 m pixels now, not the cached 2 m
    floats = rioxarray.open_rasterio(path, mask_and_scale=True).squeeze("band", drop=True)
    assert len(vectorize(floats)) == components(mask)  # NaN is nodata
    with pytest.raises(InputError, match="fractional"):
        vectorize(floats + 0.5)


def test_unknown_classes_name_what_the_mask_knows(tmp_path):
    path = write_raster(tmp_path / "plain.tif", blobs(30, 30), nodata=255)
    with pytest.raises(InputError, match="the mask names none; ids work too"):
        vectorize(path, classes=["forest"])
    with pytest.raises(InputError, match="out of range"):
        vectorize(path, classes=[300])
    assert set(vectorize(path, classes=["2"]).class_id) == {2}


def test_geographic_perimeters_follow_the_pixel_outlines_holes_included(tmp_path):
    mask = np.zeros((30, 30), np.uint8)
    mask[10:20, 10:20] = 1  # a square hole in class 0
    deg = Affine(0.01, 0, 10.0, 0, -0.01, 45.0)
    gdf = vectorize(write_classes(tmp_path / "m.tif", mask, NAMES, COLORS, crs="EPSG:4326",
                                  transform=deg))
    geod = Geod(ellps="WGS84")
    ring = shapely.segmentize(shapely.box(10.1, 44.8, 10.2, 44.9).exterior, 0.0005)
    hole_perimeter = geod.geometry_length(ring)
    outer = shapely.segmentize(shapely.box(10.0, 44.7, 10.3, 45.0).exterior, 0.0005)
    by_class = gdf.set_index("class_id")
    assert by_class.perimeter_m[1] == pytest.approx(hole_perimeter, rel=1e-6)
    assert by_class.perimeter_m[0] == pytest.approx(geod.geometry_length(outer) + hole_perimeter,
                                                    rel=1e-6)


def test_classes_nobody_coloured_get_the_masks_palette_in_the_polygons_too(tmp_path):
    """One palette: an 11th and 12th class without colours are the greys the mask format
    gives them, in the polygons' style as in a label raster's classes."""
    import json as _json

    import rasterio

    from geoseg.labels import label_classes
    from geoseg.maskfile import default_color

    data = np.repeat(np.arange(12, dtype=np.uint8), 8)[None, :].repeat(16, axis=0)
    mask = write_raster(tmp_path / "twelve.tif", data, nodata=255)
    with rasterio.open(mask, "r+") as ds:
        ds.update_tags(CLASS_NAMES=_json.dumps([f"c{i}" for i in range(12)]))
    geoseg.vectorize(mask, tmp_path / "polygons.gpkg")
    qml = (tmp_path / "polygons.qml").read_text()
    for i in (0, 10, 11):
        assert '"{},{},{},255"'.format(*default_color(i)) in qml
    assert default_color(11) != default_color(1)  # no wrap-around to the first colours
    _, colors = label_classes([mask], None, None)
    assert colors == [default_color(i) for i in range(12)]
