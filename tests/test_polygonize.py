"""The numpy polygonizer draws exactly what GDAL's polygonizer draws."""

import numpy as np
import pytest
import shapely
from rasterio import features

from geoseg.maskfile import NODATA
from geoseg.vector.polygonize import polygonize


def gdal_polygons(classes: np.ndarray) -> list[str]:
    return sorted(f"{int(v)} {shapely.normalize(shapely.geometry.shape(g)).wkt}"
                  for g, v in features.shapes(classes, mask=classes != NODATA, connectivity=4))


def ours(classes: np.ndarray, **kwargs: bool) -> list[str]:
    found = polygonize(classes, **kwargs)
    assert shapely.is_valid(found.geometry).all()
    return sorted(f"{c} {shapely.normalize(g).wkt}" for g, c in zip(found.geometry, found.cls, strict=True))


@pytest.mark.parametrize("seed", range(4))
def test_random_rasters_match_gdal_polygon_for_polygon(seed):
    rng = np.random.default_rng(seed)
    for _ in range(150):
        h, w = rng.integers(1, 9, 2)
        classes = rng.integers(0, 4, (h, w)).astype(np.uint8)
        classes[rng.random((h, w)) < 0.2] = NODATA
        assert ours(classes) == gdal_polygons(classes)


def test_region_touching_itself_at_a_corner_is_an_outline_with_a_hole():
    # Class 1 surrounds a hole (class 2) that meets the outline diagonally at one corner.
    classes = np.array([[1, 1, 1, 0],
                        [1, 2, 1, 0],
                        [1, 1, 0, 0]], np.uint8)
    found = polygonize(classes)
    one = found.geometry[list(found.cls).index(1)]
    assert shapely.is_valid(one) and len(one.interiors) == 1
    assert ours(classes) == gdal_polygons(classes)


def test_diagonal_neighbours_of_one_class_stay_apart():
    checker = np.array([[0, 1], [1, 0]], np.uint8)
    found = polygonize(checker)
    assert len(found.geometry) == 4 and shapely.area(found.geometry).tolist() == [1.0] * 4


def test_nodes_put_vertices_where_the_neighbour_changes_and_keep_a_valid_coverage():
    classes = np.array([[0, 0, 0, 0],
                        [1, 1, 2, 2]], np.uint8)
    plain = polygonize(classes)
    noded = polygonize(classes, nodes=True)
    top_plain = plain.geometry[list(plain.cls).index(0)]
    top_noded = noded.geometry[list(noded.cls).index(0)]
    assert shapely.equals(top_plain, top_noded)
    assert len(top_noded.exterior.coords) == len(top_plain.exterior.coords) + 1  # (2, 1)
    assert shapely.coverage_is_valid(noded.geometry)


def test_frame_is_context_not_output_and_the_runs_along_the_border_are_reported():
    framed = np.full((5, 6), NODATA, np.uint8)
    framed[1:-1, 1:-1] = [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 2, 2]]
    framed[0, 1:-1] = [0, 3, 3, 1]  # the neighbour above
    found = polygonize(framed, frame=True)
    assert sorted(found.cls.tolist()) == [0, 1, 2]
    assert shapely.union_all(found.geometry).bounds == (0.0, 0.0, 4.0, 3.0)
    start, stop, cls, _ = found.edges["top"]
    # Class 0 meets a 0 above at x 0..1 only: its top run is split at x = 1.
    assert list(zip(start.tolist(), stop.tolist(), cls.tolist(), strict=True)) == [
        (0, 1, 0), (1, 2, 0), (2, 3, 1), (3, 4, 1)]


def test_empty_and_all_nodata_rasters_give_no_polygons():
    assert len(polygonize(np.full((3, 3), NODATA, np.uint8)).geometry) == 0
    one = polygonize(np.zeros((3, 3), np.uint8))
    assert len(one.geometry) == 1 and one.geometry[0].area == 9
