"""Image-level labels from file names and the labels CSV."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sia_core.data.labels import (
    LABELS_CSV,
    format_label_vector,
    parse_label_vector,
    read_label_csv,
    write_label_csv,
)
from sia_core.errors import SIAError


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("name-[1 0 0 1].png", [1, 0, 0, 1]),  # LUAD-HistoSeg
        ("TCGA-A1_123_456[1101].png", [1, 1, 0, 1]),  # BCSS-WSSS
        ("436219-9328-56427-[1, 1, 0].png", [1, 1, 0]),  # WSSS4LUAD challenge
        ("x-[0 1].jpg", [0, 1]),
        ("x-[ 1  0 , 1 ].tif", [1, 0, 1]),
        ("x-[1,0,1,0,1,1].png", [1, 0, 1, 0, 1, 1]),
        ("a[0 0]-b-[0 1 1].png", [0, 1, 1]),  # the last bracket wins
        ("dir[1 1]/patch-[1 0 0].png", [1, 0, 0]),  # only the file name is looked at
    ],
)
def test_parse_formats(name: str, expected: list[int]) -> None:
    labels = parse_label_vector(name)
    assert labels.dtype == np.int64
    assert labels.tolist() == expected
    assert parse_label_vector(Path(name), num_classes=len(expected)).tolist() == expected


@pytest.mark.parametrize(
    ("name", "num_classes", "needle"),
    [
        ("plain.png", None, "no image-level label"),
        ("open-[1 0 1.png", None, "no image-level label"),
        ("bad-[1 2 0].png", None, "0/1"),
        ("bad-[a b c].png", None, "0/1"),
        ("empty-[].png", None, "0/1"),
        ("short-[1 0].png", 3, "expected 3"),
        ("long-[1 0 1 1].png", 3, "expected 3"),
        ("zeros-[0 0 0].png", 3, "no class present"),
    ],
)
def test_parse_errors_name_the_file(name: str, num_classes: int | None, needle: str) -> None:
    with pytest.raises(SIAError) as info:
        parse_label_vector(f"/some/folder/{name}", num_classes)
    assert name in str(info.value)
    assert needle in str(info.value)
    assert info.value.fix


def test_real_wsss4luad_names(shared_data: Path) -> None:
    names = sorted(p.name for p in (shared_data / "wsss4luad" / "train").glob("*.png"))
    assert len(names) == 295
    vectors = np.stack([parse_label_vector(n, 3) for n in names])
    assert vectors.shape == (295, 3)
    assert vectors.sum(axis=1).min() >= 1
    assert vectors[:, 0].sum() > 0 and vectors[:, 1].sum() > 0  # tumor and stroma both occur


def test_real_official_examples(shared_data: Path) -> None:
    folder = shared_data / "wsss4luad" / "official_training_examples"
    parsed = {p.name: parse_label_vector(p, 3).tolist() for p in folder.glob("*.png")}
    assert parsed == {
        "1003370-5631-18822-[0, 1, 0].png": [0, 1, 0],
        "436219-7159-48057-[1, 0, 0].png": [1, 0, 0],
        "436219-9328-56427-[1, 1, 0].png": [1, 1, 0],
        "449636-23526-9666-[0, 0, 1].png": [0, 0, 1],
    }


def test_format_round_trip() -> None:
    assert format_label_vector([1, 0, 1]) == "[1 0 1]"
    assert parse_label_vector(f"x-{format_label_vector(np.array([0, 1, 1]))}.png").tolist() == [0, 1, 1]


# ------------------------------------------------------------------------------------------- CSV

CLASSES = ["tumor", "stroma", "normal"]


def test_csv_round_trip(tmp_path: Path) -> None:
    path = tmp_path / LABELS_CSV
    labels = {"b.png": np.array([0, 1, 0]), "sub/a.png": [1, 1, 0]}
    write_label_csv(path, labels, CLASSES)
    assert path.read_text().splitlines()[0] == "image,tumor,stroma,normal"
    back = read_label_csv(path, CLASSES)
    assert list(back) == ["b.png", "sub/a.png"]
    assert back["sub/a.png"].tolist() == [1, 1, 0]
    assert back["b.png"].dtype == np.int64
    assert not list(tmp_path.glob(".*tmp*"))  # atomic write leaves no temporary file


def test_csv_reorders_columns_and_accepts_bom(tmp_path: Path) -> None:
    path = tmp_path / "l.csv"
    path.write_text("\ufeffimage, normal ,tumor,stroma\r\nx.png,1,0,0\r\n\r\n", encoding="utf-8")
    assert read_label_csv(path, CLASSES)["x.png"].tolist() == [0, 0, 1]
    assert read_label_csv(path)["x.png"].tolist() == [1, 0, 0]  # header order when no classes given


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("", "empty"),
        ("file,tumor,stroma,normal\nx.png,1,0,0\n", "first column must be 'image'"),
        ("image,tumor,stroma\nx.png,1,0\n", "expected ['tumor', 'stroma', 'normal']"),
        ("image,tumor,stroma,lym\nx.png,1,0,0\n", "expected ['tumor', 'stroma', 'normal']"),
        ("image,tumor,stroma,normal\nx.png,1,0\n", "row 2"),
        ("image,tumor,stroma,normal\nx.png,1,2,0\n", "must be 0 or 1"),
        ("image,tumor,stroma,normal\nx.png,0,0,0\n", "no class present"),
        ("image,tumor,stroma,normal\nx.png,1,0,0\nx.png,0,1,0\n", "second time"),
        ("image,tumor,stroma,normal\n,1,0,0\n", "no image name"),
    ],
)
def test_csv_errors_name_the_file(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "bad_labels.csv"
    path.write_text(text)
    with pytest.raises(SIAError) as info:
        read_label_csv(path, CLASSES)
    assert "bad_labels.csv" in str(info.value)
    assert needle in str(info.value)


def test_csv_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SIAError, match="nothere.csv"):
        read_label_csv(tmp_path / "nothere.csv", CLASSES)


@pytest.mark.parametrize("vector", [[1, 0], [0, 0, 0], [1, 2, 0]])
def test_write_csv_rejects_bad_vectors(tmp_path: Path, vector: list[int]) -> None:
    with pytest.raises(SIAError, match="x.png"):
        write_label_csv(tmp_path / LABELS_CSV, {"x.png": vector}, CLASSES)
    assert not (tmp_path / LABELS_CSV).exists()
