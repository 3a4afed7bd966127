"""The one class set: presets, the default palette, and the round trip through a run's DataConfig."""

from __future__ import annotations

import pytest

from sia_core.classes import CLASS_PRESETS, DATASET_PRESETS, ClassSet, default_palette
from sia_core.config import DataConfig, get_preset
from sia_core.errors import SIAError


def test_default_palette_is_distinct_for_any_count() -> None:
    for n in (1, 4, 20, 21, 60):
        colours = [tuple(c) for c in default_palette(n)]
        assert len(colours) == n and len(set(colours)) == n
        assert all(len(c) == 3 and all(0 <= v <= 255 for v in c) for c in colours)
    assert default_palette(30)[:20] == default_palette(20)  # a longer palette extends, never reorders


@pytest.mark.parametrize("name", list(CLASS_PRESETS))
def test_preset_round_trips_through_data_config(name: str) -> None:
    classes = ClassSet.from_preset(name)
    data = classes.to_data_config(DataConfig(img_size=96))
    assert data.img_size == 96 and data.classes == classes.names and data.ignore_index == classes.ignore_index
    assert ClassSet.from_data_config(data) == classes
    assert ClassSet.from_description(DATASET_PRESETS[name], preset=name) == classes


def test_default_data_config_is_the_luad_preset() -> None:
    assert ClassSet.from_data_config(get_preset("cpu").data) == CLASS_PRESETS["luad-histoseg"]


def test_from_preset_is_a_copy_and_unknown_names_fail() -> None:
    ClassSet.from_preset("bcss-wsss").names.append("x")
    assert CLASS_PRESETS["bcss-wsss"].names == ["TUM", "STR", "LYM", "NEC"]
    with pytest.raises(SIAError, match="unknown class preset"):
        ClassSet.from_preset("nope")


def test_custom_and_metadata_round_trip() -> None:
    classes = ClassSet.custom(["a", "b", "c"], [[1, 2, 3]])
    assert classes.palette[0] == [1, 2, 3] and classes.palette[1:] == default_palette(3)[1:]
    assert ClassSet.from_metadata(classes.metadata()) == classes
    assert classes.full_palette()[3] == [255, 255, 255]
