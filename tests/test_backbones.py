"""Starting weights (``model.pretrained``) and the architecture families pathology foundation models use.

Every family is built at tiny width from timm kwargs with random weights, trained one step as the full model,
saved and reloaded. Weights are loaded end to end through the real paths, offline: ``local-dir:`` folders this
file writes with timm's ``save_for_hf`` (the hub layout), and ``hf-hub:`` ids served by a small Hugging Face
hub stand-in on 127.0.0.1 (``huggingface_hub`` and timm download from it exactly as from the hub: progress,
cancel, cache, gated repositories). Nothing here reaches the network.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import timm
import torch
from hub_standin import FakeHub, serve_fake_hub  # tests/hub_standin.py
from safetensors.torch import load_file
from test_model import assert_cls_copies_with_distinct_offsets

from sia_core.build import build_model, load_model, read_weights, save_weights
from sia_core.config import PAPER_WEIGHTS, apply_variant, get_preset
from sia_core.errors import SIAError
from sia_core.models.freeze import trainable_parameters
from sia_core.objective import TrainBatch, sia_losses
from sia_core.pretrained import DownloadCancelled, fetch_pretrained, parse_pretrained, resolve_pretrained

C = 3
SWIGLU = {"mlp_layer": "timm.layers.SwiGLUPacked", "act_layer": "silu", "mlp_ratio": 2.66667 * 2}
TINY = {"depth": 3, "embed_dim": 32, "num_heads": 2}

# name: (timm architecture, kwargs, input size); patch 14 needs sides that are multiples of 14
FAMILIES: dict[str, tuple[str, dict[str, Any], int]] = {
    "plain ViT (CLS, embedded position of CLS)": ("vit_tiny_patch16_224", {**TINY, "img_size": 64}, 64),
    "4 registers, patch 14, no_embed_class, LayerScale (DINOv2-reg, Virchow2-like)": (
        "vit_small_patch14_reg4_dinov2",
        {**TINY, "img_size": 56},
        56,
    ),
    "8 registers, patch 14, SwiGLU, LayerScale, dynamic_img_size (UNI2-h-like)": (
        "vit_base_patch16_224",
        {
            **TINY,
            **SWIGLU,
            "img_size": 56,
            "patch_size": 14,
            "reg_tokens": 8,
            "no_embed_class": True,
            "init_values": 1e-5,
            "dynamic_img_size": True,
        },
        56,
    ),
    "registers with embedded positions": ("vit_base_patch16_224", {**TINY, "img_size": 64, "reg_tokens": 4}, 64),
    "no CLS token, average pooling, fc_norm": (
        "vit_base_patch16_224",
        {**TINY, "img_size": 64, "class_token": False, "global_pool": "avg"},
        64,
    ),
    "RMSNorm, pre-norm (another norm)": (
        "vit_base_patch16_224",
        {**TINY, "img_size": 64, "norm_layer": "rmsnorm", "pre_norm": True, "qk_norm": True},
        64,
    ),
}


def family_cfg(arch: str, kwargs: dict[str, Any], size: int, variant: str = "f"):
    cfg = apply_variant(get_preset("test"), variant)
    cfg.data.classes = ["tumor", "stroma", "normal"]
    cfg.data.white_background = False
    cfg.model.backbone = arch
    cfg.model.backbone_kwargs = dict(kwargs)
    cfg.data.img_size = size
    cfg.dam.local_size = 28 if size % 14 == 0 and size % 16 else 32
    cfg.infer.tile_size = size
    return cfg


def make_batch(size: int) -> TrainBatch:
    g = torch.Generator().manual_seed(0)
    return TrainBatch(
        image=torch.randn(2, 3, size, size, generator=g),
        labels=torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]),
        global2=torch.randn(2, 3, size, size, generator=g),
        local=torch.randn(2, 3, size, size, generator=g),
        ignore=torch.zeros(2, size, size, dtype=torch.bool),
        mask=torch.full((2, size, size), 255, dtype=torch.long),
        has_mask=torch.zeros(2, dtype=torch.bool),
    )


# ------------------------------------------------------------------------------------------- families


@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_trains_saves_and_reloads(family, tmp_path):
    arch, kwargs, size = FAMILIES[family]
    cfg = family_cfg(arch, kwargs, size)
    torch.manual_seed(0)
    model = build_model(cfg).train()
    enc = model.encoder
    vit_ref = timm.create_model(arch, pretrained=False, num_classes=0, **_plain(kwargs))
    assert enc.num_backbone_registers == vit_ref.num_reg_tokens
    assert enc.patch_size == vit_ref.patch_embed.patch_size[0]

    params = trainable_parameters(model, "none")
    opt = torch.optim.Adam(params, lr=1e-3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = sia_losses(model, make_batch(size), cfg, progress=0.6)  # after warm-up: every loss is on
    assert torch.isfinite(out.loss)
    out.loss.backward()
    grad = enc.prefix_tokens.grad[0, enc.num_registers :]
    for i in range(C):
        for j in range(i):
            assert float((grad[i] - grad[j]).abs().max()) > 0, "class tokens must get distinct gradients"
    opt.step()
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith("encoder.vit.blocks.0.") for k in changed) and "encoder.prefix_tokens" in changed

    # other input sizes resample the patch position embedding
    p = enc.patch_size
    model.eval()
    with torch.no_grad():
        fwd = model(torch.randn(1, 3, 3 * p, 5 * p))
    assert fwd.cam.shape == (1, C, 3, 5)

    path = save_weights(tmp_path / "m.safetensors", model, cfg, iteration=1)
    loaded, cfg2 = load_model(path)
    assert cfg2.to_dict() == cfg.to_dict()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        a, b = model(x), loaded(x)
    torch.testing.assert_close(a.cam, b.cam)
    torch.testing.assert_close(a.seg, b.seg)


def _plain(kwargs: dict[str, Any]) -> dict[str, Any]:
    from sia_core.timm_backbone import timm_kwargs

    return timm_kwargs(kwargs)


@pytest.mark.parametrize(
    "arch", ["vit_small_patch16_224", "vit_base_patch16_224", "vit_large_patch16_224", "vit_huge_patch14_224"]
)
def test_real_widths_one_block(arch):
    """ViT-S/B/L/H at their own width (one block, so it stays cheap): a forward of the full model."""
    size = 28 if "patch14" in arch else 32
    cfg = family_cfg(arch, {"depth": 1, "img_size": size}, size, variant="a")
    cfg.model.aux_layer = -1
    model = build_model(cfg).eval()
    width = timm.create_model(arch, pretrained=False, num_classes=0, depth=1, img_size=size).embed_dim
    with torch.no_grad():
        fwd = model(torch.randn(1, 3, size, size))
    assert fwd.enc.tokens.shape == (1, C, width)


def test_backbone_registers_keep_their_weights_and_class_tokens_follow_them():
    vit = timm.create_model("vit_small_patch14_reg4_dinov2", pretrained=False, num_classes=0, **TINY, img_size=56)
    reg, cls = vit.reg_token.detach().clone(), vit.cls_token.detach().clone()
    from sia_core.models.encoder import MCTViT

    enc = MCTViT(vit, num_classes=C, num_registers=2)
    torch.testing.assert_close(enc.backbone_registers.detach(), reg)
    assert enc.backbone_register_pos is None  # no_embed_class: registers have no position embedding
    assert enc.num_prefix == 4 + 2 + C
    assert_cls_copies_with_distinct_offsets(enc.prefix_tokens[:, 2:].detach(), cls)
    out = enc(torch.randn(1, 3, 56, 56))
    assert out.tokens.shape == (1, C, 32) and out.patches.shape == (1, 16, 32)


def test_no_cls_token_class_tokens_are_distinct_draws():
    vit = timm.create_model(
        "vit_base_patch16_224",
        pretrained=False,
        num_classes=0,
        **TINY,
        img_size=64,
        class_token=False,
        global_pool="avg",
    )
    from sia_core.models.encoder import MCTViT

    enc = MCTViT(vit, num_classes=C, num_registers=4)
    assert_cls_copies_with_distinct_offsets(enc.prefix_tokens[:, 4:].detach(), torch.zeros(1, 1, 32))
    assert enc.final_norm is enc.vit.fc_norm  # the final norm of avg-pooled ViTs


# ------------------------------------------------------------------------------------------- freeze


def test_freeze_all_trains_only_tokens_and_heads():
    arch, kwargs, size = FAMILIES["plain ViT (CLS, embedded position of CLS)"]
    cfg = family_cfg(arch, kwargs, size)
    model = build_model(cfg).train()
    params = trainable_parameters(model, "all")
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert names == {n for n, p in model.named_parameters() if any(p is q for q in params)}
    assert "encoder.prefix_tokens" in names and "encoder.prefix_pos" in names
    assert not any(n.startswith("encoder.vit.") or n == "encoder.patch_pos" for n in names)
    assert any(n.startswith("decoder.") for n in names) and any(n.startswith("classifier.") for n in names)
    frozen = {k: v.clone() for k, v in model.encoder.vit.state_dict().items()}
    opt = torch.optim.Adam(params, lr=1e-2)
    sia_losses(model, make_batch(size), cfg, progress=0.6).loss.backward()
    assert model.encoder.prefix_tokens.grad is not None  # through the frozen blocks
    opt.step()
    for k, v in model.encoder.vit.state_dict().items():
        assert torch.equal(v, frozen[k]), k


def test_freeze_all_but_last_block():
    arch, kwargs, size = FAMILIES["plain ViT (CLS, embedded position of CLS)"]
    model = build_model(family_cfg(arch, kwargs, size))
    trainable_parameters(model, "all-but-1")
    grads = {n: p.requires_grad for n, p in model.named_parameters()}
    assert grads["encoder.vit.blocks.2.attn.qkv.weight"] and grads["encoder.vit.norm.weight"]
    assert not grads["encoder.vit.blocks.1.attn.qkv.weight"] and not grads["encoder.vit.patch_embed.proj.weight"]
    with pytest.raises(SIAError, match="only 3 blocks"):
        trainable_parameters(model, "all-but-4")
    with pytest.raises(SIAError, match="unknown model.freeze"):
        trainable_parameters(model, "half")


# ------------------------------------------------------------------------------------------- local-dir


def write_hub_folder(folder: Path, arch: str, kwargs: dict[str, Any], size: int, drop=()) -> dict[str, torch.Tensor]:
    """A folder in timm's hub layout (config.json + model.safetensors), written by timm's ``save_for_hf``.

    ``drop``: model args left out of config.json, as hub models whose card passes them in code (UNI2-h,
    Virchow2: mlp_layer, act_layer).
    """
    from sia_core.timm_backbone import timm_kwargs

    torch.manual_seed(1)
    vit = timm.create_model(arch, pretrained=False, num_classes=0, **timm_kwargs(kwargs))
    args = {k: v for k, v in kwargs.items() if isinstance(v, (int, float, str, bool, list))}
    data = {"input_size": (3, size, size), "mean": (0.7, 0.6, 0.5), "std": (0.2, 0.25, 0.3)}
    timm.models.save_for_hf(vit, folder, model_args=args, safe_serialization=True, data_config=data)
    cfg_file = folder / "config.json"
    config = json.loads(cfg_file.read_text())
    for key in drop:
        config["model_args"].pop(key, None)
    cfg_file.write_text(json.dumps(config))
    return load_file(str(folder / "model.safetensors"))


def test_local_dir_weights_load_end_to_end(tmp_path):
    arch, kwargs, size = FAMILIES["8 registers, patch 14, SwiGLU, LayerScale, dynamic_img_size (UNI2-h-like)"]
    folder = tmp_path / "uni2-like"
    state = write_hub_folder(folder, arch, kwargs, size, drop=("mlp_layer", "act_layer"))
    cfg = apply_variant(get_preset("test"), "f")
    cfg.data.classes = ["tumor", "stroma", "normal"]
    cfg.model.pretrained = f"local-dir:{folder}"
    cfg.model.backbone_kwargs = {"mlp_layer": "timm.layers.SwiGLUPacked", "act_layer": "silu"}  # as the card says
    cfg = resolve_pretrained(cfg)
    assert cfg.model.backbone == arch and cfg.model.backbone_kwargs["depth"] == 3
    assert cfg.model.backbone_kwargs["reg_tokens"] == 8 and cfg.model.backbone_kwargs["act_layer"] == "silu"
    assert cfg.data.mean == (0.7, 0.6, 0.5) and cfg.data.std == (0.2, 0.25, 0.3) and cfg.data.img_size == size
    assert cfg.dam.local_size % 14 == 0  # DAM crops follow the patch size
    origin = cfg.model.pretrained_origin
    sha = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    assert origin == {
        "spec": f"local-dir:{folder}",
        "source": "local-dir",
        "path": str(folder.resolve()),
        "file": "model.safetensors",
        "sha256": sha,
    }
    model = build_model(cfg)
    vit = model.encoder.vit
    torch.testing.assert_close(vit.blocks[1].mlp.fc1.weight, state["blocks.1.mlp.fc1.weight"])
    torch.testing.assert_close(vit.blocks[2].ls2.gamma, state["blocks.2.ls2.gamma"])
    torch.testing.assert_close(model.encoder.backbone_registers.detach(), state["reg_token"])
    torch.testing.assert_close(model.encoder.patch_pos.detach(), state["pos_embed"])
    assert_cls_copies_with_distinct_offsets(
        model.encoder.prefix_tokens[:, cfg.model.num_registers :].detach(), state["cls_token"]
    )
    assert resolve_pretrained(cfg).to_dict() == cfg.to_dict()  # idempotent


def test_local_dir_trains_and_records_its_weights(tmp_path):
    from sia_core.cli import main
    from sia_core.data.synthetic import make_synthetic_dataset

    arch, kwargs, size = FAMILIES["4 registers, patch 14, no_embed_class, LayerScale (DINOv2-reg, Virchow2-like)"]
    folder = tmp_path / "weights"
    write_hub_folder(folder, arch, kwargs, size)
    data = make_synthetic_dataset(tmp_path / "data", n_train=4, n_val=0, size=64, seed=3)
    out = tmp_path / "run"
    args = ["train", "--data", str(data), "--out", str(out), "--preset", "test"]
    sets = [
        "train.iterations=2",
        "train.ckpt_every=0",
        f"model.pretrained=local-dir:{folder}",
        "model.freeze=all-but-1",
    ]
    assert main(args + [x for s in sets for x in ("--set", s)]) == 0
    _, cfg, _ = read_weights(out / "last.safetensors")
    sha = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    assert cfg.model.pretrained_origin["sha256"] == sha and cfg.model.backbone == arch
    assert cfg.model.freeze == "all-but-1" and cfg.data.img_size == size
    from sia_core.config import SIAConfig

    assert SIAConfig.load(out / "config.yaml").model.pretrained_origin == cfg.model.pretrained_origin
    model, _ = load_model(out)  # rebuilt without reading the starting weights again
    assert model.encoder.num_backbone_registers == 4


def test_weights_of_another_architecture_name_the_keys(tmp_path):
    arch, kwargs, size = FAMILIES["plain ViT (CLS, embedded position of CLS)"]
    folder = tmp_path / "w"
    write_hub_folder(folder, arch, kwargs, size)
    cfg = get_preset("test")
    cfg.model.pretrained = f"local-dir:{folder}"
    cfg.model.backbone_kwargs = {"depth": 2}  # the user's kwargs clash with the weights (3 blocks)
    cfg = resolve_pretrained(cfg)
    with pytest.raises(SIAError, match=r"do not fit.*unexpected: blocks\.2\.") as err:
        build_model(cfg)
    assert "\n" not in str(err.value)


def test_bad_pretrained_values(tmp_path):
    with pytest.raises(SIAError, match="not a timm model name with pretrained weights"):
        parse_pretrained("vit_nonexistent_patch16.x")
    with pytest.raises(SIAError, match="no config.json"):
        parse_pretrained(f"local-dir:{tmp_path}")
    with pytest.raises(SIAError, match="not found"):
        parse_pretrained(str(tmp_path / "missing.safetensors"))
    with pytest.raises(SIAError, match="hf-hub:org/name"):
        parse_pretrained("hf-hub:justaname")
    assert parse_pretrained("none") is None and parse_pretrained(None) is None
    assert parse_pretrained("vit_base_patch16_224").ident == "vit_base_patch16_224.augreg2_in21k_ft_in1k"


def test_paper_preset_starts_from_imagenet_and_names_the_tag():
    cfg = get_preset("paper")
    assert cfg.model.pretrained == PAPER_WEIGHTS == "vit_base_patch16_224.orig_in21k_ft_in1k"
    assert get_preset("cpu").model.pretrained is None and get_preset("test").model.pretrained is None


def test_offline_not_cached_is_one_line_with_the_predownload_command(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(SIAError) as err:
        fetch_pretrained("hf-hub:MahmoodLab/UNI")
    text = str(err.value)
    assert "not in the Hugging Face cache" in text and "\n" not in text
    assert "hf download MahmoodLab/UNI --local-dir UNI" in text and "model.pretrained=local-dir:UNI" in text
    with pytest.raises(SIAError, match="hf download timm/vit_base_patch16_224.orig_in21k_ft_in1k"):
        fetch_pretrained(PAPER_WEIGHTS)


def test_offline_cli_train_fails_with_one_line(tmp_path, monkeypatch, capsys):
    from huggingface_hub import constants

    from sia_core.cli import main
    from sia_core.data.synthetic import make_synthetic_dataset

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    data = make_synthetic_dataset(tmp_path / "data", n_train=2, n_val=0, size=64, seed=1)
    args = ["train", "--data", str(data), "--out", str(tmp_path / "r"), "--preset", "test"]
    assert main([*args, "--set", "model.pretrained=hf-hub:paige-ai/Virchow2"]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: weights hf-hub:paige-ai/Virchow2 are not in the")
    assert not (tmp_path / "r").exists()  # nothing written before the weights are there


def test_unreachable_hub_is_one_line_not_a_logged_warning_too(tmp_path, monkeypatch, caplog):
    """Online but the hub cannot be reached (no route, DNS): huggingface_hub logs each failed request as a
    warning before raising; the user must see SIA's one line only."""
    import logging

    from huggingface_hub import constants

    dead = "http://127.0.0.1:9"  # the discard port: connection refused
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", dead)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", dead + "/{repo_id}/resolve/{revision}/{filename}")
    before = logging.getLogger("huggingface_hub").level
    caplog.set_level(logging.DEBUG)
    with pytest.raises(SIAError) as err:
        fetch_pretrained("hf-hub:MahmoodLab/UNI")
    assert "hub cannot be reached" in str(err.value) and "\n" not in str(err.value)
    hub_records = [r for r in caplog.records if r.name.startswith("huggingface_hub") and r.levelno >= logging.WARNING]
    assert hub_records == []
    assert logging.getLogger("huggingface_hub").level == before  # restored


