"""Shared test fixtures. Real data lives beside the project in ../shared/data and is never copied in.

Tests that read it take the ``shared_data`` fixture: without ../shared/data (a user's fresh clone) they skip
with the reason; with ``SIA_REQUIRE_SHARED_DATA=1`` (set by .ci/run) a missing folder fails them instead.
``ngff_check`` opens an OME-Zarr store with the three outside readers (ome-zarr-models, ome-zarr-py's Reader,
napari-ome-zarr) and returns what each found at its root.

GUI tests (marker ``gui``; every test that uses ``make_napari_viewer``, ``qtbot`` or ``qapp`` gets it
automatically) need an X display. When GUI tests are selected, ``DISPLAY`` is unset and ``Xvfb`` is on PATH,
this file starts a private Xvfb server for the session, so plain ``python -m pytest`` works headless.
Set ``SIA_TEST_XVFB=1`` to use Xvfb even when a display exists, ``SIA_TEST_XVFB=0`` never to start one.
"""

from __future__ import annotations

import importlib.util
import os
import select
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

# Tests never download weights (the `paper` preset names ImageNet weights): with huggingface_hub offline, a test
# that reached for the hub would fail at once with SIA's "not in the Hugging Face cache" error instead of
# retrying the network. tests/test_backbones.py serves its own hub on 127.0.0.1 and lifts this there.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = (PROJECT_ROOT / ".." / "shared" / "data").resolve()

GUI_FIXTURES = {"make_napari_viewer", "make_napari_viewer_proxy", "qtbot", "qapp"}
_XVFB_START_TIMEOUT_S = 30.0

_xvfb: subprocess.Popen | None = None
_xvfb_log: Path | None = None
_qt_preflight: str | None = None  # None = not checked yet, "" = display ok, else why GUI tests must fail


REQUIRE_SHARED_DATA = "SIA_REQUIRE_SHARED_DATA"


