"""The SIA-WSSS network: shapes (docs/method.md §10), losses against hand-computed values, RSM, variants, weights."""

from __future__ import annotations

import math

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F

from sia_core.build import build_model, load_model, save_weights
from sia_core.cam import class_maps, minmax_norm
from sia_core.config import apply_variant, get_preset
from sia_core.errors import SIAError
from sia_core.models.dam import DAMHeads, ctc_loss, roi_map, sample_local_crops
from sia_core.models.rfm import LOW, UNCERTAIN, cre_loss, mct_loss, prior_map, ure_loss, ure_select
from sia_core.models.rsm import erode, masked_argmax, rsm_fuse
from sia_core.objective import TrainBatch, sia_losses

C = 3
S = 64  # test preset: 64 px input, patch 16 -> 4 x 4 tokens


def tiny_cfg(variant: str = "f"):
    cfg = apply_variant(get_preset("test"), variant)
    cfg.data.classes = ["tumor", "stroma", "normal"]
    cfg.data.white_background = False
    return cfg


def make_batch(b: int = 2, s: int = S) -> TrainBatch:
    g = torch.Generator().manual_seed(0)
    labels = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])[:b]
    return TrainBatch(
        image=torch.randn(b, 3, s, s, generator=g),
        labels=labels,
        global2=torch.randn(b, 3, s, s, generator=g),
        local=torch.randn(b, 3, s, s, generator=g),
        ignore=torch.zeros(b, s, s, dtype=torch.bool),
        mask=torch.full((b, s, s), 255, dtype=torch.long),
        has_mask=torch.zeros(b, dtype=torch.bool),
    )


# ------------------------------------------------------------------------------------------- shapes


def test_shapes_of_every_module():
    cfg = tiny_cfg()
    model = build_model(cfg).eval()
    d = model.encoder.embed_dim
    x = torch.randn(2, 3, S, S)
    fwd = model(x)
    n = (S // 16) ** 2
    assert fwd.enc.tokens.shape == (2, C, d)
    assert fwd.enc.patches.shape == (2, n, d)
    assert fwd.enc.patches_aux.shape == (2, n, d)
    assert fwd.logits.shape == fwd.logits_aux.shape == (2, C)
    assert fwd.cam.shape == fwd.cam_aux.shape == (2, C, 4, 4)
    assert fwd.q.shape == (2, C, d)
    assert fwd.inhibition.shape == (2, C, 4, 4)
    assert fwd.seg.shape == (2, C, 4, 4)
    emb = model.dam.student(model.view_descriptor(fwd.enc))
    assert emb.shape == (2, cfg.dam.proj_dim)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(2))
    # a non-square input of other size resamples the position embedding
    fwd2 = model(torch.randn(1, 3, 48, 80))
    assert fwd2.cam.shape == (1, C, 3, 5) and fwd2.enc.grid == (3, 5)
    maps = class_maps(model, x, scales=(1.0, 0.75, 1.5), flip=True, want_seg=True)
    assert maps.cam.shape == maps.inhibition.shape == maps.seg.shape == (2, C, S, S)
    assert maps.cam_grid.shape == maps.inhibition_grid.shape == (2, C, 4, 4)
    assert float(maps.cam.min()) >= 0 and float(maps.cam.max()) <= 1
    torch.testing.assert_close(maps.seg.sum(1), torch.ones(2, S, S))
    rsm = rsm_fuse(maps.cam, maps.inhibition_grid, torch.ones(2, C))
    assert rsm.result.shape == rsm.activation.shape == (2, C, S, S)


def test_class_tokens_follow_registers_and_start_from_cls():
    vit = timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        num_classes=0,
        depth=1,
        embed_dim=32,
        num_heads=2,
        img_size=64,
    )
    cls = vit.cls_token.detach().clone()
    from sia_core.models.encoder import MCTViT

    enc = MCTViT(vit, num_classes=C, num_registers=4)
    assert enc.prefix_tokens.shape == (1, 4 + C, 32)
    assert_cls_copies_with_distinct_offsets(enc.prefix_tokens[:, 4:], cls)
    assert not torch.allclose(enc.prefix_tokens[:, :4], cls.expand(1, 4, 32))  # registers re-drawn