# ------------------------------------------------------------------------------------------- hub stand-in


@pytest.fixture
def hub(tmp_path, monkeypatch) -> Iterator[FakeHub]:
    with serve_fake_hub(tmp_path, monkeypatch) as server:
        yield server


def hub_repo_files(tmp_path: Path, family: str) -> tuple[dict[str, bytes], dict[str, torch.Tensor]]:
    arch, kwargs, size = FAMILIES[family]
    folder = tmp_path / "src"
    state = write_hub_folder(folder, arch, kwargs, size)
    return {name: (folder / name).read_bytes() for name in ("config.json", "model.safetensors")}, state


def test_hub_download_reports_progress_caches_and_pins_the_commit(tmp_path, hub):
    files, state = hub_repo_files(tmp_path, "plain ViT (CLS, embedded position of CLS)")
    commit = hub.add("lab/tiny-vit", files)
    seen: list[tuple[int, Any, str]] = []
    origin = fetch_pretrained("hf-hub:lab/tiny-vit", progress=lambda d, t, n: seen.append((d, t, n)))
    size = len(files["model.safetensors"])
    assert seen and seen[-1][0] == size and seen[-1][1] == size and len(seen) > 3
    assert [d for d, _, _ in seen] == sorted(d for d, _, _ in seen)
    assert origin == {
        "spec": "hf-hub:lab/tiny-vit",
        "source": "hf-hub",
        "repo": "lab/tiny-vit",
        "revision": commit,
        "file": "model.safetensors",
        "sha256": hashlib.sha256(files["model.safetensors"]).hexdigest(),
    }
    gets = len(hub.gets)
    cfg = get_preset("test")
    cfg.data.classes = ["a", "b", "c"]
    cfg.model.pretrained = "hf-hub:lab/tiny-vit"
    cfg = resolve_pretrained(cfg)  # timm reads config.json and the weights from the cache
    model = build_model(cfg)
    assert len(hub.gets) == gets  # nothing downloaded twice
    torch.testing.assert_close(model.encoder.vit.blocks[0].attn.qkv.weight, state["blocks.0.attn.qkv.weight"])
    assert cfg.model.pretrained_origin["revision"] == commit


