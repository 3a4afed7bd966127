"""The on-disk side of slide inference: the OME-Zarr result, its resume state, and reading it back.

Layout of a result ``OUT.zarr`` (NGFF v0.4, zarr format 2, what napari-ome-zarr and QuPath read)::

    OUT.zarr/.zattrs                 {"sia_slide": {slide, level, downsample, mpp, classes, complete, ...}}
    OUT.zarr/labels/sia/0, 1, ...    uint8 label pyramid (decoder argmax), made by export.create_label_zarr
    OUT.zarr/maps/<name>/0, 1, ...   float32 (C, y, x) class-map pyramids, e.g. maps/probabilities
    OUT.geojson                      QuPath annotations (level-0 slide pixel coordinates)

While a run is incomplete, ``OUT.zarr.resume/`` sits beside the store: ``params.json`` (everything that
must match for a resume), one folder per band of chunk rows with ``progress.json`` (steps committed) and
the partial blend accumulators (``right_<r>_<c>.npy``, ``bottom_<r>_<c>.npy``) that carry overlapping tiles
across chunk borders. Every file there is replaced atomically, and ``progress.json`` is written last, so
a run killed at any moment resumes from the last committed chunk. The folder lives beside, not inside, the
store because zarr warns about foreign files in a hierarchy. It is deleted when the result is complete.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from .errors import SIAError
from .export import write_geojson
from .io_utils import atomic_write, atomic_write_text

__all__ = ["SlideStore", "geojson_path_for", "level_shapes", "open_slide_prediction", "resume_dir_for"]

PathLike = Union[str, os.PathLike]

_NGFF_VERSION = "0.4"
LABEL_NAME = "sia"


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


def _compressor() -> Any:
    from numcodecs import Blosc

    # the codec export.create_label_zarr uses: every OME-Zarr v0.4 reader (Python and Java) decodes it
    return Blosc(cname="lz4", clevel=5, shuffle=Blosc.SHUFFLE)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


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
        if not attrs.is_file():
            return None
        try:
            return json.loads(attrs.read_text()).get("sia_slide")
        except ValueError:
            return None

    def saved_params(self) -> Optional[dict[str, Any]]:
        path = self.resume_dir / "params.json"
        try:
            return json.loads(path.read_text()) if path.is_file() else None
        except ValueError:
            return None

    def decide(self, params: dict[str, Any], overwrite: bool) -> str:
        """'resume' or 'fresh' for a run with ``params``; refuses what must not be overwritten.

        Raises:
            SIAError: A complete result, or an incomplete one made with other settings, without overwrite;
                an existing GeoJSON of another run without overwrite.
        """
        saved = self.saved_params()
        exists = self.out.exists()
        if exists and self.is_complete():
            if not overwrite:
                raise SIAError(
                    f"{self.out} already holds a complete slide prediction",
                    fix="pass --overwrite (overwrite=True) to predict again, or choose another --out",
                )
            return "fresh"
        if saved is not None and not saved.get("store_ready"):
            return "fresh"  # our own creation was interrupted before the store was whole: start it again
        if exists and saved is not None and saved.get("store_ready"):
            if {k: v for k, v in saved.items() if k != "store_ready"} == params:
                return "resume"
            if not overwrite:
                changed = sorted(
                    k for k in set(saved) | set(params) if k != "store_ready" and saved.get(k) != params.get(k)
                )
                raise SIAError(
                    f"{self.out} is an unfinished prediction made with other settings ({', '.join(changed)})",
                    fix="run again with the same model and options to resume it, or pass --overwrite",
                )
            return "fresh"
        if exists and not overwrite:
            raise SIAError(
                f"{self.out} already exists and is not an unfinished slide prediction",
                fix="pass --overwrite (overwrite=True) to replace it, or choose another --out",
            )
        if self.geojson is not None and self.geojson.exists() and not overwrite:
            raise SIAError(
                f"{self.geojson} already exists; refusing to overwrite it",
                fix="pass --overwrite, choose another --out, or --no-geojson",
            )
        return "fresh"

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
    ) -> None:
        """Start afresh: resume params first (a crash before ``store_ready`` just starts over), then the store.

        Args:
            maps: Float maps to store, name -> channels.
            min_side: Pyramids halve until the longer side is at most this.
        """
        import zarr

        from .export import create_label_zarr

        _remove(self.resume_dir)
        _remove(self.out)
        if self.geojson is not None:
            self.geojson.unlink(missing_ok=True)
        self.resume_dir.mkdir(parents=True)
        atomic_write_text(self.resume_dir / "params.json", json.dumps({**params, "store_ready": False}))
        n_levels = len(level_shapes(shape, min_side))
        create_label_zarr(
            self.out, shape, classes, palette, chunks=chunk, name=LABEL_NAME, fill=fill, levels=n_levels, pixel_size=mpp
        )
        root = zarr.open_group(str(self.out), mode="r+", zarr_format=2)
        if maps and maps_downsample:
            group = root.create_group("maps")
            h, w = -(-shape[0] // maps_downsample), -(-shape[1] // maps_downsample)
            side = chunk // maps_downsample
            for name, channels in maps.items():
                _create_map_pyramid(
                    group, name, channels, (h, w), side, classes, palette, mpp, maps_downsample, min_side
                )
        root.attrs["sia_slide"] = {**attrs, "complete": False}
        atomic_write_text(self.resume_dir / "params.json", json.dumps({**params, "store_ready": True}))

    def open(self) -> None:
        """Open level 0 of the label pyramid and of every map pyramid for writing."""
        import zarr

        root = zarr.open_group(str(self.out), mode="r+", zarr_format=2)
        self._labels = root["labels"][LABEL_NAME]["0"]
        self._maps = {}
        if "maps" in root:
            for name in root["maps"].group_keys():
                self._maps[name] = root["maps"][name]["0"]

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
        """
        import zarr

        from .export import build_pyramid

        build_pyramid(self.out, LABEL_NAME)
        root = zarr.open_group(str(self.out), mode="r+", zarr_format=2)
        if "maps" in root:
            for name in root["maps"].group_keys():
                _fill_map_pyramid(root["maps"][name])
        if self.geojson is not None:
            levels = _levels(root["labels"][LABEL_NAME])
            k = next((i for i, a in enumerate(levels) if max(a.shape) <= geojson_max_side), len(levels) - 1)
            labels = _merge_small_regions(np.asarray(levels[k][...]), geojson_min_area / 4**k)
            # the store's own checks decided before the run whether this file may be replaced
            write_geojson(self.geojson, labels, classes, palette, ignore_values=ignore_values,
                          downsample=downsample * 2**k, overwrite=True)
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



