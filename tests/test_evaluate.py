"""The two evaluation protocols (label-free, labels given) against hand-computed confusion matrices."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from sia_core.build import build_model
from sia_core.cam import ClassMaps
from sia_core.config import apply_variant, get_preset
from sia_core.data.layout import EvalItem
from sia_core.evaluate import evaluate_items, format_table, summary
from sia_core.predictor import NetworkMaps, SIAPredictor

# Two 1 x 4 images, classes 0 tumor, 1 stroma, 2 normal, 3 = ignore.
GT = [np.array([[0, 0, 1, 1]]), np.array([[2, 2, 2, 3]])]  # true classes {0, 1} and {2}
SCORES = [[0.9, 0.2, 0.6], [0.1, 0.7, 0.8]]  # predicted classes (p > 0.5): {0, 2} and {1, 2}
SEG = [  # decoder probabilities per pixel (C values each)
    [[0.6, 0.3, 0.1], [0.3, 0.2, 0.5], [0.2, 0.5, 0.3], [0.1, 0.4, 0.5]],  # argmax 0 2 1 2
    [[0.1, 0.6, 0.3], [0.1, 0.2, 0.7], [0.5, 0.2, 0.3], [0.3, 0.3, 0.4]],  # argmax 1 2 0 (ignored)
]
CAM = [
    [[0.9, 0.1, 0.5], [0.8, 0.3, 0.9], [0.1, 0.9, 0.2], [0.2, 0.5, 0.6]],
    [[0.2, 0.8, 0.5], [0.2, 0.1, 0.5], [0.2, 0.1, 0.5], [0.2, 0.1, 0.5]],
]


def _channels(values: list) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32).permute(0, 2, 1)[:, :, None, :]  # (B, C, 1, 4)


@pytest.fixture
def predictor(tmp_path, monkeypatch):
    cfg = apply_variant(get_preset("test"), "a")  # no RFM: no I, no RSM
    cfg.data.classes = ["tumor", "stroma", "normal"]
    cfg.data.ignore_index = 3
    cfg.data.white_background = False
    pred = SIAPredictor(build_model(cfg), cfg, "cpu")
    cam, seg = _channels(CAM), _channels(SEG)
    maps = ClassMaps(
        logits=torch.zeros(2, 3),
        cam=cam,
        cam_grid=cam,
        cam_aux_grid=cam,
        cam_aux=None,
        inhibition=None,
        inhibition_grid=None,
        seg=seg,
    )

    def fake_forward(images, scales=None, flip=None):
        assert len(images) == 2
        return NetworkMaps(images=np.asarray(images), size=(1, 4), maps=maps, scores=torch.tensor(SCORES))

    monkeypatch.setattr(pred, "forward_batch", fake_forward)
    items = []
    for i, gt in enumerate(GT):
        Image.fromarray(np.full((1, 4, 3), 128, np.uint8)).save(tmp_path / f"im{i}.png")
        Image.fromarray(gt.astype(np.uint8), mode="L").save(tmp_path / f"mask{i}.png")
        items.append(EvalItem(tmp_path / f"im{i}.png", tmp_path / f"mask{i}.png"))
    return pred, items


def test_protocols_match_hand_computed_matrices(predictor):
    pred, items = predictor
    r = evaluate_items(pred, items)
    # label-free decoder: argmax over all classes (image 2's last pixel is ignored)
    assert r["label_free"]["decoder"]["matrix"] == [[1, 0, 1], [0, 1, 1], [1, 1, 1]]
    # labels given: decoder restricted to {0, 1} and {2}
    assert r["labels_given"]["decoder"]["matrix"] == [[2, 0, 0], [0, 2, 0], [0, 0, 3]]
    # label-free CAM: argmax over the predicted classes {0, 2} and {1, 2}
    assert r["label_free"]["cam"]["matrix"] == [[1, 0, 1], [0, 0, 2], [0, 1, 2]]
    assert r["labels_given"]["cam"]["matrix"] == [[2, 0, 0], [0, 2, 0], [0, 0, 3]]
    assert "rsm" not in r["label_free"] and "inhibition" not in r["labels_given"]
    # IoU of the label-free decoder: class 0: 1 / (2 + 2 - 1), class 1: 1 / (2 + 2 - 1), class 2: 1 / (3 + 3 - 1)
    np.testing.assert_allclose(r["label_free"]["decoder"]["IoU"], [1 / 3, 1 / 3, 1 / 5])
    clf = r["classifier"]
    assert clf["threshold"] == 0.5 and clf["exact_match"] == 0.0
    assert clf["precision"] == [1.0, 0.0, 0.5] and clf["recall"] == [1.0, 0.0, 1.0]
    s = summary(r)
    assert s["protocol"] == "label-free decoder"
    assert s["mIoU"] == pytest.approx((1 / 3 + 1 / 3 + 1 / 5) / 3)
    assert s["labels_given"]["decoder"]["mIoU"] == 1.0
    table = format_table(r, pred.cfg.data.classes)
    assert table.index("label-free") < table.index("labels given")


def test_gate_restricts_the_label_free_decoder_to_predicted_classes(predictor):
    pred, items = predictor
    pred.cfg.infer.gate = True
    r = evaluate_items(pred, items)
    # image 1 over {0, 2}: 0 2 0(0.2 vs 0.3 -> 2) ... pixel values: (0.6|0.1) 0, (0.3|0.5) 2, (0.2|0.3) 2, (0.1|0.5) 2
    # image 2 over {1, 2}: (0.6|0.3) 1, (0.2|0.7) 2, (0.2|0.3) 2
    assert r["label_free"]["decoder"]["matrix"] == [[1, 0, 1], [0, 0, 2], [0, 1, 2]]


def test_label_threshold_is_read_from_the_config(predictor):
    pred, items = predictor
    pred.cfg.infer.label_threshold = 0.65  # predicted {0} and {1, 2}
    r = evaluate_items(pred, items)
    assert r["label_free"]["cam"]["matrix"] == [[2, 0, 0], [2, 0, 0], [0, 1, 2]]
    assert r["classifier"]["threshold"] == 0.65