def require_shared_data(path: Path = SHARED_DATA) -> Path:
    """``path`` when it exists; else skip the calling test with the reason, or fail it when
    ``SIA_REQUIRE_SHARED_DATA=1`` (CI: the real-data tests must run there)."""
    if path.exists():
        return path
    reason = f"real H&E data not found at {path} (it sits beside the repository as ../shared/data)"
    if os.environ.get(REQUIRE_SHARED_DATA, "").strip() not in ("", "0"):
        pytest.fail(f"{reason}; {REQUIRE_SHARED_DATA} is set, so it is required", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of the real H&E data (../shared/data); see :func:`require_shared_data`."""
    return require_shared_data()


def _open_with_outside_readers(path: Path) -> dict:
    """What ome-zarr-models, ome-zarr-py's Reader and napari-ome-zarr make of a store, opened at its root."""
    import warnings

    import ome_zarr_models
    import zarr
    from napari_ome_zarr._reader import napari_get_reader
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    model = ome_zarr_models.open_ome_zarr(zarr.open_group(str(path), mode="r"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nodes = list(Reader(parse_url(str(path)))())
        reader = napari_get_reader(str(path))
        layers = reader(str(path)) if reader is not None else []
    return {
        "model": model,
        "labels": list(model.labels.attributes.labels) if getattr(model, "labels", None) else [],
        "nodes": [(sorted(type(s).__name__ for s in n.specs), [tuple(d.shape) for d in n.data]) for n in nodes],
        "layers": [(kind, [tuple(d.shape) for d in data] if isinstance(data, list) else [data.shape], kw)
                   for data, kw, kind in layers],
    }  # fmt: skip


@pytest.fixture(scope="session")
def ngff_check():
    """``ngff_check(path)``: the store opened at its root by the outside readers (see the module docstring)."""
    return _open_with_outside_readers


# --------------------------------------------------------------------------------------------------------
# Headless display


def _want_xvfb() -> bool:
    setting = os.environ.get("SIA_TEST_XVFB", "").strip()
    if setting == "0" or not sys.platform.startswith("linux"):
        return False
    if setting == "1":
        return True
    return not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY")


def _die_with_parent() -> None:
    """In the Xvfb child: get SIGTERM when pytest dies, even by a crash (no stray Xvfb servers)."""
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _start_xvfb() -> None:
    """Start Xvfb on a free display number (chosen by Xvfb itself via -displayfd) and export DISPLAY."""
    global _xvfb, _xvfb_log, _qt_preflight
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        return  # GUI tests then fail with an explanation (see pytest_runtest_setup)
    fd, log = tempfile.mkstemp(prefix="sia-xvfb-", suffix=".log")
    _xvfb_log = Path(log)
    read_end, write_end = os.pipe()
    try:
        _xvfb = subprocess.Popen(
            [xvfb, "-displayfd", str(write_end), "-screen", "0", "1280x1024x24", "-nolisten", "tcp"],
            pass_fds=(write_end,),
            stdin=subprocess.DEVNULL,
            stdout=fd,
            stderr=fd,
            start_new_session=True,  # Ctrl-C goes to pytest, which then stops Xvfb itself
            preexec_fn=_die_with_parent,
        )
    finally:
        os.close(write_end)
        os.close(fd)
    number = b""
    try:
        while not number.endswith(b"\n"):
            ready, _, _ = select.select([read_end], [], [], _XVFB_START_TIMEOUT_S)
            chunk = os.read(read_end, 16) if ready else b""
            if not chunk:
                break
            number += chunk
    finally:
        os.close(read_end)
    if not number.strip().isdigit():
        _qt_preflight = f"Xvfb did not start; its log:\n{_xvfb_log.read_text(errors='replace')}"
        _stop_xvfb()
        return
    os.environ["DISPLAY"] = f":{number.decode().strip()}"
    os.environ.pop("WAYLAND_DISPLAY", None)
    os.environ["QT_QPA_PLATFORM"] = "xcb"


def _stop_xvfb() -> None:
    global _xvfb
    if _xvfb is not None:
        _xvfb.terminate()
        try:
            _xvfb.wait(timeout=10)
        except subprocess.TimeoutExpired:
            _xvfb.kill()
            _xvfb.wait()
        _xvfb = None
    if _xvfb_log is not None:
        _xvfb_log.unlink(missing_ok=True)


def pytest_unconfigure(config: pytest.Config) -> None:
    _stop_xvfb()


@pytest.hookimpl(tryfirst=True)  # before -m selects on the marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if GUI_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.gui)


def pytest_collection_finish(session: pytest.Session) -> None:
    # Only when GUI tests were selected, and before any test creates the QApplication (so Qt sees DISPLAY).
    if any(item.get_closest_marker("gui") for item in session.items):
        if _want_xvfb():
            _start_xvfb()
        _preload_triton()


def _preload_triton() -> None:
    """Load torch (and Triton, which torchvision/torch._dynamo import) before any OpenGL context exists.

    Triton's bundled LLVM segfaults at import when Mesa's libLLVM (llvmpipe, used under Xvfb) is already
    loaded in the process; loaded the other way round both work. napari_sia guards users against the same
    crash (napari_sia._triton_guard); here the whole session imports them first so test order cannot matter.
    """
    if importlib.util.find_spec("torch") is None:
        return
    import torch  # noqa: F401

    if importlib.util.find_spec("triton") is not None:
        import triton  # noqa: F401


def _qt_display_error() -> str:
    """Empty string if a QApplication can start on this display; else why not. Checked once, in a subprocess,
    because Qt aborts the whole process when its xcb platform plugin cannot load."""
    global _qt_preflight
    if _qt_preflight is not None:
        return _qt_preflight
    if not any(os.environ.get(var) for var in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")):
        _qt_preflight = (
            "no display: install Xvfb (Debian: apt-get install xvfb) so tests/conftest.py can start one, "
            "or deselect GUI tests with -m 'not gui'"
        )
        return _qt_preflight
    code = "import sys; from qtpy.QtWidgets import QApplication; app = QApplication(sys.argv)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    _qt_preflight = ""
    if proc.returncode != 0:
        _qt_preflight = (
            f"Qt cannot start on DISPLAY={os.environ.get('DISPLAY')!r} (exit code {proc.returncode}): is "
            "the X server up, are the Qt6 xcb libraries from the README installed? Qt said:\n" + proc.stderr[-3000:]
        )
    return _qt_preflight


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """GUI tests fail (never skip) with a clear message when no usable display exists. A hook, not a fixture:
    it must run before pytest-qt's session-scoped ``qapp`` fixture creates the QApplication."""
    if item.get_closest_marker("gui") is not None:
        error = _qt_display_error()
        if error:
            pytest.fail(error, pytrace=False)
