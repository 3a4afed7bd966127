"""The GUI stack works headless: napari draws an Image and a Labels layer via Qt + OpenGL (Mesa, Xvfb)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytestmark = pytest.mark.gui


def test_viewer_renders_image_and_labels(make_napari_viewer):
    viewer = make_napari_viewer(show=True)  # show=False leaves the canvas unpainted: an all-black screenshot
    image = np.tile(np.linspace(0.0, 1.0, 128, dtype=np.float32), (128, 1))
    labels = np.zeros((128, 128), dtype=np.uint8)
    labels[40:88, 40:88] = 1
    viewer.add_image(image, name="image")
    viewer.add_labels(labels, name="labels")
    viewer.reset_view()

    shot = viewer.screenshot(canvas_only=True, flash=False)

    assert shot.ndim == 3 and shot.shape[0] > 0 and shot.shape[1] > 0 and shot.shape[2] in (3, 4)
    colours = np.unique(shot.reshape(-1, shot.shape[2]), axis=0)
    assert len(colours) > 10, f"canvas is (nearly) one colour: {colours[:5]}"
    centre = shot[shot.shape[0] // 2, shot.shape[1] // 2]
    corner = shot[2, 2]
    assert not np.array_equal(centre, corner), "labels square not drawn over the background"


def test_torch_import_after_canvas_does_not_crash():
    """Regression: importing torchvision/timm (-> triton) after napari has an llvmpipe GL context segfaulted.

    napari_sia guards against it (napari_sia._triton_guard); run in a fresh process because this test
    session preloads torch/triton in conftest.py, which hides the problem.
    """
    code = textwrap.dedent(
        """
        import numpy as np, napari
        viewer = napari.Viewer(show=True)
        viewer.add_image(np.random.default_rng(0).random((32, 32)))
        viewer.screenshot(canvas_only=True, flash=False)
        import napari_sia  # what napari does before calling any plugin contribution
        import torch, torchvision, timm
        model = timm.create_model("resnet18", pretrained=False, num_classes=2).eval()
        with torch.no_grad():
            assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 2)
        viewer.screenshot(canvas_only=True, flash=False)
        viewer.close()
        print("ok")
        """
    )
    proc = subprocess.run(
        [sys.executable, "-X", "faulthandler", "-c", code], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0 and "ok" in proc.stdout, (
        f"exit code {proc.returncode}\nstdout:\n{proc.stdout[-2000:]}\nstderr:\n{proc.stderr[-4000:]}"
    )
