"""The files the widget writes beside the images, through sia_core: corrections, dataset.yaml, exports."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from sia_core.data.corrections import write_correction
from sia_core.data.images import list_images
from sia_core.data.layout import dataset_description, write_dataset_yaml
from sia_core.data.sidecars import export_path
from sia_core.errors import SIAError

PALETTE = [[0, 64, 128], [64, 128, 0], [243, 152, 0], [255, 255, 255]]


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "patch.png"
    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(path)
    return path


def test_correction_is_written_as_a_palette_png_beside_the_image(image):
    mask = np.zeros((40, 50), np.uint8)
    mask[:, 25:] = 3  # unlabelled
    target = write_correction(image, mask, 3, 3, PALETTE)
    assert target == image.parent / "sia_masks" / "patch.png"
    np.testing.assert_array_equal(np.array(Image.open(target)), mask)
    with pytest.raises(SIAError, match="exists"):
        write_correction(image, np.ones((40, 50), np.uint8), 3, 3, PALETTE)
    write_correction(image, np.ones((40, 50), np.uint8), 3, 3, PALETTE, overwrite=True)
    assert (np.array(Image.open(target)) == 1).all()


@pytest.mark.parametrize(
    ("mask", "message"),
    [
        (np.zeros((50, 40), np.uint8), "the mask is 40x50 but image patch.png is 50x40"),
        (np.full((40, 50), 7, np.uint8), r"holds values \[7\] that are no class"),
        (np.zeros((2, 40, 50), np.uint8), "one 2-D mask"),
    ],
)
def test_a_wrong_correction_is_refused_before_anything_is_written(image, mask, message):
    with pytest.raises(SIAError, match=message):
        write_correction(image, mask, 3, 3, PALETTE)
    assert not (image.parent / "sia_masks").exists()


def test_dataset_yaml_records_custom_classes_but_never_rewrites_a_users_file(tmp_path):
    desc = {"name": "custom", "classes": ["a", "b"], "ignore_index": 2, "palette": [[1, 2, 3], [4, 5, 6]]}
    assert write_dataset_yaml(tmp_path, desc) == tmp_path / "dataset.yaml"
    assert dataset_description(tmp_path)["classes"] == ["a", "b"]
    assert write_dataset_yaml(tmp_path, desc) is None  # unchanged: not rewritten
    renamed = {**desc, "classes": ["a", "c"]}
    assert write_dataset_yaml(tmp_path, renamed) is not None
    assert dataset_description(tmp_path)["classes"] == ["a", "c"]

    (tmp_path / "dataset.yaml").write_text(yaml.safe_dump({"classes": ["x", "y"]}))  # the user's own
    assert write_dataset_yaml(tmp_path, desc) is None
    assert dataset_description(tmp_path)["classes"] == ["x", "y"]


def test_exported_masks_are_outputs_not_images(image):
    target = export_path(image, ".tif")
    assert target == image.parent / "sia_exports" / "patch_mask.tif"
    target.parent.mkdir()
    Image.fromarray(np.zeros((40, 50), np.uint8)).save(target)
    assert list_images(image.parent) == [image]
