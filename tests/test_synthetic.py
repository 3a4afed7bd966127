"""The synthetic H&E-like generator: determinism, classes, layout, alveoli, difficulty."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from sia_core.data.background import white_background_mask
from sia_core.data.labels import parse_label_vector
from sia_core.data.layout import check_eval_pair, dataset_description, find_split, find_train_items
from sia_core.data.synthetic import (
    _alveoli,
    image_labels,
    make_synthetic_dataset,
    make_synthetic_region,
    sample_tiles,
)
from sia_core.errors import SIAError


@pytest.fixture(scope="module")
def regions() -> list[tuple[np.ndarray, np.ndarray]]:
    return [make_synthetic_region(128, np.random.default_rng([5, i])) for i in range(24)]


def test_region_shapes_and_determinism() -> None:
    rgb, mask = make_synthetic_region((96, 80), np.random.default_rng(1))
    assert rgb.shape == (96, 80, 3) and rgb.dtype == np.uint8
    assert mask.shape == (96, 80) and mask.dtype == np.uint8
    rgb2, mask2 = make_synthetic_region((96, 80), np.random.default_rng(1))
    np.testing.assert_array_equal(rgb, rgb2)
    np.testing.assert_array_equal(mask, mask2)
    rgb3, _ = make_synthetic_region((96, 80), np.random.default_rng(2))
    assert not np.array_equal(rgb, rgb3)


def test_every_class_and_glass_appear(regions: list[tuple[np.ndarray, np.ndarray]]) -> None:
    seen = np.zeros(4, int)
    for _, mask in regions:
        assert set(np.unique(mask).tolist()) <= {0, 1, 2, 3}
        seen += np.bincount(mask.ravel(), minlength=4) > 0
    assert (seen > 0).all()
    mixed = sum(image_labels(m, 3).sum() >= 2 for _, m in regions)
    assert 0.3 * len(regions) <= mixed < len(regions)  # mostly mixtures, some single-class patches


def test_four_classes_and_bad_class_count() -> None:
    masks = [make_synthetic_region(96, np.random.default_rng([9, i]), classes=4)[1] for i in range(12)]
    assert set(np.unique(np.stack(masks)).tolist()) == {0, 1, 2, 3, 4}
    with pytest.raises(ValueError):
        make_synthetic_region(64, np.random.default_rng(0), classes=5)


def test_glass_is_white_background(regions: list[tuple[np.ndarray, np.ndarray]]) -> None:
    glass = tissue = flagged_glass = flagged_tissue = 0
    for rgb, mask in regions:
        bg = white_background_mask(rgb)
        glass += (mask == 3).sum()
        tissue += (mask < 3).sum()
        flagged_glass += (bg & (mask == 3)).sum()
        flagged_tissue += (bg & (mask < 3)).sum()
    assert glass > 0
    assert flagged_glass / glass > 0.9
    assert flagged_tissue / tissue < 0.02


def test_colour_helps_but_does_not_separate_classes(regions: list[tuple[np.ndarray, np.ndarray]]) -> None:
    # A nearest-mean classifier on pixel colour, fitted and scored on the same pixels: colour carries the
    # class (tumour basophilic, stroma eosinophilic, septa pale), but per-patch stain jitter and the nuclei keep
    # it far from perfect, so a model must learn texture too.
    pixels = np.concatenate([rgb[mask < 3] for rgb, mask in regions]).astype(np.float32)
    labels = np.concatenate([mask[mask < 3] for _, mask in regions])
    centres = np.stack([pixels[labels == c].mean(axis=0) for c in range(3)])
    pred = np.argmin(((pixels[:, None, :] - centres[None]) ** 2).sum(-1), axis=1)
    assert 0.6 < (pred == labels).mean() < 0.9


def test_normal_lung_is_septa_around_air_spaces() -> None:
    mask = np.full((128, 128), 2, np.uint8)
    _alveoli(mask, np.random.default_rng(0), glass=3)
    septa = mask == 2
    assert set(np.unique(mask).tolist()) == {2, 3}
    assert 0.2 < septa.mean() < 0.7  # air spaces (glass, ignored) take most of the region
    components, n = ndimage.label(septa)
    assert np.bincount(components.ravel())[1:].max() > 0.5 * septa.sum()  # the septa form one network
    glass_regions, n_spaces = ndimage.label(~septa)
    assert n_spaces >= 5  # many separate air spaces, not one hole


def test_dataset_layout_and_determinism(tmp_path: Path) -> None:
    start = time.perf_counter()
    a = make_synthetic_dataset(tmp_path / "a", n_train=8, n_val=3, size=96, seed=4, n_test=2)
    elapsed = time.perf_counter() - start
    b = make_synthetic_dataset(tmp_path / "b", n_train=8, n_val=3, size=96, seed=4, n_test=2)
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert files_a == files_b and len(files_a) == 8 + 2 * 3 + 2 * 2 + 1
    for rel in files_a:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    assert elapsed < 5.0  # vectorised: ~20 ms a patch; a per-pixel loop would take seconds each

    desc = dataset_description(a)
    assert desc["classes"] == ["tumor", "stroma", "normal"] and desc["ignore_index"] == 3
    assert desc["palette"][3] == [255, 255, 255] and desc["white_background"] is True
    items = find_train_items(a, 3, desc["classes"])
    assert len(items) == 8
    val = find_split(a, "val")
    assert len(val) == 3 and len(find_split(a, "test")) == 2
    for pair in val:
        rgb, mask = check_eval_pair(pair.image, pair.mask, 3, 3, desc["palette"])
        assert rgb.shape == (96, 96, 3) and mask.max() <= 3


def test_train_names_match_the_two_percent_rule() -> None:
    rgb, mask = make_synthetic_region(64, np.random.default_rng(3))
    counts = np.bincount(mask.ravel(), minlength=4)[:3]
    assert image_labels(mask, 3).tolist() == (counts >= 0.02 * mask.size).astype(int).tolist()


def test_dataset_train_labels_from_masks(tmp_path: Path) -> None:
    root = make_synthetic_dataset(tmp_path / "ds", n_train=4, n_val=0, size=64, seed=1)
    for path in sorted((root / "train").glob("*.png")):
        index = int(path.name.split("_")[1].split("-")[0])
        _, mask = make_synthetic_region(64, np.random.default_rng([1, 0, index]))
        if image_labels(mask, 3).any():  # otherwise the generator drew again
            assert parse_label_vector(path, 3).tolist() == image_labels(mask, 3).tolist()


def test_refuses_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "old.png").write_bytes(b"")
    with pytest.raises(SIAError, match="not empty"):
        make_synthetic_dataset(tmp_path, n_train=1, n_val=0, size=32)


def test_sample_tiles() -> None:
    tiles = sample_tiles(n=2, size=160, seed=0)
    assert len(tiles) == 2
    for rgb, mask in tiles:
        assert rgb.shape == (160, 160, 3) and mask.shape == (160, 160)
        assert image_labels(mask, 3).sum() >= 2
    again = sample_tiles(n=2, size=160, seed=0)
    np.testing.assert_array_equal(tiles[1][0], again[1][0])
