"""Starting weights of the backbone (``model.pretrained``), loaded through timm and huggingface_hub.

A ``model.pretrained`` value is one of:

* a timm name with a pretrained tag, ``vit_base_patch16_224.augreg_in21k_ft_in1k`` (timm's registry; the
  weights come from the ``timm/`` repositories of the Hugging Face hub);
* ``hf-hub:org/name[@revision]``, a timm model on the hub (``config.json`` + weights, e.g. UNI, Virchow2);
* ``local-dir:PATH``, a folder in the same layout (what ``hf download org/name --local-dir PATH`` or timm's
  ``save_for_hf`` writes);
* a checkpoint file (.pth/.bin/.safetensors) of the architecture ``model.backbone``.

Nothing here downloads by hand: files go through ``huggingface_hub.hf_hub_download`` (its cache, ``HF_HOME`` /
``HF_HUB_CACHE``, ``HF_TOKEN`` or ``hf auth login`` for gated models, ``HF_HUB_OFFLINE``) and the model is made
by ``timm.create_model(..., pretrained=True)``, which reads them back from that cache. :func:`fetch_pretrained`
is the download step with a progress callback and cancellation (the widget's Download button, the CLI's
bars); :func:`resolve_pretrained` fills a run's config from the weights (architecture, mean/std, input
size, and the exact origin: repository commit, file, sha256); :func:`sia_core.timm_backbone.create_backbone`
builds the ViT.

Every failure is one line with its fix: offline and not cached (with the command that pre-downloads the
weights elsewhere), a gated model without access, a repository that is not a timm model, weights that do not
fit the architecture (which keys differ). Nothing falls back to random weights silently.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from .errors import SIAError

__all__ = [
    "WeightsSource",
    "DownloadCancelled",
    "parse_pretrained",
    "fetch_pretrained",
    "resolve_pretrained",
    "predownload_command",
]

ProgressFn = Callable[[int, Optional[int], str], None]
"""``progress(done_bytes, total_bytes_or_None, file_name)``."""

_NONE = ("", "none", "null", "random")
_FILE_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".ckpt", ".tar")
_HUB_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
"""What timm's hub loader reads, in its order (safetensors first)."""


class DownloadCancelled(Exception):
    """The download was cancelled (the bytes so far stay in the Hugging Face cache and resume next time)."""


@dataclass(frozen=True)
class WeightsSource:
    """A parsed ``model.pretrained`` value.

    Attributes:
        kind: ``timm``, ``hf-hub``, ``local-dir`` or ``file``.
        ident: the timm name, the repository id, or the absolute folder / file path.
        revision: an ``@revision`` of a repository id, else None.
        text: the value as given.
    """

    kind: str
    ident: str
    revision: Optional[str]
    text: str

    def timm_name(self, revision: Optional[str] = None) -> str:
        """The name ``timm.create_model`` takes for these weights (pinned to ``revision`` when given)."""
        if self.kind == "hf-hub":
            rev = revision or self.revision
            return f"hf-hub:{self.ident}" + (f"@{rev}" if rev else "")
        if self.kind == "local-dir":
            return f"local-dir:{self.ident}"
        return self.ident


def parse_pretrained(text: Optional[str]) -> Optional[WeightsSource]:
    """Parse a ``model.pretrained`` value; None (random init) for None, '', 'none'.

    Raises:
        SIAError: a value that is none of the four forms, a missing file or folder.
    """
    if text is None or str(text).strip().lower() in _NONE:
        return None
    text = str(text).strip()
    prefix, sep, rest = text.partition(":")
    if sep and prefix.lower() in ("hf-hub", "hf_hub"):
        repo, _, rev = rest.partition("@")
        if repo.count("/") != 1 or not all(repo.split("/")):
            raise SIAError(f"model.pretrained '{text}' is not a hub id", fix="write hf-hub:org/name")
        return WeightsSource("hf-hub", repo, rev or None, text)
    if sep and prefix.lower() == "local-dir":
        folder = Path(rest).expanduser()
        if not (folder / "config.json").is_file():
            raise SIAError(
                f"model.pretrained '{text}': no config.json in {folder}",
                fix="give a folder in timm's hub layout (config.json + model.safetensors), e.g. one written by "
                "`hf download org/name --local-dir FOLDER`",
            )
        return WeightsSource("local-dir", str(folder.resolve()), None, text)
    path = Path(text).expanduser()
    if path.is_file() or path.suffix.lower() in _FILE_SUFFIXES or "/" in text or "\\" in text:
        if not path.is_file():
            raise SIAError(
                f"backbone weights file not found: {path}",
                fix="give the path of a local timm checkpoint (.pth/.bin) or .safetensors file, hf-hub:org/name, "
                "local-dir:FOLDER, or none for random initialisation",
            )
        return WeightsSource("file", str(path.resolve()), None, text)
    import timm

    arch, tag = timm.models.split_model_name_tag(text)
    if not timm.is_model(arch) or timm.models.get_pretrained_cfg(text) is None:
        raise SIAError(
            f"model.pretrained '{text}' is not a timm model name with pretrained weights",
            fix="use a name from timm.list_pretrained('vit_*') such as vit_base_patch16_224.augreg_in21k_ft_in1k, "
            "hf-hub:org/name, local-dir:FOLDER, a checkpoint file, or none",
        )
    return WeightsSource("timm", text if tag else f"{arch}.{timm.models.get_pretrained_cfg(arch).tag}", None, text)


