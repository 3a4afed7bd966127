import numpy as np
import pytest
import torch

from sia_core.argmax import channel_argmax, class_argmax


@pytest.fixture
def maps() -> np.ndarray:
    # coarse values give many ties, where the first maximum must win as in argmax
    return np.round(np.random.default_rng(0).random((4, 33, 29)) * 3).astype(np.float32)


def test_class_argmax_equals_numpy_argmax(maps):
    out = class_argmax(maps)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, maps.argmax(0))


@pytest.mark.parametrize("present", [[1, 0, 1, 1], [0, 1, 0, 0], [0, 0, 1, 1]])
def test_class_argmax_over_present_classes(maps, present):
    present = np.array(present)
    expected = np.where(present[:, None, None] > 0, maps, -np.inf).argmax(0)
    np.testing.assert_array_equal(class_argmax(maps, present), expected)


def test_class_argmax_without_present_class_is_zero(maps):
    assert not class_argmax(maps, np.zeros(4)).any()


def test_channel_argmax_equals_torch_argmax(maps):
    t = torch.from_numpy(np.stack([maps, maps[::-1].copy()]))
    assert torch.equal(channel_argmax(t), t.argmax(1))