def assert_cls_copies_with_distinct_offsets(class_tokens: torch.Tensor, cls: torch.Tensor) -> None:
    """Class tokens = the CLS token plus a small trunc-normal(0.02) offset of their own."""
    offsets = (class_tokens - cls).detach()
    assert float(offsets.abs().max()) < 0.12  # timm cuts at +-2 absolute: in effect a normal(0, 0.02)
    assert 0.01 < float(offsets.std()) < 0.03
    for i in range(offsets.shape[1]):
        for j in range(i):
            assert not torch.allclose(offsets[:, i], offsets[:, j]), (i, j)


@pytest.mark.parametrize("variant", ["a", "c"])
def test_class_tokens_get_distinct_gradients_without_rfm(variant):
    """Without L_cre / L_mct nothing else separates the class tokens: their gradients must already differ."""
    cfg = tiny_cfg(variant)
    torch.manual_seed(0)
    model = build_model(cfg).train()
    sia_losses(model, make_batch(), cfg, progress=0.6).loss.backward()
    grad = model.encoder.prefix_tokens.grad[0, model.encoder.num_registers :]  # (C, D)
    scale = float(grad.abs().max())
    assert scale > 0
    for i in range(C):
        for j in range(i):
            assert float((grad[i] - grad[j]).abs().max()) > 1e-3 * scale, (i, j)


# ------------------------------------------------------------------------------------------- losses


def test_ctc_loss_hand_values():
    # One positive and one negative of equal logit s (eps -> 0): positive term log 2, push term log(1 + e^s).
    s = 0.7
    tau = 1.0
    t = torch.tensor([[[1.0, 0.0]]])  # (B=1, G=1, E=2)
    f = torch.tensor([[s, 0.0], [s, 0.0]])  # both students give logit s
    pos = torch.tensor([[1.0, 0.0]])
    neg = torch.tensor([[0.0, 1.0]])
    loss = ctc_loss(t, f, pos, neg, tau=tau, eps=1e-12)
    expected = (math.log(2) + math.log(1 + math.exp(s))) / (1 * (1 + 1e-4))
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    # no negatives: the positive term collapses to -log(e^s / (e^s + eps)) ~ 0, the push term to log(1 + eps)
    loss0 = ctc_loss(t, f, torch.tensor([[1.0, 1.0]]), torch.zeros(1, 2), tau=tau)
    assert float(loss0) == pytest.approx(
        (2 * math.log1p(1e-4 * math.exp(-s)) + math.log1p(1e-4)) / (2 + 1e-4), rel=1e-3
    )


def test_cre_loss_hand_value():
    q = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # (1, C=2, D=2), already unit norm
    p = torch.tensor([[[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]]])  # (1, N=3, D)
    prior = torch.tensor([[0, 1, UNCERTAIN]])
    labels = torch.tensor([[1.0, 0.0]])  # only class 0 present
    tau = 0.5
    logits0 = torch.tensor([2.0, 0.0, 1.0]) / tau
    expected = -torch.log_softmax(logits0, 0)[0] / (1 + 1e-4)
    assert float(cre_loss(q, p, prior, labels, tau)) == pytest.approx(float(expected), rel=1e-5)


def test_ure_loss_hand_value():
    q = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    p = torch.tensor([[[3.0, 4.0]]])  # cos with q0 = 0.6, with q1 = 0.8
    idx = torch.tensor([[0]])
    valid = torch.tensor([[True]])
    labels = torch.tensor([[1.0, 0.0]])
    expected = 0.5 * (1 - 0.6 / 2) + 0.5 * 0.8 / 2
    assert float(ure_loss(q, p, idx, valid, labels)) == pytest.approx(expected, rel=1e-5)


def test_ure_select_picks_uncertain_tokens_inside_regions():
    grid = (4, 4)
    prior = torch.full((1, 16), LOW)
    prior[0, [5, 6, 9, 10]] = UNCERTAIN  # a 2x2 uncertain block in the middle
    prior[0, [4, 8]] = 0  # confident neighbours
    idx, valid = ure_select(prior, grid, kernel=3, phi=0.6, max_tokens=8)
    chosen = set(idx[valid].tolist())
    assert chosen and chosen <= {5, 6, 9, 10, 4, 8}
    assert {5, 6, 9, 10} & chosen