# ------------------------------------------------------------------------------------------- errors


def predownload_command(src: WeightsSource) -> str:
    """What to run on a machine with internet, and how to point SIA at the result."""
    repo = _hub_repo(src)
    folder = repo.split("/")[-1]
    return (
        f"on a machine with internet run `hf download {repo} --local-dir {folder}`, copy the folder here and use "
        f"--set model.pretrained=local-dir:{folder}; or copy that machine's Hugging Face cache here and point "
        "HF_HOME (or HF_HUB_CACHE) at it"
    )


def _hub_repo(src: WeightsSource) -> str:
    if src.kind == "hf-hub":
        return src.ident
    import timm

    pc = timm.models.get_pretrained_cfg(src.ident)
    return (pc.hf_hub_id if pc is not None and pc.hf_hub_id else f"timm/{src.ident}").split("@")[0]


def hub_error(err: BaseException, src: WeightsSource, what: str) -> Optional[SIAError]:
    """The one-line error of a huggingface_hub failure, or None when ``err`` is not one."""
    from huggingface_hub import constants, get_token
    from huggingface_hub import errors as hf

    repo = _hub_repo(src)
    page = f"https://huggingface.co/{repo}"
    if isinstance(err, hf.GatedRepoError):
        if get_token() is None:
            return SIAError(
                f"{src.text} is a gated model and no Hugging Face token was found",
                fix=f"request access at {page} (log in, accept the terms), then run `hf auth login` or set HF_TOKEN",
            )
        return SIAError(
            f"your Hugging Face token has no access to the gated model {repo} (yet)",
            fix=f"request access at {page} with the account of that token; the authors grant it per account",
        )
    if isinstance(err, hf.RepositoryNotFoundError):
        return SIAError(
            f"no model {repo} on the Hugging Face hub (or it is private)",
            fix="check the name; for a private model log in with `hf auth login` or set HF_TOKEN",
        )
    if isinstance(err, hf.RevisionNotFoundError):
        return SIAError(f"{src.text}: revision not found in {repo}", fix=f"use a branch, tag or commit of {page}")
    if isinstance(err, (hf.LocalEntryNotFoundError, hf.OfflineModeIsEnabled)):
        return SIAError(
            f"weights {src.text} are not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and the hub cannot "
            f"be reached{' (HF_HUB_OFFLINE is set)' if constants.HF_HUB_OFFLINE else ''}",
            fix=predownload_command(src),
        )
    if isinstance(err, hf.EntryNotFoundError):
        return SIAError(
            f"{repo} has no {what}: it is not a timm model",
            fix="use a repository that timm.create_model('hf-hub:org/name') loads (config.json with 'architecture')",
        )
    if isinstance(err, hf.HfHubHTTPError):
        return SIAError(f"downloading {what} of {src.text} failed: {str(err).splitlines()[0][:160]}")
    return None


# ------------------------------------------------------------------------------------------- download


def _progress_tqdm(progress: Optional[ProgressFn], cancel: Optional[threading.Event]) -> Optional[type]:
    """A tqdm class for ``hf_hub_download`` that reports to ``progress`` and stops when ``cancel`` is set.

    Raising from ``update`` is huggingface_hub's way to stop an HTTP download: it is called in the read loop.
    """
    if progress is None and cancel is None:
        return None  # huggingface_hub's own bars (the CLI)
    from huggingface_hub.utils import tqdm as hf_tqdm

    class _Reporting(hf_tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)
            self.done = int(kwargs.get("initial") or 0)
            self.size = kwargs.get("total")
            self.name = str(kwargs.get("desc") or "")

        def update(self, n: float = 1) -> Optional[bool]:
            if cancel is not None and cancel.is_set():
                raise DownloadCancelled()
            self.done += int(n or 0)
            if progress is not None:
                progress(self.done, self.size, self.name)
            return None

    return _Reporting


@contextlib.contextmanager
def _hub_quiet() -> Iterator[None]:
    """huggingface_hub logs each failed request as a warning before it raises; the raised error becomes SIA's
    one line (see :func:`hub_error`), so the warning would only be a second, rawer copy of it."""
    hub_logger = logging.getLogger("huggingface_hub")
    level = hub_logger.level
    hub_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        hub_logger.setLevel(level)


