"""Every OME-Zarr store SIA writes opens at its root in the outside readers: ome-zarr-models validates it,
ome-zarr-py's Reader finds the image and the labels, napari-ome-zarr returns an image and a labels layer.
And the tests that need ../shared/data skip, or fail when CI requires them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import REQUIRE_SHARED_DATA, require_shared_data

from sia_core.formats import create_label_zarr, read_label_zarr, write_label_zarr
from sia_core.formats.ome_zarr import build_pyramid

CLASSES = ["tumour", "stroma", "necrosis"]
PALETTE = [[200, 0, 0], [0, 160, 0], [120, 60, 0]]


def _labels(shape: tuple[int, int] = (300, 200)) -> np.ndarray:
    lab = np.zeros(shape, np.uint8)
    lab[:, shape[1] // 3 :] = 1
    lab[shape[0] // 2 :, : shape[1] // 2] = 2
    lab[:10, :10] = 255
    return lab


def assert_opens_at_root(found: dict, label_shape: tuple[int, int], n_levels: int) -> None:
    assert type(found["model"]).__name__ == "Image" and found["labels"] == ["sia"]
    specs = [specs for specs, _ in found["nodes"]]
    assert "Multiscales" in specs[0], "ome-zarr's Reader must find an image at the root"
    label_nodes = [shapes for specs, shapes in found["nodes"] if "Label" in specs]
    assert len(label_nodes) == 1 and label_nodes[0][0] == label_shape and len(label_nodes[0]) == n_levels
    kinds = [kind for kind, _, _ in found["layers"]]
    assert kinds == ["image", "labels"], f"napari-ome-zarr returned {kinds}"
    assert found["layers"][1][1][0] == label_shape


def test_write_label_zarr_opens_at_the_root_in_every_reader(tmp_path: Path, ngff_check) -> None:
    lab = _labels()
    path = write_label_zarr(tmp_path / "m.ome.zarr", lab, CLASSES, PALETTE, chunks=64, levels=3, pixel_size=0.5)
    assert_opens_at_root(ngff_check(path), lab.shape, 3)
    # the root image is the overview: the lowest level in class colours, at that level's scale
    root = json.loads((path / ".zattrs").read_text())["multiscales"][0]
    assert root["datasets"][0]["coordinateTransformations"][0]["scale"] == [1.0, 2.0, 2.0]
    import zarr

    overview = np.asarray(zarr.open_group(str(path), mode="r")["0"])
    assert overview.shape == (3, 75, 50)
    assert overview[:, 74, 0].tolist() == PALETTE[2] and overview[:, 0, 0].tolist() == [255, 255, 255]
    levels, meta = read_label_zarr(path)
    assert np.array_equal(levels[0][...], lab) and meta["classes"] == CLASSES and meta["fill"] == 255


def test_chunkwise_store_is_valid_before_and_after_its_pyramid(tmp_path: Path, ngff_check) -> None:
    path = tmp_path / "c.ome.zarr"
    level0 = create_label_zarr(path, (130, 90), CLASSES, PALETTE, chunks=32, levels=2)
    assert_opens_at_root(ngff_check(path), (130, 90), 2)  # an unfinished store is already spec-valid
    level0[...] = _labels((130, 90))
    build_pyramid(path)
    assert_opens_at_root(ngff_check(path), (130, 90), 2)


def test_uint16_labels_and_no_pixel_size(tmp_path: Path, ngff_check) -> None:
    lab = _labels().astype(np.uint16)
    lab[5, 5] = 300
    names = [f"c{i}" for i in range(301)]
    path = write_label_zarr(tmp_path / "u.zarr", lab, names, levels=1)
    assert_opens_at_root(ngff_check(path), lab.shape, 1)
    assert read_label_zarr(path)[1]["fill"] == 65535


def test_shared_data_helper_skips_or_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "shared" / "data"
    monkeypatch.delenv(REQUIRE_SHARED_DATA, raising=False)
    with pytest.raises(pytest.skip.Exception, match="real H&E data not found"):
        require_shared_data(missing)
    monkeypatch.setenv(REQUIRE_SHARED_DATA, "1")
    with pytest.raises(pytest.fail.Exception, match=f"{REQUIRE_SHARED_DATA} is set"):
        require_shared_data(missing)
    missing.mkdir(parents=True)
    assert require_shared_data(missing) == missing
