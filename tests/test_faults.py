"""Bad input and faults on the command line (issue 11): every case is one line ``error: ...`` with exit status 2,
never a traceback; nothing already written is lost or silently overwritten; a run that failed before its first
checkpoint can simply be started again."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_cli import copy_data, error_line

from sia_core.cli import main
from sia_core.data.synthetic import make_synthetic_dataset
from sia_core.errors import SIAError

SETS = ["train.iterations=2", "train.val_every=2", "train.ckpt_every=0"]
TRAIN = ["--preset", "test", *[x for s in SETS for x in ("--set", s)]]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_synthetic_dataset(tmp_path_factory.mktemp("faults") / "data", n_train=6, n_val=3, size=64, seed=5)


@pytest.fixture(scope="module")
def run(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("faults") / "run"
    assert main(["train", "--data", str(data), "--out", str(out), *TRAIN]) == 0
    return out


def error_lines(capsys) -> list[str]:
    """stderr without progress bars; no traceback allowed."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = err.replace("\r", "\n").splitlines()
    return [x for x in lines if x.strip() and "%|" not in x and not x.startswith("iteration ")]


def train_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--data", str(data), "--out", str(out), *TRAIN, *extra]


# ------------------------------------------------------------------ 3. same file name from two inputs


def test_predict_refuses_two_inputs_with_the_same_name(run, data, tmp_path, capsys):
    src = sorted((data / "val" / "img").glob("*.png"))
    for sub, img in (("a", src[0]), ("b", src[1])):
        (tmp_path / sub).mkdir()
        shutil.copy(img, tmp_path / sub / "x.png")
    out = tmp_path / "pred"
    assert (
        main(["predict", str(run), str(tmp_path / "a" / "x.png"), str(tmp_path / "b" / "x.png"), "--out", str(out)])
        == 2
    )
    line = error_line(capsys)
    assert str(tmp_path / "a" / "x.png") in line and str(tmp_path / "b" / "x.png") in line
    assert not out.exists() or not any(out.iterdir())


def test_pseudo_label_refuses_two_images_with_the_same_name(run, data, tmp_path, capsys):
    d = copy_data(data, tmp_path)
    src = sorted((d / "train").glob("*.png"))
    for sub, img in (("a", src[0]), ("b", src[1])):
        (d / "train" / sub).mkdir()
        shutil.copy(img, d / "train" / sub / "x.png")
    (d / "train" / "sia_labels.csv").write_text("image,tumor,stroma,normal\na/x.png,1,0,0\nb/x.png,0,1,0\n")
    out = tmp_path / "pseudo"
    assert main(["pseudo-label", str(run), "--data", str(d), "--out", str(out)]) == 2
    line = error_line(capsys)
    assert "a/x.png" in line and "b/x.png" in line
    assert not out.exists() or not any(out.iterdir())


# ------------------------------------------------------------ 4. validate everything before writing


