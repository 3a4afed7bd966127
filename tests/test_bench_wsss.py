"""The quality benchmarks' shared helpers (benchmarks/_wsss.py): a finished run is reused when only the
inference settings changed, and runs are scored as the preset infers today."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from sia_core.config import SIAConfig
from sia_core.data.synthetic import make_synthetic_dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import _wsss  # noqa: E402


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synthetic_dataset(tmp_path_factory.mktemp("bench") / "data", n_train=4, n_val=0, size=64, seed=5)


def test_a_run_differing_only_in_inference_is_reused_and_a_training_change_retrains(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run = tmp_path / "run"
    _wsss.train_run(run, str(data), "test", "a", 0, log="first")
    assert "training 4 iterations" in capsys.readouterr().out
    weights = (run / "last.safetensors").stat().st_mtime_ns

    _wsss.train_run(run, str(data), "test", "a", 0, ["infer.scales=[1.0, 0.75]", "infer.gate=true"], log="infer")
    assert "already trained" in capsys.readouterr().out
    assert (run / "last.safetensors").stat().st_mtime_ns == weights

    _wsss.train_run(run, str(data), "test", "a", 0, ["train.lr=0.002"], log="lr")
    assert "training 4 iterations" in capsys.readouterr().out


def test_training_part_leaves_out_only_the_infer_section() -> None:
    cfg = SIAConfig()
    other = cfg.with_overrides(["infer.scales=[1.0, 0.75]", "infer.label_threshold=0.3"])
    assert _wsss.training_part(cfg) == _wsss.training_part(other)
    assert _wsss.training_part(cfg) != _wsss.training_part(cfg.with_overrides(["train.seed=1"]))
    assert set(cfg.to_dict()) - set(_wsss.training_part(cfg)) == {"infer"}


def test_preset_infer_is_the_presets_infer_section_with_the_overrides() -> None:
    infer = _wsss.preset_infer("cpu", ["infer.label_threshold=0.4"])
    assert infer["gate"] is True and infer["flip"] is True and infer["scales"] == (1.0,)
    assert infer["label_threshold"] == 0.4
    assert set(infer) == set(SIAConfig().to_dict()["infer"])


def test_trained_weights_are_the_checkpoints_not_the_average_the_run_serves(data: Path, tmp_path: Path) -> None:
    import torch

    from sia_core.build import read_weights

    run = tmp_path / "run"
    _wsss.train_run(run, str(data), "test", "a", 0, ["train.ema=0.5"], log="ema")
    trained = _wsss.trained_weights(run, device="cpu").model.state_dict()
    checkpoint = torch.load(run / "state.pt", weights_only=True)["model"]
    served, _, _ = read_weights(run / "last.safetensors")
    assert all(torch.equal(trained[k].cpu(), checkpoint[k]) for k in checkpoint)
    assert any(not torch.equal(trained[k].cpu(), served[k]) for k in served)