def test_hub_download_can_be_cancelled(tmp_path, hub):
    files, _ = hub_repo_files(tmp_path, "plain ViT (CLS, embedded position of CLS)")
    hub.add("lab/tiny-vit", files)
    cancel = threading.Event()
    seen: list[int] = []

    def progress(done: int, total: Any, name: str) -> None:
        seen.append(done)
        cancel.set()  # the Cancel button, pressed after the first chunk

    with pytest.raises(DownloadCancelled):
        fetch_pretrained("hf-hub:lab/tiny-vit", progress=progress, cancel=cancel)
    assert len(seen) == 1 and seen[0] < len(files["model.safetensors"])
    snapshots = list((tmp_path / "hf-cache").rglob("snapshots/*/model.safetensors"))
    assert snapshots == []  # not in the cache as a complete file
    cancel.clear()
    assert fetch_pretrained("hf-hub:lab/tiny-vit")["file"] == "model.safetensors"  # resumes


def test_gated_model_without_token_says_how_to_get_access(tmp_path, hub):
    files, _ = hub_repo_files(tmp_path, "plain ViT (CLS, embedded position of CLS)")
    hub.add("lab/gated-vit", files, gated=True)
    with pytest.raises(SIAError) as err:
        fetch_pretrained("hf-hub:lab/gated-vit")
    text = str(err.value)
    assert "gated model and no Hugging Face token" in text and "hf auth login" in text and "HF_TOKEN" in text
    assert "/lab/gated-vit" in text and "\n" not in text


