"""The ``sia-core`` command line: every command end to end on a tiny synthetic dataset, and bad input that must
give one clear error line naming the file (exit status 2), never a traceback."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from sia_core.cli import main
from sia_core.data.synthetic import make_synthetic_dataset

TRAIN = ["--preset", "test", "--set", "train.iterations=2", "--set", "train.val_every=2", "--set", "train.ckpt_every=0"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_synthetic_dataset(tmp_path_factory.mktemp("cli") / "data", n_train=6, n_val=3, size=64, seed=2)


@pytest.fixture(scope="module")
def run(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", "--data", str(data), "--out", str(out), *TRAIN]) == 0
    return out


def error_line(capsys) -> str:
    # progress bars (tqdm, carriage-return lines on stderr) aside, exactly one line: the error, no traceback
    err = capsys.readouterr().err.replace("\r", "\n").splitlines()
    err = [line for line in err if line.strip() and "%|" not in line and not line.startswith("iteration ")]
    assert len(err) == 1, err
    assert err[0].startswith("error: ")
    return err[0]


def copy_data(data: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "data"
    shutil.copytree(data, dst)
    return dst


# ------------------------------------------------------------------------------------------- commands


@pytest.mark.parametrize("cmd", ["train", "evaluate", "predict", "pseudo-label", "demo", "predict-slide"])
def test_help_of_every_command(cmd, capsys):
    with pytest.raises(SystemExit) as ex:
        main([cmd, "--help"])
    assert ex.value.code == 0
    assert "usage: sia-core " + cmd in capsys.readouterr().out


def test_help_imports_no_torch():
    # A fresh interpreter: --help of every command (the parser, predict-slide's options included) must not wait
    # for torch and timm, which take 5-10 s to import on a laptop.
    code = (
        "import sys\n"
        "from sia_core.cli import main\n"
        "for cmd in ([], ['train'], ['predict-slide'], ['demo']):\n"
        "    try:\n"
        "        main([*cmd, '--help'])\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print(sorted(m for m in ('torch', 'timm') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_train_writes_a_run(run):
    assert {"config.yaml", "last.safetensors", "best.safetensors", "state.pt", "log.jsonl"} <= {
        p.name for p in run.iterdir()
    }


def test_evaluate_prints_table_and_json_last(run, data, capsys, tmp_path):
    assert main(["evaluate", str(run), "--data", str(data), "--split", "val", "--json", str(tmp_path / "m.json")]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(out[-1])
    assert summary["protocol"] == "label-free decoder"
    full = json.loads((tmp_path / "m.json").read_text())
    for key in ("mIoU", "mDice", "mPrecision", "mRecall"):
        assert summary[key] == full["label_free"]["decoder"][key]
        for proto in ("label_free", "labels_given"):
            for output in ("decoder", "cam", "inhibition", "rsm"):
                assert 0 <= summary[proto][output][key] <= 1
    text = "\n".join(out)
    assert text.index("label-free (no labels given)") < text.index("labels given (true classes)")
    assert sum(line.startswith("decoder") for line in out) == 2
    assert full["num_images"] == 3 and len(full["label_free"]["decoder"]["matrix"]) == 3


def test_predict_writes_maps_and_label_maps(run, data, tmp_path, capsys):
    imgs = sorted((data / "val" / "img").glob("*.png"))
    out = tmp_path / "pred"
    assert (
        main(["predict", str(run), str(imgs[0]), str(data / "val" / "img"), "--out", str(out), "--format", "tif"]) == 0
    )
    stem = imgs[0].stem
    names = {p.name for p in out.iterdir()}
    assert {
        f"{stem}_labels.tif",
        f"{stem}_pseudo.tif",
        f"{stem}_cam.tif",
        f"{stem}_inhibition.tif",
        f"{stem}_rsm.tif",
    } <= names
    from sia_core.export import read_float_tiff, read_labels

    labels, meta = read_labels(out / f"{stem}_labels.tif")
    assert labels.shape == (64, 64) and meta["classes"] == ["tumor", "stroma", "normal"]
    maps, names_ = read_float_tiff(out / f"{stem}_cam.tif")
    assert maps.shape == (3, 64, 64)
    # the same command again skips what is done; other options (or another model) never overwrite without asking
    capsys.readouterr()
    assert main(["predict", str(run), str(imgs[0]), "--out", str(out), "--format", "tif"]) == 0
    assert "skipping 1 images" in capsys.readouterr().out
    assert main(["predict", str(run), str(imgs[0]), "--out", str(out), "--format", "png"]) == 2
    assert "already exists" in error_line(capsys)
    assert main(["predict", str(run), str(imgs[0]), "--out", str(out), "--format", "png", "--overwrite"]) == 0


def test_pseudo_label_writes_palette_masks(run, data, tmp_path, capsys):
    out = tmp_path / "pseudo"
    assert main(["pseudo-label", str(run), "--data", str(data), "--out", str(out)]) == 0
    masks = sorted(out.glob("*.png"))
    assert len(masks) == 6
    m = Image.open(masks[0])
    assert m.mode == "P" and np.array(m).max() <= 3
    capsys.readouterr()
    assert main(["pseudo-label", str(run), "--data", str(data), "--out", str(out)]) == 2
    assert "already exist" in error_line(capsys)


def test_demo_end_to_end(tmp_path, monkeypatch, capsys):
    import sia_core.demo as demo

    monkeypatch.setattr(demo, "DEMO_TRAIN", 6)
    monkeypatch.setattr(demo, "DEMO_VAL", 2)
    monkeypatch.setattr(demo, "DEMO_SIZE", 64)
    monkeypatch.setattr(demo, "DEMO_PRESET", "test")
    assert main(["demo", "--out", str(tmp_path / "demo"), "--iterations", "2", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    saved = yaml.safe_load((tmp_path / "demo" / "run" / "config.yaml").read_text())
    assert saved["train"]["seed"] == 3 and saved["train"]["iterations"] == 2
    for name in ("dataset", "run", "metrics", "pseudo-labels", "figure"):
        assert name in out
    assert (tmp_path / "demo" / "overview.png").stat().st_size > 1000
    assert len(list((tmp_path / "demo" / "pseudo").glob("*.png"))) == 6
    capsys.readouterr()
    assert main(["demo", "--out", str(tmp_path / "demo"), "--iterations", "2"]) == 2
    assert "--force" in error_line(capsys)


# ------------------------------------------------------------------------------------------- bad input


def test_missing_dataset_folder(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "r"), *TRAIN]) == 2
    assert "nope" in error_line(capsys)


def test_empty_train_folder(tmp_path, capsys):
    (tmp_path / "d" / "train").mkdir(parents=True)
    (tmp_path / "d" / "dataset.yaml").write_text("classes: [a, b]\nignore_index: 2\n")
    assert main(["train", "--data", str(tmp_path / "d"), "--out", str(tmp_path / "r"), *TRAIN]) == 2
    assert "train" in error_line(capsys)
    assert not (tmp_path / "r").exists()  # nothing written on bad input


@pytest.mark.parametrize("name, match", [("x-[1 0].png", "x-\\[1 0\\].png"), ("y-[0 0 0].png", "y-\\[0 0 0\\].png")])
def test_bad_label_vectors(data, tmp_path, capsys, name, match):
    d = copy_data(data, tmp_path)
    shutil.copy(next((d / "train").glob("*.png")), d / "train" / name)
    assert main(["train", "--data", str(d), "--out", str(tmp_path / "r"), *TRAIN]) == 2
    line = error_line(capsys)
    assert re.search(match, line), line


def test_unreadable_image(data, tmp_path, capsys):
    d = copy_data(data, tmp_path)
    (d / "train" / "broken-[1 0 0].png").write_bytes(b"this is not a png")
    assert main(["train", "--data", str(d), "--out", str(tmp_path / "r"), *TRAIN]) == 2
    assert "broken-[1 0 0].png" in error_line(capsys)


def test_truncated_image_during_training(data, tmp_path, capsys):
    d = copy_data(data, tmp_path)
    victim = sorted((d / "train").glob("*.png"))[0]
    victim.write_bytes(victim.read_bytes()[:200])  # header intact, pixels cut
    # 3 iterations of batch 2 visit all 6 images
    assert main(["train", "--data", str(d), "--out", str(tmp_path / "r"), *TRAIN, "--set", "train.iterations=3"]) == 2
    assert victim.name in error_line(capsys)


def test_mask_of_other_size(run, data, tmp_path, capsys):
    d = copy_data(data, tmp_path)
    mask = sorted((d / "val" / "mask").glob("*.png"))[0]
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(mask)
    assert main(["evaluate", str(run), "--data", str(d)]) == 2
    assert mask.name in error_line(capsys)


def test_mask_values_outside_classes(run, data, tmp_path, capsys):
    d = copy_data(data, tmp_path)
    mask = sorted((d / "val" / "mask").glob("*.png"))[1]
    Image.fromarray(np.full((64, 64), 7, np.uint8)).save(mask)
    assert main(["evaluate", str(run), "--data", str(d)]) == 2
    line = error_line(capsys)
    assert mask.name in line and "7" in line


def test_run_directory_holding_another_run(run, data, capsys):
    assert main(["train", "--data", str(data), "--out", str(run), *TRAIN]) == 2
    line = error_line(capsys)
    assert "already holds a run" in line and "--resume" in line and "--force" in line


def test_weights_of_another_architecture(data, tmp_path, capsys):
    import timm
    import torch

    wrong = tmp_path / "resnet.pth"
    torch.save(timm.create_model("resnet18", pretrained=False).state_dict(), wrong)
    args = [
        "train",
        "--data",
        str(data),
        "--out",
        str(tmp_path / "r"),
        *TRAIN,
        "--set",
        f"model.backbone_weights={wrong}",
    ]
    assert main(args) == 2
    assert "resnet.pth" in error_line(capsys)
    # a backbone file where a trained SIA model is expected
    from safetensors.torch import save_file

    st = tmp_path / "backbone.safetensors"
    save_file({"w": torch.zeros(2)}, str(st))
    assert main(["evaluate", str(st), "--data", str(data)]) == 2
    assert "backbone.safetensors" in error_line(capsys)


def test_missing_model(data, tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "norun"), "--data", str(data)]) == 2
    assert "norun" in error_line(capsys)


def test_init_from_model_of_other_classes(run, tmp_path, capsys):
    other = make_synthetic_dataset(tmp_path / "four", n_train=4, n_val=0, size=64, seed=3, classes=4)
    assert main(["train", "--data", str(other), "--out", str(tmp_path / "r"), *TRAIN, "--init-from", str(run)]) == 2
    assert "classes" in error_line(capsys)


def test_init_from_model_without_the_stem(run, data, tmp_path, capsys):
    # every other tensor name matches: without the check the stem would stay random and nobody would know
    out = tmp_path / "r"
    args = ["train", "--data", str(data), "--out", str(out), *TRAIN, "--set", "model.conv_stem=true"]
    assert main([*args, "--init-from", str(run)]) == 2
    assert "model.conv_stem is false there, true here" in error_line(capsys)
    assert not (out / "last.safetensors").exists()


def test_resume_continues(data, tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["train", "--data", str(data), "--out", str(out), *TRAIN]) == 0
    assert main(["train", "--data", str(data), "--out", str(out), "--resume"]) == 0  # already complete: no-op
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in log if "split" not in r] == [1, 2]
