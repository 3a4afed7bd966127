"""Make docs/images/widget.png: the SIA widget on a real H&E region (run under Xvfb, e.g. ``xvfb-run -a``).

Usage::

    python benchmarks/ablation.py --data ../shared/data/wsss4luad --out runs/ablation_cpu --variants f
    xvfb-run -a -s "-screen 0 1600x1000x24" python docs/images/make_widget_screenshot.py \\
        --run runs/ablation_cpu/f --region ../shared/data/wsss4luad/regions/img/val28.png

(the full model of the README's ablation table: ``cpu`` preset, 300 iterations, about 13 minutes on 2 cores).

The region is copied to a temporary folder first (the shared data stays read-only: the widget writes its
labels CSV beside the images). val28 is one of the regions the wsss4luad validation patches come from, so
the model never trained on it.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="trained SIA run folder (wsss4luad classes)")
    ap.add_argument("--region", required=True, help="H&E region image")
    ap.add_argument("--out", default=str(HERE / "widget.png"))
    ap.add_argument("--labels", nargs="*", default=["tumor", "stroma"], help="classes present in the region")
    args = ap.parse_args()

    import napari
    import torch  # noqa: F401  (torch/triton before the OpenGL context: see napari_sia/_triton_guard.py)
    from qtpy.QtCore import QCoreApplication, QThreadPool

    work = Path(tempfile.mkdtemp(prefix="sia-shot-"))
    region = Path(args.region)
    shutil.copy(region, work / region.name)

    viewer = napari.Viewer(show=True, title="napari + SIA")
    viewer.window._qt_window.resize(1600, 1000)
    _, widget = viewer.window.add_plugin_dock_widget("napari-sia", "SIA weak-label segmentation")
    widget.open_folder(work)
    widget.set_labels(args.labels)
    widget.model_edit.setText(str(args.run))
    widget.device_combo.setCurrentText("cpu")
    widget.train_preset.setCurrentText("cpu")
    widget.run_dir_edit.setText(str(Path(args.run).parent / "sia-finetune"))
    widget.inspect_class.setCurrentText("tumor")
    widget.inspect()
    while widget.inspect_worker is not None:
        QCoreApplication.processEvents()
        QThreadPool.globalInstance().waitForDone(50)
    QCoreApplication.processEvents()

    # Grid view, two layers per cell: the CAM, the inhibition map and the refined mask each over a copy of
    # the region, and the region alone.
    name = region.stem
    cam, inhibition, mask = (
        f"SIA CAM [tumor] ({name})",
        f"SIA inhibition [tumor] ({name})",
        f"SIA refined mask ({name})",
    )
    for layer in list(viewer.layers):
        if layer.name.startswith("SIA ") and layer.name not in (cam, inhibition, mask):
            viewer.layers.remove(layer)
    rgb = np.asarray(viewer.layers[name].data)
    for overlay in (cam, inhibition, mask):
        viewer.add_image(rgb, name=f"{name} (under {overlay.split(' [')[0].split(' (')[0][4:]})", rgb=True)
    for layer in viewer.layers:
        layer.visible = True
    viewer.layers[cam].opacity = 0.6
    viewer.layers[inhibition].opacity = 0.6
    viewer.layers[mask].opacity = 0.6
    under = [layer.name for layer in viewer.layers if "(under " in layer.name]
    # napari fills grid cells with `stride` layers each, from the bottom of the layer list up
    order = [under[0], cam, under[1], inhibition, under[2], mask, name]
    for target, layer_name in enumerate(order):
        viewer.layers.move(viewer.layers.index(layer_name), target)
    viewer.canvas.grid.enabled = True
    viewer.canvas.grid.shape = (2, 2)
    viewer.canvas.grid.stride = 2
    mask = viewer.layers[mask]
    viewer.layers.selection.active = mask
    viewer.reset_view()
    for _ in range(20):
        QCoreApplication.processEvents()
    shot = viewer.screenshot(path=None, canvas_only=False, flash=False)
    from PIL import Image

    img = Image.fromarray(shot[..., :3])
    img.save(args.out, optimize=True)
    if Path(args.out).stat().st_size > 500_000:  # keep the README light
        img.convert("P", palette=Image.Palette.ADAPTIVE, colors=256).save(args.out, optimize=True)
    print(f"wrote {args.out} ({Path(args.out).stat().st_size // 1024} KB, {img.size[0]}x{img.size[1]})")
    viewer.close()
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
