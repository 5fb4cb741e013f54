import numpy as np
import pytest

from geoseg.errors import InputError
from geoseg.tiling import TileGrid


@pytest.mark.parametrize(("height", "width", "size", "overlap"), [
    (1000, 1300, 256, 32), (64, 64, 64, 16), (50, 700, 128, 0), (17, 33, 64, 9), (513, 512, 512, 64),
])
def test_blend_weights_are_a_partition_of_unity(height, width, size, overlap):
    grid = TileGrid(height, width, size, overlap)
    canvas = np.zeros((height + 2 * size, width + 2 * size))
    for tile in grid.tiles():
        r, c = tile.row + size, tile.col + size
        canvas[r:r + size, c:c + size] += grid.blend_weights(tile)
    inside = canvas[size:size + height, size:size + width]
    np.testing.assert_allclose(inside, 1.0, atol=1e-6)


@pytest.mark.parametrize(("height", "width", "size", "overlap"), [
    (1000, 1300, 256, 32), (10, 10, 64, 8), (300, 200, 96, 31),
])
def test_blocks_tile_the_raster_and_each_block_sees_its_covering_tiles(height, width, size, overlap):
    grid = TileGrid(height, width, size, overlap)
    rows, cols = grid.chunks
    assert sum(rows) == height and sum(cols) == width
    assert len(rows) * len(cols) == len(grid)
    for i in range(len(rows)):
        for j in range(len(cols)):
            weight = np.zeros((rows[i], cols[j]))
            for tile, (tr, tc), (br, bc) in grid.tiles_over_block(i, j):
                assert tr.stop - tr.start == br.stop - br.start
                assert tc.stop - tc.start == bc.stop - bc.start
                weight[br, bc] += grid.blend_weights(tile)[tr, tc]
            np.testing.assert_allclose(weight, 1.0, atol=1e-6)


@pytest.mark.parametrize(("size", "overlap", "context"), [(320, 64, 24), (256, 64, 32), (96, 32, 8)])
def test_a_networks_reach_is_kept_out_of_the_blend(size, overlap, context):
    """Weights still sum to one, and no tile weighs a pixel within ``context`` of its own
    edge where a neighbour covers it (so every blended pixel is one each tile gets right)."""
    grid = TileGrid(900, 700, size, overlap, context)
    canvas = np.zeros((900 + 2 * size, 700 + 2 * size))
    for tile in grid.tiles():
        w = grid.blend_weights(tile)
        cols = grid.shape[1]
        if tile.row_index > 0:
            assert not w[:context].any()
        if tile.col_index < cols - 1:
            assert not w[:, size - context:].any()
        canvas[tile.row + size:tile.row + 2 * size, tile.col + size:tile.col + 2 * size] += w
    np.testing.assert_allclose(canvas[size:size + 900, size:size + 700], 1.0, atol=1e-6)
    with pytest.raises(InputError, match="reach"):
        TileGrid(900, 700, size, overlap, overlap // 2 + 1)


def test_edge_pixels_get_context_from_reflection_margin():
    grid = TileGrid(1000, 1000, 256, 64)
    first = grid.tile(0, 0)
    assert (first.row, first.col) == (-32, -32)
    assert grid.stride == 192


@pytest.mark.parametrize(("size", "overlap"), [(0, 0), (64, 64), (64, 33), (64, -1)])
def test_bad_grid_parameters_are_refused(size, overlap):
    with pytest.raises(InputError):
        TileGrid(100, 100, size, overlap)