@pytest.fixture(scope="module")
def other_arch(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("faults") / "other"
    args = ["train", "--data", str(data), "--out", str(out), "--preset", "test", "--set", "train.iterations=1"]
    assert main([*args, "--set", "train.val_every=0", "--set", "model.decoder_channels=8"]) == 0
    return out


BAD_START = {
    "optimizer": ["--set", "train.optimizer=sgd"],
    "backbone file": ["--set", "model.backbone_weights=/nonexistent/vit.pth"],
    "device": ["--device", "cuda"],
}


@pytest.mark.parametrize("case", [*BAD_START, "init-from", "dataset.yaml"])
def test_a_run_that_cannot_start_writes_nothing(data, other_arch, tmp_path, capsys, case):
    if case == "device" and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    d, extra = data, BAD_START.get(case, [])
    if case == "init-from":
        extra = ["--init-from", str(other_arch)]
    if case == "dataset.yaml":
        d = copy_data(data, tmp_path)
        with open(d / "dataset.yaml", "a") as f:
            f.write("img_size: abc\n")
    out = tmp_path / "r"
    assert main(train_args(d, out, *extra)) == 2
    error_line(capsys)
    assert not (out / "config.yaml").exists() and not (out / "state.pt").exists()


def test_ctrl_c_before_the_first_step_leaves_a_run_that_simply_starts_again(data, tmp_path, capsys, monkeypatch):
    import sia_core.train as train

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    out = tmp_path / "r"
    with monkeypatch.context() as m:
        m.setattr(train, "sia_losses", interrupted)
        assert main(train_args(data, out)) == 130
    line = error_lines(capsys)[-1]
    assert "checkpoint" in line and "saved" not in line and "start the run again" in line, line
    assert main(train_args(data, out)) == 0  # the same command again: no "already holds a run"
    log = [json.loads(x)["iteration"] for x in (out / "log.jsonl").read_text().splitlines()]
    assert log == [1, 2, 2]  # two steps and the validation at step 2


def test_resume_of_a_run_without_checkpoint_starts_it(data, tmp_path, capsys, monkeypatch):
    import sia_core.train as train

    out = tmp_path / "r"
    with monkeypatch.context() as m:
        m.setattr(train, "sia_losses", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
        assert main(train_args(data, out)) == 130
    capsys.readouterr()
    assert main(["train", "--data", str(data), "--out", str(out), "--resume"]) == 0
    assert "starting the run from the beginning" in capsys.readouterr().out
    assert torch.load(out / "state.pt", weights_only=True)["iteration"] == 2


# -------------------------------------------------------------------------- 6. one line, not a traceback


@pytest.mark.parametrize("command", ["train", "predict", "pseudo-label", "evaluate --json"])
def test_output_path_blocked_by_a_file(run, data, tmp_path, capsys, monkeypatch, command):
    blocker = tmp_path / "afile"
    blocker.write_text("not a folder")
    target = blocker / "sub"  # a folder cannot be made inside a file
    img = sorted((data / "val" / "img").glob("*.png"))[0]
    args = {
        "train": train_args(data, target),
        "predict": ["predict", str(run), str(img), "--out", str(target)],
        "pseudo-label": ["pseudo-label", str(run), "--data", str(data), "--out", str(target)],
        "evaluate --json": ["evaluate", str(run), "--data", str(data), "--json", str(target / "m.json")],
    }[command]
    import sia_core.evaluate as evaluate

    def no_evaluation(*a, **k):
        raise AssertionError("the output path must be checked before the evaluation runs")

    monkeypatch.setattr(evaluate, "evaluate_items", no_evaluation)
    assert main(args) == 2
    assert str(blocker) in error_line(capsys)
    assert blocker.read_text() == "not a folder"


def test_output_folder_that_is_a_file(run, data, tmp_path, capsys):
    blocker = tmp_path / "afile"
    blocker.write_text("keep me")
    assert main(train_args(data, blocker)) == 2
    assert "is a file" in error_line(capsys)
    img = sorted((data / "val" / "img").glob("*.png"))[0]
    assert main(["predict", str(run), str(img), "--out", str(blocker)]) == 2
    assert "is a file" in error_line(capsys)
    assert blocker.read_text() == "keep me"


def test_read_only_output_folder(run, data, tmp_path, capsys, monkeypatch):
    import os

    ro = tmp_path / "ro"
    ro.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, *a, **k: False if Path(p) == ro else real(p, mode, *a, **k))
    img = sorted((data / "val" / "img").glob("*.png"))[0]
    for args in (train_args(data, ro / "run"), ["predict", str(run), str(img), "--out", str(ro)]):
        assert main(args) == 2
        line = error_line(capsys)
        assert str(ro) in line and "cannot be written" in line
    assert list(ro.iterdir()) == []


def test_disk_full_while_predicting_is_one_line(run, data, tmp_path, capsys, monkeypatch):
    import errno
    import os

    import tifffile

    def full(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(tifffile, "imwrite", full)
    out = tmp_path / "pred"
    assert main(["predict", str(run), str(data / "val" / "img"), "--out", str(out)]) == 2
    line = error_line(capsys)
    assert "no space left" in line and str(out) in line


def test_a_full_disk_that_numpy_reports_without_errno_is_a_full_disk(tmp_path, monkeypatch):
    """np.save on a full disk raises OSError('problem writing element 4096 to file') with no errno; it was reported
    as 'cannot write ...: problem writing element ... (fix: check the disk and the folder's permissions)'."""
    from sia_core.io_utils import WriteError, atomic_write

    def save(path):
        np.save(path, np.zeros(1000))
        raise OSError("problem writing element 4096 to file")

    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 4096, 4096))
    with pytest.raises(WriteError, match=f"no space left to write x.npy in {tmp_path} \\(4 kB free, 8 kB needed"):
        atomic_write(tmp_path / "x.npy", save, needed=8000)
    assert list(tmp_path.iterdir()) == []


