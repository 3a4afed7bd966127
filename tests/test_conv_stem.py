"""The convolutional patch embedding (``model.conv_stem``): shapes, where it goes, what it refuses, and that its
batch-norm statistics travel with a saved model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sia_core.build import build_model, load_model, save_weights
from sia_core.config import apply_variant, get_preset
from sia_core.config_checks import validate_config
from sia_core.errors import SIAError
from sia_core.models.conv_stem import ConvStem
from sia_core.predictor import SIAPredictor


def stem_cfg(on: bool = True):
    cfg = apply_variant(get_preset("test"), "f")
    cfg.data.classes = ["tumor", "stroma", "normal"]
    cfg.data.white_background = False
    cfg.model.conv_stem = on
    return cfg


@pytest.mark.parametrize(("patch", "widths"), [(16, [24, 48, 96, 192]), (8, [48, 96, 192]), (2, [192])])
def test_stem_keeps_the_token_grid(patch, widths):
    stem = ConvStem(192, patch)
    convs = [m for m in stem.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [*widths, 192]  # the last one is the 1x1 projection
    assert [c.stride[0] for c in convs] == [2] * len(widths) + [1]
    out = stem(torch.randn(2, 3, 4 * patch, 6 * patch))
    assert out.shape == (2, 192, 4, 6)


def test_deeper_stem_adds_stride_one_convolutions_on_the_same_grid():
    stem = ConvStem(192, 16, depth=2)
    convs = [m for m in stem.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [24, 24, 48, 48, 96, 96, 192, 192, 192]
    assert [c.stride[0] for c in convs] == [2, 1, 2, 1, 2, 1, 2, 1, 1]
    assert stem(torch.randn(1, 3, 64, 96)).shape == (1, 192, 4, 6)
    # depth 1 keeps the module layout (and so the state-dict keys) of runs saved before the option existed:
    # four conv + batch norm + ReLU triples, then the 1x1 projection at index 12
    keys = ConvStem(192, 16).state_dict()
    assert {k for k in keys if k.endswith(".weight")} == {f"layers.{i}.weight" for i in (0, 1, 3, 4, 6, 7, 9, 10, 12)}


def test_config_refuses_a_stem_without_convolutions():
    cfg = stem_cfg(True)
    cfg.model.conv_stem_depth = 0
    with pytest.raises(SIAError, match="model.conv_stem_depth"):
        validate_config(cfg)


@pytest.mark.parametrize("patch", [1, 12])
def test_stem_refuses_a_patch_that_is_not_a_power_of_two(patch):
    with pytest.raises(ValueError, match="power-of-two"):
        ConvStem(192, patch)


def test_model_with_stem_replaces_only_the_patch_projection():
    torch.manual_seed(0)
    plain = build_model(stem_cfg(False), pretrained=False)
    torch.manual_seed(0)
    model = build_model(stem_cfg(True), pretrained=False)
    assert isinstance(model.encoder.vit.patch_embed.proj, ConvStem)
    assert not isinstance(plain.encoder.vit.patch_embed.proj, ConvStem)
    added = {k.split(".proj.")[0] for k in set(model.state_dict()) - set(plain.state_dict())}
    assert added == {"encoder.vit.patch_embed"}
    x = torch.randn(2, 3, 64, 64)
    out, ref = model.eval()(x), plain.eval()(x)
    assert out.cam.shape == ref.cam.shape and out.seg.shape == ref.seg.shape


def test_config_refuses_stem_with_pretrained_weights():
    cfg = stem_cfg(True)
    cfg.model.pretrained = "vit_tiny_patch16_224.augreg_in21k_ft_in1k"
    with pytest.raises(SIAError, match="model.conv_stem") as err:
        validate_config(cfg)
    assert "model.pretrained" in err.value.fix
    cfg.model.conv_stem = False
    validate_config(cfg)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"freeze": "all"}, "model.freeze"),
        ({"backbone_kwargs": {"patch_size": 12}}, "model.conv_stem"),
        ({"backbone_kwargs": {"patch_size": 1}}, "model.conv_stem"),
    ],
    ids=["frozen", "patch-12", "patch-1"],
)
def test_config_refuses_stem_it_cannot_train(overrides, key):
    cfg = stem_cfg(True)
    for name, value in overrides.items():
        setattr(cfg.model, name, value)
    with pytest.raises(SIAError, match=key):
        validate_config(cfg)


def test_saved_model_with_stem_predicts_as_trained(tmp_path):
    cfg = stem_cfg(True)
    torch.manual_seed(0)
    model = build_model(cfg, pretrained=False)
    model.train()
    with torch.no_grad():  # a few training-mode passes move the batch-norm running statistics off their init
        for _ in range(3):
            model(torch.randn(4, 3, 64, 64) * 2 + 1)
    bn = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bn and all(not torch.allclose(m.running_mean, torch.zeros_like(m.running_mean)) for m in bn)
    save_weights(tmp_path / "m.safetensors", model, cfg, iteration=3)
    loaded, _ = load_model(tmp_path / "m.safetensors")
    for a, b in zip(bn, [m for m in loaded.modules() if isinstance(m, torch.nn.BatchNorm2d)]):
        torch.testing.assert_close(a.running_mean, b.running_mean)
        torch.testing.assert_close(a.running_var, b.running_var)
    image = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    want = SIAPredictor(model.eval(), cfg, device="cpu").predict(image)
    got = SIAPredictor(loaded, cfg, device="cpu").predict(image)
    for name in ("scores", "cam", "probabilities"):
        np.testing.assert_allclose(getattr(got, name), getattr(want, name), rtol=1e-5, atol=1e-6, err_msg=name)
    np.testing.assert_array_equal(got.label_map, want.label_map)


def test_pretrained_weights_switch_the_presets_stem_off(tmp_path):
    import timm
    from safetensors.torch import save_file

    from sia_core.pretrained import resolve_pretrained

    cfg = get_preset("cpu")
    assert cfg.model.conv_stem  # the preset's choice for random init
    vit = timm.create_model(cfg.model.backbone, pretrained=False, **cfg.model.backbone_kwargs)
    path = tmp_path / "vit.safetensors"
    save_file(vit.state_dict(), str(path))
    cfg.model.pretrained = str(path)
    resolved = validate_config(resolve_pretrained(cfg))
    assert resolved.model.conv_stem is False
    model = build_model(resolved)
    proj = model.encoder.vit.patch_embed.proj
    assert not isinstance(proj, ConvStem)
    torch.testing.assert_close(proj.weight, vit.patch_embed.proj.weight)  # the weights' own patch embedding
    assert resolve_pretrained(resolved).to_dict() == resolved.to_dict()  # idempotent