def test_mct_loss_hand_value():
    q = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # orthogonal tokens
    logits = torch.tensor([[1.0, 0.0], [0.0, 1.0]]) / 0.07
    expected = F.cross_entropy(logits, torch.tensor([0, 1]))
    assert float(mct_loss(q, 0.07)) == pytest.approx(float(expected), rel=1e-5)
    # identical tokens cannot be told apart: log C
    assert float(mct_loss(torch.ones(1, 3, 4))) == pytest.approx(math.log(3), rel=1e-5)


def test_prior_map_thresholds():
    cam = torch.tensor([[[[0.9, 0.4, 0.1]], [[0.2, 0.45, 0.05]]]])  # (1, C=2, 1, 3)
    labels = torch.tensor([[1.0, 1.0]])
    m = prior_map(cam, labels, low=0.3, high=0.5)
    assert m.tolist() == [[0, UNCERTAIN, LOW]]
    # an absent class never wins
    m2 = prior_map(cam, torch.tensor([[0.0, 1.0]]), 0.3, 0.5)
    assert m2.tolist() == [[LOW, UNCERTAIN, LOW]]


def test_minmax_norm_range():
    x = torch.randn(2, 3, 5, 5) * 10
    y = minmax_norm(x)
    assert float(y.amin()) == pytest.approx(0, abs=1e-6)
    assert float(y.flatten(2).amax(-1).min()) == pytest.approx(1, abs=1e-4)


# ------------------------------------------------------------------------------------------- RSM


@pytest.mark.parametrize("k", [3, 5, 7])
def test_erosion_shrinks_square_by_half_kernel(k):
    m = torch.zeros(1, 1, 40, 40)
    m[..., 10:30, 10:30] = 1
    e = erode(m, k)
    ys, xs = torch.nonzero(e[0, 0], as_tuple=True)
    r = k // 2
    assert (int(ys.min()), int(ys.max()), int(xs.min()), int(xs.max())) == (10 + r, 29 - r, 10 + r, 29 - r)