def _hub_file(
    repo: str,
    filename: str,
    revision: Optional[str],
    progress: Optional[ProgressFn],
    cancel: Optional[threading.Event],
) -> Path:
    from huggingface_hub import hf_hub_download

    if cancel is not None and cancel.is_set():
        raise DownloadCancelled()
    with _hub_quiet():
        path = hf_hub_download(repo, filename, revision=revision, tqdm_class=_progress_tqdm(progress, cancel))
    if cancel is not None and cancel.is_set():
        # A transfer that cannot be interrupted (hf_xet ignores an exception raised by its progress callback)
        # ends here: the file stays cached, the caller sees the cancel.
        raise DownloadCancelled()
    return Path(path)


def _hub_weights(
    repo: str,
    revision: Optional[str],
    filenames: tuple[str, ...],
    progress: Optional[ProgressFn],
    cancel: Optional[threading.Event],
) -> Path:
    """The first of ``filenames`` the repository has, downloaded (timm's own order of preference)."""
    from huggingface_hub import errors as hf

    offline: Optional[BaseException] = None
    for name in filenames:
        try:
            return _hub_file(repo, name, revision, progress, cancel)
        except hf.LocalEntryNotFoundError as err:  # not cached and no network: maybe the next file is cached
            offline = offline or err
        except hf.EntryNotFoundError:
            continue
    if offline is not None:
        raise offline
    raise hf.EntryNotFoundError(f"none of {', '.join(filenames)} in {repo}")


