"""The configuration and the training images of a new run, built one way for the CLI, the GUI and scripts.

Precedence: preset < config file < dataset description (``dataset.yaml`` / dataset preset) < variant <
``--set`` overrides.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

from .errors import SIAError, yaml_problem

__all__ = ["resolve_train_config", "training_samples"]


def resolve_train_config(
    data: Optional[str],
    preset: Optional[str] = None,
    config_file: Optional[str] = None,
    overrides: Sequence[str] = (),
    variant: Optional[str] = None,
    dataset_preset: Optional[str] = None,
):
    """The config of a new run: preset < config file < dataset description < variant < ``--set``; then the
    backbone's starting weights are fetched and the config completed from them (``resolve_pretrained``)."""
    import yaml

    from .config import apply_variant, get_preset
    from .config_checks import validate_config
    from .data.layout import apply_to_data_config, dataset_description
    from .pretrained import resolve_pretrained

    file_data: dict[str, Any] = {}
    if config_file:
        path = Path(config_file)
        if not path.is_file():
            raise SIAError(f"config file not found: {path}", fix="give the path of a config .yaml or .json")
        try:
            file_data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as err:
            raise SIAError(
                f"cannot parse config {path}: {yaml_problem(err)}", fix="check the YAML/JSON syntax"
            ) from None
        except (OSError, UnicodeDecodeError) as err:
            raise SIAError(f"cannot read config {path}: {err}", fix="give a YAML or JSON text file") from None
        if not isinstance(file_data, dict):
            raise SIAError(f"config {path} is not a mapping", fix="write it as 'key: value' pairs")
    if preset is None:
        preset = file_data.get("preset") or _default_preset()
    if not isinstance(preset, str):
        raise SIAError(f"config {config_file}: preset {preset!r} is not a name", fix="use paper, cpu or test")
    cfg = get_preset(preset)
    if file_data:
        cfg = cfg.merged({**file_data, "preset": preset}, source=str(config_file))
    if data is not None:
        cfg.data = apply_to_data_config(dataset_description(data, dataset_preset), cfg.data)
    if variant is not None:
        cfg = apply_variant(cfg, variant)
    elif cfg.variant:
        cfg = apply_variant(cfg, cfg.variant)
    if overrides:
        cfg = cfg.with_overrides(list(overrides))
    return validate_config(resolve_pretrained(cfg))


def _default_preset() -> str:
    import torch

    return "paper" if torch.cuda.is_available() else "cpu"


def training_samples(data: str, cfg) -> list:
    """Training images of a dataset folder, with any corrected masks saved beside them."""
    from .data.layout import find_train_items
    from .data.train_dataset import samples_with_corrections

    items = find_train_items(data, cfg.num_classes, cfg.data.classes)
    return samples_with_corrections((i.path, i.labels) for i in items)
