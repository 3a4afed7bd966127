"""Reading images and masks, palette PNGs, listing, white background."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from sia_core.data.background import white_background_mask
from sia_core.data.images import (
    IMAGE_EXTENSIONS,
    image_size,
    list_images,
    palette_to_rgb,
    read_mask,
    read_rgb,
    write_palette_png,
)
from sia_core.errors import SIAError

PALETTE = [[0, 64, 128], [64, 128, 0], [243, 152, 0]]  # WSSS4LUAD: 3 classes, ignore 3 is white


def _rgb(h: int = 12, w: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# ------------------------------------------------------------------------------------------- read_rgb


@pytest.mark.parametrize("ext", [".png", ".tif", ".tiff", ".PNG"])
def test_read_rgb_lossless_round_trip(tmp_path: Path, ext: str) -> None:
    rgb = _rgb()
    path = tmp_path / f"img{ext}"
    if ext.lower().startswith(".tif"):
        tifffile.imwrite(path, rgb, photometric="rgb")
    else:
        Image.fromarray(rgb).save(path, format="PNG")
    out = read_rgb(path)
    assert out.dtype == np.uint8 and out.shape == (12, 16, 3)
    np.testing.assert_array_equal(out, rgb)


def test_read_jpeg(tmp_path: Path) -> None:
    rgb = np.full((16, 16, 3), (200, 100, 150), np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.jpg", quality=95)
    out = read_rgb(tmp_path / "a.jpg")
    assert out.shape == (16, 16, 3)
    assert np.abs(out.astype(int) - rgb).max() < 8


def test_grayscale_becomes_rgb(tmp_path: Path) -> None:
    gray = np.arange(12 * 16, dtype=np.uint8).reshape(12, 16)
    Image.fromarray(gray).save(tmp_path / "g.png")
    out = read_rgb(tmp_path / "g.png")
    assert out.shape == (12, 16, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], gray)


def test_rgba_composited_over_white(tmp_path: Path) -> None:
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 100
    rgba[:2, :, 3] = 255  # top half opaque red-ish, bottom half transparent
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    out = read_rgb(tmp_path / "a.png")
    assert out.shape == (4, 4, 3)
    np.testing.assert_array_equal(out[0, 0], [100, 0, 0])
    np.testing.assert_array_equal(out[3, 3], [255, 255, 255])


def test_palette_image_read_as_colours(tmp_path: Path) -> None:
    write_palette_png(tmp_path / "p.png", np.array([[0, 1], [2, 3]]), PALETTE)
    out = read_rgb(tmp_path / "p.png")
    assert out[0, 0].tolist() == PALETTE[0] and out[1, 0].tolist() == PALETTE[2]
    assert out[1, 1].tolist() == [255, 255, 255]


def test_16bit_png_scaled(tmp_path: Path) -> None:
    arr = np.array([[0, 65535], [257 * 100, 257 * 200]], dtype=np.uint16)
    Image.fromarray(arr).save(tmp_path / "d.png")
    out = read_rgb(tmp_path / "d.png")
    assert out[..., 0].tolist() == [[0, 255], [100, 200]]


def test_tiff_planar_uint16_and_ome(tmp_path: Path) -> None:
    rgb = _rgb(10, 14)
    planar16 = np.moveaxis(rgb, -1, 0).astype(np.uint16) * 257  # (3, H, W), full 16-bit range
    tifffile.imwrite(tmp_path / "planar.tif", planar16, photometric="rgb", planarconfig="separate")
    np.testing.assert_array_equal(read_rgb(tmp_path / "planar.tif"), rgb)
    tifffile.imwrite(tmp_path / "x.ome.tif", np.moveaxis(rgb, -1, 0), ome=True, metadata={"axes": "CYX"})
    np.testing.assert_array_equal(read_rgb(tmp_path / "x.ome.tif"), rgb)
    assert image_size(tmp_path / "x.ome.tif") == (10, 14)


def test_tiff_pyramid_reads_level_0(tmp_path: Path) -> None:
    rgb = _rgb(32, 32)
    with tifffile.TiffWriter(tmp_path / "pyr.ome.tif") as tif:
        tif.write(rgb, subifds=1, photometric="rgb", metadata={"axes": "YXS"})
        tif.write(rgb[::2, ::2], subfiletype=1, photometric="rgb")
    np.testing.assert_array_equal(read_rgb(tmp_path / "pyr.ome.tif"), rgb)


def _truncated_png(path: Path) -> Path:
    Image.fromarray(_rgb(64, 64)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda p: _truncated_png(p / "cut.png"), "re-export"),
        (lambda p: (p / "text.png").write_text("not an image") and p / "text.png", "re-export"),
        (lambda p: (p / "broken.tif").write_bytes(b"II*\x00garbage") and p / "broken.tif", "re-export"),
        (lambda p: p / "missing.png", "not found"),
    ],
)
def test_unreadable_images_raise_naming_the_file(tmp_path: Path, make, needle: str) -> None:
    path = make(tmp_path)
    with pytest.raises(SIAError) as info:
        read_rgb(path)
    assert path.name in str(info.value)
    assert needle in str(info.value)


def test_truncated_tiff(tmp_path: Path) -> None:
    path = tmp_path / "cut.tif"
    tifffile.imwrite(path, _rgb(64, 64), photometric="rgb")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(SIAError, match="cut.tif"):
        read_rgb(path)


def test_real_patch(shared_data: Path) -> None:
    path = next((shared_data / "wsss4luad" / "val" / "img").glob("*.png"))
    rgb = read_rgb(path)
    assert rgb.shape == (224, 224, 3) and rgb.dtype == np.uint8


# ------------------------------------------------------------------------------------------- masks


def test_palette_png_round_trip(tmp_path: Path) -> None:
    labels = np.array([[0, 1, 2], [3, 3, 0]], dtype=np.int64)
    path = write_palette_png(tmp_path / "m.png", labels, PALETTE)
    with Image.open(path) as img:
        assert img.mode == "P"
        np.testing.assert_array_equal(np.array(img), labels)
    out = read_mask(path, 3, 3, PALETTE)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, labels)
    assert not list(tmp_path.glob(".*"))


def test_grayscale_index_mask(tmp_path: Path) -> None:
    labels = np.array([[0, 4], [2, 1]], np.uint8)
    Image.fromarray(labels).save(tmp_path / "m.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png", 4, 4), labels)
    tifffile.imwrite(tmp_path / "m.tif", labels)
    np.testing.assert_array_equal(read_mask(tmp_path / "m.tif", 4, 4), labels)


def test_rgb_mask_mapped_through_palette(tmp_path: Path) -> None:
    labels = np.array([[0, 1, 2, 3], [2, 2, 1, 0]])
    Image.fromarray(palette_to_rgb(labels, PALETTE)).save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "rgb.png", 3, 3, PALETTE), labels)
    # A palette with an explicit ignore colour (LUAD style, ignore 4 = white here given as black).
    luad = [[205, 51, 51], [0, 255, 0], [65, 105, 225], [255, 165, 0], [0, 0, 0]]
    labels4 = np.array([[0, 1, 2], [3, 4, 4]])
    Image.fromarray(palette_to_rgb(labels4, luad)).save(tmp_path / "luad.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "luad.png", 4, 4, luad), labels4)


def test_rgb_mask_errors(tmp_path: Path) -> None:
    rgb = palette_to_rgb(np.array([[0, 1], [2, 3]]), PALETTE)
    rgb[0, 0] = (1, 2, 3)
    Image.fromarray(rgb).save(tmp_path / "odd_colours.png")
    with pytest.raises(SIAError) as info:
        read_mask(tmp_path / "odd_colours.png", 3, 3, PALETTE)
    assert "odd_colours.png" in str(info.value) and "(1, 2, 3)" in str(info.value)
    with pytest.raises(SIAError, match="odd_colours.png.*no palette"):
        read_mask(tmp_path / "odd_colours.png", 3, 3, None)


def test_gray_rgb_mask_falls_back_to_indices(tmp_path: Path) -> None:
    labels = np.array([[0, 1], [2, 3]], np.uint8)
    Image.fromarray(np.repeat(labels[..., None], 3, axis=2)).save(tmp_path / "g.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "g.png", 3, 3, PALETTE), labels)


def test_mask_values_out_of_range(tmp_path: Path) -> None:
    write_palette_png(tmp_path / "bad_mask.png", np.array([[0, 1], [7, 9]]), PALETTE)
    with pytest.raises(SIAError) as info:
        read_mask(tmp_path / "bad_mask.png", 3, 3, PALETTE)
    message = str(info.value)
    assert "bad_mask.png" in message and "7, 9" in message


def test_mask_unreadable(tmp_path: Path) -> None:
    path = _truncated_png(tmp_path / "cut_mask.png")
    with pytest.raises(SIAError, match="cut_mask.png"):
        read_mask(path, 3, 3)


def test_real_mask(shared_data: Path) -> None:
    path = next((shared_data / "wsss4luad" / "val" / "mask").glob("*.png"))
    mask = read_mask(path, 3, 3, PALETTE)
    assert mask.shape == (224, 224) and set(np.unique(mask).tolist()) <= {0, 1, 2, 3}


def test_palette_to_rgb() -> None:
    out = palette_to_rgb(np.array([[0, 2], [3, 200]]), PALETTE)
    assert out.dtype == np.uint8 and out.shape == (2, 2, 3)
    assert out[0, 1].tolist() == PALETTE[2]
    assert out[1, 0].tolist() == [255, 255, 255] and out[1, 1].tolist() == [255, 255, 255]


def test_write_palette_png_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(SIAError, match="2-D"):
        write_palette_png(tmp_path / "x.png", np.zeros((2, 2, 3)), PALETTE)
    with pytest.raises(SIAError, match="0..255"):
        write_palette_png(tmp_path / "x.png", np.array([[0, 300]]), PALETTE)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------- listing


def test_list_images(tmp_path: Path) -> None:
    for rel in [
        "b.png",
        "a.JPG",
        "sub/c.tiff",
        "sub/deep/d.jpeg",
        "notes.txt",
        ".hidden.png",
        ".cache/e.png",
    ]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    found = [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)]
    assert found == ["a.JPG", "b.png", "sub/c.tiff", "sub/deep/d.jpeg"]
    assert [p.name for p in list_images(tmp_path, recursive=False)] == ["a.JPG", "b.png"]
    assert list_images(tmp_path / "nope") == []
    assert set(IMAGE_EXTENSIONS) == {".png", ".jpg", ".jpeg", ".tif", ".tiff"}


# ------------------------------------------------------------------------------------------- background


def test_white_background_mask() -> None:
    rgb = np.full((40, 40, 3), (150, 80, 160), np.uint8)  # pink tissue, gray ~ 108
    rgb[:20, :20] = 250  # large glass area: 400 px
    rgb[30:35, 30:35] = 250  # small white speck: 25 px < 50, stays tissue
    rgb[0, 30] = (201, 201, 201)  # just above the threshold, but isolated
    mask = white_background_mask(rgb)
    assert mask.dtype == bool and mask.shape == (40, 40)
    assert mask[:20, :20].all()
    assert not mask[30:35, 30:35].any()
    assert mask.sum() == 400
    assert white_background_mask(rgb, min_size=1)[30:35, 30:35].all()
    assert white_background_mask(rgb, min_size=1)[0, 30]
    assert not white_background_mask(np.full((5, 5, 3), 200, np.uint8), min_size=1).any()  # > 200, not >=


def test_white_background_uses_4_connectivity() -> None:
    rgb = np.zeros((20, 20, 3), np.uint8)
    idx = np.arange(20)
    rgb[idx, idx] = 255  # a diagonal line: 20 pixels touching only at corners
    assert not white_background_mask(rgb, min_size=2).any()


def test_to_rgb_uint8_is_the_one_converter_for_files_and_layers() -> None:
    from sia_core.data.images import to_rgb_uint8

    gray16 = np.array([[0, 1000], [2000, 4000]], np.uint16)
    assert to_rgb_uint8(gray16).shape == (2, 2, 3)
    stretched = to_rgb_uint8([gray16, gray16[:1, :1]], "layer", contrast=(0, 4000))  # multiscale: level 0
    assert stretched[..., 0].tolist() == [[0, 64], [128, 255]] and (stretched[..., 0] == stretched[..., 2]).all()
    rgba = np.zeros((1, 1, 4), np.uint8)  # fully transparent: glass
    assert to_rgb_uint8(rgba).tolist() == [[[255, 255, 255]]]
    with pytest.raises(SIAError, match="layer"):
        to_rgb_uint8(np.zeros((2, 2, 2, 2)), "layer")
