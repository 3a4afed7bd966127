"""The widget's backbone chooser, built on its own: choices, licence notes, the overrides that reach the run and
its CLI command, and Download with progress, Cancel and the command line's one-line errors (served by the hub
stand-in on 127.0.0.1, so nothing leaves the machine)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hub_standin import FakeHub, serve_fake_hub  # tests/hub_standin.py

from napari_sia._backbone_chooser import OTHER, PRESET_DEFAULT, BackboneChooser
from sia_core.backbones import KNOWN_BACKBONES

pytestmark = pytest.mark.gui


@pytest.fixture
def chooser(qtbot) -> Iterator[BackboneChooser]:
    w = BackboneChooser()
    qtbot.addWidget(w)
    yield w
    if w.worker is not None:
        w.cancel()
        qtbot.waitUntil(lambda: w.worker is None, timeout=10_000)


@pytest.fixture
def hub(tmp_path, monkeypatch) -> Iterator[FakeHub]:
    with serve_fake_hub(tmp_path, monkeypatch) as server:
        yield server


def test_choices_notes_and_overrides(chooser, tmp_path):
    labels = [chooser.combo.itemText(i) for i in range(chooser.combo.count())]
    assert labels == [PRESET_DEFAULT, *(b.label for b in KNOWN_BACKBONES), OTHER]
    assert chooser.overrides() == []  # the preset decides
    chooser.set_preset("paper")
    assert chooser.value() == "vit_base_patch16_224.orig_in21k_ft_in1k" and chooser.download_button.isEnabled()
    chooser.set_preset("cpu")
    assert chooser.value() is None and chooser.overrides() == []
    chooser.combo.setCurrentText("Random init")
    assert chooser.value() is None and chooser.overrides() == ["model.pretrained=null"]
    assert not chooser.download_button.isEnabled()  # nothing to download for random init

    chooser.combo.setCurrentText("ImageNet ViT-B/16 (the paper's)")
    assert chooser.overrides() == ["model.pretrained=vit_base_patch16_224.orig_in21k_ft_in1k"]
    assert "Apache-2.0" in chooser.note.text() and chooser.download_button.isEnabled()

    chooser.combo.setCurrentText("UNI2-h (MahmoodLab)")
    note = chooser.note.text()
    assert "Gated model" in note and "CC-BY-NC-ND-4.0" in note and "huggingface.co/MahmoodLab/UNI2-h" in note
    assert "hf auth login" in note and "ViT-H/14" in note
    chooser.freeze_combo.setCurrentText("heads and class tokens only")
    assert chooser.overrides() == ["model.pretrained=hf-hub:MahmoodLab/UNI2-h", "model.freeze=all"]

    assert not chooser._other_row.isVisibleTo(chooser)
    chooser.set_value(f"local-dir:{tmp_path}")
    assert chooser.combo.currentText() == OTHER and chooser._other_row.isVisibleTo(chooser)
    assert chooser.overrides()[0] == f"model.pretrained=local-dir:{tmp_path}"
    chooser.set_value("hf-hub:paige-ai/Virchow2")
    assert chooser.combo.currentText() == "Virchow2 (Paige)"


def test_changes_are_signalled(chooser, qtbot):
    with qtbot.waitSignal(chooser.changed, timeout=1000):
        chooser.combo.setCurrentText("ImageNet ViT-S/16")
    with qtbot.waitSignal(chooser.changed, timeout=1000):
        chooser.freeze_combo.setCurrentText("last 2 blocks + heads")
    assert chooser.freeze() == "all-but-2"


def _tiny_repo(tmp_path) -> dict[str, bytes]:
    from test_backbones import FAMILIES, write_hub_folder

    arch, kwargs, size = FAMILIES["plain ViT (CLS, embedded position of CLS)"]
    write_hub_folder(tmp_path / "src", arch, kwargs, size)
    return {n: (tmp_path / "src" / n).read_bytes() for n in ("config.json", "model.safetensors")}


def test_download_shows_progress_and_origin(chooser, qtbot, hub, tmp_path):
    commit = hub.add("lab/tiny-vit", _tiny_repo(tmp_path))
    chooser.set_value("hf-hub:lab/tiny-vit")
    with qtbot.waitSignal(chooser.downloaded, timeout=30_000) as done:
        chooser.download_button.click()
    origin = done.args[0]
    assert origin["revision"] == commit and origin["file"] == "model.safetensors"
    qtbot.waitUntil(lambda: chooser.worker is None, timeout=5000)
    assert chooser.bar.value() == chooser.bar.maximum() > 0
    assert chooser.status.text().startswith("ready: lab/tiny-vit @ " + commit[:10])
    assert chooser.download_button.isEnabled() and not chooser.cancel_button.isEnabled()


def test_download_can_be_cancelled(chooser, qtbot, hub, tmp_path):
    hub.add("lab/tiny-vit", _tiny_repo(tmp_path))
    hub.chunk_delay = 0.05  # a slow link: the download takes seconds
    chooser.set_value("hf-hub:lab/tiny-vit")
    chooser.download_button.click()
    qtbot.waitUntil(lambda: "MiB" in chooser.status.text(), timeout=20_000)  # bytes are arriving
    assert chooser.cancel_button.isEnabled()
    chooser.cancel_button.click()
    qtbot.waitUntil(lambda: chooser.worker is None, timeout=20_000)
    assert chooser.status.text().startswith("cancelled")
    assert not list((tmp_path / "hf-cache").rglob("snapshots/*/model.safetensors"))


def test_download_errors_are_the_cli_line(chooser, qtbot, hub, tmp_path, monkeypatch):
    hub.add("lab/gated-vit", _tiny_repo(tmp_path), gated=True)
    monkeypatch.setattr("napari.utils.notifications.show_error", lambda text: None)
    chooser.set_value("hf-hub:lab/gated-vit")
    chooser.download_button.click()
    qtbot.waitUntil(lambda: chooser.worker is None, timeout=20_000)
    assert chooser.status.text().startswith("error: hf-hub:lab/gated-vit is a gated model and no Hugging Face token")
    assert "hf auth login" in chooser.status.text()