# --------------------------------------------------------------------------------------------------------
# float-map pyramids (NGFF multiscale image, axes c, y, x)


def level_shapes(shape: tuple[int, int], min_side: int) -> list[tuple[int, int]]:
    """Pyramid level shapes: halve (rounding up) until the longer side is at most ``min_side``."""
    shapes = [shape]
    while max(shapes[-1]) > max(1, min_side):
        h, w = shapes[-1]
        shapes.append((-(-h // 2), -(-w // 2)))
    return shapes


def _create_map_pyramid(
    group: Any,
    name: str,
    channels: int,
    shape: tuple[int, int],
    side: int,
    classes: list[str],
    palette: list[list[int]],
    mpp: Optional[float],
    downsample: int,
    min_side: int,
) -> None:
    image = group.create_group(name)
    shapes = level_shapes(shape, min_side)
    base = (mpp or 1.0) * downsample
    unit = {"unit": "micrometer"} if mpp else {}
    image.attrs["multiscales"] = [
        {
            "version": _NGFF_VERSION,
            "name": name,
            "axes": [
                {"name": "c", "type": "channel"},
                {"name": "y", "type": "space", **unit},
                {"name": "x", "type": "space", **unit},
            ],
            "datasets": [
                {
                    "path": str(k),
                    "coordinateTransformations": [{"type": "scale", "scale": [1.0, base * 2**k, base * 2**k]}],
                }
                for k in range(len(shapes))
            ],
            "type": "mean",
            "metadata": {"method": "2x2 mean of the level above"},
        }
    ]
    names = classes if channels == len(classes) else [f"{name}_{i}" for i in range(channels)]
    image.attrs["omero"] = {
        "name": name,
        "channels": [
            {
                "label": n,
                "color": "{:02X}{:02X}{:02X}".format(*(palette[i] if i < len(palette) else (255, 255, 255))),
                "window": {"start": 0.0, "end": 1.0, "min": 0.0, "max": 1.0},
                "active": True,
            }
            for i, n in enumerate(names)
        ],
    }
    image.attrs["sia"] = {"kind": "float-maps", "names": names, "downsample": downsample}
    for k, (h, w) in enumerate(shapes):
        image.create_array(
            str(k),
            shape=(channels, h, w),
            chunks=(channels, min(side, h), min(side, w)),
            dtype="float32",
            fill_value=0.0,
            compressors=_compressor(),
            chunk_key_encoding={"name": "v2", "separator": "/"},
        )


def _levels(group: Any) -> list[Any]:
    return [group[d["path"]] for d in group.attrs["multiscales"][0]["datasets"]]


def _fill_map_pyramid(group: Any) -> None:
    """Levels 1.. as 2x2 means of the level above, one output chunk at a time (bounded memory)."""
    levels = _levels(group)
    for src, dst in zip(levels[:-1], levels[1:]):
        _, ch, cw = dst.chunks
        _, h, w = dst.shape
        for y in range(0, h, ch):
            for x in range(0, w, cw):
                block = np.asarray(src[:, 2 * y : 2 * (y + ch), 2 * x : 2 * (x + cw)])
                ph, pw = block.shape[1] % 2, block.shape[2] % 2
                if ph or pw:
                    block = np.pad(block, ((0, 0), (0, ph), (0, pw)), mode="edge")
                half = 0.25 * (
                    block[:, 0::2, 0::2] + block[:, 1::2, 0::2] + block[:, 0::2, 1::2] + block[:, 1::2, 1::2]
                )
                dst[:, y : y + half.shape[1], x : x + half.shape[2]] = half


# --------------------------------------------------------------------------------------------------------
# reading a result back


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

    from .export import read_label_zarr

    out = Path(path)
    store = SlideStore(out, None)
    info = store.info()
    if info is None:
        raise SIAError(
            f"{out} is not a slide prediction (no sia_slide attributes)",
            fix="give the .zarr written by sia-core predict-slide",
        )
    labels, meta = read_label_zarr(out, LABEL_NAME)
    root = zarr.open_group(str(out), mode="r")
    maps = {name: _levels(root["maps"][name]) for name in root["maps"].group_keys()} if "maps" in root else {}
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