_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def _sha256(path: Path) -> str:
    """sha256 of a file; a Hugging Face cache blob is named by it (LFS files), so it is read, not computed."""
    real = Path(path).resolve()
    if re.fullmatch(r"[0-9a-f]{64}", real.name) and real.parent.name == "blobs":
        return real.name
    st = real.stat()
    key = (str(real), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        h = hashlib.sha256()
        with open(real, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        _SHA_CACHE[key] = h.hexdigest()
    return _SHA_CACHE[key]


def _local_weights_file(folder: Path) -> Path:
    for name in (*_HUB_WEIGHT_FILES, "pytorch_model.pth", "model.pth"):
        if (folder / name).is_file():
            return folder / name
    raise SIAError(
        f"no weights file in {folder}",
        fix="the folder needs model.safetensors (or pytorch_model.bin) beside its config.json",
    )


def fetch_pretrained(
    text: Optional[str],
    progress: Optional[ProgressFn] = None,
    cancel: Optional[threading.Event] = None,
    revision: Optional[str] = None,
) -> dict[str, Any]:
    """Make sure the weights of ``model.pretrained`` are on this machine, and say exactly which they are.

    Hub files go into the Hugging Face cache through ``hf_hub_download`` (nothing is fetched twice; an
    interrupted download resumes); local files are only hashed.

    Args:
        text: the ``model.pretrained`` value.
        progress: called with (bytes done, bytes total or None, file name) while a file downloads.
        cancel: set it (from another thread) to stop the download with :class:`DownloadCancelled`.
        revision: pin a hub repository to this commit (a run's recorded origin).

    Returns:
        The origin: ``spec``, ``source`` and ``repo`` + ``revision`` (commit) + ``file``, or ``path``
        (+ ``file``), and the ``sha256`` of the weights file; {} for random init.

    Raises:
        SIAError: offline and not cached, gated without access, no such model, not a timm model.
        DownloadCancelled: ``cancel`` was set.
    """
    src = parse_pretrained(text)
    if src is None:
        return {}
    if src.kind == "file":
        return {"spec": src.text, "source": "file", "path": src.ident, "sha256": _sha256(Path(src.ident))}
    if src.kind == "local-dir":
        weights = _local_weights_file(Path(src.ident))
        return {
            "spec": src.text,
            "source": "local-dir",
            "path": src.ident,
            "file": weights.name,
            "sha256": _sha256(weights),
        }
    if src.kind == "hf-hub":
        repo, names, rev = src.ident, _HUB_WEIGHT_FILES, revision or src.revision
        what = "config.json"
    else:
        import timm

        pc = timm.models.get_pretrained_cfg(src.ident)
        if not pc.hf_hub_id:
            raise SIAError(
                f"timm serves {src.ident} from a URL, not from the Hugging Face hub",
                fix="download the file yourself and pass its path as model.pretrained (with model.backbone set)",
            )
        repo, rev = pc.hf_hub_id.split("@")[0], revision
        names, what = ((pc.hf_hub_filename,) if pc.hf_hub_filename else _HUB_WEIGHT_FILES), "weights"
    try:
        if src.kind == "hf-hub":
            _hub_file(repo, "config.json", rev, None, cancel)
            what = "weights (model.safetensors or pytorch_model.bin)"
        weights = _hub_weights(repo, rev, names, progress, cancel)
    except DownloadCancelled:
        raise
    except Exception as err:
        mapped = hub_error(err, src, what)
        if mapped is None:
            raise
        raise mapped from err
    commit = weights.parent.name if re.fullmatch(r"[0-9a-f]{40}", weights.parent.name) else rev
    return {
        "spec": src.text,
        "source": src.kind,
        "repo": repo,
        "revision": commit,
        "file": weights.name,
        "sha256": _sha256(weights),
    }


# ------------------------------------------------------------------------------------------- config


def weights_config(src: WeightsSource, revision: Optional[str] = None) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(architecture, model_args, pretrained_cfg) of hub, local-dir or timm-tag weights, as timm reads them."""
    import timm

    try:
        with _hub_quiet():
            resolved = timm.models.resolve_model_input_args(src.timm_name(revision))
    except Exception as err:
        mapped = hub_error(err, src, "config.json")
        if mapped is not None:
            raise mapped from err
        raise SIAError(
            f"cannot read the timm config of {src.text}: {type(err).__name__}: {str(err)[:160]}",
            fix="the weights need a timm config.json with 'architecture' (and 'model_args')",
        ) from err
    arch = resolved.pop("model_name")
    pc = dict(resolved.pop("pretrained_cfg") or {})
    resolved.pop("pretrained_model_args", None)
    return arch, resolved, pc


def resolve_pretrained(
    cfg: Any,
    progress: Optional[ProgressFn] = None,
    cancel: Optional[threading.Event] = None,
) -> Any:
    """The config of a run that starts from ``cfg.model.pretrained``: fetched weights, their architecture,
    preprocessing and origin.

    * hub, local-dir and timm-tag weights: ``model.backbone`` becomes the weights' architecture and
      ``model.backbone_kwargs`` their ``model_args`` + what the model card prescribes (:mod:`sia_core.backbones`)
      + the kwargs you set (a preset's random-init kwargs are not yours and do not apply; nor is its
      ``model.conv_stem``, which is switched off);
    * every kind: ``data.mean`` / ``data.std`` from the weights' pretrained config, ``data.img_size`` too
      unless you changed it from the preset's, ``dam.local_size`` rounded to a multiple of the patch size,
      and ``model.pretrained_origin`` (which weights exactly: commit, file, sha256). A recorded origin of the
      same ``pretrained`` pins its commit, so a config reproduces its weights.

    Idempotent. Random init returns ``cfg`` unchanged.

    Raises:
        SIAError: see :func:`fetch_pretrained`; kwargs timm rejects.
    """
    from .backbones import extra_kwargs
    from .config import PRESETS, get_preset
    from .timm_backbone import patch_size_of

    m = cfg.model
    src = parse_pretrained(m.pretrained or m.backbone_weights)
    if src is None:
        return cfg
    cfg = cfg.copy()
    m = cfg.model
    pin = m.pretrained_origin.get("revision") if m.pretrained_origin.get("spec") == src.text else None
    origin = fetch_pretrained(src.text, progress, cancel, revision=pin)
    preset = get_preset(cfg.preset) if cfg.preset in PRESETS else None
    if src.kind == "file":
        arch, pc = m.backbone, _registry_cfg(m.backbone)
    else:
        arch, model_args, pc = weights_config(src, origin.get("revision"))
        own = m.backbone_kwargs if preset is None or m.backbone_kwargs != preset.model.backbone_kwargs else {}
        m.backbone = arch
        m.backbone_kwargs = {**model_args, **extra_kwargs(src.text), **own}
    m.pretrained, m.backbone_weights, m.pretrained_origin = src.text, None, origin
    if preset is not None and m.conv_stem == preset.model.conv_stem:
        m.conv_stem = False  # a preset's random-init stem; the weights bring their own patch embedding
    if pc.get("mean") and pc.get("std"):
        cfg.data.mean, cfg.data.std = tuple(pc["mean"]), tuple(pc["std"])
    size = (pc.get("input_size") or (3, 0, 0))[-1] if src.kind != "file" else 0
    if size and (preset is None or cfg.data.img_size == preset.data.img_size):
        cfg.data.img_size = int(size)
    patch = patch_size_of(arch, m.backbone_kwargs)
    if cfg.dam.local_size % patch:
        cfg.dam.local_size = max(patch, round(cfg.dam.local_size / patch) * patch)
    return cfg


def _registry_cfg(arch: str) -> dict[str, Any]:
    import timm

    pc = timm.models.get_pretrained_cfg(arch)
    return pc.to_dict() if pc is not None else {}
