"""Whole-slide inference: a synthetic OME-TIFF pyramid predicted end to end in bounded memory, resumed after
interruptions, opened in napari over the slide, and sharded over two processes."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from napari_sia._slide_layers import slide_layer_data
from sia_core.build import build_model, save_weights
from sia_core.config import get_preset
from sia_core.errors import SIAError
from sia_core.predictor import SIAPredictor
from sia_core.slide import (
    DEFAULT_TRAINING_MPP,
    choose_resolution,
    open_slide,
    open_slide_levels,
    open_slide_prediction,
    predict_slide,
    predict_slides,
    write_synthetic_slide,
)
from sia_core.slide.store import resume_dir_for

# small blocks and pyramids so a test-sized slide still has several blocks (with margins crossing their
# borders) and several pyramid levels
OPTS = {"chunk": 256, "pyramid_min_side": 256}
SLIDE_SIZE = (1024, 896)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    cfg = get_preset("test")
    root = tmp_path_factory.mktemp("run")
    save_weights(root / "best.safetensors", build_model(cfg), cfg)
    return root


@pytest.fixture(scope="module")
def predictor(run_dir: Path) -> SIAPredictor:
    return SIAPredictor.from_run(run_dir, device="cpu")


@pytest.fixture(scope="module")
def slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("slide") / "synthetic.ome.tif"
    return write_synthetic_slide(path, SLIDE_SIZE, tile=256, mpp=0.5, seed=3, min_side=256)


@pytest.fixture(scope="module")
def predicted(predictor: SIAPredictor, slide: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("pred") / "synthetic.ome.zarr"
    calls: list[tuple[int, int]] = []
    result = predict_slide(predictor, slide, out, progress=lambda d, t: calls.append((d, t)), **OPTS)
    return result, calls


def _labels(out: Path) -> np.ndarray:
    return np.asarray(open_slide_prediction(out)["labels"][0][...])


# --------------------------------------------------------------------------------------------------------


def test_synthetic_slide_is_an_ome_pyramid(slide: Path) -> None:
    with tifffile.TiffFile(slide) as tif:
        assert tif.is_ome and tif.series[0].axes == "YXS"
        assert [lvl.shape[:2] for lvl in tif.series[0].levels] == [(1024, 896), (512, 448), (256, 224)]
    s = open_slide(slide)
    assert s.mpp == pytest.approx(0.5) and s.downsamples == [1.0, 2.0, 4.0]
    lvl = s.levels[1]
    assert lvl.shape == (512, 448, 3) and lvl.dtype == np.uint8
    # level 1 is the 2x2 mean of level 0
    full = np.asarray(s.levels[0][0:64, 0:64]).astype(int)
    half = (full[0::2, 0::2] + full[1::2, 0::2] + full[0::2, 1::2] + full[1::2, 1::2] + 2) // 4
    assert np.abs(np.asarray(lvl[0:32, 0:32]).astype(int) - half).max() <= 12  # JPEG
    # tissue on glass: both present
    gray = np.asarray(s.levels[2][:]).mean(-1)
    assert 0.2 < (gray < 200).mean() < 0.8
    s.close()


def test_predict_slide_end_to_end(predicted, predictor: SIAPredictor, slide: Path) -> None:
    result, calls = predicted
    assert result.complete and not result.resumed and not result.stopped
    assert result.shape == SLIDE_SIZE and result.level == 0 and result.mpp == pytest.approx(0.5)
    assert result.tiles_done == result.tiles_total > 0
    assert result.tiles_skipped > 0.2 * result.tiles_total  # glass tiles never reach the model
    assert calls[-1] == (result.tiles_total, result.tiles_total)
    assert not resume_dir_for(result.out).exists()

    pred = open_slide_prediction(result.out)
    cfg = predictor.cfg
    assert pred["complete"] and pred["classes"] == cfg.data.classes and pred["scale"] == 1.0
    assert [a.shape for a in pred["labels"]] == [(1024, 896), (512, 448), (256, 224)]
    # blocks are a multiple of the tile stride (64 - 16) and of the maps' downsample: 256 -> 240
    assert pred["info"]["chunk"] == 240 and pred["labels"][0].chunks == (240, 240)
    labels = np.asarray(pred["labels"][0][...])
    assert set(np.unique(labels).tolist()) <= set(range(cfg.num_classes)) | {pred["fill"]}
    np.testing.assert_array_equal(np.asarray(pred["labels"][1][...]), labels[::2, ::2])

    # glass is the fill value, tissue is classified
    gray = np.asarray(open_slide(slide).levels[0][...]).mean(-1)
    assert (labels[gray > 230] == pred["fill"]).mean() > 0.95
    assert (labels[gray < 170] < cfg.num_classes).mean() > 0.95

    probs = np.asarray(pred["maps"]["probabilities"][0][...])
    assert probs.shape == (cfg.num_classes, 256, 224) and probs.dtype == np.float32
    sums = probs.sum(0)
    assert np.allclose(sums[sums > 0.99], 1.0, atol=1e-3) and (sums > 0.99).mean() > 0.3

    # the bounded-memory blend equals the in-memory one (predict_tiled) wherever both predicted tissue
    image = np.asarray(open_slide(slide).levels[0][...])
    ref = predictor.predict_tiled(image, tile=cfg.infer.tile_size, overlap=cfg.infer.tile_overlap, batch_size=8)
    tissue = (labels < cfg.num_classes) & (ref.label_map < cfg.num_classes)
    assert tissue.mean() > 0.3
    assert (labels[tissue] == ref.label_map[tissue]).mean() > 0.999

    geo = json.loads(result.geojson.read_text())
    assert geo["features"]
    xs = [x for f in geo["features"] for ring in f["geometry"]["coordinates"] for x, _ in ring]
    assert min(xs) >= 0 and max(xs) <= SLIDE_SIZE[1]
    assert {f["properties"]["classification"]["name"] for f in geo["features"]} <= set(cfg.data.classes)


def test_resume_after_interruptions_gives_the_same_result(
    predicted, predictor: SIAPredictor, slide: Path, tmp_path: Path
) -> None:
    reference, _ = predicted
    out = tmp_path / "resumed.ome.zarr"
    batches = iter(range(10**6))
    first = predict_slide(predictor, slide, out, should_stop=lambda: next(batches) >= 6, **OPTS)
    assert first.stopped and not first.complete and first.geojson is None
    assert 0 < first.tiles_done < first.tiles_total and resume_dir_for(out).is_dir()
    assert not open_slide_prediction(out)["complete"]

    def crash(done: int, total: int) -> None:  # like a kill in the middle of a block
        if done > first.tiles_done + 20:
            raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError, match="simulated crash"):
        predict_slide(predictor, slide, out, progress=crash, **OPTS)

    last = predict_slide(predictor, slide, out, **OPTS)
    assert last.resumed and last.complete and not resume_dir_for(out).exists()
    assert 0 < last.tiles_done < last.tiles_total  # blocks written before the interruptions were kept
    np.testing.assert_array_equal(_labels(out), _labels(reference.out))
    a = np.asarray(open_slide_prediction(out)["maps"]["probabilities"][0][...])
    b = np.asarray(open_slide_prediction(reference.out)["maps"]["probabilities"][0][...])
    np.testing.assert_allclose(a, b, atol=1e-6)

    with pytest.raises(SIAError, match="complete slide prediction"):
        predict_slide(predictor, slide, out, **OPTS)
    again = predict_slide(predictor, slide, out, overwrite=True, maps=(), **OPTS)
    assert again.complete and not again.resumed and open_slide_prediction(out)["maps"] == {}


@pytest.mark.parametrize("where", ["block", "resume state"])
def test_full_disk_keeps_the_finished_blocks_and_the_same_command_resumes(
    predicted, predictor: SIAPredictor, slide: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """The disk fills up after a few blocks, in zarr's own write of a block (it came out as a raw OSError
    traceback) or in SIA's write of the resume state (the whole unfinished result was deleted): one-line error,
    finished blocks kept, and the same call, once there is space, resumes to the uninterrupted result."""
    import errno

    from sia_core.io_utils import WriteError, write_error
    from sia_core.slide.store import SlideStore

    reference, _ = predicted
    out = tmp_path / "full.ome.zarr"
    name, exc = ("write_labels", OSError) if where == "block" else ("commit", None)
    real, calls = getattr(SlideStore, name), {"n": 0}

    def full(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            err = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            raise err if exc else write_error(err, self.resume_dir / "progress.json")
        return real(self, *a, **k)

    with monkeypatch.context() as m:
        m.setattr(SlideStore, name, full)
        with pytest.raises(WriteError, match="no space left") as err:
            predict_slide(predictor, slide, out, **OPTS)
    assert "\n" not in str(err.value) and resume_dir_for(out).is_dir()
    last = predict_slide(predictor, slide, out, **OPTS)
    assert last.resumed and last.complete and last.tiles_done < last.tiles_total
    np.testing.assert_array_equal(_labels(out), _labels(reference.out))


def test_full_disk_when_the_result_is_created_names_the_folder_and_the_free_space(
    predictor: SIAPredictor, slide: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from sia_core.slide.store import SlideStore

    def full(self, *a, **k):
        self.out.mkdir()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(SlideStore, "create", full)
    with pytest.raises(SIAError, match=f"no space left to write x.ome.zarr in {tmp_path}.* \\([0-9.]+ [kMG]B free\\)"):
        predict_slide(predictor, slide, tmp_path / "x.ome.zarr", **OPTS)
    assert not (tmp_path / "x.ome.zarr").exists()


def test_unfinished_result_with_other_settings_is_refused(predictor: SIAPredictor, slide: Path, tmp_path: Path):
    out = tmp_path / "x.ome.zarr"
    predict_slide(predictor, slide, out, should_stop=lambda: True, **OPTS)
    with pytest.raises(SIAError, match="other settings.*overlap"):
        predict_slide(predictor, slide, out, overlap=8, **OPTS)
    (tmp_path / "foreign.zarr").mkdir()
    with pytest.raises(SIAError, match="not an unfinished slide prediction"):
        predict_slide(predictor, slide, tmp_path / "foreign.zarr", **OPTS)


def test_bad_slides_name_the_file_and_the_fix(predictor: SIAPredictor, slide: Path, tmp_path: Path) -> None:
    with pytest.raises(SIAError, match="slide not found.*missing.svs"):
        open_slide(tmp_path / "missing.svs")
    (tmp_path / "text.tif").write_text("not a tiff")
    with pytest.raises(SIAError, match=r"text.tif is not a readable TIFF.*fix: convert"):
        open_slide(tmp_path / "text.tif")
    tifffile.imwrite(tmp_path / "gray.tif", np.zeros((64, 64), np.uint8))
    with pytest.raises(SIAError, match="gray.tif.*not an RGB image"):
        open_slide(tmp_path / "gray.tif")
    tifffile.imwrite(tmp_path / "rgb16.tif", np.zeros((64, 64, 3), np.uint16), photometric="rgb")
    with pytest.raises(SIAError, match="rgb16.tif.*not 8-bit RGB"):
        open_slide(tmp_path / "rgb16.tif")
    with pytest.raises(SIAError, match=r"3 pyramid level\(s\).*level 7.*fix: pass --level between 0 and 2"):
        predict_slide(predictor, slide, tmp_path / "o.zarr", level=7)
    with pytest.raises(SIAError, match="overlap must be in 0..tile-1"):
        predict_slide(predictor, slide, tmp_path / "o.zarr", overlap=64)
    assert not (tmp_path / "o.zarr").exists()


def test_planar_and_rgba_slides_read_as_rgb(tmp_path: Path) -> None:
    rgb = np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "planar.tif", np.moveaxis(rgb, -1, 0), photometric="rgb", planarconfig="separate")
    rgba = np.concatenate([rgb, np.full((40, 50, 1), 255, np.uint8)], -1)
    tifffile.imwrite(tmp_path / "rgba.tif", rgba, photometric="rgb", extrasamples=["unassalpha"])
    for name in ("planar.tif", "rgba.tif"):
        level = open_slide(tmp_path / name).levels[0]
        assert level.shape == (40, 50, 3) and level.dtype == np.uint8
        np.testing.assert_array_equal(level[5:20, 3:30], rgb[5:20, 3:30])
        np.testing.assert_array_equal(np.asarray(level), rgb)


def test_level_choice_from_pixel_size(tmp_path: Path) -> None:
    path = write_synthetic_slide(tmp_path / "s.ome.tif", 512, tile=64, mpp=0.25, min_side=128)
    s = open_slide(path)
    assert s.mpp == pytest.approx(0.25) and len(s.levels) == 3
    r = choose_resolution(s)  # default training resolution: 0.5 µm/px -> level 1 as is
    assert DEFAULT_TRAINING_MPP == 0.5 and (r.level, r.factor, r.shape, r.downsample) == (1, 1.0, (256, 256), 2.0)
    r = choose_resolution(s, mpp=0.8)  # between levels: the finer one, resampled
    assert r.level == 1 and r.factor == pytest.approx(1.6) and r.shape == (160, 160)
    assert r.downsample == pytest.approx(3.2) and r.mpp == pytest.approx(0.8)
    r = choose_resolution(s, level=2)
    assert (r.level, r.factor, r.shape) == (2, 1.0, (128, 128))
    r = choose_resolution(s, mpp=0.5, slide_mpp=1.0)  # the user's pixel size wins
    assert r.level == 0 and r.factor == pytest.approx(0.5) and r.shape == (1024, 1024)

    # pixel size from an Aperio description and from TIFF resolution tags; none -> level 0, --mpp refused
    rgb = np.full((32, 32, 3), 200, np.uint8)
    tifffile.imwrite(tmp_path / "a.tif", rgb, description="Aperio Image Library v12\r\n32x32 |AppMag = 40|MPP = 0.2527")
    assert open_slide(tmp_path / "a.tif").mpp == pytest.approx(0.2527)
    tifffile.imwrite(tmp_path / "r.tif", rgb, resolution=(1e4 / 0.5, 1e4 / 0.5), resolutionunit="CENTIMETER")
    assert open_slide(tmp_path / "r.tif").mpp == pytest.approx(0.5)
    tifffile.imwrite(tmp_path / "n.tif", rgb)
    bare = open_slide(tmp_path / "n.tif")
    assert bare.mpp is None and choose_resolution(bare).level == 0
    with pytest.raises(SIAError, match="does not record its pixel size.*--slide-mpp"):
        choose_resolution(bare, mpp=0.5)


def test_predict_at_a_resampled_resolution(predictor: SIAPredictor, tmp_path: Path) -> None:
    path = write_synthetic_slide(tmp_path / "s.ome.tif", (600, 520), tile=64, mpp=0.4, min_side=256)
    result = predict_slide(predictor, path, tmp_path / "o.zarr", mpp=0.5, maps_downsample=2, **OPTS)
    assert result.complete and "resampled" in result.note
    assert result.shape == (480, 416) and result.downsample == pytest.approx(1.25)
    pred = open_slide_prediction(result.out)
    assert pred["scale"] == pytest.approx(1.25) and pred["maps"]["probabilities"][0].shape[1:] == (240, 208)
    xs = [
        x
        for f in json.loads(result.geojson.read_text())["features"]
        for r in f["geometry"]["coordinates"]
        for x, _ in r
    ]
    assert max(xs) <= 520 + 1e-6 and max(xs) > 400  # level-0 slide coordinates


def test_cli_predict_slide(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from sia_core.cli import main

    with pytest.raises(SystemExit):
        main(["predict-slide", "--help"])
    assert "--mpp" in capsys.readouterr().out
    path = write_synthetic_slide(tmp_path / "s.ome.tif", (400, 384), tile=64, min_side=128)
    out = tmp_path / "s.ome.zarr"
    args = ["predict-slide", str(run_dir), str(path), "--out", str(out), "--device", "cpu", "--chunk", "256"]
    assert main(args + ["--no-geojson", "--maps", "probabilities,cam"]) == 0
    printed = capsys.readouterr().out
    assert "tiles predicted" in printed and "glass tiles skipped" in printed
    pred = open_slide_prediction(out)
    assert pred["complete"] and set(pred["maps"]) == {"probabilities", "cam"}
    assert not (tmp_path / "s.geojson").exists()
    assert main(args) == 2  # complete: refused without --overwrite
    assert "already holds a complete slide prediction" in capsys.readouterr().err
    assert main(args + ["--overwrite"]) == 0 and (tmp_path / "s.geojson").is_file()


def test_result_opens_in_napari_over_the_slide(make_napari_viewer, predicted, slide: Path) -> None:
    result, _ = predicted
    viewer = make_napari_viewer(show=True)
    layers = [getattr(viewer, f"add_{kind}")(data, **kwargs) for data, kwargs, kind in slide_layer_data(result.out)]
    image, labels = layers
    assert image.multiscale and image.rgb and len(image.data) == 3
    assert labels.multiscale and len(labels.data) == 3 and labels.data[0].shape == SLIDE_SIZE
    assert tuple(labels.scale) == (1.0, 1.0)
    np.testing.assert_allclose(image.extent.world, labels.extent.world)
    viewer.reset_view()
    shot = viewer.screenshot(canvas_only=True, flash=False)
    assert len(np.unique(shot.reshape(-1, shot.shape[-1]), axis=0)) > 20
    assert len(open_slide_levels(slide)) == 3


# --------------------------------------------------------------------------------------------------------
# two processes (gloo), like torchrun --nproc-per-node 2


def _shard_worker(rank: int, world: int, port: int, run: str, slides: list[str], tile_slide: str, out: str) -> None:
    import torch.distributed as dist

    env = {"RANK": rank, "WORLD_SIZE": world, "LOCAL_RANK": rank, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
    os.environ.update({k: str(v) for k, v in env.items()})
    torch.set_num_threads(1)
    pred = SIAPredictor.from_run(run, device="cpu")
    by_slide = predict_slides(pred, slides, Path(out) / "slides", shard="slides", **OPTS)
    by_tile = predict_slides(pred, [tile_slide], Path(out) / "tiles.ome.zarr", shard="tiles", **OPTS)
    report = {
        "slides": [r.slide.name for r in by_slide],
        "tiles": [{"rows": list(r.rows), "done": r.tiles_done, "complete": r.complete} for r in by_tile],
    }
    (Path(out) / f"rank{rank}.json").write_text(json.dumps(report))
    if dist.is_initialized():
        dist.destroy_process_group()


def test_two_processes_share_slides_and_tiles(predicted, run_dir: Path, slide: Path, tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    reference, _ = predicted
    small = [
        write_synthetic_slide(tmp_path / f"s{i}.ome.tif", (300, 260), tile=128, seed=i, min_side=128) for i in range(2)
    ]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_shard_worker, args=(2, port, str(run_dir), [str(p) for p in small], str(slide), str(tmp_path)), nprocs=2)
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    # by slide: each rank did its own slide, nothing to merge
    assert reports[0]["slides"] == ["s0.ome.tif"] and reports[1]["slides"] == ["s1.ome.tif"]
    for name in ("s0", "s1"):
        assert open_slide_prediction(tmp_path / "slides" / f"{name}.ome.zarr")["complete"]
    # by tile: each rank predicted only its band of block rows, and the stitched result is the single-process one
    (r0,), (r1,) = (rep["tiles"] for rep in reports)
    assert r0["rows"] == [0, 2] and r1["rows"] == [2, 5] and r0["complete"] and r1["complete"]  # 5 rows of 240 px
    assert 0 < r0["done"] < reference.tiles_total and 0 < r1["done"] < reference.tiles_total
    assert r0["done"] + r1["done"] >= reference.tiles_total  # rank 1 also redid the row of tiles above its band
    sharded, single = _labels(tmp_path / "tiles.ome.zarr"), _labels(reference.out)
    assert (sharded == single).mean() > 0.999
    assert open_slide_prediction(tmp_path / "tiles.ome.zarr")["complete"]


# --------------------------------------------------------------------------------------------------------
# what outside readers see, and what is never overwritten


def test_result_opens_at_the_root_in_every_ome_zarr_reader(predicted, ngff_check) -> None:
    result, _ = predicted
    found = ngff_check(result.out)
    assert type(found["model"]).__name__ == "Image" and found["labels"] == ["sia"]
    assert "Multiscales" in found["nodes"][0][0]  # the slide's overview at the root
    assert [shapes[0] for specs, shapes in found["nodes"] if "Label" in specs] == [SLIDE_SIZE]
    (image_kind, image_shapes, _), (labels_kind, label_shapes, _) = found["layers"]
    assert image_kind == "image" and labels_kind == "labels" and label_shapes[0] == SLIDE_SIZE
    overview = np.asarray(zarr_root(result.out)["0"])
    assert overview.shape == (3, *image_shapes[0][1:]) and overview.std() > 5  # the slide itself, not blank
    # the GeoJSON records the slide's size, so it reopens at the slide's size
    assert json.loads(result.geojson.read_text())["sia"]["shape"] == list(SLIDE_SIZE)


def zarr_root(path: Path):
    import zarr

    return zarr.open_group(str(path), mode="r")


def test_overwrite_never_replaces_a_folder_sia_did_not_write(run_dir: Path, slide: Path, tmp_path: Path, capsys):
    from sia_core.cli import main

    out = tmp_path / "thesis"
    out.mkdir()
    (out / "thesis.txt").write_text("four years of work")
    args = ["predict-slide", str(run_dir), str(slide), "--out", str(out), "--device", "cpu", "--overwrite"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a slide prediction" in err and "even with --overwrite" in err
    assert (out / "thesis.txt").read_text() == "four years of work"
    geo = tmp_path / "notes.geojson"
    geo.write_text('{"type": "FeatureCollection", "features": []}')  # not SIA's: kept too
    assert main([*args[:3], "--out", str(tmp_path / "notes.ome.zarr"), "--device", "cpu", "--overwrite"]) == 2
    assert "not a GeoJSON SIA wrote" in capsys.readouterr().err and not (tmp_path / "notes.ome.zarr").exists()


def test_truncated_slide_is_one_line_and_leaves_nothing(run_dir: Path, tmp_path: Path, capsys, caplog) -> None:
    from sia_core.cli import main

    whole = write_synthetic_slide(tmp_path / "whole.ome.tif", (600, 520), tile=128, min_side=128)
    cut = tmp_path / "cut.ome.tif"
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) * 2 // 3])  # the tiles of level 0's lower part and the lower levels are gone
    out = tmp_path / "cut.ome.zarr"
    assert main(["predict-slide", str(run_dir), str(cut), "--out", str(out), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(cut) in err and "truncated or corrupt" in err
    # nor tifffile's own complaints about the file: pytest captures logging, a terminal showed them before that line
    assert not [r.getMessage() for r in caplog.records if r.name == "tifffile"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.ome.tif", "whole.ome.tif"]


def test_unusable_out_is_one_line(run_dir: Path, slide: Path, tmp_path: Path, capsys) -> None:
    from sia_core.cli import main

    in_place = tmp_path / "file.ome.zarr"
    in_place.write_text("x")
    base = ["predict-slide", str(run_dir), str(slide), "--device", "cpu", "--out"]
    for out, says in ((in_place, "is a file, not a slide prediction folder"), (in_place / "x.ome.zarr", "is a file")):
        assert main([*base, str(out)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and says in err
    assert in_place.read_text() == "x"
    assert main([*base, "/proc/sia-cannot-write.ome.zarr"]) == 2  # a file system that refuses writes
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot write" in err
