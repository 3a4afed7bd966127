"""Label/float map export: every format round-trips values, class names and palette; GeoJSON is exact."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image
from skimage.draw import polygon as draw_polygon
from skimage.filters import gaussian
from skimage.measure import label as cc_label

from sia_core.classes import default_palette
from sia_core.errors import SIAError
from sia_core.formats import (
    build_pyramid,
    create_label_zarr,
    geojson_to_labels,
    labels_to_geojson,
    ome_zarr,
    read_float_tiff,
    read_label_png,
    read_label_tiff,
    read_label_zarr,
    read_labels,
    tiff,
    write_float_tiff,
    write_geojson,
    write_label_png,
    write_label_tiff,
    write_label_zarr,
    write_labels,
)
from sia_core.formats.geojson import geojson_classes

CLASSES = ["tumour", "stroma", "necrosis", "lymphocytes"]
PALETTE = [[200, 0, 0], [0, 160, 0], [120, 60, 0], [0, 0, 220]]


def blobs(seed: int, shape: tuple[int, int] = (48, 64), n_classes: int = 4, sigma: float = 2.0) -> np.ndarray:
    """Blobby multi-class label map: smoothed noise cut at quantiles (holes, islands, border contacts)."""
    rng = np.random.default_rng(seed)
    field = gaussian(rng.random(shape), sigma)
    cuts = np.quantile(field, np.linspace(0, 1, n_classes + 1)[1:-1])
    return np.digitize(field, cuts).astype(np.uint8)


def tricky() -> np.ndarray:
    """Hand-made map with every topology that trips naive vectorisers."""
    lab = np.full((16, 18), 255, np.uint8)
    lab[1:9, 1:9] = 0  # square with a hole ...
    lab[3:7, 3:7] = 255
    lab[4:6, 4:6] = 1  # ... and an island in the hole
    lab[10, 10] = 1  # diagonal-only contacts: a checkerboard patch of one class
    lab[11, 11] = 1
    lab[12, 10] = 1
    lab[11, 9] = 1
    lab[0:3, 15:18] = 2  # touches two image borders
    lab[13:16, 0:4] = 2  # touches left and bottom borders
    # ring closed only through a corner: background pocket joined to the outside diagonally
    lab[9:12, 13:16] = 3
    lab[10, 14] = 255
    lab[11, 15] = 255
    # a hole that touches its shell at a single corner
    lab[13:16, 6:10] = 0
    lab[14, 7] = 255
    lab[15, 8] = 255
    return lab


def _check_geojson(lab: np.ndarray, classes: list[str], ignore: tuple[int, ...] = (255,)) -> dict:
    gj = labels_to_geojson(lab, classes, PALETTE[: len(classes)], ignore_values=ignore)
    back = geojson_to_labels(gj, lab.shape, classes, fill=255)
    expected = lab.copy()
    for v in ignore:
        expected[lab == v] = 255
    assert np.array_equal(back, expected)  # IoU exactly 1 for every class
    h, w = lab.shape
    for value, name in enumerate(classes):
        regions = cc_label(lab == value, connectivity=1)
        feats = [f for f in gj["features"] if f["properties"]["classification"]["name"] == name]
        assert len(feats) == (0 if value in ignore else regions.max())
        for f in feats:
            assert f["properties"]["objectType"] == "annotation"
            assert f["properties"]["classification"]["color"] == PALETTE[value]
            assert f["geometry"]["type"] == "Polygon"
            for k, ring in enumerate(f["geometry"]["coordinates"]):
                pts = np.asarray(ring)
                assert pts.dtype.kind == "i" and (pts >= 0).all() and (pts[:, 0] <= w).all()
                assert (pts[:, 1] <= h).all()
                assert ring[0] == ring[-1] and len(ring) >= 5
                assert len({tuple(p) for p in ring[:-1]}) == len(ring) - 1  # simple: no repeated corner
                x, y = pts[:-1, 0], pts[:-1, 1]
                area2 = np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y)
                assert (area2 > 0) == (k == 0)  # RFC 7946: shell counter-clockwise, holes clockwise
                # edges are axis-aligned pixel edges
                assert ((np.diff(pts[:, 0]) == 0) | (np.diff(pts[:, 1]) == 0)).all()
            # each feature alone is exactly one 4-connected region
            alone = geojson_to_labels({"type": "FeatureCollection", "features": [f]}, lab.shape, classes)
            ids = np.unique(regions[alone == value])
            assert len(ids) == 1 and ids[0] > 0
            assert np.array_equal(alone == value, regions == ids[0])
    return gj


# ------------------------------------------------------------------------------------------- GeoJSON


def test_geojson_single_pixel_is_its_square() -> None:
    lab = np.full((3, 4), 255, np.uint8)
    lab[0, 0] = 0
    gj = labels_to_geojson(lab, ["a"])
    assert gj["type"] == "FeatureCollection"
    assert gj["features"][0]["geometry"]["coordinates"] == [[[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]]


def test_geojson_tricky_topologies_round_trip() -> None:
    gj = _check_geojson(tricky(), CLASSES)
    by_class = {}
    for f in gj["features"]:
        by_class.setdefault(f["properties"]["classification"]["name"], []).append(f["geometry"]["coordinates"])
    # square with hole: 1 shell + 1 hole; the island in the hole is its own polygon of another class
    assert sorted(len(p) for p in by_class["tumour"]) == [2, 2]
    assert len(by_class["stroma"]) == 1 + 4  # island + four diagonal-only pixels, each separate
    # pocket joined to the outside only through a corner: shell plus a hole touching it at one point
    (pocket,) = by_class["lymphocytes"]
    assert len(pocket) == 2
    shared = {tuple(p) for p in pocket[0]} & {tuple(p) for p in pocket[1]}
    assert len(shared) == 1


@pytest.mark.parametrize("seed", range(6))
def test_geojson_random_blobs_round_trip(seed: int) -> None:
    lab = blobs(seed, sigma=1.0 + seed % 3)
    lab[blobs(seed + 100, n_classes=6) == 0] = 255  # unlabelled patches too
    _check_geojson(lab, CLASSES)


def test_geojson_noise_round_trip() -> None:
    # salt-and-pepper is the worst case: every corner can be a diagonal contact
    rng = np.random.default_rng(7)
    lab = rng.integers(0, 3, (40, 37)).astype(np.uint8)
    _check_geojson(lab, CLASSES[:3], ignore=())


def test_geojson_offset_downsample() -> None:
    lab = blobs(1, (20, 30), n_classes=2)
    gj = labels_to_geojson(lab, ["a", "b"], offset=(100, 50), downsample=4)
    pts = np.concatenate([np.asarray(r) for f in gj["features"] for r in f["geometry"]["coordinates"]])
    assert pts[:, 0].min() == 100 and pts[:, 0].max() == 100 + 4 * 30
    assert pts[:, 1].min() == 50 and pts[:, 1].max() == 50 + 4 * 20
    back = geojson_to_labels(gj, lab.shape, ["a", "b"], offset=(100, 50), downsample=4)
    assert np.array_equal(back, lab)
    # full-resolution rasterisation of the same annotations is the nearest-upsampled map
    full = geojson_to_labels(gj, (50 + 80, 100 + 120), ["a", "b"])
    assert np.array_equal(full[50:, 100:], np.kron(lab, np.ones((4, 4), np.uint8)))
    assert (full[:50] == 255).all() and (full[:, :100] == 255).all()


def test_geojson_rasteriser_matches_skimage_on_float_polygons() -> None:
    rng = np.random.default_rng(3)
    for _ in range(5):
        angles = np.sort(rng.uniform(0, 2 * np.pi, 12))
        radius = rng.uniform(5, 14, 12)
        xs, ys = 20 + radius * np.cos(angles), 18 + radius * np.sin(angles)
        feature = {
            "type": "Feature",
            "geometry": {"type": "Polygon", "coordinates": [np.c_[xs, ys].tolist()]},
            "properties": {"classification": {"name": "a"}},
        }
        ours = geojson_to_labels(feature, (36, 40), ["a"]) == 0
        ref = np.zeros((36, 40), bool)
        ref[draw_polygon(ys - 0.5, xs - 0.5, (36, 40))] = True  # skimage puts pixel centres at integers
        assert np.array_equal(ours, ref)


def test_geojson_multipolygon_hole_orientation_and_unknown_class() -> None:
    square = [[0, 0], [6, 0], [6, 6], [0, 6], [0, 0]]
    hole_ccw = [[2, 2], [4, 2], [4, 4], [2, 4], [2, 2]]  # wrong orientation on purpose: still a hole
    far = [[8, 8], [10, 8], [10, 10], [8, 10], [8, 8]]
    gj = [
        {
            "type": "Feature",
            "geometry": {"type": "MultiPolygon", "coordinates": [[square, hole_ccw], [far]]},
            "properties": {"classification": {"name": "b", "colorRGB": -16711936}},
        },
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [1, 1]}, "properties": {}},
        {
            "type": "Feature",
            "geometry": {"type": "Polygon", "coordinates": [far]},
            "properties": {"classification": {"name": "Other"}},
        },
    ]
    with pytest.raises(SIAError, match="Other"):
        geojson_to_labels(gj, (12, 12), ["a", "b"])
    lab = geojson_to_labels(gj, (12, 12), ["a", "b"], unknown="ignore", fill=0)
    expected = np.zeros((12, 12), np.uint8)
    expected[0:6, 0:6] = 1
    expected[2:4, 2:4] = 0
    expected[8:10, 8:10] = 1
    assert np.array_equal(lab, expected)
    assert geojson_classes(gj) == (["b", "Other"], [[0, 255, 0], None], None)


def test_geojson_unnamed_value_refused() -> None:
    with pytest.raises(SIAError, match="no class name"):
        labels_to_geojson(np.array([[0, 5]], np.uint8), ["a"])


def test_write_geojson_file_and_read_labels(tmp_path: Path) -> None:
    lab = tricky()
    path = write_geojson(tmp_path / "x.geojson", lab, CLASSES, PALETTE)
    data = json.loads(path.read_text())
    assert data["type"] == "FeatureCollection" and data["features"]
    assert data["sia"]["shape"] == list(lab.shape) and data["sia"]["classes"] == CLASSES
    back, meta = read_labels(path, shape=lab.shape, classes=CLASSES)
    assert np.array_equal(back, lab)
    assert meta["classes"] == CLASSES and meta["palette"] == PALETTE
    # the file records the image size and the classes: no shape needed, even for a label-free border
    lab[-1, :] = 255
    back, meta = read_labels(write_geojson(tmp_path / "y.geojson", lab, CLASSES, PALETTE))
    assert np.array_equal(back, lab) and meta["classes"] == CLASSES


# ------------------------------------------------------------------------------------------- TIFF / PNG


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_label_tiff_round_trip(tmp_path: Path, dtype: type) -> None:
    lab = blobs(2).astype(dtype)
    if dtype == np.uint16:
        lab[0, 0] = 300
    path = write_label_tiff(tmp_path / "l.tif", lab, CLASSES, PALETTE)
    back, meta = read_label_tiff(path)
    assert back.dtype == dtype and np.array_equal(back, lab)
    assert meta["classes"] == CLASSES and meta["palette"] == PALETTE
    with tifffile.TiffFile(path) as tif:
        assert tif.pages[0].compression == tifffile.COMPRESSION.ADOBE_DEFLATE
        assert not tif.pages[0].is_tiled and not tif.is_bigtiff


def test_label_tiff_large_is_tiled_and_bigtiff_when_needed(tmp_path: Path, monkeypatch) -> None:
    lab = np.zeros((2048, 40), np.uint8)
    lab[100:300, 5:9] = 3
    monkeypatch.setattr(tiff, "_BIGTIFF_BYTES", 1000)  # pretend the map is past 4 GB
    path = write_label_tiff(tmp_path / "big.tiff", lab, CLASSES)
    with tifffile.TiffFile(path) as tif:
        assert tif.pages[0].is_tiled and tif.is_bigtiff
    back, meta = read_label_tiff(path)
    assert np.array_equal(back, lab) and meta["classes"] == CLASSES
    assert meta["palette"] == default_palette(4)


def test_read_foreign_label_tiff(tmp_path: Path) -> None:
    lab = np.arange(12, dtype=np.int32).reshape(3, 4)
    tifffile.imwrite(tmp_path / "f.tif", lab)
    back, meta = read_label_tiff(tmp_path / "f.tif")
    assert back.dtype == np.uint8 and np.array_equal(back, lab)
    assert meta["classes"] is None and meta["palette"] is None


def test_float_tiff_round_trip(tmp_path: Path) -> None:
    maps = np.random.default_rng(0).random((3, 20, 30)).astype(np.float32)
    names = ["cam_tumour", "cam_stroma", "inhibition"]
    write_float_tiff(tmp_path / "m.tif", maps, names)
    back, got = read_float_tiff(tmp_path / "m.tif")
    assert back.dtype == np.float32 and np.array_equal(back, maps) and got == names
    write_float_tiff(tmp_path / "one.tif", maps[0], ["rsm"])
    back, got = read_float_tiff(tmp_path / "one.tif")
    assert back.shape == (1, 20, 30) and got == ["rsm"]
    with pytest.raises(SIAError, match="names"):
        write_float_tiff(tmp_path / "bad.tif", maps, ["a"])


def test_label_png_round_trip(tmp_path: Path) -> None:
    lab = blobs(4)
    lab[0, :5] = 255
    path = write_label_png(tmp_path / "l.png", lab, PALETTE, classes=CLASSES)
    with Image.open(path) as img:
        assert img.mode == "P"
        rgb = np.array(img.convert("RGB"))
    assert np.array_equal(rgb[lab == 1][0], PALETTE[1])
    assert (rgb[0, :5] == 255).all()  # beyond the palette: white, the colour of glass
    back, meta = read_label_png(path)
    assert np.array_equal(back, lab)
    assert meta["classes"] == CLASSES and meta["palette"] == PALETTE
    with pytest.raises(SIAError, match="tif"):
        write_label_png(tmp_path / "w.png", lab.astype(np.uint16) + 300, PALETTE)


# ------------------------------------------------------------------------------------------- OME-Zarr


def test_label_zarr_round_trip_and_metadata(tmp_path: Path) -> None:
    lab = blobs(5, (130, 75))
    lab[:3, :3] = 255
    path = write_label_zarr(tmp_path / "l.ome.zarr", lab, CLASSES, PALETTE, chunks=32, levels=3)
    levels, meta = read_label_zarr(path)
    assert len(levels) == 3
    for k, level in enumerate(levels):
        assert np.array_equal(level[...], lab[:: 2**k, :: 2**k])
        assert level.chunks == (min(32, level.shape[0]), min(32, level.shape[1]))
    assert meta["classes"] == CLASSES and meta["palette"] == PALETTE and meta["complete"]
    assert meta["scales"] == [[1.0, 1.0], [2.0, 2.0], [4.0, 4.0]]

    assert json.loads((path / "labels" / ".zattrs").read_text()) == {"labels": ["sia"]}
    attrs = json.loads((path / "labels" / "sia" / ".zattrs").read_text())
    ms = attrs["multiscales"][0]
    assert ms["version"] == "0.4"
    assert [a["name"] for a in ms["axes"]] == ["y", "x"]
    assert [d["path"] for d in ms["datasets"]] == ["0", "1", "2"]
    il = attrs["image-label"]
    assert {"label-value": 1, "rgba": PALETTE[1] + [255]} in il["colors"]
    assert {"label-value": 255, "rgba": [0, 0, 0, 0]} in il["colors"]
    assert {c["label-value"] for c in il["colors"]} == {p["label-value"] for p in il["properties"]}
    assert {"label-value": 2, "class": "necrosis"} in il["properties"]
    zarray = json.loads((path / "labels" / "sia" / "0" / ".zarray").read_text())
    assert zarray["zarr_format"] == 2 and zarray["dimension_separator"] == "/"
    assert (path / "labels" / "sia" / "0" / "0" / "0").is_file()  # nested chunk keys

    back, meta2 = read_labels(path)
    assert np.array_equal(back, lab) and meta2["classes"] == CLASSES
    levels_b, _ = read_label_zarr(path / "labels" / "sia")  # the label group itself opens too
    assert np.array_equal(levels_b[1][...], lab[::2, ::2])


def test_label_zarr_default_levels_until_1024(tmp_path: Path) -> None:
    lab = np.zeros((2100, 9), np.uint8)
    lab[::7] = 2
    levels, _ = read_label_zarr(write_label_zarr(tmp_path / "l.zarr", lab, CLASSES))
    assert [lv.shape for lv in levels] == [(2100, 9), (1050, 5), (525, 3)]
    assert np.array_equal(levels[2][...], lab[::4, ::4])


def test_create_label_zarr_chunkwise_then_build_pyramid(tmp_path: Path) -> None:
    lab = blobs(6, (100, 70))
    path = tmp_path / "slide.ome.zarr"
    level0 = create_label_zarr(path, lab.shape, CLASSES, PALETTE, chunks=16, levels=4)
    assert (level0[...] == 255).all()
    assert read_label_zarr(path)[1]["complete"] is False
    for y in range(0, 100, 16):  # a whole-slide writer fills chunk by chunk, leaving some empty
        for x in range(0, 70, 16):
            if (y, x) != (32, 32):
                level0[y : y + 16, x : x + 16] = lab[y : y + 16, x : x + 16]
    build_pyramid(path)
    expected = lab.copy()
    expected[32:48, 32:48] = 255
    levels, meta = read_label_zarr(path)
    assert meta["complete"] and meta["fill"] == 255
    for k, level in enumerate(levels):
        assert np.array_equal(level[...], expected[:: 2**k, :: 2**k])
    with pytest.raises(SIAError, match="overwrite"):
        create_label_zarr(path, lab.shape, CLASSES)


# ------------------------------------------------------------------------------------------- safety


@pytest.mark.parametrize("name", ["x.tif", "x.png", "x.ome.zarr", "x.geojson"])
def test_write_labels_dispatch_and_refuses_overwrite(tmp_path: Path, name: str) -> None:
    lab = tricky()
    path = tmp_path / name
    write_labels(path, lab, CLASSES, PALETTE)
    back, meta = read_labels(path, shape=lab.shape, classes=CLASSES)
    assert np.array_equal(back, lab)
    assert meta["classes"] == CLASSES and meta["palette"] == PALETTE
    with pytest.raises(SIAError, match="overwrite") as err:
        write_labels(path, np.zeros_like(lab), CLASSES, PALETTE)
    assert str(path) in str(err.value)
    assert np.array_equal(read_labels(path, shape=lab.shape, classes=CLASSES)[0], lab)  # untouched
    write_labels(path, np.zeros_like(lab), CLASSES, PALETTE, overwrite=True)
    assert (read_labels(path, shape=lab.shape, classes=CLASSES)[0] == 0).all()
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # no temporary left behind


def test_write_labels_unknown_extension(tmp_path: Path) -> None:
    with pytest.raises(SIAError, match="extension"):
        write_labels(tmp_path / "x.bmp", tricky(), CLASSES)


def test_failing_tiff_writer_leaves_no_file(tmp_path: Path, monkeypatch) -> None:
    def broken(path, *args, **kwargs):
        Path(path).write_bytes(b"II*\x00half")
        raise OSError("disk full")

    monkeypatch.setattr(tifffile, "imwrite", broken)
    with pytest.raises(OSError, match="disk full"):
        write_label_tiff(tmp_path / "l.tif", tricky(), CLASSES)
    assert list(tmp_path.iterdir()) == []


def test_failing_zarr_writer_keeps_old_store_and_no_temp(tmp_path: Path, monkeypatch) -> None:
    lab = tricky()
    path = write_label_zarr(tmp_path / "l.zarr", lab, CLASSES, chunks=8)

    def broken(*args, **kwargs):
        raise RuntimeError("killed mid-write")

    monkeypatch.setattr(ome_zarr, "build_pyramid", broken)  # fails after the arrays exist in the temp dir
    with pytest.raises(RuntimeError, match="mid-write"):
        write_label_zarr(path, np.zeros_like(lab), CLASSES, overwrite=True)
    with pytest.raises(RuntimeError):
        write_label_zarr(tmp_path / "new.zarr", lab, CLASSES)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["l.zarr"]
    assert np.array_equal(read_labels(path)[0], lab)


def test_bad_labels_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SIAError, match="2-D"):
        write_label_tiff(tmp_path / "a.tif", np.zeros((2, 3, 4), np.uint8))
    with pytest.raises(SIAError, match="integer"):
        write_label_tiff(tmp_path / "a.tif", np.zeros((3, 4), np.float32))
    with pytest.raises(SIAError, match="0..65535"):
        write_label_tiff(tmp_path / "a.tif", -np.ones((3, 4), np.int32))
    assert list(tmp_path.iterdir()) == []
