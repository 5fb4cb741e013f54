"""The Dask graph: tiled prediction in bands, lazy windows, and the tile results a sweep
keeps alive, bounded by the graph's construction (not by when a scheduler lets go)."""

import threading

import numpy as np
import pytest
from affine import Affine

import geoseg
from geoseg import pipeline
from geoseg.grid import Grid
from geoseg.inference import ModelHandle
from geoseg.sources import Source
from geoseg.tiling import TileGrid


def test_sweep_in_bands_gives_the_same_mask(make_scene, default_model, monkeypatch, tmp_path):
    path, _ = make_scene(300, 500)
    lazy = geoseg.predict(path, model=default_model, tile_size=64).values
    monkeypatch.setattr(pipeline, "BAND_PIXELS", 0)
    monkeypatch.setattr(pipeline, "BAND_MIN_TILES", 3)  # 11 tile columns -> 4 bands
    banded = geoseg.predict(path, tmp_path / "m.tif", model=default_model, tile_size=64).values
    np.testing.assert_array_equal(banded, lazy)


def test_a_window_of_the_lazy_mask_computes_only_nearby_tiles(make_scene, default_model):
    path, _ = make_scene(600, 600)
    mask = geoseg.predict(path, model=default_model, tile_size=64)
    from dask.core import flatten
    from dask.optimization import cull

    corner = mask[-10:, -10:].data
    graph, _ = cull(dict(corner.__dask_graph__()), list(flatten(corner.__dask_keys__())))
    infer = [k for k in graph if isinstance(k, tuple) and str(k[0]).startswith("geoseg-infer")]
    assert len(infer) <= 4, len(infer)  # the 2 x 2 tiles around the corner, of 121


def sweep_graph(size: int, tile: int, overlap: int, batch: int,
                at_once: int | None) -> tuple[dict, int]:
    """The writing graph of a ``size²`` raster (built, never run) and its window."""
    grid = Grid(None, Affine.identity(), size, size)
    source = Source("scene", "scene.tif", None, grid, (1, 2, 3, 4), "uint16", None)
    options = pipeline.PredictOptions(tile, overlap, batch, at_once=at_once)
    probs = pipeline.probabilities(source, ModelHandle("m"), 3, options, sweep=True)
    window = pipeline.tile_results_bound(TileGrid(size, size, tile, overlap), batch, at_once)
    return dict(probs.__dask_graph__()), window


@pytest.mark.parametrize(("size", "tile", "overlap", "batch", "band", "at_once"), [
    (400, 32, 8, 1, 4, 2), (800, 32, 8, 1, 4, None), (400, 32, 8, 2, 4, 1), (400, 32, 8, 3, 5, 4),
    (300, 32, 8, 1, 100, 1), (300, 32, 8, 1, 100, None), (200, 64, 16, 4, 2, 16),
    (200, 64, 16, 9, 2, 1), (64, 32, 0, 1, 8, None)])
def test_a_batch_starts_only_once_the_window_before_it_is_used_up(monkeypatch, size, tile,
                                                                   overlap, batch, band,
                                                                   at_once):
    """In the graph itself, whatever runs it: every batch of tiles depends on every block
    that uses any batch a window or more before it (in sweep order). So once the latest
    batch to start is batch k, batches up to k - window are no longer needed (a scheduler
    drops a result once all its dependents are done), and at most a window of batches is
    alive, however large the raster."""
    from graphlib import TopologicalSorter

    from dask.core import get_dependencies

    monkeypatch.setattr(pipeline, "BAND_PIXELS", 0)
    monkeypatch.setattr(pipeline, "BAND_MIN_TILES", band)
    dsk, window = sweep_graph(size, tile, overlap, batch, at_once)  # a cycle would raise
    deps = {key: get_dependencies(dsk, key) for key in dsk}
    bit = {key: 1 << n for n, key in enumerate(dsk)}
    ancestors: dict = {}
    for key in TopologicalSorter(deps).static_order():
        ancestors[key] = 0
        for d in deps[key]:
            ancestors[key] |= ancestors[d] | bit[d]
    infers = sorted((k for k in dsk if "infer" in str(k[0])), key=lambda k: k[1:])
    order = sorted(infers, key=lambda k: (k[1], k[2], k[3]))  # band, row, batch: the sweep
    users = {k: 0 for k in infers}
    for key, ds in deps.items():
        if "blend" in str(key[0]):
            for d in ds:
                if d in users:
                    users[d] |= bit[key]
    for n, batch_key in enumerate(order):
        for earlier in order[:max(n - window + 1, 0)]:
            assert users[earlier] & ~ancestors[batch_key] == 0, (batch_key, earlier)


