"""The checkpoint is one atomic unit: a kill or a second Ctrl-C at any point of a save, a full disk, a damaged
file or a torn log never makes ``--resume`` continue from weights of one step with optimiser state of another.

Every interrupted run is resumed and compared with the uninterrupted run tensor by tensor, for exact equality.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from sia_core.build import read_weights
from sia_core.data.synthetic import make_synthetic_dataset
from sia_core.errors import SIAError
from sia_core.run_config import resolve_train_config, training_samples
from sia_core.train import train_iter

ITERATIONS = 6
SETS = [f"train.iterations={ITERATIONS}", "train.val_every=0", "train.ckpt_every=2", "train.num_workers=0"]
PROJECT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_synthetic_dataset(tmp_path_factory.mktemp("ckpt") / "data", n_train=6, n_val=0, size=64, seed=4)


def _cfg(data: Path):
    return resolve_train_config(str(data), preset="test", overrides=SETS)


def _train(data: Path, out: Path, **kw) -> list:
    cfg = _cfg(data)
    return list(train_iter(cfg, training_samples(str(data), cfg), out, **kw))


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory) -> Path:
    """The uninterrupted run."""
    out = tmp_path_factory.mktemp("ckpt") / "straight"
    _train(data, out)
    return out


def assert_same_run(a: Path, b: Path) -> None:
    """Final weights identical, tensor by tensor, bit for bit; and the same log of iterations."""
    wa, _, ma = read_weights(a / "last.safetensors")
    wb, _, mb = read_weights(b / "last.safetensors")
    assert ma["iteration"] == mb["iteration"] == ITERATIONS
    assert wa.keys() == wb.keys()
    differ = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not differ, f"{len(differ)}/{len(wa)} tensors differ, e.g. {differ[:3]}"
    logs = [[json.loads(x)["iteration"] for x in (d / "log.jsonl").read_text().splitlines()] for d in (a, b)]
    assert logs[0] == logs[1] == list(range(1, ITERATIONS + 1))


def tmp_leftovers(run: Path) -> list[str]:
    return sorted(p.name for p in run.iterdir() if ".tmp" in p.name)


# ------------------------------------------------------------------------------- kill at any point of a save

KILL_SCRIPT = textwrap.dedent(
    """
    import os, sys
    import safetensors.torch
    import torch
    from sia_core.run_config import resolve_train_config, training_samples
    from sia_core.train import train_iter

    data, out, where, target, nth = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
    sets = sys.argv[6:]
    count = {"n": 0}

    def hit(name):
        # True on the nth write of the target file (the checkpoint of iteration 2 * nth)
        if not str(name).endswith(target) and target not in os.path.basename(str(name)):
            return False
        count["n"] += 1
        return count["n"] == nth

    def die():
        os._exit(9)  # like SIGKILL: no finally, no atexit, no cleanup

    real_save, real_st, real_replace = torch.save, safetensors.torch.save_file, os.replace

    def save(obj, f, *a, **k):
        real_save(obj, f, *a, **k)
        if where == "inside" and hit(f):
            with open(f, "r+b") as fh:  # half-written
                fh.truncate(os.path.getsize(f) // 2)
            die()

    def save_file(tensors, filename, *a, **k):
        real_st(tensors, filename, *a, **k)
        if where == "inside" and hit(filename):
            with open(filename, "r+b") as fh:
                fh.truncate(os.path.getsize(filename) // 2)
            die()

    def replace(src, dst, *a, **k):
        real_replace(src, dst, *a, **k)
        if where == "after" and hit(dst):
            die()

    torch.save, safetensors.torch.save_file, os.replace = save, save_file, replace
    cfg = resolve_train_config(data, preset="test", overrides=sets)
    for info in train_iter(cfg, training_samples(data, cfg), out):
        pass
    sys.exit(3)  # the kill point was never reached
    """
)


@pytest.mark.parametrize(
    "where, target",
    [
        ("inside", "state.pt"),  # killed while writing the optimiser state
        ("after", "state.pt"),  # between the two files
        ("inside", "last.safetensors"),  # killed while writing the weights
        ("after", "last.safetensors"),  # between the two files (the other order)
    ],
)
def test_kill_during_checkpoint_then_resume_equals_uninterrupted_run(data, reference, tmp_path, where, target):
    script = tmp_path / "kill.py"
    script.write_text(KILL_SCRIPT)
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(PROJECT)}
    res = subprocess.run(
        [sys.executable, str(script), str(data), str(run), where, target, "2", *SETS],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 9, res.stderr[-3000:]
    infos = _train(data, run, resume=True)
    assert infos and infos[-1].iteration == ITERATIONS
    assert_same_run(reference, run)
    assert tmp_leftovers(run) == []  # what the killed write left is cleaned up
    _, _, meta = read_weights(run / "last.safetensors")
    state = torch.load(run / "state.pt", weights_only=True)
    assert state["iteration"] == meta["iteration"] == ITERATIONS


def test_resume_repairs_weights_left_behind_by_an_interrupted_save(data, reference, tmp_path):
    """state.pt of iteration 4 saved, last.safetensors still of iteration 2 (killed between the two files):
    --resume continues from iteration 4 and rewrites last.safetensors from the checkpoint first."""
    run = tmp_path / "run"
    cfg = _cfg(data)
    gen = train_iter(cfg, training_samples(str(data), cfg), run)
    for info in gen:
        if info.iteration == 2:
            older = (run / "last.safetensors").read_bytes()
        if info.iteration == 4:
            break
    gen.close()
    (run / "last.safetensors").write_bytes(older)
    gen = train_iter(cfg, training_samples(str(data), cfg), run, resume=True)
    assert next(gen).iteration == 5
    assert read_weights(run / "last.safetensors")[2]["iteration"] == 4  # repaired before training went on
    list(gen)
    assert_same_run(reference, run)


# ------------------------------------------------------------------------------------- a second Ctrl-C


def _ctrl_c_during_save(monkeypatch, presses: int) -> None:
    """The first Ctrl-C (thrown into the loop at iteration 3) starts the final save; ``presses`` more arrive
    while torch.save writes the checkpoint."""
    real = torch.save
    state = {"armed": False}

    def save(obj, f, *a, **k):
        if state["armed"]:
            state["armed"] = False
            for _ in range(presses):
                signal.raise_signal(signal.SIGINT)
        return real(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", save)
    return state


@pytest.mark.parametrize("presses, saved", [(1, 3), (2, 2)])
def test_second_ctrl_c_during_the_save_never_tears_the_checkpoint(
    data, reference, tmp_path, monkeypatch, presses, saved
):
    """One more Ctrl-C during the save: the save finishes (iteration 3). Two more: it is abandoned and the
    previous checkpoint (iteration 2) stays whole. Either way the resumed run is the uninterrupted one."""
    # Python's own Ctrl-C handler, as in a terminal (a shell's background job starts with SIGINT ignored)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _second_ctrl_c(data, reference, tmp_path, monkeypatch, presses, saved)
    finally:
        signal.signal(signal.SIGINT, previous)


def _second_ctrl_c(data, reference, tmp_path, monkeypatch, presses, saved):
    run = tmp_path / "run"
    cfg = _cfg(data)
    state = _ctrl_c_during_save(monkeypatch, presses)
    gen = train_iter(cfg, training_samples(str(data), cfg), run)
    with pytest.raises(KeyboardInterrupt):
        for info in gen:
            if info.iteration == 3:
                state["armed"] = True
                gen.throw(KeyboardInterrupt)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored
    assert torch.load(run / "state.pt", weights_only=True)["iteration"] == saved
    monkeypatch.undo()
    _train(data, run, resume=True)
    assert_same_run(reference, run)


# ------------------------------------------------------------------------------------------- full disk


@pytest.mark.parametrize("how", ["OSError", "torch"])
def test_disk_full_keeps_the_previous_checkpoint_and_says_so_in_one_line(data, reference, tmp_path, monkeypatch, how):
    """A full disk as the OS reports it, and as torch.save does (a RuntimeError 'unexpected pos')."""
    import shutil

    run = tmp_path / "run"
    real = torch.save
    calls = {"n": 0}

    def save(obj, f, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:  # the checkpoint of iteration 4: some bytes, then the disk is full
            Path(f).write_bytes(b"x" * 1000)
            if how == "OSError":
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9, 0))
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")
        return real(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", save)
    with pytest.raises(SIAError) as err:
        _train(data, run)
    line = str(err.value)
    assert "\n" not in line and "no space left" in line and str(run) in line and "needed" in line
    assert calls["n"] == 2  # no second attempt on a disk that just refused
    assert tmp_leftovers(run) == []
    assert torch.load(run / "state.pt", weights_only=True)["iteration"] == 2
    assert read_weights(run / "last.safetensors")[2]["iteration"] == 2
    monkeypatch.undo()
    _train(data, run, resume=True)
    assert_same_run(reference, run)


def test_disk_full_on_the_cli_is_one_line(data, tmp_path, monkeypatch, capsys):
    from sia_core.cli import main

    def full(obj, f, *a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", full)
    args = [
        "train",
        "--data",
        str(data),
        "--out",
        str(tmp_path / "r"),
        "--preset",
        "test",
        *[x for s in SETS for x in ("--set", s)],
    ]
    assert main(args) == 2
    err = [x for x in capsys.readouterr().err.replace("\r", "\n").splitlines() if x.strip() and "%|" not in x]
    assert len(err) == 1 and err[0].startswith("error: no space left") and str(tmp_path / "r") in err[0], err


# ---------------------------------------------------------------------------------- damaged run files


@pytest.fixture()
def stopped(data, tmp_path) -> Path:
    """A run stopped at iteration 3 (checkpoint saved)."""
    run = tmp_path / "run"
    cfg = _cfg(data)
    gen = train_iter(cfg, training_samples(str(data), cfg), run)
    for info in gen:
        if info.iteration == 3:
            break
    gen.close()
    return run


def test_truncated_state_is_one_clear_error(data, stopped):
    state = stopped / "state.pt"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    with pytest.raises(SIAError) as err:
        _train(data, stopped, resume=True)
    assert "state.pt" in str(err.value) and "\n" not in str(err.value)


def test_weights_of_another_architecture_in_the_run_are_refused_not_overwritten(data, stopped, tmp_path):
    other = tmp_path / "other"
    cfg = resolve_train_config(
        str(data), preset="test", overrides=[*SETS, "model.decoder_channels=8", "train.iterations=1"]
    )
    list(train_iter(cfg, training_samples(str(data), cfg), other))
    foreign = (other / "last.safetensors").read_bytes()
    (stopped / "last.safetensors").write_bytes(foreign)
    with pytest.raises(SIAError) as err:
        _train(data, stopped, resume=True)
    assert "last.safetensors" in str(err.value) and "\n" not in str(err.value)
    assert (stopped / "last.safetensors").read_bytes() == foreign  # left as it was


def test_torn_log_line_is_tolerated(data, reference, stopped):
    with open(stopped / "log.jsonl", "a") as f:
        f.write('{"time": 1.0, "iteration": 4, "lo')  # a crash in the middle of an append
    _train(data, stopped, resume=True)
    assert_same_run(reference, stopped)
    from sia_core.train import read_log

    assert [r["iteration"] for r in read_log(stopped)] == list(range(1, ITERATIONS + 1))


def test_old_format_checkpoint_pair_of_different_steps_is_refused(data, stopped, tmp_path):
    """A state.pt of before this fix (optimiser only) is resumed only with weights of its own iteration."""
    state = torch.load(stopped / "state.pt", weights_only=True)
    del state["model"], state["format"]
    state["iteration"] = 2  # weights file says 3
    torch.save(state, stopped / "state.pt")
    with pytest.raises(SIAError, match="iteration 3 but .*state.pt iteration 2"):
        _train(data, stopped, resume=True)


# --------------------------------------------------------------------------------------- small things


def test_weights_have_the_permissions_of_the_other_run_files(reference):
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in reference.iterdir()}
    assert len(set(modes.values())) == 1, modes


SIGTERM_SCRIPT = textwrap.dedent(
    """
    import sys
    from sia_core.cli import main
    sys.exit(main(sys.argv[1:]))
    """
)


def test_sigterm_saves_like_ctrl_c(data, tmp_path):
    run = tmp_path / "run"
    script = tmp_path / "cli.py"
    script.write_text(SIGTERM_SCRIPT)
    sets = [x for s in [*SETS[1:], "train.iterations=500"] for x in ("--set", s)]
    proc = subprocess.Popen(
        [sys.executable, str(script), "train", "--data", str(data), "--out", str(run), "--preset", "test", *sets],
        cwd=PROJECT,
        env={**os.environ, "PYTHONPATH": str(PROJECT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        import time

        t0 = time.time()
        while time.time() - t0 < 300:
            log = run / "log.jsonl"
            if log.is_file() and len(log.read_text().splitlines()) >= 3:
                break
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 143, err[-2000:]
    lines = [x for x in err.replace("\r", "\n").splitlines() if x.strip() and "%|" not in x]
    assert len(lines) == 1 and "SIGTERM" in lines[0] and "--resume" in lines[0], lines
    state = torch.load(run / "state.pt", weights_only=True)
    assert state["iteration"] >= 3
    assert f"checkpoint of iteration {state['iteration']} saved" in lines[0]
    assert read_weights(run / "last.safetensors")[2]["iteration"] == state["iteration"]