def test_malformed_config_file(data, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  iterations: [1\n")
    assert main(train_args(data, tmp_path / "r", "--config", str(bad))) == 2
    assert "bad.yaml" in error_line(capsys)


def test_multi_line_yaml_error_from_set_is_one_line(data, tmp_path, capsys):
    assert main(train_args(data, tmp_path / "r", "--set", "train.cam_scales=[1, 2")) == 2
    assert "train.cam_scales" in error_line(capsys)


def test_malformed_config_yaml_of_a_run_on_resume(data, tmp_path, capsys):
    out = tmp_path / "r"
    assert main(train_args(data, out)) == 0
    (out / "config.yaml").write_text("train: {iterations: [2\n")
    capsys.readouterr()
    assert main(["train", "--data", str(data), "--out", str(out), "--resume"]) == 2
    assert "config.yaml" in error_line(capsys)


def test_unknown_device(run, data, tmp_path, capsys):
    assert main(train_args(data, tmp_path / "r", "--device", "tpu")) == 2
    assert "tpu" in error_line(capsys)
    img = sorted((data / "val" / "img").glob("*.png"))[0]
    assert main(["predict", str(run), str(img), "--out", str(tmp_path / "p"), "--device", "tpu"]) == 2
    assert "tpu" in error_line(capsys)


@pytest.mark.parametrize("line, key", [("img_size: abc", "img_size"), ("mean: [1, 2]", "mean")])
@pytest.mark.parametrize("with_set", [False, True])
def test_bad_types_in_dataset_yaml_blame_dataset_yaml(data, tmp_path, capsys, line, key, with_set):
    d = copy_data(data, tmp_path)
    with open(d / "dataset.yaml", "a") as f:
        f.write(line + "\n")
    extra = ["--set", "train.lr=0.001"] if with_set else []
    assert main(train_args(d, tmp_path / "r", *extra)) == 2
    err = error_line(capsys)
    assert "dataset.yaml" in err and key in err and "--set" not in err


def test_truncated_state_on_resume_from_the_cli(data, tmp_path, capsys):
    out = tmp_path / "r"
    assert main(train_args(data, out)) == 0
    state = out / "state.pt"
    state.write_bytes(state.read_bytes()[:1000])
    capsys.readouterr()
    assert main(["train", "--data", str(data), "--out", str(out), "--resume"]) == 2
    assert "state.pt" in error_line(capsys)


def test_ctrl_c_between_steps_and_again_during_the_save_is_no_traceback(data, tmp_path, capsys, monkeypatch):
    """Ctrl-C landing in the command's own loop (between two steps), a second one during the checkpoint that
    starts: the save runs in the command, not in the training generator's finalizer, where the second Ctrl-C
    came out as 'Exception ignored in: <generator object train_iter> ... Traceback'; and the line names the step
    really saved (it said 'interrupted at iteration 0: checkpoint of iteration 1 saved')."""
    import signal
    import sys

    import sia_core.cli as cli

    unraisable = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    real_to, real_save = cli._Bar.to, torch.save

    def to(bar, done, **postfix):
        real_to(bar, done, **postfix)
        if done == 1:
            raise KeyboardInterrupt  # the first Ctrl-C, after step 1, outside the generator

    def save(obj, f, *a, **k):
        signal.raise_signal(signal.SIGINT)  # the second Ctrl-C, during the save: held until it is done
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(cli._Bar, "to", to)
    monkeypatch.setattr(torch, "save", save)
    out = tmp_path / "r"
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # Python's own, as in a terminal
    try:
        assert main(train_args(data, out)) == 130
    finally:
        signal.signal(signal.SIGINT, previous)
    assert not unraisable, unraisable[0].exc_value
    lines = error_lines(capsys)
    assert lines[-1].startswith(f"interrupted at iteration 1: checkpoint of iteration 1 saved in {out};"), lines
    assert torch.load(out / "state.pt", weights_only=True)["iteration"] == 1


# -------------------------------------------------------------------------------- 7. config ranges


@pytest.mark.parametrize(
    "setting",
    [
        "train.iterations=-5",
        "train.iterations=0",
        "train.batch_size=0",
        "train.log_every=0",
        "train.lr=-0.1",
        "train.num_workers=-1",
        "infer.tile_overlap=64",
        "data.img_size=100",
        "rfm.lambda_low=0.9",
        "train.ema=1",
    ],
)
def test_values_out_of_range_are_refused_before_anything_is_written(data, tmp_path, capsys, setting):
    out = tmp_path / "r"
    assert main(train_args(data, out, "--set", setting)) == 2
    line = error_line(capsys)
    assert setting.split("=")[0] in line and "out of range" in line
    assert not out.exists()


def test_valid_presets_pass_validation():
    from sia_core.config import PRESETS, get_preset
    from sia_core.config_checks import validate_config

    for name in PRESETS:
        validate_config(get_preset(name))


# ------------------------------------------------------------------ 8. predict a folder with bad images


def test_predict_folder_with_bad_images(run, data, tmp_path, capsys):
    folder = tmp_path / "imgs"
    shutil.copytree(data / "val" / "img", folder)
    good = sorted(folder.glob("*.png"))
    (folder / "broken.png").write_bytes(b"not a png")
    cut = folder / "cut.png"
    cut.write_bytes(good[0].read_bytes()[:200])
    out = tmp_path / "pred"
    assert main(["predict", str(run), str(folder), "--out", str(out)]) == 2
    lines = error_lines(capsys)
    assert len(lines) == 3 and all(x.startswith("error: ") for x in lines), lines
    assert "broken.png" in lines[0] + lines[1] and "cut.png" in lines[0] + lines[1] and "2 of 5" in lines[2]
    for img in good:  # every good image was predicted
        assert (out / f"{img.stem}_labels.png").is_file() and (out / f"{img.stem}_pseudo.png").is_file()
    done = {p: p.stat().st_mtime_ns for p in out.iterdir()}
    # the user replaces the bad images and runs the same command again: only those are predicted
    shutil.copy(good[0], folder / "broken.png")
    shutil.copy(good[1], cut)
    capsys.readouterr()
    assert main(["predict", str(run), str(folder), "--out", str(out)]) == 0
    assert "skipping 3 images" in capsys.readouterr().out
    assert (out / "broken_labels.png").is_file() and (out / "cut_pseudo.png").is_file()
    assert all(p.stat().st_mtime_ns == t for p, t in done.items() if p.suffix != ".jsonl")


def test_predict_never_mixes_in_another_models_outputs(run, other_arch, data, tmp_path, capsys):
    out = tmp_path / "pred"
    img = sorted((data / "val" / "img").glob("*.png"))[0]
    assert main(["predict", str(run), str(img), "--out", str(out)]) == 0
    before = (out / f"{img.stem}_labels.png").read_bytes()
    capsys.readouterr()
    assert main(["predict", str(other_arch), str(img), "--out", str(out)]) == 2
    assert "already exists" in error_line(capsys)
    assert (out / f"{img.stem}_labels.png").read_bytes() == before


def test_predict_refuses_files_it_did_not_write(run, data, tmp_path, capsys):
    out = tmp_path / "pred"
    out.mkdir()
    img = sorted((data / "val" / "img").glob("*.png"))[0]
    mine = out / f"{img.stem}_labels.png"
    mine.write_bytes(b"a user's file")
    assert main(["predict", str(run), str(img), "--out", str(out)]) == 2
    assert "already exists" in error_line(capsys)
    assert mine.read_bytes() == b"a user's file"


# ------------------------------------------------------------------- 10. names in the labels CSV


@pytest.mark.parametrize("name", ["../../outside.png", "/etc/passwd", "..\\x.png", "a/../../x.png"])
def test_labels_csv_names_outside_the_dataset_are_refused(run, data, tmp_path, capsys, name):
    d = copy_data(data, tmp_path)
    outside = tmp_path / "outside.png"
    shutil.copy(sorted((d / "train").glob("*.png"))[0], outside)
    csv = d / "train" / "sia_labels.csv"
    csv.write_text(f"image,tumor,stroma,normal\n{name},1,0,0\n")
    assert main(train_args(d, tmp_path / "r")) == 2
    line = error_line(capsys)
    assert "sia_labels.csv" in line and "outside the folder" in line
    assert main(["pseudo-label", str(run), "--data", str(d), "--out", str(tmp_path / "p")]) == 2
    error_line(capsys)
    assert not (tmp_path / "sia_pseudo").exists() and not (outside.parent / "sia_pseudo").exists()


def test_widget_label_store_refuses_names_outside_its_folder(tmp_path):
    from napari_sia._images import LabelStore

    (tmp_path / "sia_labels.csv").write_text("image,a,b\n../x.png,1,0\n")
    store = LabelStore(tmp_path, ["a", "b"])
    assert store.error is not None and "outside" in store.error
    assert store.get("../x.png") is None


# -------------------------------------------------------------------------------------- 11. smaller


def test_label_errors_name_the_file_with_its_folder(tmp_path):
    from sia_core.data.layout import find_train_items

    for sub in ("a", "b"):
        (tmp_path / "train" / sub).mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "train" / sub / "x-[1 0 0].png")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "train" / "b" / "y-[1 0].png")
    with pytest.raises(SIAError) as err:
        find_train_items(tmp_path, 3)
    assert str(Path("b") / "y-[1 0].png") in str(err.value)


QUIET_WORKER = """
import os, signal, sys, threading
from sia_core.train import _quiet_worker

_quiet_worker(0)
os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C is the main process's business


def serve():  # what multiprocessing.resource_sharer does when the main process hangs up mid-transfer
    try:
        raise ConnectionResetError(104, "Connection reset by peer")
    except Exception:
        sys.excepthook(*sys.exc_info())


t = threading.Thread(target=serve)
t.start()
t.join()
try:
    raise ValueError("a real problem")
except Exception:
    sys.excepthook(*sys.exc_info())
print("alive")
"""


def test_dataloader_workers_leave_ctrl_c_to_the_main_process_and_drop_hang_up_errors():
    import subprocess
    import sys

    project = Path(__file__).resolve().parents[1]
    res = subprocess.run([sys.executable, "-c", QUIET_WORKER], capture_output=True, text=True, cwd=project, timeout=300)
    assert res.stdout.strip() == "alive", res.stderr
    assert "ConnectionResetError" not in res.stderr and "ValueError: a real problem" in res.stderr
