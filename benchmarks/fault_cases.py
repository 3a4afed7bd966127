"""Rerun of issue 11's fault list against the real command line: every case, its exit code, the line it printed
and a verdict from a check specific to the case.

    python benchmarks/fault_cases.py --out /tmp/faultrun        # 67 cases, about 85 CLI runs

It took 12-14 minutes on 2 CPU cores shared at load average 6-8; most of it is the 5-10 s every ``python -m sia_core``
spends importing torch, timm and torchvision (the slide command's options import them even for ``--help``).

Everything runs on a tiny synthetic dataset and slide the script writes into ``--out`` itself (the ``test``
preset, 10 iterations, CPU), so no data outside the repository is needed. Each case runs ``python -m sia_core``
of this checkout as a subprocess. Interruptions are real signals sent to the CLI process: SIGINT, SIGTERM and
SIGKILL from outside at a step read from ``log.jsonl``, or, where the moment must be exact (between the two
files of a checkpoint, inside one of them, before the first step), from inside the process by the same kind of
hook ``tests/test_checkpoint.py`` uses (torch.save / safetensors / os.replace wrapped, then ``os._exit``, the
equivalent of SIGKILL: no cleanup runs). A full disk is a tiny tmpfs and a read-only folder a read-only tmpfs
when this machine lets the script mount one (root); otherwise it is emulated (``ENOSPC`` raised by the
checkpoint writer; ``chattr +i`` on the folder) and the table's header says which. The napari reader cases
(item 9) and the widget's label store (10.4) call napari_sia's functions in this process.

The table is printed and written to ``OUT/fault_cases.md``; the exit status is 1 when any case fails.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's sia_core / napari_sia, not an installed copy

ITERATIONS = 10
SETS = [f"train.iterations={ITERATIONS}", "train.val_every=0", "train.ckpt_every=2", "train.num_workers=0"]
TRAIN = ["--preset", "test", *[x for s in SETS for x in ("--set", s)]]
MARKER = ".fault_cases"

# Runs the CLI exactly as ``python -m sia_core`` does, after installing the fault named in $SIA_FAULT (JSON).
WRAPPER = r"""
import json, os, runpy, signal, sys, time
fault = json.loads(os.environ["SIA_FAULT"])
kind = fault["kind"]
if kind in ("kill_inside", "kill_after", "enospc"):
    import safetensors.torch, torch
    count = {"n": 0}

    def hit(name):  # the nth write of the target file (its temporary ".state.pt.XXXX.tmp.pt" or its final name)
        base = os.path.basename(str(name))
        if base != fault["target"] and not base.startswith("." + fault["target"] + "."):
            return False
        count["n"] += 1
        return count["n"] == fault["nth"]

    def die(f):  # killed in the middle of writing f: half of it on disk, no cleanup of any kind
        with open(f, "r+b") as fh:
            fh.truncate(os.path.getsize(f) // 2)
        os._exit(9)

    real_save, real_st, real_replace = torch.save, safetensors.torch.save_file, os.replace

    def save(obj, f, *a, **k):
        if kind == "enospc" and hit(f):
            with open(f, "wb") as fh:
                fh.write(b"x" * 1000)
            raise OSError(28, os.strerror(28))
        real_save(obj, f, *a, **k)
        if kind == "kill_inside" and hit(f):
            die(f)

    def save_file(tensors, filename, *a, **k):
        real_st(tensors, filename, *a, **k)
        if kind == "kill_inside" and hit(filename):
            die(filename)

    def replace(src, dst, *a, **k):
        real_replace(src, dst, *a, **k)
        if kind == "kill_after" and hit(dst):
            os._exit(9)

    torch.save, safetensors.torch.save_file, os.replace = save, save_file, replace
elif kind == "sigint_in_step":  # Ctrl-C arriving during training step n (n = 1: before the first step is done)
    import sia_core.train as train

    real_losses, calls = train.sia_losses, {"n": 0}

    def losses(*a, **k):
        calls["n"] += 1
        if calls["n"] == fault["step"]:
            os.kill(os.getpid(), signal.SIGINT)
        return real_losses(*a, **k)

    train.sia_losses = losses
elif kind == "slow_save":  # a slow disk: every checkpoint takes seconds, so a second Ctrl-C lands inside one
    import torch

    real_save = torch.save

    def save(obj, f, *a, **k):
        time.sleep(fault["seconds"])
        return real_save(obj, f, *a, **k)

    torch.save = save
sys.argv = ["sia-core", *sys.argv[1:]]
runpy.run_module("sia_core", run_name="__main__", alter_sys=True)
"""


# ------------------------------------------------------------------------------------------- running the CLI


@dataclass
class Proc:
    """A finished CLI process."""

    rc: int
    out: str
    err: str
    seconds: float

    @property
    def lines(self) -> list[str]:
        """stderr without progress bars (tqdm's carriage-return lines) and validation prints."""
        lines = self.err.replace("\r", "\n").splitlines()
        return [x for x in lines if x.strip() and "%|" not in x and not x.startswith("iteration ")]

    @property
    def last(self) -> str:
        """The last stderr line, or the last stdout line when stderr has none."""
        if self.lines:
            return self.lines[-1]
        out = [x for x in self.out.splitlines() if x.strip()]
        return out[-1] if out else "(nothing printed)"

    @property
    def one_line_error(self) -> bool:
        """Exit status 2, one line ``error: ...`` on stderr, no traceback."""
        lines = self.lines
        return self.rc == 2 and "Traceback" not in self.err and len(lines) == 1 and lines[0].startswith("error: ")


def _env(fault: Optional[dict]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if fault:
        env["SIA_FAULT"] = json.dumps(fault)
    return env


def _argv(args: list, fault: Optional[dict]) -> list[str]:
    head = [sys.executable, "-c", WRAPPER] if fault else [sys.executable, "-m", "sia_core"]
    return [*head, *map(str, args)]


def _default_sigint() -> None:
    # A job started in the background inherits SIGINT ignored; a terminal's Ctrl-C needs the default.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def cli(*args: object, fault: Optional[dict] = None, timeout: float = 600) -> Proc:
    """Run ``python -m sia_core ARGS`` (with ``fault`` installed first) to its end."""
    t0 = time.time()
    res = subprocess.run(
        _argv(list(args), fault),
        cwd=ROOT,
        env=_env(fault),
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=_default_sigint,
    )
    return Proc(res.returncode, res.stdout, res.stderr, time.time() - t0)


class Running:
    """A CLI process running in the background, to be signalled."""

    def __init__(self, logs: Path, *args: object, fault: Optional[dict] = None) -> None:
        logs.mkdir(parents=True, exist_ok=True)
        self.out_path, self.err_path = logs / "stdout.txt", logs / "stderr.txt"
        self.t0 = time.time()
        with open(self.out_path, "w") as out, open(self.err_path, "w") as err:
            self.p = subprocess.Popen(
                _argv(list(args), fault), cwd=ROOT, env=_env(fault), stdout=out, stderr=err, preexec_fn=_default_sigint
            )

    def signal(self, signum: int) -> None:
        if self.p.poll() is None:
            os.kill(self.p.pid, signum)  # the main process only, as a scheduler or `kill PID` does

    def wait(self, timeout: float = 600) -> Proc:
        try:
            rc = self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            rc = self.p.wait()
        return Proc(rc, self.out_path.read_text(), self.err_path.read_text(), time.time() - self.t0)


def log_iterations(run: Path) -> list[int]:
    """Iterations of the training records in log.jsonl (a torn last line skipped)."""
    path = run / "log.jsonl"
    its = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if "split" not in record:
                its.append(record["iteration"])
    return its


def wait_for_step(run: Path, step: int, proc: Running, timeout: float = 300) -> bool:
    """Wait until the run has logged ``step`` (False if the process ended first)."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        its = log_iterations(run)
        if its and max(its) >= step:
            return True
        if proc.p.poll() is not None:
            return False
        time.sleep(0.02)
    return False


def train_args(data: Path, out: Path, *extra: object) -> list:
    return ["train", "--data", data, "--out", out, *TRAIN, *extra]


def resume_args(data: Path, out: Path) -> list:
    return ["train", "--data", data, "--out", out, "--resume"]


# ------------------------------------------------------------------------------------------- checks


def ckpt_iteration(run: Path) -> Optional[int]:
    import torch

    try:
        return int(torch.load(run / "state.pt", weights_only=True, map_location="cpu")["iteration"])
    except Exception:  # noqa: BLE001 (missing or damaged: reported as None)
        return None


def weights_iteration(run: Path) -> Optional[int]:
    from sia_core.build import read_weights

    try:
        return read_weights(run / "last.safetensors")[2].get("iteration")
    except Exception:  # noqa: BLE001
        return None


def tmp_files(run: Path) -> list[str]:
    return sorted(p.name for p in run.iterdir() if ".tmp" in p.name) if run.is_dir() else []


class Reference:
    """The uninterrupted run every interrupted-and-resumed run must equal, tensor by tensor, bit for bit."""

    def __init__(self, run: Path) -> None:
        from sia_core.build import read_weights

        self.run = run
        self.weights, _, self.meta = read_weights(run / "last.safetensors")

    def compare(self, run: Path) -> tuple[bool, str]:
        import torch

        from sia_core.build import read_weights

        try:
            weights, _, meta = read_weights(run / "last.safetensors")
        except Exception as err:  # noqa: BLE001
            return False, f"last.safetensors unreadable ({err})"
        differ = [k for k in self.weights if k not in weights or not torch.equal(self.weights[k], weights[k])]
        its = log_iterations(run)
        ok = (
            not differ
            and set(weights) == set(self.weights)
            and meta.get("iteration") == ITERATIONS
            and ckpt_iteration(run) == ITERATIONS
            and its == list(range(1, ITERATIONS + 1))
        )
        log = "log 1..10" if its == list(range(1, ITERATIONS + 1)) else f"log {its}"
        return ok, f"{len(differ)}/{len(self.weights)} tensors differ from the uninterrupted run, {log}"


def saved_iteration(line: str) -> Optional[int]:
    m = re.search(r"checkpoint of iteration (\d+) saved", line)
    return int(m.group(1)) if m else None


# ------------------------------------------------------------------------------------------- outputs the OS refuses


class Filesystems:
    """Tiny and read-only file systems: tmpfs mounts when allowed, else emulations (said in the table)."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.mounts: list[Path] = []
        self.immutable: list[Path] = []
        probe = work / "mount-probe"
        probe.mkdir()
        self.can_mount = self._mount(probe, "size=64k")
        if self.can_mount:
            self._umount(probe)
        self.can_chattr = False
        if not self.can_mount and shutil.which("chattr"):
            self.can_chattr = subprocess.run(["chattr", "+i", str(probe)], capture_output=True).returncode == 0
            if self.can_chattr:
                subprocess.run(["chattr", "-i", str(probe)], capture_output=True)

    @property
    def full_how(self) -> str:
        return "a tmpfs too small for the next checkpoint" if self.can_mount else "emulated: ENOSPC from torch.save"

    @property
    def ro_how(self) -> str:
        if self.can_mount:
            return "read-only tmpfs"
        return "emulated: chattr +i folder" if self.can_chattr else "unavailable"

    def _mount(self, where: Path, options: str) -> bool:
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True)
        if res.returncode == 0:
            self.mounts.append(where)
        return res.returncode == 0

    def grow(self, where: Path, size: int) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", str(where)], capture_output=True, check=True)

    def _umount(self, where: Path) -> None:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)
        if where in self.mounts:
            self.mounts.remove(where)

    def small(self, where: Path, size: int) -> bool:
        """A tmpfs of ``size`` bytes at ``where`` (False when mounting is not allowed)."""
        where.mkdir(parents=True, exist_ok=True)
        return self.can_mount and self._mount(where, f"size={size}")

    def read_only(self, where: Path, content: Optional[Path] = None) -> bool:
        """``where`` made a read-only folder holding a copy of ``content`` (a folder)."""
        where.mkdir(parents=True, exist_ok=True)
        if self.can_mount:
            if not self._mount(where, "size=16m"):
                return False
            if content is not None:
                shutil.copytree(content, where, dirs_exist_ok=True)
            res = subprocess.run(["mount", "-o", "remount,ro", str(where)], capture_output=True)
            return res.returncode == 0
        if content is not None:
            shutil.copytree(content, where, dirs_exist_ok=True)
        if self.can_chattr:
            subprocess.run(["chattr", "+i", str(where)], capture_output=True)
            self.immutable.append(where)
            return True
        return False

    def release(self) -> None:
        for where in list(reversed(self.mounts)):
            self._umount(where)
        for where in self.immutable:
            subprocess.run(["chattr", "-i", str(where)], capture_output=True)


# ------------------------------------------------------------------------------------------- the cases


@dataclass
class Case:
    number: str
    what: str
    rc: str
    line: str
    check: str
    ok: Optional[bool]  # None: could not be run here
    seconds: float = 0.0


def case_key(number: str) -> tuple:
    """'2.3b' -> ((2, ''), (3, 'b')): numeric order, sub-cases after their case."""
    return tuple((int(m.group(1)), m.group(2)) for m in re.finditer(r"(\d+)([a-z]*)", number))


class Bench:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.cases: list[Case] = []
        self.fs = Filesystems(work)
        self.lock = threading.Lock()
        self.local = threading.local()  # when the running case (or its previous sub-case) started

    def dir(self, name: str) -> Path:
        path = self.work / "cases" / name.replace(".", "_")
        path.mkdir(parents=True, exist_ok=True)
        return path

    def add(self, number: str, what: str, rc: object, line: str, check: str, ok: Optional[bool]) -> None:
        now = time.time()
        case = Case(number, what, str(rc), line, check, ok, now - getattr(self.local, "t0", now))
        self.local.t0 = now
        verdict = {True: "PASS", False: "FAIL", None: "SKIP"}[ok]
        with self.lock:
            self.cases.append(case)
            print(f"{number:>5} {verdict} {case.seconds:4.0f} s rc={rc} {line[:100]}", flush=True)

    def run(self, number: str, fn: Callable[[str], None]) -> None:
        self.local.t0 = time.time()
        try:
            fn(number)
        except Exception as err:  # noqa: BLE001 (a case that breaks the harness is a failed case, not a crash)
            self.add(number, fn.__doc__ or fn.__name__, "-", f"harness error: {type(err).__name__}: {err}", "", False)

    # ------------------------------------------------------------------------------ set-up

    def setup(self) -> None:
        from sia_core.data.synthetic import make_synthetic_dataset
        from sia_core.slide.synthetic import write_synthetic_slide

        self.data = make_synthetic_dataset(self.work / "data", n_train=6, n_val=3, size=64, seed=5)
        self.ref_dir = self.work / "ref"
        must(cli(*train_args(self.data, self.ref_dir)), 0, "the uninterrupted reference run")
        self.ref = Reference(self.ref_dir)
        self.other = self.work / "other"
        other = ["--set", "model.decoder_channels=8", "--set", "train.iterations=1"]
        must(cli(*train_args(self.data, self.other, *other)), 0, "the run of another architecture")
        self.stopped = self.work / "stopped"  # Ctrl-C during step 4: checkpoint of iteration 3
        res = cli(*train_args(self.data, self.stopped), fault={"kind": "sigint_in_step", "step": 4})
        must(res, 130, "the stopped run")
        assert ckpt_iteration(self.stopped) == 3, res.err
        self.slide = write_synthetic_slide(self.work / "slide.ome.tif", (400, 384), tile=64, min_side=128)
        self.slide_args = ["--device", "cpu", "--chunk", "256"]
        self.slide_ref = self.work / "slide_ref" / "s.ome.zarr"
        must(cli("predict-slide", self.ref_dir, self.slide, "--out", self.slide_ref, *self.slide_args), 0, "slide")
        self.pseudo_args = [self.ref_dir, "--data", self.data, "--out"]

    def stopped_copy(self, number: str) -> Path:
        run = self.dir(number) / "run"
        shutil.copytree(self.stopped, run)
        return run

    def image(self, i: int = 0) -> Path:
        return sorted((self.data / "val" / "img").glob("*.png"))[i]

    def data_copy(self, number: str) -> Path:
        dst = self.dir(number) / "data"
        shutil.copytree(self.data, dst)
        return dst

    def one_line(self, number: str, what: str, res: Proc, *conditions: tuple[str, bool], rc: str = "") -> None:
        """A case whose expected outcome is one line ``error: ...``, exit status 2, plus its own conditions
        (``rc``: the exit codes to show, when a command ran after it)."""
        failed = [name for name, good in conditions if not good]
        base = "1 line, no traceback" if res.one_line_error else f"{len(res.lines)} stderr lines, rc {res.rc}"
        check = "; ".join([base, *(n for n, _ in conditions)])
        if failed:
            check += " -- NOT: " + "; ".join(failed)
        self.add(number, what, rc or res.rc, res.last, check, res.one_line_error and not failed)

    # ------------------------------------------------------------------------------ 1. the checkpoint pair

    def kill_in_save(self, number: str, kind: str, target: str, what: str) -> None:
        run = self.dir(number) / "run"
        killed = cli(*train_args(self.data, run), fault={"kind": kind, "target": target, "nth": 2})
        left = tmp_files(run)
        state_it, last_it = ckpt_iteration(run), weights_iteration(run)
        resumed = cli(*resume_args(self.data, run))
        same, how = self.ref.compare(run)
        after = tmp_files(run)
        check = (
            f"killed with state.pt of it. {state_it}, last.safetensors of it. {last_it}, {len(left)} tmp file(s); "
            f"--resume: {how}; tmp files after: {len(after)}"
        )
        ok = killed.rc == 9 and resumed.rc == 0 and same and not after
        self.add(number, what, f"{killed.rc} / {resumed.rc}", resumed.last, check, ok)

    def case_1_1(self, n: str) -> None:
        self.kill_in_save(n, "kill_inside", "state.pt", "killed inside the write of state.pt (it. 4), --resume")

    def case_1_2(self, n: str) -> None:
        self.kill_in_save(n, "kill_after", "state.pt", "killed between the two files (after state.pt, it. 4), --resume")

    def case_1_3(self, n: str) -> None:
        self.kill_in_save(
            n, "kill_inside", "last.safetensors", "killed inside the write of last.safetensors (it. 4), --resume"
        )

    def signalled(self, number: str, signals: list[tuple[int, float]], fault: Optional[dict] = None) -> tuple:
        """Train, send ``signals`` (signal, seconds after the previous one; the first once step 3 is logged),
        wait; returns (run dir, the stopped process, reached)."""
        run = self.dir(number) / "run"
        proc = Running(self.dir(number) / "first", *train_args(self.data, run), fault=fault)
        reached = wait_for_step(run, 3, proc)
        for signum, delay in signals:
            time.sleep(delay)
            proc.signal(signum)
        return run, proc.wait(), reached

    def interrupted_then_resumed(self, number: str, what: str, signals: list, rc: int, fault=None) -> None:
        run, first, reached = self.signalled(number, signals, fault)
        claimed, on_disk = saved_iteration(first.last), ckpt_iteration(run)
        resumed = cli(*resume_args(self.data, run))
        same, how = self.ref.compare(run)
        check = f"says saved it. {claimed}, state.pt holds it. {on_disk}; --resume: {how}"
        if not reached:
            check += " -- NOT: the run ended before the signal"
        ok = reached and first.rc == rc and claimed == on_disk and "Traceback" not in first.err
        self.add(number, what, f"{first.rc} / {resumed.rc}", first.last, check, ok and resumed.rc == 0 and same)

    def case_1_4(self, n: str) -> None:
        self.interrupted_then_resumed(n, "SIGINT (Ctrl-C) at step 3, then --resume", [(signal.SIGINT, 0)], 130)

    def case_1_5(self, n: str) -> None:
        """Two Ctrl-C: the second arrives while the save the first started is writing (each save slowed to 3 s)."""
        sigs = [(signal.SIGINT, 0), (signal.SIGINT, 1.0)]
        self.interrupted_then_resumed(
            n, "Ctrl-C, then Ctrl-C again during the save (saves slowed to 3 s), --resume", sigs, 130,
            {"kind": "slow_save", "seconds": 3.0},
        )  # fmt: skip

    def case_1_6(self, n: str) -> None:
        sigs = [(signal.SIGINT, 0), (signal.SIGINT, 1.0), (signal.SIGINT, 0.5)]
        self.interrupted_then_resumed(
            n, "Ctrl-C, then two more during the save (abandons it; saves slowed to 3 s), --resume", sigs, 130,
            {"kind": "slow_save", "seconds": 3.0},
        )  # fmt: skip

    def case_1_7(self, n: str) -> None:
        """Three SIGKILLs at random moments (seeded), each followed by --resume."""
        rng = random.Random(11)
        run = self.dir(n) / "run"
        moments, rcs = [], []
        for k, step in enumerate((2, 5, 7)):  # killed soon after steps 2, 5 and 7, at a random moment
            args = resume_args(self.data, run) if k else train_args(self.data, run)
            proc = Running(self.dir(n) / f"k{k}", *args)
            wait_for_step(run, step, proc)
            time.sleep(rng.uniform(0.0, 0.3))
            proc.signal(signal.SIGKILL)
            rcs.append(proc.wait().rc)
            moments.append(f"it. {ckpt_iteration(run)}")
        resumed = cli(*resume_args(self.data, run))
        same, how = self.ref.compare(run)
        check = f"checkpoints after the kills: {', '.join(moments)}; final --resume: {how}"
        ok = resumed.rc == 0 and same and not tmp_files(run)
        what = "3 SIGKILLs at random moments, --resume after each"
        self.add(n, what, f"{rcs} / {resumed.rc}", resumed.last, check, ok)

    # ------------------------------------------------------------------------------ 2. predict-slide --overwrite

    def case_2_1(self, n: str) -> None:
        out = self.dir(n) / "thesis"
        out.mkdir()
        (out / "thesis.txt").write_text("four years of work")
        res = cli("predict-slide", self.ref_dir, self.slide, "--out", out, *self.slide_args, "--overwrite")
        kept = (out / "thesis.txt").read_text() == "four years of work" and sorted(os.listdir(out)) == ["thesis.txt"]
        what = "predict-slide --out <user's folder with thesis.txt> --overwrite"
        self.one_line(n, what, res, ("thesis.txt kept", kept))

    def case_2_2(self, n: str) -> None:
        geo = self.dir(n) / "notes.geojson"
        geo.write_text('{"type": "FeatureCollection", "features": []}')
        out = self.dir(n) / "notes.ome.zarr"
        res = cli("predict-slide", self.ref_dir, self.slide, "--out", out, *self.slide_args, "--overwrite")
        kept = geo.read_text().startswith('{"type"') and not out.exists()
        what = "predict-slide --out notes.ome.zarr --overwrite, notes.geojson the user's"
        self.one_line(n, what, res, ("notes.geojson kept", kept))

    def case_2_3(self, n: str) -> None:
        out = self.dir(n) / "s.ome.zarr"
        shutil.copytree(self.slide_ref, out)
        shutil.copy(self.slide_ref.with_suffix("").with_suffix(".geojson"), out.parent)

        def mtimes() -> list[int]:
            return [p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()]

        before = mtimes()
        again = cli("predict-slide", self.ref_dir, self.slide, "--out", out, *self.slide_args)
        self.one_line(
            n, "predict-slide on its own complete result, no --overwrite", again, ("kept", mtimes() == before)
        )
        over = cli("predict-slide", self.ref_dir, self.slide, "--out", out, *self.slide_args, "--overwrite")
        replaced = bool(mtimes()) and min(mtimes()) > max(before)
        self.add(
            n + "b", "the same with --overwrite (SIA's own result is replaced)", over.rc, over.last,
            f"result rewritten: {replaced}", over.rc == 0 and replaced and "Traceback" not in over.err,
        )  # fmt: skip

    # ------------------------------------------------------------------------------ 3. the same name twice

    def case_3_1(self, n: str) -> None:
        d = self.dir(n)
        for sub, i in (("a", 0), ("b", 1)):
            (d / sub).mkdir()
            shutil.copy(self.image(i), d / sub / "x.png")
        out = d / "pred"
        res = cli("predict", self.ref_dir, d / "a" / "x.png", d / "b" / "x.png", "--out", out)
        both = str(d / "a" / "x.png") in res.last and str(d / "b" / "x.png") in res.last
        empty = not out.exists() or not any(out.iterdir())
        self.one_line(n, "predict a/x.png b/x.png --out DIR", res, ("names both", both), ("nothing written", empty))

    def case_3_2(self, n: str) -> None:
        d = self.data_copy(n)
        src = sorted((d / "train").glob("*.png"))
        for sub, img in (("a", src[0]), ("b", src[1])):
            (d / "train" / sub).mkdir()
            shutil.copy(img, d / "train" / sub / "x.png")
        (d / "train" / "sia_labels.csv").write_text("image,tumor,stroma,normal\na/x.png,1,0,0\nb/x.png,0,1,0\n")
        out = self.dir(n) / "pseudo"
        res = cli("pseudo-label", self.ref_dir, "--data", d, "--out", out)
        both = "a/x.png" in res.last and "b/x.png" in res.last
        empty = not out.exists() or not any(out.iterdir())
        self.one_line(
            n, "pseudo-label, CSV rows a/x.png and b/x.png", res, ("names both", both), ("nothing written", empty)
        )

    # ------------------------------------------------------------------------------ 4. a failed start is not stuck

    def case_4_1(self, n: str) -> None:
        run = self.dir(n) / "run"
        first = cli(*train_args(self.data, run), fault={"kind": "sigint_in_step", "step": 1})
        again = cli(*train_args(self.data, run))
        line = first.last
        honest = "saved" not in line and "start the run again" in line
        check = f"line honest (no 'saved'): {honest}; same command again: exit {again.rc}, log {log_iterations(run)}"
        ok = first.rc == 130 and honest and again.rc == 0 and log_iterations(run) == list(range(1, ITERATIONS + 1))
        self.add(n, "Ctrl-C (SIGINT) during step 1, then the same command", f"{first.rc} / {again.rc}", line, check, ok)

    def case_4_2(self, n: str) -> None:
        run = self.dir(n) / "run"
        first = cli(*train_args(self.data, run), fault={"kind": "sigint_in_step", "step": 1})
        again = cli(*resume_args(self.data, run))
        same, how = self.ref.compare(run)
        fresh = "starting the run from the beginning" in again.out
        check = f"--resume says it starts from the beginning: {fresh}; {how}"
        ok = first.rc == 130 and again.rc == 0 and fresh and same
        self.add(n, "Ctrl-C during step 1, then --resume", f"{first.rc} / {again.rc}", again.last, check, ok)

    def bad_start(self, n: str, what: str, extra: list, data: Optional[Path] = None) -> None:
        run = self.dir(n) / "run"
        res = cli(*train_args(data or self.data, run, *extra))
        nothing = not (run / "config.yaml").exists() and not (run / "state.pt").exists()
        self.one_line(n, what, res, ("no config.yaml / state.pt written", nothing))

    def case_4_3(self, n: str) -> None:
        self.bad_start(n, "train --set train.optimizer=sgd", ["--set", "train.optimizer=sgd"])

    def case_4_4(self, n: str) -> None:
        import torch

        if torch.cuda.is_available():
            self.add(n, "train --device cuda without a GPU", "-", "a GPU is present", "", None)
            return
        self.bad_start(n, "train --device cuda without a GPU", ["--device", "cuda"])

    def case_4_5(self, n: str) -> None:
        self.bad_start(
            n, "train, missing backbone file", ["--set", "model.backbone_weights=/nonexistent/vit.pth"]
        )  # fmt: skip

    def case_4_6(self, n: str) -> None:
        self.bad_start(n, "train --init-from a run of another architecture", ["--init-from", self.other])

    def case_4_7(self, n: str) -> None:
        d = self.data_copy(n)
        with open(d / "dataset.yaml", "a") as f:
            f.write("img_size: abc\n")
        self.bad_start(n, "train, dataset.yaml with img_size: abc", [], data=d)

    # ------------------------------------------------------------------------------ 5. full disk, read-only

    def case_5_1(self, n: str) -> None:
        run = self.dir(n) / "run"
        state = (self.ref_dir / "state.pt").stat().st_size
        last = (self.ref_dir / "last.safetensors").stat().st_size
        size = state + last + state // 2  # the first checkpoint fits, the second one's state.pt does not
        fault = None
        if not self.fs.small(run, size):
            fault = {"kind": "enospc", "target": "state.pt", "nth": 2}
        full = cli(*train_args(self.data, run), fault=fault)
        state_it, last_it, left = ckpt_iteration(run), weights_iteration(run), tmp_files(run)
        moved = self.dir(n) / "moved"  # the user frees space: here, the run moved to a disk with room
        shutil.copytree(run, moved)
        resumed = cli(*resume_args(self.data, moved))
        same, how = self.ref.compare(moved)
        good = ("says no space, names the folder, the space needed", "no space left" in full.last and "needed" in
                full.last and str(run) in full.last)  # fmt: skip
        kept = (f"checkpoint of it. {state_it}/{last_it} kept, {len(left)} tmp", state_it == last_it == 2 and not left)
        resume = (f"--resume elsewhere: {how}", resumed.rc == 0 and same)
        what = f"train, disk full at the 2nd checkpoint ({self.fs.full_how}), then --resume on a disk with room"
        self.one_line(n, what, full, good, kept, resume, rc=f"{full.rc} / {resumed.rc}")

    def full_out(self, n: str, size: int) -> Optional[Path]:
        out = self.dir(n) / "full"
        if not self.fs.small(out, size):
            return None
        (out / "filler").write_bytes(b"\0" * (size - 8192))
        return out

    def case_5_2(self, n: str) -> None:
        what = "predict --out on a full disk (tmpfs)"
        out = self.full_out(n, 64 * 1024)
        if out is None:
            self.add(n, what, "-", "cannot mount a tmpfs here", "", None)
            return
        res = cli("predict", self.ref_dir, self.data / "val" / "img", "--out", out / "pred")
        self.one_line(n, what, res, ("says no space", "no space left" in res.last))

    def case_5_3(self, n: str) -> None:
        what = "predict-slide --out on a full disk (tmpfs), then the same command once space is freed"
        out = self.full_out(n, 2 << 20)
        if out is None:
            self.add(n, what, "-", "cannot mount a tmpfs here", "", None)
            return
        res = cli("predict-slide", self.ref_dir, self.slide, "--out", out / "s.ome.zarr", *self.slide_args)
        (out / "filler").unlink()  # the user frees space
        again = cli("predict-slide", self.ref_dir, self.slide, "--out", out / "s.ome.zarr", *self.slide_args)
        says = "no space left" in res.last.lower() and "free" in res.last and str(out) in res.last
        same = again.rc == 0 and self.same_slide_result(out / "s.ome.zarr")
        self.one_line(
            n, what, res, ("says no space, names the folder and the free space", says),
            (f"rerun exit {again.rc}, labels equal the uninterrupted result", same), rc=f"{res.rc} / {again.rc}",
        )  # fmt: skip

    def case_5_3b(self, n: str) -> None:
        what = "predict-slide, the disk fills up in the middle (tmpfs), then the same command once it has room"
        pages = sum(-(-p.stat().st_size // 4096) * 4096 for p in self.slide_ref.parent.rglob("*") if p.is_file())
        out = self.dir(n) / "full"
        if not self.fs.small(out, int(pages * 0.8)):
            self.add(n, what, "-", "cannot mount a tmpfs here", "", None)
            return
        res = cli("predict-slide", self.ref_dir, self.slide, "--out", out / "s.ome.zarr", *self.slide_args)
        kept = sorted(os.listdir(out))
        self.fs.grow(out, 8 << 20)  # the user frees space
        again = cli("predict-slide", self.ref_dir, self.slide, "--out", out / "s.ome.zarr", *self.slide_args)
        says = "no space left" in res.last.lower() and "free" in res.last
        same = again.rc == 0 and "(resumed)" in again.last and self.same_slide_result(out / "s.ome.zarr")
        self.one_line(
            n, what, res, ("says no space and the free space", says), (f"unfinished result kept: {kept}", bool(kept)),
            (f"rerun exit {again.rc}, resumed, labels equal the uninterrupted result", same),
            rc=f"{res.rc} / {again.rc}",
        )  # fmt: skip

    def same_slide_result(self, out: Path) -> bool:
        import numpy as np

        from sia_core.slide import open_slide_prediction

        try:
            a, b = (open_slide_prediction(p) for p in (out, self.slide_ref))
            return bool(a["complete"]) and np.array_equal(
                np.asarray(a["labels"][0][...]), np.asarray(b["labels"][0][...])
            )
        except Exception:  # noqa: BLE001 (unreadable: not the same)
            return False

    def read_only(self, n: str, content: Optional[Path] = None) -> Optional[Path]:
        where = self.dir(n) / "ro"
        return where if self.fs.read_only(where, content) else None

    def ro_case(self, n: str, what: str, make_args: Callable[[Path], list], content: Optional[Path] = None) -> None:
        what = f"{what} ({self.fs.ro_how})"
        ro = self.read_only(n, content)
        if ro is None:
            self.add(n, what, "-", "no way to make a read-only folder here", "", None)
            return
        before = sorted(os.listdir(ro))
        res = cli(*make_args(ro))
        same = sorted(os.listdir(ro)) == before
        self.one_line(n, what, res, ("names the folder", str(ro) in res.last), ("nothing changed", same))

    def case_5_4(self, n: str) -> None:
        self.ro_case(n, "train --out in a read-only folder", lambda ro: train_args(self.data, ro / "run"))

    def case_5_5(self, n: str) -> None:
        """--resume of a stopped run whose folder became read-only."""
        what = "--resume of a stopped run, its folder read-only"
        self.ro_case(n, what, lambda ro: resume_args(self.data, ro), self.stopped)

    def case_5_6(self, n: str) -> None:
        self.ro_case(n, "predict --out read-only", lambda ro: ["predict", self.ref_dir, self.image(), "--out", ro])

    def case_5_7(self, n: str) -> None:
        self.ro_case(n, "pseudo-label --out read-only", lambda ro: ["pseudo-label", *self.pseudo_args, ro])

    def case_5_8(self, n: str) -> None:
        self.ro_case(
            n, "evaluate --json into a read-only folder",
            lambda ro: ["evaluate", self.ref_dir, "--data", self.data, "--json", ro / "m.json"],
        )  # fmt: skip

    def case_5_9(self, n: str) -> None:
        self.ro_case(
            n, "predict-slide --out read-only",
            lambda ro: ["predict-slide", self.ref_dir, self.slide, "--out", ro / "s.ome.zarr", *self.slide_args],
        )  # fmt: skip

    # ------------------------------------------------------------------------------ 6. one line, not a traceback

    def blocked(self, n: str, what: str, make_args: Callable[[Path], list], table_ok: bool = True) -> None:
        blocker = self.dir(n) / "afile"
        blocker.write_text("not a folder")
        res = cli(*make_args(blocker / "sub"))
        intact = blocker.read_text() == "not a folder"
        conditions = [("names the file", str(blocker) in res.last), ("file intact", intact)]
        if not table_ok:
            conditions.append(("fails before evaluating (no table printed)", "mIoU" not in res.out))
        self.one_line(n, what, res, *conditions)

    def case_6_1(self, n: str) -> None:
        self.blocked(n, "train --out FILE/sub", lambda p: train_args(self.data, p))

    def case_6_2(self, n: str) -> None:
        blocker = self.dir(n) / "afile"
        blocker.write_text("keep me")
        res = cli(*train_args(self.data, blocker))
        kept = blocker.read_text() == "keep me"
        self.one_line(n, "train --out FILE", res, ("says 'is a file'", "is a file" in res.last), ("kept", kept))

    def case_6_3(self, n: str) -> None:
        self.blocked(n, "predict --out FILE/sub", lambda p: ["predict", self.ref_dir, self.image(), "--out", p])

    def case_6_4(self, n: str) -> None:
        self.blocked(n, "pseudo-label --out FILE/sub", lambda p: ["pseudo-label", *self.pseudo_args, p])

    def case_6_5(self, n: str) -> None:
        self.blocked(
            n, "evaluate --json FILE/sub/m.json",
            lambda p: ["evaluate", self.ref_dir, "--data", self.data, "--json", p / "m.json"], table_ok=False,
        )  # fmt: skip

    def case_6_6(self, n: str) -> None:
        in_place = self.dir(n) / "file.ome.zarr"
        in_place.write_text("x")
        res = cli("predict-slide", self.ref_dir, self.slide, "--out", in_place, *self.slide_args)
        self.one_line(n, "predict-slide --out <a file in place>", res, ("file kept", in_place.read_text() == "x"))

    def case_6_7(self, n: str) -> None:
        from sia_core.slide.synthetic import write_synthetic_slide

        d = self.dir(n)
        whole = write_synthetic_slide(d / "whole.ome.tif", (600, 520), tile=128, min_side=128)
        cut = d / "cut.ome.tif"
        data = whole.read_bytes()
        cut.write_bytes(data[: len(data) * 2 // 3])
        res = cli("predict-slide", self.ref_dir, cut, "--out", d / "cut.ome.zarr", *self.slide_args)
        left = sorted(p.name for p in d.iterdir() if p.name not in ("whole.ome.tif", "cut.ome.tif"))
        self.one_line(
            n, "predict-slide on a truncated slide TIFF", res, ("names the slide", str(cut) in res.last),
            (f"nothing left behind {left}", not left),
        )  # fmt: skip

    def case_6_8(self, n: str) -> None:
        bad = self.dir(n) / "bad.yaml"
        bad.write_text("train:\n  iterations: [1\n")
        res = cli(*train_args(self.data, self.dir(n) / "run", "--config", bad))
        self.one_line(n, "train --config <malformed YAML>", res, ("names bad.yaml", "bad.yaml" in res.last))

    def case_6_9(self, n: str) -> None:
        res = cli(*train_args(self.data, self.dir(n) / "run", "--device", "tpu"))
        self.one_line(n, "train --device tpu", res, ("names tpu", "tpu" in res.last))

    def case_6_10(self, n: str) -> None:
        res = cli("predict", self.ref_dir, self.image(), "--out", self.dir(n) / "p", "--device", "tpu")
        self.one_line(n, "predict --device tpu", res, ("names tpu", "tpu" in res.last))

    def bad_dataset_yaml(self, n: str, line: str, key: str) -> None:
        d = self.data_copy(n)
        with open(d / "dataset.yaml", "a") as f:
            f.write(line + "\n")
        res = cli(*train_args(d, self.dir(n) / "run", "--set", "train.lr=0.001"))
        blames = "dataset.yaml" in res.last and key in res.last and "--set" not in res.last
        self.one_line(n, f"dataset.yaml '{line}', with a --set", res, ("blames dataset.yaml, not --set", blames))

    def case_6_11(self, n: str) -> None:
        self.bad_dataset_yaml(n, "img_size: abc", "img_size")

    def case_6_12(self, n: str) -> None:
        self.bad_dataset_yaml(n, "mean: [1, 2]", "mean")

    def case_6_13(self, n: str) -> None:
        run = self.stopped_copy(n)
        state = run / "state.pt"
        state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
        res = cli(*resume_args(self.data, run))
        self.one_line(n, "--resume, state.pt truncated", res, ("names state.pt", "state.pt" in res.last))

    def case_6_14(self, n: str) -> None:
        run = self.stopped_copy(n)
        with open(run / "log.jsonl", "a") as f:
            f.write('{"time": 1.0, "iteration": 4, "lo')
        res = cli(*resume_args(self.data, run))
        same, how = self.ref.compare(run)
        self.add(n, "--resume, torn last line in log.jsonl", res.rc, res.last, how, res.rc == 0 and same)

    def case_6_15(self, n: str) -> None:
        run = self.stopped_copy(n)
        foreign = (self.other / "last.safetensors").read_bytes()
        (run / "last.safetensors").write_bytes(foreign)
        res = cli(*resume_args(self.data, run))
        kept = (run / "last.safetensors").read_bytes() == foreign
        self.one_line(
            n, "--resume, last.safetensors of another architecture", res,
            ("names last.safetensors", "last.safetensors" in res.last), ("file left as it was", kept),
        )  # fmt: skip

    def case_6_16(self, n: str) -> None:
        res = cli(*train_args(self.data, self.dir(n) / "run", "--set", "train.cam_scales=[1, 2"))
        what = "train --set 'train.cam_scales=[1, 2' (a multi-line YAML error)"
        self.one_line(n, what, res, ("names the key", "train.cam_scales" in res.last))

    def case_6_17(self, n: str) -> None:
        run = self.stopped_copy(n)
        (run / "config.yaml").write_text("train: {iterations: [2\n")
        res = cli(*resume_args(self.data, run))
        what = "--resume, malformed config.yaml in the run"
        self.one_line(n, what, res, ("names config.yaml", "config.yaml" in res.last))

    def case_6_18(self, n: str) -> None:
        """SIGINT to the main process only, with DataLoader workers (twice: the traceback was occasional)."""
        rcs, bad = [], []
        for k in range(2):
            run = self.dir(n) / f"run{k}"
            args = train_args(self.data, run, "--set", "train.num_workers=2", "--set", "train.iterations=200")
            proc = Running(self.dir(n) / f"log{k}", *args)
            wait_for_step(run, 2 + k, proc)
            proc.signal(signal.SIGINT)
            res = proc.wait()
            rcs.append(res.rc)
            if "Traceback" in res.err or "ConnectionResetError" in res.err or len(res.lines) != 1:
                bad.append(res.lines)
        check = f"2 runs: exit {rcs}; no traceback / ConnectionResetError, 1 stderr line each: {not bad}"
        ok = rcs == [130, 130] and not bad
        self.add(n, "SIGINT to the main process only, num_workers=2 (x2)", rcs, res.last, check, ok)

    # ------------------------------------------------------------------------------ 7. value ranges

    def out_of_range(self, n: str, setting: str) -> None:
        run = self.dir(n) / "run"
        res = cli(*train_args(self.data, run, "--set", setting))
        says = setting.split("=")[0] in res.last and "out of range" in res.last
        nothing = not run.exists()
        self.one_line(n, f"train --set {setting}", res, ("says out of range", says), ("nothing written", nothing))

    def case_7_1(self, n: str) -> None:
        self.out_of_range(n, "train.iterations=-5")

    def case_7_2(self, n: str) -> None:
        self.out_of_range(n, "train.batch_size=0")

    # ------------------------------------------------------------------------------ 8. predict a folder with bad images

    def case_8(self, n: str) -> None:
        folder = self.dir(n) / "imgs"
        shutil.copytree(self.data / "val" / "img", folder)
        good = sorted(folder.glob("*.png"))
        (folder / "broken.png").write_bytes(b"not a png")
        (folder / "cut.png").write_bytes(good[0].read_bytes()[:200])
        out = self.dir(n) / "pred"
        res = cli("predict", self.ref_dir, folder, "--out", out)
        lines = res.lines
        listed = len(lines) == 3 and all(x.startswith("error: ") for x in lines) and "2 of 5" in lines[-1]
        named = "broken.png" in "".join(lines[:2]) and "cut.png" in "".join(lines[:2])
        all_good = all((out / f"{p.stem}_labels.png").is_file() for p in good)
        check = f"{len(lines)} stderr lines (2 bad named: {named}), {len(good)} good images predicted: {all_good}"
        ok = res.rc == 2 and "Traceback" not in res.err and listed and named and all_good
        self.add(n + ".1", "predict a folder: 3 good images, broken.png, cut.png", res.rc, res.last, check, ok)
        done = {p: p.stat().st_mtime_ns for p in out.iterdir() if p.suffix != ".jsonl"}
        shutil.copy(good[0], folder / "broken.png")  # the user replaces the bad images
        shutil.copy(good[1], folder / "cut.png")
        again = cli("predict", self.ref_dir, folder, "--out", out)
        skipped = "skipping 3 images" in again.out
        untouched = all(p.stat().st_mtime_ns == t for p, t in done.items())
        fixed = (out / "broken_labels.png").is_file() and (out / "cut_pseudo.png").is_file()
        check = f"skipped the 3 done: {skipped}; their outputs untouched: {untouched}; the 2 predicted: {fixed}"
        self.add(
            n + ".2", "the same command after replacing the two", again.rc, again.last, check,
            again.rc == 0 and skipped and untouched and fixed,
        )  # fmt: skip

    # ------------------------------------------------------------------------------ 9. napari reader

    def reader_case(self, n: str, what: str, path: Path, claimed: bool, match: str = "") -> None:
        from napari_sia._reader import napari_get_reader
        from sia_core.errors import SIAError

        t0 = time.time()
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            reader = napari_get_reader(str(path))
        except Exception as err:  # noqa: BLE001
            self.add(n, what, "-", f"napari_get_reader raised {type(err).__name__}: {err}", "", False)
            return
        line, error_ok = "returned None (not claimed)", True
        if claimed:
            if reader is None:
                self.add(n, what, "-", "not claimed", "expected the reader to claim it", False)
                return
            call = reader
        else:
            from napari_sia._reader import read_mask

            call = read_mask  # what "Open mask..." calls, and what napari would call had the reader claimed it
        try:
            call(str(path))
            line, error_ok = "read without an error", False
        except SIAError as err:
            line = f"SIAError: {err}"
            error_ok = "\n" not in str(err) and match in str(err)
        except Exception as err:  # noqa: BLE001
            line, error_ok = f"{type(err).__name__}: {err}", False
        grew = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
        verdict = (reader is None) != claimed and error_ok and grew < 500
        check = (
            f"reader {'claims' if reader else 'does not claim'} it (expected: {'claims' if claimed else 'not'}); "
            f"read: one-line SIAError{f' with {match!r}' if match else ''}; peak memory +{grew:.0f} MB, "
            f"{time.time() - t0:.1f} s"
        )
        self.add(n, what, "-", ("claimed; " if reader else "not claimed; ") + line, check, verdict)

    def geojson(self, n: str, content: object) -> Path:
        path = self.dir(n) / "x.geojson"
        path.write_text(json.dumps(content))
        return path

    def case_9_1(self, n: str) -> None:
        import zarr

        path = self.dir(n) / "empty.zarr"
        root = zarr.open_group(str(path), mode="w", zarr_format=3)
        root.attrs["ome"] = {"version": "0.5", "multiscales": [{"axes": [], "datasets": [{"path": "0"}]}]}
        labels = root.create_group("labels")
        labels.attrs["ome"] = {"labels": ["x"]}
        labels.create_group("x").attrs["ome"] = {"image-label": {}, "multiscales": [{"datasets": [{"path": "0"}]}]}
        self.reader_case(n, "reader: zarr v3 group, multiscales but no arrays", path, False)

    def case_9_2(self, n: str) -> None:
        self.reader_case(n, "reader: .geojson holding [1, 2, 3]", self.geojson(n, [1, 2, 3]), False)

    def case_9_3(self, n: str) -> None:
        path = self.geojson(n, {"type": "Point", "coordinates": [1, 2]})
        self.reader_case(n, "reader: .geojson holding a Point", path, False)

    def case_9_4(self, n: str) -> None:
        path = self.geojson(n, {"type": "FeatureCollection", "features": 7})
        self.reader_case(n, "reader: FeatureCollection with features: 7", path, False)

    def case_9_5(self, n: str) -> None:
        self.reader_case(n, 'reader: .geojson holding "text"', self.geojson(n, "text"), False)

    @staticmethod
    def polygon(coords: list) -> dict:
        feature = {
            "type": "Feature",
            "geometry": {"type": "Polygon", "coordinates": [coords]},
            "properties": {"classification": {"name": "tumor"}},
        }
        return {"type": "FeatureCollection", "features": [feature]}

    def case_9_6(self, n: str) -> None:
        square = [[0, 0], [1e7, 0], [1e7, 1e7], [0, 1e7], [0, 0]]
        path = self.geojson(n, self.polygon(square))
        self.reader_case(n, "reader: polygon at 1e7 px", path, True, "Mpx")

    def case_9_7(self, n: str) -> None:
        path = self.geojson(n, self.polygon([[0, 0], [float("nan"), 0], [5, 5], [0, 0]]))
        self.reader_case(n, "reader: NaN coordinate", path, True, "not finite")

    def case_9_8(self, n: str) -> None:
        path = self.geojson(n, self.polygon([[0, 0], [-3, 0], [5, 5], [0, 0]]))
        self.reader_case(n, "reader: negative coordinate", path, True, "negative")

    # ------------------------------------------------------------------------------ 10. CSV names outside the dataset

    def outside_csv(self, n: str, name: str) -> Path:
        d = self.data_copy(n)
        shutil.copy(sorted((d / "train").glob("*.png"))[0], self.dir(n) / "outside.png")
        (d / "train" / "sia_labels.csv").write_text(f"image,tumor,stroma,normal\n{name},1,0,0\n")
        return d

    def case_10_1(self, n: str) -> None:
        d = self.outside_csv(n, "../../outside.png")
        res = cli(*train_args(d, self.dir(n) / "run"))
        what = "train, sia_labels.csv names ../../outside.png"
        self.one_line(n, what, res, ("says outside", "outside the folder" in res.last))

    def case_10_2(self, n: str) -> None:
        d = self.outside_csv(n, "/etc/passwd")
        res = cli(*train_args(d, self.dir(n) / "run"))
        what = "train, sia_labels.csv names /etc/passwd"
        self.one_line(n, what, res, ("says outside", "outside the folder" in res.last))

    def case_10_3(self, n: str) -> None:
        d = self.outside_csv(n, "../../outside.png")
        res = cli("pseudo-label", self.ref_dir, "--data", d, "--out", self.dir(n) / "p")
        none = not (self.dir(n) / "sia_pseudo").exists() and not (self.dir(n) / "p").exists()
        self.one_line(n, "pseudo-label, CSV names ../../outside.png", res, ("nothing written outside", none))

    def case_10_4(self, n: str) -> None:
        from napari_sia._images import LabelStore

        d = self.dir(n)
        (d / "sia_labels.csv").write_text("image,a,b\n../x.png,1,0\n")
        store = LabelStore(d, ["a", "b"])
        ok = store.error is not None and "outside" in store.error and store.get("../x.png") is None
        check = "the widget's label store refuses the row (error set, no labels for ../x.png)"
        self.add(n, "widget: sia_labels.csv row ../x.png", "-", f"store.error: {store.error}", check, ok)

    # ------------------------------------------------------------------------------ 11. smaller

    def case_11_1(self, n: str) -> None:
        run, first, reached = self.signalled(n, [(signal.SIGTERM, 0)])
        claimed, on_disk = saved_iteration(first.last), ckpt_iteration(run)
        resumed = cli(*resume_args(self.data, run))
        same, how = self.ref.compare(run)
        says = "SIGTERM" in first.last and "--resume" in first.last and len(first.lines) == 1
        check = f"1 line naming SIGTERM: {says}; says saved it. {claimed}, state.pt it. {on_disk}; --resume: {how}"
        ok = reached and first.rc == 143 and says and claimed == on_disk and resumed.rc == 0 and same
        self.add(n, "SIGTERM at step 3, then --resume", f"{first.rc} / {resumed.rc}", first.last, check, ok)

    def case_11_2(self, n: str) -> None:
        modes = {p.name: oct(p.stat().st_mode & 0o777) for p in sorted(self.ref_dir.iterdir())}
        line = ", ".join(f"{k} {v}" for k, v in modes.items())
        self.add(n, "permissions of the run's files", "-", line, "all the same mode", len(set(modes.values())) == 1)

    def case_11_3(self, n: str) -> None:
        d = self.data_copy(n)
        from PIL import Image

        (d / "train" / "b").mkdir()
        Image.new("RGB", (64, 64)).save(d / "train" / "b" / "y-[1 0].png")
        res = cli(*train_args(d, self.dir(n) / "run"))
        what = "train, train/b/y-[1 0].png (a label of the wrong length)"
        self.one_line(n, what, res, ("names b/y-[1 0].png", "b/y-[1 0].png" in res.last))


def must(res: Proc, rc: int, what: str) -> None:
    if res.rc != rc:
        raise SystemExit(f"set-up failed: {what} exited {res.rc}, expected {rc}:\n{res.err[-3000:]}")


def table(cases: list[Case]) -> str:
    def cell(text: str, width: int = 160) -> str:
        text = " ".join(text.split())
        if len(text) > width:
            text = text[: width - 3] + "..."
        return text.replace("|", "\\|")

    rows = [
        "| # | what was done | exit | observed line (last stderr line) | check | verdict | s |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in cases:
        verdict = {True: "PASS", False: "**FAIL**", None: "SKIP"}[c.ok]
        line = f"`{cell(c.line)}`"
        what, check = cell(c.what, 200), cell(c.check, 300)
        rows.append(f"| {c.number} | {what} | {c.rc} | {line} | {check} | {verdict} | {c.seconds:.0f} |")
    return "\n".join(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="work folder (made; replaced only if an earlier run of this made it)")
    ap.add_argument("--only", nargs="*", help="case numbers to run (e.g. 1.5 6.18); default all")
    ap.add_argument("--jobs", type=int, default=1, help="cases run at once (default 1: the machine may be shared)")
    args = ap.parse_args()
    work = Path(args.out).resolve()
    if work.exists():
        if not (work / MARKER).is_file():
            raise SystemExit(f"{work} exists and was not made by this script; give another --out")
        for line in subprocess.run(["mount"], capture_output=True, text=True).stdout.splitlines():
            if f" {work}/" in line:  # tmpfs left by an interrupted earlier run
                subprocess.run(["umount", "-l", line.split(" on ")[1].split(" type ")[0]], capture_output=True)
        subprocess.run(["chattr", "-R", "-i", str(work)], capture_output=True)
        shutil.rmtree(work)
    work.mkdir(parents=True)
    (work / MARKER).write_text("made by benchmarks/fault_cases.py\n")

    t0 = time.time()
    bench = Bench(work)
    try:
        bench.setup()
        print(f"set-up: {time.time() - t0:.0f} s", flush=True)
        numbers = sorted((m[5:].replace("_", ".") for m in dir(bench) if m.startswith("case_")), key=case_key)
        chosen = [x for x in numbers if not args.only or x in args.only or x.split(".")[0] in args.only]
        with ThreadPoolExecutor(max(1, args.jobs)) as pool:
            list(pool.map(lambda x: bench.run(x, getattr(bench, "case_" + x.replace(".", "_"))), chosen))
    finally:
        bench.fs.release()
    bench.cases.sort(key=lambda c: case_key(c.number))
    minutes = (time.time() - t0) / 60
    passed = sum(c.ok is True for c in bench.cases)
    failed = sum(c.ok is False for c in bench.cases)
    skipped = sum(c.ok is None for c in bench.cases)
    head = (
        f"Issue 11 fault list rerun ({len(bench.cases)} cases: {passed} PASS, {failed} FAIL, {skipped} SKIP) in "
        f"{minutes:.1f} min. Full disk: {bench.fs.full_how}; read-only folder: {bench.fs.ro_how}. "
        f"`test` preset, {ITERATIONS} iterations, checkpoints every 2, CPU; exit codes 'a / b' are the "
        "interrupted run and the command run after it; rc 9 is the os._exit(9) of an in-process kill, -9 SIGKILL. "
        f"Cases run {max(1, args.jobs)} at a time; s: seconds per case."
    )
    text = head + "\n\n" + table(bench.cases) + "\n"
    (work / "fault_cases.md").write_text(text)
    print("\n" + text)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
