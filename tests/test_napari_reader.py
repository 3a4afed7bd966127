"""The napari reader claims only what it can read and says what is wrong in one line: OME-Zarr stores with
labels (SIA's or any that follows the spec), GeoJSON FeatureCollections with classified polygons; and the
plugin's GeoJSON writer and the core's reader read each other's files."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import zarr

from napari_sia._classes import ClassSet
from napari_sia._reader import napari_get_reader, read_mask
from napari_sia._writer import write_mask
from sia_core.errors import SIAError
from sia_core.formats import read_labels, write_geojson, write_label_zarr
from sia_core.formats.geojson import MAX_PIXELS


def _mask() -> np.ndarray:
    lab = np.full((40, 50), 3, np.uint8)
    lab[5:20, 5:30] = 0
    lab[22:38, 10:45] = 1
    lab[8:12, 35:48] = 2
    return lab


def _geojson(path: Path, content: object) -> Path:
    path.write_text(json.dumps(content))
    return path


def _polygon(coords: list, name: str = "tumor") -> dict:
    return {
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": [coords]},
        "properties": {"classification": {"name": name}},
    }


def test_zarr_v3_group_with_multiscales_but_no_arrays_is_not_claimed(tmp_path: Path) -> None:
    root = zarr.open_group(str(tmp_path / "empty.zarr"), mode="w", zarr_format=3)
    root.attrs["ome"] = {"version": "0.5", "multiscales": [{"axes": [], "datasets": [{"path": "0"}]}]}
    labels = root.create_group("labels")
    labels.attrs["ome"] = {"labels": ["x"]}
    labels.create_group("x").attrs["ome"] = {"image-label": {}, "multiscales": [{"datasets": [{"path": "0"}]}]}
    assert napari_get_reader(str(tmp_path / "empty.zarr")) is None
    with pytest.raises(SIAError, match="names no existing arrays"):
        read_mask(tmp_path / "empty.zarr")


def test_image_store_without_labels_is_left_to_other_readers(tmp_path: Path) -> None:
    from ome_zarr.writer import write_image

    root = zarr.open_group(str(tmp_path / "image.zarr"), mode="w")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ome-zarr's own deprecation of its default Scaler
        write_image(np.zeros((1, 32, 32), np.uint8), root, axes="cyx")
    assert napari_get_reader(str(tmp_path / "image.zarr")) is None
    with pytest.raises(SIAError, match="holds no OME-Zarr labels"):
        read_mask(tmp_path / "image.zarr")


def test_labels_of_any_spec_store_are_read_not_its_image(tmp_path: Path) -> None:
    """ome-zarr-py's own writer (NGFF 0.5, zarr format 3): an intensity image at the root, labels under it."""
    from ome_zarr.writer import write_image, write_labels

    lab = _mask()
    root = zarr.open_group(str(tmp_path / "spec.zarr"), mode="w")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        write_image(np.full((1, *lab.shape), 77, np.uint8), root, axes="cyx")
        props = [{"label-value": i, "class": n} for i, n in enumerate(["tumor", "stroma", "normal"])]
        write_labels(lab, root, name="tissue", axes="yx", label_metadata={"properties": props})
    assert napari_get_reader(str(tmp_path / "spec.zarr")) is not None
    data, classes = read_mask(tmp_path / "spec.zarr")
    levels = data if isinstance(data, list) else [data]
    assert np.array_equal(np.asarray(levels[0][...]), lab) and classes.names == ["tumor", "stroma", "normal"]


def test_sia_store_is_claimed_and_read(tmp_path: Path) -> None:
    lab = _mask()
    path = write_label_zarr(tmp_path / "m.ome.zarr", lab, ["tumor", "stroma", "normal"], levels=2)
    reader = napari_get_reader(str(path))
    assert reader is not None
    data, attrs, kind = reader(str(path))[0]
    assert kind == "labels" and np.array_equal(np.asarray(data[0][...]), lab)
    assert attrs["metadata"]["sia"]["classes"] == ["tumor", "stroma", "normal"]


@pytest.mark.parametrize(
    "content",
    [[1, 2, 3], {"type": "Point", "coordinates": [1, 2]}, {"type": "FeatureCollection", "features": 7}, "text"],
)
def test_geojson_that_is_not_a_feature_collection_is_refused_in_one_line(tmp_path: Path, content: object) -> None:
    path = _geojson(tmp_path / "x.geojson", content)
    assert napari_get_reader(str(path)) is None
    with pytest.raises(SIAError) as err:
        read_mask(path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_geojson_without_polygons_is_not_claimed(tmp_path: Path) -> None:
    point = {"type": "Feature", "geometry": {"type": "Point", "coordinates": [1, 1]}, "properties": {}}
    assert (
        napari_get_reader(str(_geojson(tmp_path / "p.geojson", {"type": "FeatureCollection", "features": [point]})))
        is None
    )
    (tmp_path / "bad.geojson").write_text("{not json")
    assert napari_get_reader(str(tmp_path / "bad.geojson")) is None


def test_huge_coordinates_are_bounded_with_a_clear_error(tmp_path: Path) -> None:
    square = [[0, 0], [1e7, 0], [1e7, 1e7], [0, 1e7], [0, 0]]
    path = _geojson(tmp_path / "huge.geojson", {"type": "FeatureCollection", "features": [_polygon(square)]})
    assert napari_get_reader(str(path)) is not None  # a readable file: napari shows the error when reading
    with pytest.raises(SIAError, match=f"more than the {MAX_PIXELS / 1e6:.0f} Mpx"):
        read_mask(path)
    with pytest.raises(SIAError, match="downsample"):
        read_labels(path)


@pytest.mark.parametrize(
    ("coords", "match"),
    [
        ([[0, 0], [float("nan"), 0], [5, 5], [0, 0]], "not finite"),
        ([[0, 0], [-3, 0], [5, 5], [0, 0]], "negative coordinates"),
        ([[0, 0], [5], [5, 5]], "malformed Polygon"),
    ],
)
def test_nan_negative_and_malformed_coordinates_are_refused(tmp_path: Path, coords: list, match: str) -> None:
    (tmp_path / "c.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": [_polygon(coords)]}))
    with pytest.raises(SIAError, match=match):
        read_mask(tmp_path / "c.geojson")


def test_plugin_and_core_read_each_others_geojson(tmp_path: Path) -> None:
    lab = _mask()
    classes = ClassSet.from_preset("wsss4luad")  # ignore index 3 is the fill of _mask
    plugin_file = write_mask(tmp_path / "plugin.geojson", lab, classes)
    back, meta = read_labels(plugin_file)  # the core reads the plugin's file: size and classes recorded
    assert np.array_equal(back, lab) and meta["classes"] == classes.names and meta["ignore_index"] == 3
    core_file = write_geojson(tmp_path / "core.geojson", lab, classes.names, classes.palette, ignore_values=(3,))
    data, read_classes = read_mask(core_file)  # the plugin reads the core's file
    assert np.array_equal(data, lab) and read_classes.names == classes.names
    assert read_classes.ignore_index == 3 and read_classes.palette == classes.palette