class Tagged(tuple):
    """A tile result that says which batch it is (the threaded scheduler passes it as is)."""

    serial: int


@pytest.mark.slow
@pytest.mark.parametrize(("size", "batch"), [(400, 1), (800, 1), (400, 2)])
def test_writing_keeps_at_most_a_window_of_tile_results_alive(make_scene, default_model,
                                                              monkeypatch, size, batch):
    """A real sweep on the threaded scheduler, its events logged in the order they happen:
    at no point are more batches computed and still awaited by a block than the window."""
    monkeypatch.setattr(pipeline, "BAND_PIXELS", 0)
    monkeypatch.setattr(pipeline, "BAND_MIN_TILES", 4)  # bands of 4 tile columns
    events, lock = [], threading.Lock()
    infer, blend = pipeline._infer_batch, pipeline._blend_block

    def logged_infer(*args, **kwargs):
        result = Tagged(infer(*args, **kwargs))
        with lock:
            result.serial = len([e for e in events if e[0] == "made"])
            events.append(("made", result.serial))
        return result

    def logged_blend(grid, i, j, lookup, batches, *rest):
        block = blend(grid, i, j, lookup, batches, *rest)
        with lock:
            events.append(("used", (i, j), [b.serial for b in batches]))
        return block

    monkeypatch.setattr(pipeline, "_infer_batch", logged_infer)
    monkeypatch.setattr(pipeline, "_blend_block", logged_blend)
    path, _ = make_scene(size, size, nodata_corner=False)
    geoseg.predict(path, path.with_name("mask.tif"), model=default_model, tile_size=32,
                   overlap=8, batch_size=batch, workers=4)
    blocks_of: dict[int, set] = {}
    for event in events:
        if event[0] == "used":
            for serial in event[2]:
                blocks_of.setdefault(serial, set()).add(event[1])
    alive, most = {}, 0
    for event in events:
        if event[0] == "made":
            alive[event[1]] = set(blocks_of[event[1]])
        else:
            for serial in event[2]:
                alive[serial].discard(event[1])
                if not alive[serial]:
                    del alive[serial]
        most = max(most, len(alive))
    grid = TileGrid(size, size, 32, 8)
    bound = pipeline.tile_results_bound(grid, batch, at_once=4)
    # Bands of 4 block columns spread evenly (17 columns at 400 px: 4 bands of ≤ 5; 34 at
    # 800: 8 of ≤ 5) and 2 side tiles: a reach of 2 rows of 7 tiles' batches and 2 more,
    # one batch beyond, and the 4 tasks the pool runs at once (at most a row)
    assert pipeline.sweep_band(grid) == 5
    row = -(-7 // batch)
    assert bound == 2 * row + 2 + 1 + min(4, row)
    assert 0 < most <= bound, (most, bound)


@pytest.mark.parametrize(("cols", "nominal", "bands"), [(19, 18, 1), (37, 18, 2), (11, 3, 4),
                                                        (26, 18, 1), (28, 18, 2), (8, 18, 1)])
def test_bands_of_the_sweep_are_even(monkeypatch, cols, nominal, bands):
    """No thin last band (its side tiles are predicted twice): the columns are split into
    as many bands as the nominal width fits best, each at most 1.5× as wide."""
    monkeypatch.setattr(pipeline, "BAND_PIXELS", 0)
    monkeypatch.setattr(pipeline, "BAND_MIN_TILES", nominal)
    grid = TileGrid(10, cols * 24, 32, 8)  # 24 px stride: ``cols`` columns
    assert grid.shape[1] == cols
    width = pipeline.sweep_band(grid)
    assert -(-cols // width) == bands and width <= 1.5 * nominal
