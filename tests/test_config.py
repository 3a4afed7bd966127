"""The one typed config: presets, variants, YAML/JSON round trip, overrides and errors."""

from __future__ import annotations

import pytest
import yaml

from sia_core.config import VARIANTS, SIAConfig, apply_variant, get_preset
from sia_core.errors import SIAError


@pytest.mark.parametrize("preset", ["paper", "cpu", "test"])
@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_round_trip(tmp_path, preset, suffix):
    cfg = apply_variant(get_preset(preset), "d")
    cfg.train.cam_scales = (1.0, 0.5)
    cfg.model.backbone_kwargs = {"depth": 3}
    path = cfg.save(tmp_path / f"cfg{suffix}")
    back = SIAConfig.load(path)
    assert back == cfg
    assert isinstance(back.train.cam_scales, tuple)


def test_paper_preset_is_the_paper():
    cfg = get_preset("paper")
    assert cfg.model.backbone == "vit_base_patch16_224"
    assert (cfg.train.batch_size, cfg.train.optimizer, cfg.train.lr, cfg.train.weight_decay) == (
        16,
        "adam",
        1e-4,
        5e-4,
    )
    assert (cfg.rfm.lambda_low, cfg.rfm.lambda_high) == (0.3, 0.5)
    assert cfg.dam.weight == cfg.train.seg_weight == 0.5
    assert (cfg.rfm.enabled, cfg.dam.enabled, cfg.rsm.enabled) == (True, True, True)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_variants_switch_modules(variant):
    cfg = apply_variant(get_preset("paper"), variant)
    assert (cfg.rfm.enabled, cfg.dam.enabled, cfg.rsm.enabled) == VARIANTS[variant]
    assert cfg.variant == variant


def test_overrides_parse_yaml_values():
    cfg = get_preset("cpu").with_overrides(
        [
            "train.iterations=7",
            "train.cam_scales=[1.0, 0.75]",
            "dam.enabled=false",
            "model.backbone_weights=null",
        ]
    )
    assert cfg.train.iterations == 7 and cfg.train.cam_scales == (1.0, 0.75) and not cfg.dam.enabled
    assert apply_variant(cfg, "a").with_overrides(["variant=c"]).dam.enabled


def test_exponent_floats_without_a_dot_are_numbers():
    # YAML 1.1 reads 1e-3 as a string; in a float field it is the number the user meant.
    cfg = get_preset("cpu").with_overrides(["train.lr=1e-3", "train.weight_decay=5E-4"])
    assert cfg.train.lr == 1e-3 and cfg.train.weight_decay == 5e-4
    with pytest.raises(SIAError, match="train.lr: expected a number"):
        get_preset("cpu").with_overrides(["train.lr=fast"])


def test_yaml_boolean_words_stay_words_in_string_keys(tmp_path):
    # YAML 1.1 reads 'off' as false; train.amp takes the word 'off'
    assert get_preset("cpu").with_overrides(["train.amp=off"]).train.amp == "off"
    assert get_preset("cpu").with_overrides(["train.amp=Off"]).train.amp == "Off"  # then the range check names it
    assert get_preset("cpu").with_overrides(["dam.enabled=False"]).dam.enabled is False
    assert get_preset("cpu").with_overrides(["dam.enabled=no"]).dam.enabled is False  # a true/false key: YAML's reading
    # a free-form mapping keeps YAML's reading too: timm must get False, not the truthy word 'off'
    assert get_preset("cpu").with_overrides(["model.backbone_kwargs.qkv_bias=off"]).model.backbone_kwargs == {
        "qkv_bias": False
    }
    assert get_preset("cpu").with_overrides(["model.pretrained=null"]).model.pretrained is None
    p = tmp_path / "c.yaml"
    p.write_text("preset: cpu\ntrain:\n  amp: off\n")
    with pytest.raises(SIAError, match="train.amp: expected a string, got False") as err:
        SIAConfig.load(p)
    assert "quote" in err.value.fix


def test_partial_file_completes_from_its_preset(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("preset: cpu\ntrain:\n  iterations: 12\n")
    cfg = SIAConfig.load(p)
    assert cfg.train.iterations == 12 and cfg.model.backbone == get_preset("cpu").model.backbone
    assert cfg.model.conv_stem  # the preset's


def test_whole_config_of_an_older_run_keeps_what_it_was_trained_with(tmp_path):
    # a run saved before model.conv_stem existed: resuming it must not add the cpu preset's stem to its network
    old = get_preset("cpu").to_dict()
    del old["model"]["conv_stem"]
    p = tmp_path / "config.yaml"
    p.write_text(yaml.safe_dump(old))
    cfg = SIAConfig.load(p)
    assert cfg.model.conv_stem is False and cfg.model.backbone_kwargs == {"depth": 6} and cfg.preset == "cpu"
    assert SIAConfig.load(get_preset("cpu").save(tmp_path / "new.yaml")).to_dict() == get_preset("cpu").to_dict()


@pytest.mark.parametrize(
    "text, match",
    [
        ("train:\n  iteratons: 3\n", "unknown config key.*iteratons"),
        ("train:\n  iterations: many\n", "train.iterations: expected an integer"),
        ("rfm:\n  enabled: 3\n", "expected true/false"),
        ("- a\n- b\n", "not a mapping"),
        ("train: [\n", "cannot parse"),
        ("preset: gpu\n", "unknown preset"),
    ],
)
def test_bad_config_files(tmp_path, text, match):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(SIAError, match=match):
        SIAConfig.load(p)


def test_bad_overrides():
    with pytest.raises(SIAError, match="no '='"):
        get_preset("cpu").with_overrides(["train.iterations"])
    with pytest.raises(SIAError, match="unknown variant"):
        get_preset("cpu").with_overrides(["variant=z"])
    with pytest.raises(SIAError, match="config file not found"):
        SIAConfig.load("/nonexistent/cfg.yaml")


def test_cpu_preset_gates_the_decoder_and_paper_keeps_the_papers_protocol():
    assert get_preset("cpu").infer.gate is True  # measured on the tune part of WSSS4LUAD val (README, Levers)
    assert get_preset("paper").infer.gate is False  # the paper scores the decoder without image labels