@pytest.mark.parametrize("k", [3, 7])
def test_erosion_equals_max_pool_erosion_also_at_the_border(k):
    torch.manual_seed(0)
    m = (torch.rand(2, 3, 37, 41) > 0.15).float()
    m[0, 0] = 1  # all ones: nothing erodes, not even at the border
    expected = 1 - torch.nn.functional.max_pool2d(1 - m, k, stride=1, padding=k // 2)
    assert torch.equal(erode(m, k), expected)
    assert float(erode(m, k)[0, 0].min()) == 1


def test_rsm_fusion_lifts_coherent_regions_and_zeroes_absent_classes():
    cam = torch.zeros(1, 2, 32, 32)
    cam[:, 0, 8:24, 8:24] = 0.4  # a coherent but weak region
    cam[:, 0, 0, 0] = 1.0  # an isolated spike
    inh = torch.zeros(1, 2, 4, 4)
    inh[:, 0, 1:3, 1:3] = 1.0
    out = rsm_fuse(cam, inh, torch.tensor([[1.0, 0.0]]), pool=3, obj_threshold=0.5, erosion=3)
    assert torch.all(out.result[:, 0] >= cam[:, 0] - 1e-6)  # max(A, .) never lowers A
    assert float(out.result[0, 0, 16, 16]) > 0.4  # lifted inside the region
    assert float(out.result[0, 1].abs().max()) == 0  # absent class stays 0
    lab = masked_argmax(out.result, torch.tensor([[0.0, 1.0]]))
    assert int(lab.max()) == 1 and int(lab.min()) == 1  # single-label image: every pixel gets that label


# ------------------------------------------------------------------------------------------- variants


MODULES = {"rfm": "rfm.", "dam": "dam.student."}


@pytest.mark.parametrize("variant", ["a", "b", "c", "d", "f"])
def test_variant_forward_backward(variant):
    cfg = tiny_cfg(variant)
    torch.manual_seed(0)
    model = build_model(cfg).train()
    out = sia_losses(model, make_batch(), cfg, progress=0.6)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    rfm_on, dam_on, _ = {"a": (0, 0, 0), "b": (1, 0, 0), "c": (0, 1, 0), "d": (1, 1, 0), "f": (1, 1, 1)}[variant]
    assert (model.rfm is not None) == bool(rfm_on)
    assert (model.dam is not None) == bool(dam_on)
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    for name, g in grads.items():
        if g is not None:
            assert torch.isfinite(g).all(), name

    def reached(prefix: str) -> bool:
        return any(g is not None and float(g.abs().sum()) > 0 for n, g in grads.items() if n.startswith(prefix))

    for prefix in ("encoder.", "classifier.", "classifier_aux.", "decoder."):
        assert reached(prefix), f"{variant}: no gradient reached {prefix}"
    if rfm_on:
        assert reached("rfm.")
        assert "cre" in out.logs and "ure" in out.logs and "mct" in out.logs
    else:
        assert not any(n.startswith("rfm.") for n in grads)
    if dam_on:
        assert reached("dam.student.")
        assert all(p.grad is None for p in model.dam.teacher.parameters())  # EMA only
        assert "dam" in out.logs
    else:
        assert not any(n.startswith("dam.") for n in grads)


def test_warmup_turns_segmentation_loss_off():
    cfg = tiny_cfg("f")
    model = build_model(cfg).train()
    out = sia_losses(model, make_batch(), cfg, progress=0.0)
    assert float(out.logs["seg"]) == 0.0
    out.loss.backward()
    assert all(p.grad is None or float(p.grad.abs().sum()) == 0 for p in model.decoder.parameters())


def test_corrected_mask_is_the_segmentation_target():
    cfg = tiny_cfg("f")
    torch.manual_seed(0)
    model = build_model(cfg).train()
    batch = make_batch()
    batch.mask[0] = 2  # the user says image 0 is all class 2
    batch.has_mask[0] = True
    out = sia_losses(model, batch, cfg, progress=0.0)  # even during warm-up
    with torch.no_grad():
        seg = F.interpolate(model(batch.image[:1]).seg, size=(S, S), mode="bilinear", align_corners=False)
        expected = F.cross_entropy(seg, batch.mask[:1])
    assert float(out.logs["seg"]) == pytest.approx(float(expected), rel=1e-4)


def test_ema_teacher_moves_towards_student():
    heads = DAMHeads(8, 4, momentum=0.9)
    with torch.no_grad():
        heads.student.proj.weight.add_(1.0)
    before = heads.teacher.proj.weight.clone()
    heads.update_teacher()
    torch.testing.assert_close(heads.teacher.proj.weight, 0.9 * before + 0.1 * heads.student.proj.weight)


def test_local_crops_come_from_non_confident_regions():
    src = torch.arange(64 * 64, dtype=torch.float32).view(1, 1, 64, 64).repeat(1, 3, 1, 1)
    cam = torch.zeros(1, 1, 64, 64)
    cam[..., :, :32] = 1.0  # left half confident
    roi = roi_map(cam, torch.ones(1, 1), 0.3, 0.5)
    crops, flags = sample_local_crops(src, roi, n=4, size=16, neg_threshold=0.2)
    assert crops.shape == (4, 3, 16, 16)
    cols = (crops[:, 0, 8, 8] % 64).long()  # crop centres
    assert bool((cols >= 32).all())  # sampled where ROI <= 1
    assert flags.tolist() == [[0.0, 0.0, 0.0, 0.0]] or bool((flags == 0).any())


# ------------------------------------------------------------------------------------------- weights


def test_sia_weights_round_trip(tmp_path):
    cfg = tiny_cfg()
    model = build_model(cfg)
    path = save_weights(tmp_path / "m.safetensors", model, cfg, iteration=5)
    loaded, cfg2 = load_model(path)
    assert cfg2.to_dict() == cfg.to_dict()
    for (n, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        torch.testing.assert_close(a, b, msg=n)


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_backbone_weights_from_local_file(tmp_path, fmt):
    kw = {"depth": 2, "embed_dim": 32, "num_heads": 2, "img_size": 64}
    src = timm.create_model("vit_tiny_patch16_224", pretrained=False, **kw)  # with its classifier head
    state = src.state_dict()
    path = tmp_path / f"vit.{fmt}"
    if fmt == "pth":
        torch.save(state, path)
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    cfg = tiny_cfg()
    cfg.model.backbone_kwargs = kw
    cfg.model.backbone_weights = str(path)
    model = build_model(cfg)
    torch.testing.assert_close(model.encoder.vit.blocks[0].attn.qkv.weight, state["blocks.0.attn.qkv.weight"])
    assert_cls_copies_with_distinct_offsets(model.encoder.prefix_tokens[:, 4:].detach(), state["cls_token"])
    torch.testing.assert_close(model.encoder.prefix_pos[:, :1], state["pos_embed"][:, :1])


def test_backbone_weights_errors(tmp_path):
    cfg = tiny_cfg()
    cfg.model.backbone_weights = str(tmp_path / "missing.pth")
    with pytest.raises(SIAError, match="not found.*missing.pth"):
        build_model(cfg)
    other = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=2, embed_dim=48, num_heads=2, img_size=64)
    wrong = tmp_path / "other.pth"
    torch.save(other.state_dict(), wrong)
    cfg.model.backbone_weights = str(wrong)
    with pytest.raises(SIAError, match="does not fit backbone") as err:
        build_model(cfg)
    assert "other.pth" in str(err.value)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a weights file")
    cfg.model.backbone_weights = str(junk)
    with pytest.raises(SIAError, match="junk.safetensors"):
        build_model(cfg)
    with pytest.raises(SIAError, match="unknown backbone"):
        cfg.model.backbone = "vit_nonexistent"
        cfg.model.backbone_weights = None
        build_model(cfg)


def test_sia_file_expected_not_backbone_file(tmp_path):
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=1, embed_dim=32, num_heads=2, img_size=64)
    from safetensors.torch import save_file

    path = tmp_path / "backbone.safetensors"
    save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, str(path))
    with pytest.raises(SIAError, match="not a SIA model file"):
        load_model(path)


