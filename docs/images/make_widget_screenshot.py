"""Make the README's screenshots: napari + the SIA widget on a 1366x768 screen, after one click on Inspect.

Usage (Xvfb's screen is the laptop screen being shown)::

    xvfb-run -a -s "-screen 0 1366x768x24" python docs/images/make_widget_screenshot.py \\
        --run RUN --region ../shared/data/wsss4luad/regions/img/val28.png

writes ``docs/images/widget.png`` (the whole napari window at 1366x768: the widget with its work in progress
open and Inspect's default view in the canvas) and ``docs/images/inspect.png`` (the canvas of a 1366x768
window with the widget's dock folded away: the same default view, larger). ``RUN`` is a trained run with the
WSSS4LUAD classes (tumor, stroma, normal).

The region is copied to a temporary folder first (the shared data stays read-only: the widget writes its
labels CSV beside the images). val28 is one of the regions the wsss4luad validation patches come from, so
the model never trained on it.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCREEN = (1366, 768)


def _settle(rounds: int = 30) -> None:
    from qtpy.QtCore import QCoreApplication, QThreadPool

    for _ in range(rounds):
        QCoreApplication.processEvents()
        QThreadPool.globalInstance().waitForDone(20)


def _save(shot, path: Path) -> None:
    from PIL import Image

    img = Image.fromarray(shot[..., :3])
    img.save(path, optimize=True)
    if path.stat().st_size > 400_000:  # keep the README light
        img.convert("P", palette=Image.Palette.ADAPTIVE, colors=256).save(path, optimize=True)
    print(f"wrote {path} ({path.stat().st_size // 1024} KB, {img.size[0]}x{img.size[1]})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="trained SIA run folder (wsss4luad classes)")
    ap.add_argument("--region", required=True, help="H&E region image")
    ap.add_argument("--out", default=str(HERE), help="folder for widget.png and inspect.png")
    ap.add_argument("--labels", nargs="*", default=["tumor", "stroma"], help="classes present in the region")
    args = ap.parse_args()

    import napari
    import torch  # noqa: F401  (torch/triton before the OpenGL context: see napari_sia/_triton_guard.py)

    work = Path(tempfile.mkdtemp(prefix="sia-shot-"))
    region = Path(args.region)
    shutil.copy(region, work / region.name)
    out = Path(args.out)

    viewer = napari.Viewer(show=True, title="napari + SIA")
    window = viewer.window._qt_window
    window.resize(*SCREEN)
    window.move(0, 0)
    dock, widget = viewer.window.add_plugin_dock_widget("napari-sia", "SIA weak-label segmentation")
    widget.open_folder(work)
    widget.set_labels(args.labels)
    widget.model_edit.setText(str(args.run))
    widget.device_combo.setCurrentText("cpu")
    widget.inspect()
    while widget.inspect_job.busy:
        _settle(1)
    _settle()
    viewer.reset_view()
    _settle()
    _save(viewer.screenshot(path=None, canvas_only=False, flash=False), out / "widget.png")

    dock.hide()  # the same view with the whole window's width for the canvas
    _settle()
    viewer.reset_view()
    _settle()
    _save(viewer.screenshot(path=None, canvas_only=True, flash=False), out / "inspect.png")
    viewer.close()
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
