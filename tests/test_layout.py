"""Dataset folder discovery (WSSS-Tissue layout), dataset.yaml, presets, labels CSV precedence."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sia_core.config import DataConfig
from sia_core.data.images import write_palette_png
from sia_core.data.labels import LABELS_CSV, write_label_csv
from sia_core.data.layout import (
    DATASET_PRESETS,
    EvalItem,
    TrainItem,
    apply_to_data_config,
    check_eval_pair,
    dataset_description,
    find_split,
    find_train_items,
    has_split,
)
from sia_core.errors import SIAError

PALETTE = [[0, 64, 128], [64, 128, 0], [243, 152, 0]]


def _png(path: Path, size: tuple[int, int] = (8, 8)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*size, 3), 128, np.uint8)).save(path)
    return path


def _mask(path: Path, size: tuple[int, int] = (8, 8), value: int = 1) -> Path:
    return write_palette_png(path, np.full(size, value, np.uint8), PALETTE)


# ------------------------------------------------------------------------------------------- real data


def test_real_wsss4luad(shared_data: Path) -> None:
    root = shared_data / "wsss4luad"
    desc = dataset_description(root)
    assert desc["classes"] == ["tumor", "stroma", "normal"]
    assert desc["ignore_index"] == 3
    assert desc["palette"][:3] == PALETTE
    assert desc["white_background"] is True
    items = find_train_items(root, 3, desc["classes"])
    assert len(items) == 295
    assert all(isinstance(i, TrainItem) and i.labels.shape == (3,) and i.labels.any() for i in items)
    assert items == sorted(items, key=lambda i: i.path.as_posix())
    pairs = find_split(root, "val")
    assert len(pairs) == 76
    assert all(isinstance(p, EvalItem) and p.image.stem == p.mask.stem for p in pairs)
    assert has_split(root, "val") and has_split(root, "valid") and not has_split(root, "test")
    rgb, mask = check_eval_pair(pairs[0].image, pairs[0].mask, 3, 3, desc["palette"])
    assert rgb.shape == (224, 224, 3) and mask.shape == (224, 224)


# ------------------------------------------------------------------------------------------- tmp layouts


def _tpro_layout(root: Path) -> Path:
    """train/img/ (with a subfolder) + valid/ + test/, like TPRO."""
    _png(root / "train" / "img" / "a-[1 0 0].png")
    _png(root / "train" / "img" / "sub" / "b-[0, 1, 1].jpg")
    _png(root / "train" / "img" / "c[110].tif")
    for split in ("valid", "test"):
        for name in ("x", "y"):
            _png(root / split / "img" / f"{name}.jpg")
            _mask(root / split / "mask" / f"{name}.png")
    return root


def test_tpro_layout(tmp_path: Path) -> None:
    root = _tpro_layout(tmp_path / "ds")
    items = find_train_items(root, 3)
    assert [(i.path.name, i.labels.tolist()) for i in items] == [
        ("a-[1 0 0].png", [1, 0, 0]),
        ("c[110].tif", [1, 1, 0]),
        ("b-[0, 1, 1].jpg", [0, 1, 1]),
    ]
    val = find_split(root, "val")
    assert [(p.image.name, p.mask.name) for p in val] == [("x.jpg", "x.png"), ("y.jpg", "y.png")]
    assert len(find_split(root, "test")) == 2
    assert has_split(root, "val") and has_split(root, "test")


def test_flat_train_and_val(tmp_path: Path) -> None:
    _png(tmp_path / "train" / "p-[0 1].png")
    _png(tmp_path / "val" / "img" / "sub" / "q.png")
    _mask(tmp_path / "val" / "mask" / "sub" / "q.png")
    _mask(tmp_path / "val" / "mask" / "sub" / "q.tif")  # the PNG mask is preferred
    assert [i.labels.tolist() for i in find_train_items(tmp_path, 2)] == [[0, 1]]
    [pair] = find_split(tmp_path, "val")
    assert pair.mask.suffix == ".png"


def test_csv_takes_precedence(tmp_path: Path) -> None:
    train = tmp_path / "train"
    _png(train / "named-[1 0 0].png")
    _png(train / "overridden-[1 0 0].png")
    _png(train / "plain.png")
    _png(train / "unlabelled.png")
    write_label_csv(train / LABELS_CSV, {"overridden-[1 0 0].png": [0, 0, 1], "plain.png": [0, 1, 1]}, ["t", "s", "n"])
    items = {i.path.name: i.labels.tolist() for i in find_train_items(tmp_path, 3, ["t", "s", "n"])}
    # named: from its name; overridden: the CSV wins; plain: CSV only; unlabelled: skipped.
    assert items == {
        "named-[1 0 0].png": [1, 0, 0],
        "overridden-[1 0 0].png": [0, 0, 1],
        "plain.png": [0, 1, 1],
    }
    with pytest.raises(SIAError, match=LABELS_CSV):
        find_train_items(tmp_path, 3, ["tumor", "stroma", "normal"])  # header does not match
    desc = dataset_description(tmp_path)
    assert desc["classes"] == ["t", "s", "n"]  # class names inferred from the CSV header


def test_csv_row_for_missing_image(tmp_path: Path) -> None:
    _png(tmp_path / "train" / "a-[1 0].png")
    write_label_csv(tmp_path / "train" / LABELS_CSV, {"gone.png": [1, 0]}, ["a", "b"])
    with pytest.raises(SIAError, match="gone.png"):
        find_train_items(tmp_path, 2)


# ------------------------------------------------------------------------------------------- errors


def test_root_and_train_errors(tmp_path: Path) -> None:
    with pytest.raises(SIAError, match="nowhere"):
        find_train_items(tmp_path / "nowhere", 3)
    with pytest.raises(SIAError, match="no training folder"):
        find_train_items(tmp_path, 3)
    (tmp_path / "train").mkdir()
    with pytest.raises(SIAError, match="no labelled training images"):
        find_train_items(tmp_path, 3)


@pytest.mark.parametrize(
    ("name", "needle"),
    [
        ("short-[1 0].png", "expected 3"),
        ("zero-[0 0 0].png", "no class present"),
        ("plain.png", "no image-level"),
    ],
)
def test_bad_train_labels(tmp_path: Path, name: str, needle: str) -> None:
    _png(tmp_path / "train" / "ok-[1 0 0].png")
    _png(tmp_path / "train" / name)
    with pytest.raises(SIAError) as info:
        find_train_items(tmp_path, 3)
    assert name in str(info.value) and needle in str(info.value)


def test_split_errors(tmp_path: Path) -> None:
    with pytest.raises(SIAError, match="no 'val' split"):
        find_split(tmp_path, "val")
    assert not has_split(tmp_path, "val")
    (tmp_path / "val" / "img").mkdir(parents=True)
    with pytest.raises(SIAError, match="mask"):
        find_split(tmp_path, "val")
    (tmp_path / "val" / "mask").mkdir()
    with pytest.raises(SIAError, match="no images"):
        find_split(tmp_path, "val")
    assert not has_split(tmp_path, "val")
    _png(tmp_path / "val" / "img" / "lonely.png")
    with pytest.raises(SIAError) as info:
        find_split(tmp_path, "val")
    assert "lonely.png" in str(info.value) and "no mask" in str(info.value)
    with pytest.raises(SIAError, match="unknown split"):
        find_split(tmp_path, "train")


def test_size_mismatch_names_both_files(tmp_path: Path) -> None:
    image = _png(tmp_path / "test" / "img" / "big_image.png", (8, 8))
    mask = _mask(tmp_path / "test" / "mask" / "big_image.png", (8, 6))
    with pytest.raises(SIAError) as info:
        find_split(tmp_path, "test")
    assert str(image) in str(info.value) and str(mask) in str(info.value)
    assert len(find_split(tmp_path, "test", check_sizes=False)) == 1
    with pytest.raises(SIAError) as info:
        check_eval_pair(image, mask, 3, 3, PALETTE)
    assert str(image) in str(info.value) and str(mask) in str(info.value)


def test_check_eval_pair_bad_values(tmp_path: Path) -> None:
    image = _png(tmp_path / "i.png")
    mask = _mask(tmp_path / "bad_values.png", value=5)
    with pytest.raises(SIAError, match="bad_values.png.*5"):
        check_eval_pair(image, mask, 3, 3, PALETTE)


# ------------------------------------------------------------------------------------------- description


def test_presets() -> None:
    luad, bcss, w4l = (DATASET_PRESETS[k] for k in ("luad-histoseg", "bcss-wsss", "wsss4luad"))
    assert luad["classes"] == ["TE", "NEC", "LYM", "TAS"] and luad["ignore_index"] == 4
    assert luad["palette"][:4] == [[205, 51, 51], [0, 255, 0], [65, 105, 225], [255, 165, 0]]
    assert luad["white_background"] is True
    assert bcss["classes"] == ["TUM", "STR", "LYM", "NEC"] and bcss["white_background"] is False
    assert bcss["palette"][3] == [153, 0, 255]
    assert w4l["classes"] == ["tumor", "stroma", "normal"] and w4l["palette"] == PALETTE


def test_preset_overridden_by_yaml(tmp_path: Path) -> None:
    assert dataset_description(tmp_path, "bcss-wsss")["classes"] == ["TUM", "STR", "LYM", "NEC"]
    (tmp_path / "dataset.yaml").write_text("name: mine\nwhite_background: true\nwhite_threshold: 210\n")
    desc = dataset_description(tmp_path, "bcss-wsss")
    assert desc["name"] == "mine" and desc["classes"][0] == "TUM" and desc["white_background"] is True
    cfg = apply_to_data_config(desc, DataConfig())
    assert cfg.classes == ["TUM", "STR", "LYM", "NEC"] and cfg.white_threshold == 210
    assert cfg.num_classes == 4 and cfg.ignore_index == 4
    assert DataConfig().white_threshold == 200  # the input config is not modified


def test_folder_name_selects_preset(tmp_path: Path) -> None:
    root = tmp_path / "LUAD-HistoSeg"
    root.mkdir()
    assert dataset_description(root)["classes"] == ["TE", "NEC", "LYM", "TAS"]


def test_inferred_description(tmp_path: Path) -> None:
    _png(tmp_path / "train" / "a-[0 1 0 0 1].png")
    desc = dataset_description(tmp_path)
    assert desc["classes"] == [f"class{i}" for i in range(5)]
    assert desc["ignore_index"] == 5
    assert len(desc["palette"]) == 6 and len({tuple(c) for c in desc["palette"]}) == 6
    assert apply_to_data_config(desc).num_classes == 5


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("classes: [a, b\n", "YAML"),
        ("- a\n- b\n", "not a mapping"),
        ("classes: [a, b]\nignore_idx: 2\n", "unknown key"),
        ("classes: [a, a]\n", "distinct"),
        ("classes: [a, b]\nignore_index: 1\n", "ignore_index"),
        ("classes: [a, b]\npalette: [[1, 2, 3]]\n", "palette"),
        ("classes: [a, b]\npalette: [[1, 2, 3], [4, 5, 300]]\n", "palette"),
        ("classes: [a, b]\nwhite_background: maybe\n", "white_background"),
        ("preset: nope\n", "unknown preset"),
    ],
)
def test_bad_dataset_yaml(tmp_path: Path, text: str, needle: str) -> None:
    (tmp_path / "dataset.yaml").write_text(text)
    with pytest.raises(SIAError) as info:
        dataset_description(tmp_path)
    assert "dataset.yaml" in str(info.value) and needle in str(info.value)


def test_description_errors(tmp_path: Path) -> None:
    with pytest.raises(SIAError, match="unknown dataset preset"):
        dataset_description(tmp_path, "imagenet")
    with pytest.raises(SIAError, match="cannot tell the classes"):
        dataset_description(tmp_path)


def test_yaml_preset_key(tmp_path: Path) -> None:
    (tmp_path / "dataset.yaml").write_text("preset: luad-histoseg\nname: my-luad\n")
    desc = dataset_description(tmp_path)
    assert desc["name"] == "my-luad" and desc["ignore_index"] == 4
