"""The on-disk side of slide inference: the OME-Zarr result, its resume state, and reading it back.

A result ``OUT.zarr`` is an OME-Zarr store as :mod:`sia_core.formats.ome_zarr` writes them (NGFF v0.4, zarr
format 2: ome-zarr-py, napari-ome-zarr, ome-zarr-models and QuPath open it at the root)::

    OUT.zarr/.zattrs                 multiscales (the slide's RGB overview) + {"sia_slide": {slide, level, ...}}
    OUT.zarr/0                       the overview: the slide at the lowest label level's resolution
    OUT.zarr/labels/sia/0, 1, ...    uint8 label pyramid (decoder argmax)
    OUT.zarr/maps/<name>/0, 1, ...   float32 (C, y, x) class-map pyramids, e.g. maps/probabilities
    OUT.geojson                      QuPath annotations (level-0 slide pixel coordinates, slide size recorded)

While a run is incomplete, ``OUT.zarr.resume/`` sits beside the store: ``params.json`` (everything that
must match for a resume), one folder per band of chunk rows with ``progress.json`` (steps committed) and
the partial blend accumulators (``right_<r>_<c>.npy``, ``bottom_<r>_<c>.npy``) that carry overlapping tiles
across chunk borders. Every file there is replaced atomically, and ``progress.json`` is written last, so
a run killed at any moment resumes from the last committed chunk. The folder lives beside, not inside, the
store because zarr warns about foreign files in a hierarchy. It is deleted when the result is complete.

``--overwrite`` replaces only what SIA wrote: a store with ``sia_slide`` attributes (or one whose creation
was interrupted), its resume folder and a GeoJSON SIA wrote. Anything else in the way is refused.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from ..errors import SIAError
from ..formats.geojson import write_geojson
from ..formats.ome_zarr import (
    build_pyramid,
    create_image_pyramid,
    create_label_zarr,
    fill_mean_pyramid,
    level_shapes,
    pyramid_levels,
    read_label_zarr,
    write_overview,
)
from ..io_utils import atomic_write, atomic_write_text

__all__ = ["LABEL_NAME", "SlideStore", "geojson_path_for", "open_slide_prediction", "resume_dir_for"]

PathLike = Union[str, os.PathLike]

LABEL_NAME = "sia"
_GEOJSON_HEADS = (b'{"type":"FeatureCollection","sia":', b'{"type":"FeatureCollection","features":[')
"""How every GeoJSON SIA writes begins (:func:`sia_core.formats.geojson.write_geojson`; the second: before
it recorded the image size)."""


def resume_dir_for(out: Path) -> Path:
    """``OUT.zarr.resume``: the resume state beside the store."""
    return out.with_name(out.name + ".resume")


def geojson_path_for(out: Path) -> Path:
    """``x.ome.zarr`` / ``x.zarr`` -> ``x.geojson`` beside it."""
    name = out.name
    for suffix in (".ome.zarr", ".zarr"):
        if name.lower().endswith(suffix):
            return out.with_name(name[: -len(suffix)] + ".geojson")
    return out.with_name(name + ".geojson")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _written_by_sia(geojson: Path) -> bool:
    try:
        with open(geojson, "rb") as f:
            head = f.read(max(len(h) for h in _GEOJSON_HEADS))
    except OSError:
        return False
    return head.startswith(_GEOJSON_HEADS)


class SlideStore:
    """Create, resume, fill and finish one slide's OME-Zarr result.

    Args:
        out: The ``.zarr`` directory.
        geojson: Where the GeoJSON goes (None: no GeoJSON).
    """

    def __init__(self, out: Path, geojson: Optional[Path]) -> None:
        self.out = out
        self.geojson = geojson
        self.resume_dir = resume_dir_for(out)
        self._labels: Any = None
        self._maps: dict[str, Any] = {}

    # ------------------------------------------------------------------------------------------ state
    def is_complete(self) -> bool:
        info = self.info()
        return bool(info and info.get("complete"))

    def info(self) -> Optional[dict[str, Any]]:
        """The ``sia_slide`` attributes of an existing store, None when there is none."""
        attrs = self.out / ".zattrs"
        try:
            found = json.loads(attrs.read_text()).get("sia_slide") if attrs.is_file() else None
        except (ValueError, OSError, AttributeError):
            return None
        return found if isinstance(found, dict) else None

    def saved_params(self) -> Optional[dict[str, Any]]:
        path = self.resume_dir / "params.json"
        try:
            return json.loads(path.read_text()) if path.is_file() else None
        except (ValueError, OSError):
            return None

    def _ours(self) -> bool:
        """The store in the way is SIA's: a slide result, or one whose creation was interrupted."""
        return self.info() is not None or self.saved_params() is not None

    def _check_target(self) -> None:
        """One line, before anything is written, for an --out that cannot become the store."""
        if self.out.exists() and not self.out.is_dir():
            raise SIAError(
                f"{self.out} is a file, not a slide prediction folder",
                fix="choose another --out (a new .ome.zarr name) or move the file away",
            )
        parent = next((p for p in [self.out.parent, *self.out.parent.parents] if p.exists()), Path("/"))
        if not parent.is_dir():
            raise SIAError(f"cannot create {self.out}: {parent} is a file", fix="choose another --out")
        if not os.access(parent, os.W_OK | os.X_OK) or (self.out.is_dir() and not os.access(self.out, os.W_OK)):
            raise SIAError(f"cannot write {self.out}: {parent} is not writable", fix="choose a writable --out")

    def decide(self, params: dict[str, Any], overwrite: bool) -> str:
        """'resume' or 'fresh' for a run with ``params``; refuses what must not be overwritten.

        Raises:
            SIAError: An --out that is a file or not writable; a folder in the way that SIA did not write
                (even with overwrite); a complete result, or an unfinished one made with other settings,
                without overwrite; an existing GeoJSON without overwrite, or one SIA did not write.
        """
        self._check_target()
        saved = self.saved_params()
        exists = self.out.exists()
        if exists and not self._ours():
            if not overwrite:
                raise SIAError(
                    f"{self.out} already exists and is not an unfinished slide prediction",
                    fix="choose another --out, or pass --overwrite to replace an empty folder",
                )
            if any(self.out.iterdir()):
                raise SIAError(
                    f"{self.out} already exists and is not a slide prediction; SIA does not replace it, even "
                    "with --overwrite",
                    fix="choose another --out (a new .ome.zarr name)",
                )
        self._check_geojson(overwrite)
        if exists and self.is_complete():
            if not overwrite:
                raise SIAError(
                    f"{self.out} already holds a complete slide prediction",
                    fix="pass --overwrite (overwrite=True) to predict again, or choose another --out",
                )
            return "fresh"
        if saved is None or not saved.get("store_ready") or not exists:
            return "fresh"  # nothing, or our own creation interrupted before the store was whole
        if {k: v for k, v in saved.items() if k != "store_ready"} == params:
            return "resume"
        if not overwrite:
            keys = (set(saved) | set(params)) - {"store_ready"}
            changed = sorted(k for k in keys if saved.get(k) != params.get(k))
            raise SIAError(
                f"{self.out} is an unfinished prediction made with other settings ({', '.join(changed)})",
                fix="run again with the same model and options to resume it, or pass --overwrite",
            )
        return "fresh"

    def _check_geojson(self, overwrite: bool) -> None:
        geo = self.geojson
        if geo is None or not (geo.exists() or geo.is_symlink()):
            return
        if geo.is_dir() or not _written_by_sia(geo):
            raise SIAError(
                f"{geo} already exists and is not a GeoJSON SIA wrote; SIA does not replace it",
                fix="move it away, choose another --out, or pass --no-geojson",
            )
        if not overwrite and not self.out.exists():
            raise SIAError(
                f"{geo} already exists; refusing to overwrite it",
                fix="pass --overwrite, choose another --out, or --no-geojson",
            )

    # ------------------------------------------------------------------------------------------ create
    def create(
        self,
        params: dict[str, Any],
        attrs: dict[str, Any],
        shape: tuple[int, int],
        classes: list[str],
        palette: list[list[int]],
        chunk: int,
        fill: int,
        mpp: Optional[float],
        maps: dict[str, int],
        maps_downsample: int,
        min_side: int = 1024,
        overview: Optional[Any] = None,
    ) -> None:
        """Start afresh: resume params first (a crash before ``store_ready`` just starts over), then the store.

        Args:
            maps: Float maps to store, name -> channels.
            min_side: Pyramids halve until the longer side is at most this.
            overview: ``overview(shape)`` -> (h, w, 3) uint8 RGB of the slide at that size, the root image.
        """
        import zarr

        self.discard()
        self.resume_dir.mkdir(parents=True)
        atomic_write_text(self.resume_dir / "params.json", json.dumps({**params, "store_ready": False}))
        n_levels = len(level_shapes(shape, min_side))
        create_label_zarr(
            self.out, shape, classes, palette, chunks=chunk, name=LABEL_NAME, fill=fill, levels=n_levels, pixel_size=mpp
        )
        if overview is not None:
            write_overview(self.out, overview(level_shapes(shape, levels=n_levels)[-1]))
        root = zarr.open_group(str(self.out), mode="r+", zarr_format=2)
        if maps and maps_downsample:
            group = root.create_group("maps")
            h, w = -(-shape[0] // maps_downsample), -(-shape[1] // maps_downsample)
            for name, channels in maps.items():
                names = classes if channels == len(classes) else [f"{name}_{i}" for i in range(channels)]
                colours = [palette[i] if i < len(palette) else (255, 255, 255) for i in range(channels)]
                image = group.create_group(name)
                create_image_pyramid(
                    image, (h, w), channels, name=name, chunk=chunk // maps_downsample, dtype="float32",
                    scale=(mpp or 1.0) * maps_downsample, unit=bool(mpp), n_levels=len(level_shapes((h, w), min_side)),
                    channel_names=names, colours=colours, window=(0.0, 1.0),
                )  # fmt: skip
                image.attrs["sia"] = {"kind": "float-maps", "names": names, "downsample": maps_downsample}
        root.attrs["sia_slide"] = {**attrs, "complete": False}
        atomic_write_text(self.resume_dir / "params.json", json.dumps({**params, "store_ready": True}))

    def discard(self) -> None:
        """Remove the store, its resume state and its GeoJSON (only ever called on what SIA wrote)."""
        _remove(self.resume_dir)
        _remove(self.out)
        if self.geojson is not None:
            self.geojson.unlink(missing_ok=True)

    def open(self) -> None:
        """Open level 0 of the label pyramid and of every map pyramid for writing."""
        import zarr

        root = zarr.open_group(str(self.out), mode="r+", zarr_format=2)
        self._labels = root["labels"][LABEL_NAME]["0"]
        self._maps = {name: root["maps"][name]["0"] for name in root["maps"].group_keys()} if "maps" in root else {}

    # ------------------------------------------------------------------------------------------ fill
    def write_labels(self, y0: int, x0: int, block: np.ndarray) -> None:
        self._labels[y0 : y0 + block.shape[0], x0 : x0 + block.shape[1]] = block

    def write_map(self, name: str, y0: int, x0: int, block: np.ndarray) -> None:
        """Write (C, h, w) at map-grid position (y0, x0)."""
        if name in self._maps:
            self._maps[name][:, y0 : y0 + block.shape[1], x0 : x0 + block.shape[2]] = block

    @property
    def map_names(self) -> list[str]:
        return list(self._maps)

    # ------------------------------------------------------------------------------------------ resume
    def band_dir(self, band: tuple[int, int]) -> Path:
        return self.resume_dir / f"band_{band[0]}_{band[1]}"

    def band_done(self, band: tuple[int, int]) -> int:
        """Steps of a band already committed (0 for a fresh band)."""
        path = self.band_dir(band) / "progress.json"
        if not path.is_file():
            return 0
        try:
            return int(json.loads(path.read_text())["done"])
        except (ValueError, KeyError):
            return 0

    def commit(self, band: tuple[int, int], done: int, total: int) -> None:
        d = self.band_dir(band)
        d.mkdir(parents=True, exist_ok=True)
        atomic_write_text(d / "progress.json", json.dumps({"done": done, "total": total}))

    def save_piece(self, band: tuple[int, int], name: str, piece: np.ndarray) -> None:
        d = self.band_dir(band)
        d.mkdir(parents=True, exist_ok=True)
        atomic_write(d / f"{name}.npy", lambda p: np.save(p, piece, allow_pickle=False))

    def load_piece(self, band: tuple[int, int], name: str) -> Optional[np.ndarray]:
        path = self.band_dir(band) / f"{name}.npy"
        return np.load(path, allow_pickle=False) if path.is_file() else None

    def drop_piece(self, band: tuple[int, int], name: str) -> None:
        (self.band_dir(band) / f"{name}.npy").unlink(missing_ok=True)

    # ------------------------------------------------------------------------------------------ finish
    def finish(
        self,
        classes: list[str],
        palette: list[list[int]],
        ignore_values: tuple[int, ...],
        downsample: float,
        geojson_max_side: int,
        geojson_min_area: float = 0.0,
        image_shape: Optional[tuple[int, int]] = None,
    ) -> None:
        """Lower pyramid levels, GeoJSON, ``complete`` flag, then drop the resume state. Idempotent.

        Args:
            classes: Class names by label value.
            palette: RGB per class.
            ignore_values: Label values not exported as annotations (glass, unlabelled).
            downsample: Level-0 slide pixels per label pixel.
            geojson_max_side: Trace the GeoJSON on the first label level this small.
            geojson_min_area: Regions smaller than this many label pixels (level 0 of the store) are merged
                into their surroundings in the GeoJSON, as QuPath's own "minimum object size" does.
            image_shape: The slide's level-0 (H, W), recorded in the GeoJSON.
        """
        import zarr

        build_pyramid(self.out, LABEL_NAME)
        root = zarr.open_group(str(self.out), mode="r+", zarr_format=2)
        if "maps" in root:
            for name in root["maps"].group_keys():
                fill_mean_pyramid(pyramid_levels(root["maps"][name]))
        if self.geojson is not None:
            levels = pyramid_levels(root["labels"][LABEL_NAME])
            k = next((i for i, a in enumerate(levels) if max(a.shape) <= geojson_max_side), len(levels) - 1)
            labels = _merge_small_regions(np.asarray(levels[k][...]), geojson_min_area / 4**k)
            # the store's own checks decided before the run whether this file may be replaced
            write_geojson(self.geojson, labels, classes, palette, ignore_values=ignore_values,
                          downsample=downsample * 2**k, image_shape=image_shape, overwrite=True)  # fmt: skip
        info = dict(root.attrs["sia_slide"])
        info["complete"] = True
        if self.geojson is not None:
            info["geojson"] = self.geojson.name
        root.attrs["sia_slide"] = info
        _remove(self.resume_dir)


def _merge_small_regions(labels: np.ndarray, min_area: float) -> np.ndarray:
    """Give 4-connected regions smaller than ``min_area`` pixels the value of the nearest larger region.

    A speckle is an annotation nobody wants to click through in QuPath, and their number, not the slide
    size, is what makes a GeoJSON large.
    """
    from scipy import ndimage

    if min_area <= 1:
        return labels
    small = np.zeros(labels.shape, bool)
    for value in np.unique(labels):
        components, _ = ndimage.label(labels == value)
        sizes = np.bincount(components.ravel())
        tiny = sizes < min_area
        tiny[0] = False
        small |= tiny[components]
        del components
    if not small.any() or small.all():
        return labels
    nearest = ndimage.distance_transform_edt(small, return_distances=False, return_indices=True)
    return labels[tuple(nearest)]


def open_slide_prediction(path: PathLike) -> dict[str, Any]:
    """Open a slide result lazily, with what a viewer needs to overlay it on the slide.

    Returns:
        dict with ``labels`` (zarr arrays, full resolution first), ``maps`` ({name: levels}), ``scale``
        (level-0 slide pixels per label pixel, for napari's ``scale=(s, s)`` over the slide's own
        multiscale image), ``map_scale`` (the same for the float maps), ``classes``, ``palette``,
        ``fill`` (label of pixels no tile covered), ``background`` (label of white glass inside tiles),
        ``slide`` (the slide's path as recorded), ``complete`` and ``info`` (all recorded attributes).

    Raises:
        SIAError: Not a slide result.
    """
    import zarr

    out = Path(path)
    info = SlideStore(out, None).info()
    if info is None:
        raise SIAError(
            f"{out} is not a slide prediction (no sia_slide attributes)",
            fix="give the .zarr written by sia-core predict-slide",
        )
    labels, meta = read_label_zarr(out, LABEL_NAME)
    root = zarr.open_group(str(out), mode="r")
    maps = {n: pyramid_levels(root["maps"][n]) for n in root["maps"].group_keys()} if "maps" in root else {}
    scale = float(info["downsample"])
    return {
        "labels": labels,
        "maps": maps,
        "scale": scale,
        "map_scale": scale * int(info.get("maps_downsample") or 1),
        "classes": meta["classes"],
        "palette": meta["palette"],
        "fill": info.get("fill"),
        "background": info.get("background"),
        "slide": info.get("slide"),
        "complete": bool(info.get("complete")),
        "info": info,
    }