def test_hub_repository_that_is_not_there_or_not_timm(tmp_path, hub):
    hub.add("lab/transformers-only", {"model.safetensors": b"x"})
    with pytest.raises(SIAError, match="not a timm model"):
        fetch_pretrained("hf-hub:lab/transformers-only")
    with pytest.raises(SIAError, match="no model lab/absent on the Hugging Face hub"):
        fetch_pretrained("hf-hub:lab/absent")


def test_timm_tag_weights_come_through_the_hub_strictly(tmp_path, hub, monkeypatch):
    """A timm name with a tag (how the paper preset names its weights): timm's registry gives the architecture
    and preprocessing, the weights come from its ``timm/`` hub repository; a file that misses a block is an
    error naming it, never a silently random block (timm relaxes strict loading when the head differs)."""
    from huggingface_hub import constants
    from safetensors.torch import save

    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 1 << 20)
    name = "test_vit.r160_in1k"  # timm's own small test ViT: 6 blocks, 64 wide, a 1000-class head
    torch.manual_seed(2)
    state = timm.create_model("test_vit", pretrained=False).state_dict()
    hub.add(f"timm/{name}", {"model.safetensors": save({k: v.contiguous() for k, v in state.items()})})
    cfg = get_preset("test")
    cfg.data.classes = ["a", "b", "c"]
    cfg.model.pretrained = name
    cfg = resolve_pretrained(cfg)
    assert cfg.model.backbone == "test_vit" and cfg.model.backbone_kwargs == {}  # not the preset's
    pc = timm.models.get_pretrained_cfg(name)
    assert cfg.data.img_size == 160 and cfg.data.mean == tuple(pc.mean) and cfg.data.std == tuple(pc.std)
    assert cfg.model.pretrained_origin["repo"] == f"timm/{name}"
    model = build_model(cfg)
    torch.testing.assert_close(model.encoder.vit.blocks[5].mlp.fc2.weight, state["blocks.5.mlp.fc2.weight"])
    assert isinstance(model.encoder.vit.head, torch.nn.Identity)

    partial = {k: v.contiguous() for k, v in state.items() if not k.startswith("blocks.5.")}
    hub.add(f"timm/{name}", {"model.safetensors": save(partial)})
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "other-cache"))
    cfg.model.pretrained_origin = {}
    with pytest.raises(SIAError, match=r"do not fit.*missing: blocks\.5\."):
        build_model(resolve_pretrained(cfg))