def test_masked_argmax_never_picks_absent_class():
    maps = torch.zeros(1, 3, 2, 2)
    out = masked_argmax(maps, torch.tensor([[0.0, 0.0, 1.0]]))
    assert out.unique().tolist() == [2]


def test_training_cam_reuses_the_forward_pass(monkeypatch):
    cfg = tiny_cfg("a")
    model = build_model(cfg).train()
    calls = []
    real = model.forward_features
    monkeypatch.setattr(model, "forward_features", lambda x: calls.append(x.shape) or real(x))
    sia_losses(model, make_batch(), cfg, progress=0.6)
    assert len(calls) == 1  # single-scale training CAM: no extra encoder pass
    cfg_f = tiny_cfg("f")
    model_f = build_model(cfg_f).train()
    calls.clear()
    real_f = model_f.forward_features
    monkeypatch.setattr(model_f, "forward_features", lambda x: calls.append(tuple(x.shape)) or real_f(x))
    sia_losses(model_f, make_batch(), cfg_f, progress=0.6)
    # one pass for [image; global view 2], one for all local crops of the batch
    assert calls == [(4, 3, S, S), (2 * cfg_f.dam.n_local, 3, cfg_f.dam.local_size, cfg_f.dam.local_size)]


def test_predictor_full_resolution_outputs():
    from sia_core.predictor import SIAPredictor

    cfg = tiny_cfg()
    pred = SIAPredictor(build_model(cfg), cfg, "cpu")
    img = (np.random.default_rng(0).random((70, 90, 3)) * 255).astype(np.uint8)
    p = pred.predict(img, labels=[1, 0, 1], scales=(1.0, 0.75), flip=True)
    for m in (p.cam, p.inhibition, p.activation, p.rsm, p.probabilities):
        assert m.shape == (C, 70, 90) and m.dtype == np.float32
    assert p.pseudo_label.shape == p.label_map.shape == (70, 90)
    assert set(np.unique(p.pseudo_label)) <= {0, 2}
    assert float(p.cam[1].max()) == 0.0  # absent class
    assert p.scores.shape == (C,)
    with pytest.raises(SIAError, match="labels"):
        pred.predict(img, labels=[1, 0])
    with pytest.raises(SIAError, match="RGB"):
        pred.predict(img[..., 0])
