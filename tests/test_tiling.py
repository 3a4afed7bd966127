"""Tiled processing: the grid covers the image, blending reproduces any map the tiles agree on."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from sia_core.errors import SIAError
from sia_core.tiling import TiledBlender, blend_weights, iter_tiles, tile_grid, tiled_map

SIZES = [(64, 64), (100, 77), (31, 200), (10, 12), (64, 65), (129, 130)]


@pytest.mark.parametrize(("h", "w"), SIZES)
@pytest.mark.parametrize(("tile", "overlap"), [(32, 8), (32, 0), (20, 19), (64, 16)])
def test_grid_covers_every_pixel(h: int, w: int, tile: int, overlap: int) -> None:
    grid = tile_grid(h, w, tile, overlap)
    covered = np.zeros((h, w), int)
    for y0, x0 in grid:
        assert y0 >= 0 and x0 >= 0
        assert y0 + tile <= h or y0 == 0  # flush with the edge, except the single tile of a short axis
        assert x0 + tile <= w or x0 == 0
        covered[y0 : y0 + tile, x0 : x0 + tile] += 1
    assert (covered >= 1).all()
    ys, xs = sorted({y for y, _ in grid}), sorted({x for _, x in grid})
    assert len(grid) == len(ys) * len(xs) and grid == sorted(grid)
    assert all(b - a <= tile - overlap for a, b in zip(ys, ys[1:]))
    assert ys[-1] == max(0, h - tile) and xs[-1] == max(0, w - tile)


def test_grid_small_image_and_bad_arguments() -> None:
    assert tile_grid(10, 5, 224, 32) == [(0, 0)]
    assert tile_grid(224, 224, 224, 32) == [(0, 0)]
    with pytest.raises(SIAError, match="overlap"):
        tile_grid(100, 100, 32, 32)
    with pytest.raises(SIAError):
        tile_grid(0, 100, 32, 8)


@pytest.mark.parametrize(("tile", "overlap"), [(16, 4), (16, 0), (9, 8), (32, 16)])
def test_blend_weights(tile: int, overlap: int) -> None:
    wts = blend_weights(tile, overlap)
    assert wts.shape == (tile, tile) and wts.dtype == np.float32
    assert (wts > 0).all() and wts.max() == 1.0
    assert np.array_equal(wts, wts.T) and np.array_equal(wts, wts[::-1, ::-1])
    ramp = wts[tile // 2]
    if 2 * overlap < tile:
        assert ramp[tile // 2] == 1.0
        # neighbours offset by tile - overlap cross-fade to exactly 1 in the overlap band
        np.testing.assert_allclose(ramp[tile - overlap :] + ramp[:overlap], 1.0, rtol=1e-6)


def _blend(fn, shape, tile, overlap, out=None):
    c, h, w = shape
    blender = TiledBlender(shape, tile, overlap, out=out)
    for y0, x0 in tile_grid(h, w, tile, overlap):
        yy, xx = np.mgrid[y0 : y0 + tile, x0 : x0 + tile]
        blender.add(y0, x0, fn(yy, xx))  # full tiles; the blender crops what lies past the border
    return blender.result()


@pytest.mark.parametrize(("h", "w"), SIZES)
def test_blending_constant_and_consistent_maps(h: int, w: int) -> None:
    res = _blend(lambda yy, xx: np.full((2, *yy.shape), 0.7, np.float32), (2, h, w), 32, 8)
    assert res.shape == (2, h, w)
    np.testing.assert_allclose(res, 0.7, rtol=1e-6)

    def f(yy, xx):
        return np.stack([np.sin(yy / 7.0) + xx / 50.0, (yy * xx) % 13.0]).astype(np.float32)

    yy, xx = np.mgrid[0:h, 0:w]
    np.testing.assert_allclose(_blend(f, (2, h, w), 32, 8), f(yy, xx), rtol=1e-5, atol=1e-5)


def test_blender_crops_small_tiles_and_uses_zarr_output(tmp_path) -> None:
    h, w = 45, 70
    out = zarr.create_array(str(tmp_path / "acc.zarr"), shape=(1, h, w), chunks=(1, 16, 16), dtype="f4")
    yy, xx = np.mgrid[0:h, 0:w]
    target = (yy * 3 + xx).astype(np.float32)[None]
    blender = TiledBlender((1, h, w), 32, 8, out=out)
    for y0, x0 in tile_grid(h, w, 32, 8):
        blender.add(y0, x0, target[:, y0 : y0 + 32, x0 : x0 + 32])  # already cropped at the border
    res = blender.result()
    assert res is out
    np.testing.assert_allclose(res[...], target, rtol=1e-6)
    with pytest.raises(SIAError):
        blender.add(0, 0, np.zeros((2, 32, 32), np.float32))


def test_blender_uncovered_pixels_get_fill() -> None:
    blender = TiledBlender((1, 40, 40), 20, 0)
    blender.add(0, 0, np.ones((1, 20, 20), np.float32))
    res = blender.result(fill=-1.0)
    assert (res[0, :20, :20] == 1).all() and (res[0, 20:] == -1).all()


def test_iter_tiles_pads_with_white() -> None:
    img = np.random.default_rng(0).integers(0, 200, (50, 40, 3), dtype=np.uint8)
    tiles = list(iter_tiles(img, 32, 8))
    assert [(y, x) for y, x, _ in tiles] == tile_grid(50, 40, 32, 8)
    for y0, x0, crop in tiles:
        assert crop.shape == (32, 32, 3) and crop.dtype == np.uint8
        assert np.array_equal(crop, img[y0 : y0 + 32, x0 : x0 + 32])
    small = list(iter_tiles(img[:10, :20], 32, 8))
    assert len(small) == 1
    _, _, crop = small[0]
    assert np.array_equal(crop[:10, :20], img[:10, :20]) and (crop[10:] == 255).all()
    assert (crop[:, 20:] == 255).all()


@pytest.mark.parametrize(("h", "w", "batch"), [(70, 90, 3), (20, 25, 8), (96, 96, 1)])
def test_tiled_map_reassembles_per_pixel_outputs(h: int, w: int, batch: int) -> None:
    img = np.random.default_rng(1).integers(0, 256, (h, w, 3), dtype=np.uint8)
    calls = []

    def fn(x: np.ndarray) -> dict:
        assert x.dtype == np.uint8 and x.shape[1:] == (32, 32, 3) and len(x) <= batch
        f = x.astype(np.float32) / 255.0
        return {"rgb": f.transpose(0, 3, 1, 2), "grey": f.mean(axis=3, keepdims=True).transpose(0, 3, 1, 2)}

    maps = tiled_map(fn, img, 32, 8, batch_size=batch, progress=lambda done, total: calls.append((done, total)))
    expected = img.astype(np.float32).transpose(2, 0, 1) / 255.0
    assert maps["rgb"].shape == (3, h, w) and maps["grey"].shape == (1, h, w)
    np.testing.assert_allclose(maps["rgb"], expected, atol=1e-6)
    np.testing.assert_allclose(maps["grey"][0], expected.mean(axis=0), atol=1e-6)
    total = len(tile_grid(h, w, 32, 8))
    assert calls[-1] == (total, total) and len(calls) == -(-total // batch)


def test_tiled_map_rejects_wrong_output_shape() -> None:
    img = np.zeros((40, 40, 3), np.uint8)
    with pytest.raises(SIAError, match="tile size"):
        tiled_map(lambda x: {"cam": np.zeros((len(x), 2, 8, 8))}, img, 32, 8)
