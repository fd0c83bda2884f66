"""`ReenactmentDataset`: (source, driving) frame pairs with 3D-face conditioning, from the clip cache.

**Index.** All complete clips under the cache root (``<root>/<identity>/<video>/<clip>/meta.json``,
:mod:`morphface.data.cache`) whose identity belongs to the split are indexed; their parameters
(small) are loaded at construction, their frames on demand.

**Split** (held-out identities). Identity folder names are sorted; ``split="test"`` takes the last
``floor(test_fraction * n_identities)`` of them (or exactly ``test_identities`` when that list is
given), ``split="train"`` the others, ``split="all"`` every identity. With the default
``test_fraction=0.1`` a cache of fewer than 10 identities has no test identity.

**Items.** ``len(dataset)`` is ``samples_per_epoch`` if set, else the number of frames in the split.
Item ``i`` of epoch ``e`` is drawn with a ``torch.Generator`` seeded by a stable hash of
``(seed, e, i)`` (:meth:`ReenactmentDataset.set_epoch`), so it depends on nothing else: not on the
worker, the rank, or the order items are asked for.

* The **driving frame** is frame ``i`` of the concatenated clips (every frame once per epoch)
  when ``samples_per_epoch`` is ``None``; otherwise a uniformly random frame of the split.
* ``mode="self"`` (self-reenactment training): the **source frame** is another random frame of the
  driving frame's clip (the same frame only in a one-frame clip).
* ``mode="cross"`` (cross-identity evaluation): the source frame is a random frame of a random
  clip of *another* identity.

**Sample** (a dict of tensors; the default collate stacks them), images float in ``[0, 1]`` at
``image_size`` (frames of another size are resized, and the cameras scaled with them):
``source``, ``driving`` ``(3, H, W)``; ``source_ncc`` ``(3, H, W)`` and ``driving_ncc``
``(3 (k + 1), H, W)`` (frames ``t-k .. t`` in that order, clamped at the clip start): HeadGAN's
per-triangle NCC renders (:func:`~morphface.render.render_ncc`) of the cached parameters;
``source_mask``, ``driving_mask`` ``(1, H, W)``; ``source_motion``, ``driving_motion``
``(2 w + 1, K_exp + 6)`` rows ``[exp, pitch/yaw/roll (rad), translation (mm)]`` for frames
``t-w .. t+w`` clamped at the clip ends; ``source_params``, ``driving_params``
``(K_id + K_exp + 7,)`` = ``[id, exp, angles, translation, focal (px)]``; ``audio``
``(2 k_a D,)`` the driving frame's flattened frame-aligned audio features (zeros when the clip
has none) and ``has_audio`` ``()``; ``mouth_box`` ``(4,)`` ``x0, y0, x1, y1`` pixels, the square
around the driving frame's projected mouth landmarks (48-67) enlarged ``mouth_scale`` times and
moved inside the image; ``source_uv`` ``(4, S, S)`` (when ``uv_size`` is set): the source frame
unwrapped into the model's UV layout (:func:`morphface.uv.unwrap`: RGB + validity mask);
``source_aus``, ``driving_aus`` ``(17,)`` the frames' FACS AU intensities in [0, 5] from their fitted ICT
blendshapes (:mod:`morphface.morphable.facs`; only for models with those names);
``source_audio_window``, ``driving_audio_window`` ``(8, 2 k_a D)`` the audio features of frames
``t - 4 .. t + 3`` clamped at the clip ends (zeros without audio) and ``source_has_audio`` ``()``;
``clip_index``, ``source_clip_index``, ``source_index``, ``driving_index`` (int64 scalars: the
driving and source clips' positions in :attr:`ReenactmentDataset.clips` and the frames' indices
in their clips), ``identity_index`` (int64 scalar: the driving clip's identity's position in
:attr:`ReenactmentDataset.identities`); ``extra_sources`` ``(n, 3, H, W)`` (when ``extra_sources = n > 0``):
``n`` more random frames of the source clip (X2Face's multi-source training). With ``renders=False``
(pipelines conditioned on the images alone, e.g. X2Face) the NCC renders, masks and ``mouth_box`` are
left out, which saves the per-item rasterisation.

**Decoding.** A clip's ``frames.mp4`` is decoded whole (clips are a few seconds) and kept as uint8
in a small per-process LRU (``cache_clips`` clips); JPEG-frame clips read only the frames needed.
Each DataLoader worker has its own LRU (the cache is dropped when the dataset is pickled). NCC and
UV renders run on the CPU in the worker.

**Fork safety.** The CPU rasteriser's numba kernels run on a fork-safe threading layer
(:mod:`morphface.render._numba`), so forked DataLoader workers can render.

**Epochs and workers.** :meth:`~ReenactmentDataset.set_epoch` changes what the dataset object in
the calling process draws. DataLoader workers receive a copy of the dataset when an epoch's
iterator is created, so call ``set_epoch`` before iterating, and do not use
``persistent_workers=True`` (its workers would keep the first epoch).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from ..camera import PerspectiveCamera, WeakPerspectiveCamera, euler_to_matrix
from ..errors import ImageReadError, ModelFormatError
from ..fitting import FitResult, crop_box_from_landmarks
from .cache import PARAMS_NAME, ClipRecord, find_clips, load_audio_features, load_cache_model, read_clip_frames
from .seeding import stable_seed

__all__ = ["ReenactmentDatasetConfig", "ReenactmentDataset", "split_identities"]

_MOUTH = list(range(48, 68))
#: Frames in ``source_audio_window`` / ``driving_audio_window``: ``t - 4 .. t + 3`` (the kp3d audio window).
AUDIO_WINDOW_FRAMES = 8


@dataclass
class ReenactmentDatasetConfig:
    """Options of :class:`ReenactmentDataset` (the ``data.config`` mapping of a training YAML).

    Attributes:
        root: the clip-cache root.
        mode: ``"self"`` (source and driving from the same clip: training) or ``"cross"`` (source
            from another identity: evaluation).
        k: previous driving frames whose NCC renders are stacked (``driving_ncc`` has ``3 (k+1)``
            channels).
        motion_window: half width ``w`` of the motion windows (``2 w + 1`` rows).
        uv_size: side of ``source_uv`` (IFaceUV); ``None``: no UV unwrap (faster).
        image_size: side of the returned images in pixels.
        samples_per_epoch: items per epoch; ``None``: one per frame of the split.
        seed: seed of the per-item randomness.
        split: ``"train"``, ``"test"`` or ``"all"`` (module doc).
        test_fraction: share of identities (the last ones by name) held out for ``"test"``.
        test_identities: explicit held-out identity names (overrides ``test_fraction``).
        cache_clips: decoded clips kept per process (LRU).
        mouth_scale: mouth box side over the mouth landmarks' longer side.
        ncc_mode: ``"triangle"`` (HeadGAN) or ``"vertex"`` (PNCC).
        backend: rasterisation backend (``"auto"``; the CPU one inside DataLoader workers).
        renders: include the NCC renders, masks and mouth boxes (``False`` skips the rasterisation).
        extra_sources: additional source frames per item (``extra_sources``; 0: none).
    """

    root: str
    mode: str = "self"
    k: int = 2
    motion_window: int = 13
    uv_size: int | None = None
    image_size: int = 256
    samples_per_epoch: int | None = None
    seed: int = 0
    split: str = "train"
    test_fraction: float = 0.1
    test_identities: list[str] | None = None
    cache_clips: int = 4
    mouth_scale: float = 1.5
    ncc_mode: str = "triangle"
    backend: str = "auto"
    renders: bool = True
    extra_sources: int = 0

    def __post_init__(self) -> None:
        self.root = str(self.root)
        if self.mode not in ("self", "cross"):
            raise ValueError(f"mode must be 'self' or 'cross'; got {self.mode!r}")
        if self.split not in ("train", "test", "all"):
            raise ValueError(f"split must be 'train', 'test' or 'all'; got {self.split!r}")
        for name, low in (("k", 0), ("motion_window", 0), ("image_size", 8), ("cache_clips", 1),
                          ("extra_sources", 0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValueError(f"{name} must be an int >= {low}; got {v!r}")
        if self.uv_size is not None and (not isinstance(self.uv_size, int) or self.uv_size < 8):
            raise ValueError(f"uv_size must be None or an int >= 8; got {self.uv_size!r}")
        if self.samples_per_epoch is not None and (not isinstance(self.samples_per_epoch, int)
                                                   or self.samples_per_epoch < 1):
            raise ValueError(f"samples_per_epoch must be None or an int >= 1; got {self.samples_per_epoch!r}")
        if not 0.0 <= self.test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in [0, 1); got {self.test_fraction}")
        if self.ncc_mode not in ("triangle", "vertex"):
            raise ValueError(f"ncc_mode must be 'triangle' or 'vertex'; got {self.ncc_mode!r}")
        if not self.mouth_scale > 0:
            raise ValueError(f"mouth_scale must be > 0; got {self.mouth_scale}")
        if self.test_identities is not None:
            self.test_identities = [str(n) for n in self.test_identities]


def split_identities(identities: list[str], split: str, test_fraction: float = 0.1,
                     test_identities: list[str] | None = None) -> list[str]:
    """The identity names of a split (rule in the module doc), sorted.

    Raises:
        ValueError: an explicit held-out name that is not among ``identities``.
    """
    names = sorted(set(identities))
    if test_identities is not None:
        unknown = sorted(set(test_identities) - set(names))
        if unknown:
            raise ValueError(f"test_identities {unknown} are not in the cache (it has {len(names)} identities, "
                             f"e.g. {names[:5]})")
        test = set(test_identities)
    else:
        test = set(names[len(names) - int(math.floor(test_fraction * len(names))):]) if test_fraction > 0 else set()
    if split == "all":
        return names
    if split == "test":
        return [n for n in names if n in test]
    return [n for n in names if n not in test]


class _ClipParams:
    """One clip's parameters, scaled to the dataset's image size."""

    def __init__(self, fit: FitResult, scale: float, image_size: int) -> None:
        self.id = fit.id_coeffs[:1].float()
        self.exp = fit.exp_coeffs.float()
        self.angles = fit.angles.float()
        self.translation = fit.translation.float()
        self.kind = fit.camera_kind
        if self.kind == "perspective":
            self.focal = fit.focal.float() * scale
            self.principal_point = fit.principal_point.float() * scale
        else:  # weak perspective: pixels per mm and the pixel position of the origin
            self.focal = fit.focal.float() * scale
            self.translation = fit.translation.float() * scale
            self.principal_point = None
        self.image_size = (image_size, image_size)
        self.id_offset: Tensor | None = None  # (V, 3) mm, filled on first use

    def camera(self, idx: Tensor):
        R = euler_to_matrix(self.angles[idx])
        if self.kind == "perspective":
            return PerspectiveCamera(image_size=self.image_size, focal=self.focal[idx],
                                     principal_point=self.principal_point[idx], R=R, t=self.translation[idx])
        return WeakPerspectiveCamera(image_size=self.image_size, scale=self.focal[idx],
                                     translation=self.translation[idx], R=R)

    def fit(self, idx: Tensor) -> FitResult:
        n = idx.numel()
        return FitResult(id_coeffs=self.id.expand(n, -1), exp_coeffs=self.exp[idx], angles=self.angles[idx],
                         translation=self.translation[idx], focal=self.focal[idx], image_size=self.image_size,
                         camera_kind=self.kind,
                         principal_point=None if self.principal_point is None else self.principal_point[idx])

    def motion(self, idx: Tensor) -> Tensor:
        return torch.cat([self.exp[idx], self.angles[idx], self.translation[idx]], dim=-1)

    def flat(self, t: int) -> Tensor:
        return torch.cat([self.id[0], self.exp[t], self.angles[t], self.translation[t], self.focal[t:t + 1]])


class ReenactmentDataset(Dataset):
    """Source/driving pairs with NCC renders, motion windows and audio (module doc).

    Args:
        config: a :class:`ReenactmentDatasetConfig`, or the cache root (then ``overrides`` are
            the other config fields).
        **overrides: config fields replacing those of ``config``.

    Raises:
        FileNotFoundError: the root is not a folder.
        ValueError: no complete clip in the split, clips of different models, ``mode="cross"``
            with fewer than two identities, parameters that do not match a clip's frame count.
    """

    def __init__(self, config: ReenactmentDatasetConfig | str | Path, **overrides: Any) -> None:
        if isinstance(config, (str, Path)):
            config = ReenactmentDatasetConfig(root=str(config), **overrides)
        elif overrides:
            config = ReenactmentDatasetConfig(**{**asdict(config), **overrides})
        self.config = config
        c = config
        all_clips = find_clips(c.root)
        if not all_clips:
            raise ValueError(f"no complete clip (with meta.json) under {c.root}: run `morphface preprocess` or "
                             f"`morphface synth` first")
        ids = split_identities([r.identity for r in all_clips], c.split, c.test_fraction, c.test_identities)
        keep = set(ids)
        self.clips: list[ClipRecord] = [r for r in all_clips if r.identity in keep]
        if not self.clips:
            raise ValueError(f"split {c.split!r} of {c.root} is empty ({len({r.identity for r in all_clips})} "
                             f"identities, test_fraction={c.test_fraction}, test_identities={c.test_identities})")
        self.identities = ids
        models = {r.meta["model"] for r in self.clips}
        if len(models) != 1:
            raise ValueError(f"the clips of {c.root} use different models {sorted(models)}; one dataset needs one")
        self.model_spec = models.pop()
        self.model = load_cache_model(self.model_spec)
        if self.model.has_landmarks and self.model.landmarks.numel() >= 68:
            self._mouth_ids = self.model.landmarks[_MOUTH]
        else:
            self._mouth_ids = None
        self._params: list[_ClipParams] = []
        self._audio: list[Tensor | None] = []
        for r in self.clips:
            fit = FitResult.load(r.path / PARAMS_NAME)
            if fit.batch_size != r.num_frames:
                raise ValueError(f"{r.path}: {PARAMS_NAME} has {fit.batch_size} frames, meta.json says "
                                 f"{r.num_frames}")
            if fit.image_size[0] != fit.image_size[1]:
                raise ValueError(f"{r.path}: frames must be square; the parameters are for {fit.image_size}")
            self._params.append(_ClipParams(fit, c.image_size / fit.image_size[0], c.image_size))
            audio = load_audio_features(r.path) if r.meta.get("audio") else None
            if audio is not None and audio.shape[0] != r.num_frames:
                raise ValueError(f"{r.path}: audio features for {audio.shape[0]} frames, the clip has {r.num_frames}")
            self._audio.append(audio)
        dims = {tuple(a.shape[1:]) for a in self._audio if a is not None}
        if len(dims) > 1:
            raise ValueError(f"clips of {c.root} have audio features of different shapes {sorted(dims)}")
        if dims:
            parts, d = dims.pop()
            self.audio_dim = parts * d
        else:
            from ..audio import DEFAULT_FLAT_SIZE

            self.audio_dim = DEFAULT_FLAT_SIZE
        counts = torch.tensor([r.num_frames for r in self.clips], dtype=torch.long)
        self._ends = counts.cumsum(0)  # exclusive end of each clip in the concatenated frame index
        self.total_frames = int(self._ends[-1])
        self._clip_identity = [ids.index(r.identity) for r in self.clips]
        if c.mode == "cross":
            if len(ids) < 2:
                raise ValueError(f"mode='cross' needs clips of at least two identities; split {c.split!r} has {ids}")
            self._others = [[j for j, q in enumerate(self._clip_identity) if q != p] for p in self._clip_identity]
        self._au_matrix: Tensor | None = None
        try:
            from ..morphable.facs import au_matrix

            self._au_matrix = au_matrix(self.model.exp_names)
        except ModelFormatError:  # a model without the ICT blendshapes: no AUs in the samples
            pass
        self.epoch = 0
        self._lru: OrderedDict[int, Tensor] = OrderedDict()

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ReenactmentDataset:
        """Registry factory (``morphface.train``): ``ReenactmentDataset(ReenactmentDatasetConfig(**config))``."""
        try:
            cfg = ReenactmentDatasetConfig(**config)
        except TypeError as exc:  # an unknown or missing key: a config error
            raise ValueError(f"bad config for ReenactmentDataset: {exc}") from exc
        return cls(cfg)

    # ------------------------------------------------------------------ sampling
    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose items ``__getitem__`` returns (module doc)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.config.samples_per_epoch or self.total_frames

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_lru"] = OrderedDict()  # each worker decodes into its own cache
        return state

    def _locate(self, frame: int) -> tuple[int, int]:
        clip = int(torch.searchsorted(self._ends, torch.tensor(frame), right=True))
        start = int(self._ends[clip - 1]) if clip > 0 else 0
        return clip, frame - start

    def draw(self, index: int) -> tuple[int, int, int, int]:
        """``(driving_clip, driving_frame, source_clip, source_frame)`` of item ``index`` this epoch."""
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for a dataset of {n} items")
        index %= n
        g = torch.Generator().manual_seed(stable_seed(self.config.seed, self.epoch, index))
        if self.config.samples_per_epoch is None:
            frame = index
        else:
            frame = int(torch.randint(self.total_frames, (), generator=g))
        clip, t = self._locate(frame)
        if self.config.mode == "self":
            T = self.clips[clip].num_frames
            if T == 1:
                return clip, t, clip, t
            s = int(torch.randint(T - 1, (), generator=g))
            return clip, t, clip, s + (s >= t)  # any frame but t
        others = self._others[clip]
        src_clip = others[int(torch.randint(len(others), (), generator=g))]
        s = int(torch.randint(self.clips[src_clip].num_frames, (), generator=g))
        return clip, t, src_clip, s

    def _extra_frames(self, index: int, clip: int, s: int) -> list[int]:
        """``extra_sources`` frame indices of ``clip`` other than ``s`` (repeated in short clips), drawn
        from their own stream so that the other draws of the item do not change."""
        g = torch.Generator().manual_seed(stable_seed(self.config.seed, self.epoch, index, 1))
        T = self.clips[clip].num_frames
        if T == 1:
            return [s] * self.config.extra_sources
        picks = torch.randint(T - 1, (self.config.extra_sources,), generator=g)
        return [int(p) + int(p >= s) for p in picks]

    # ------------------------------------------------------------------ loading
    def _frames(self, clip: int, indices: list[int]) -> Tensor:
        """``(n, 3, S, S)`` float frames of a clip in [0, 1] at the dataset's image size."""
        record = self.clips[clip]
        if (record.path / "frames.mp4").is_file():
            frames = self._lru.get(clip)
            if frames is None:
                frames = read_clip_frames(record.path)
                if frames.shape[0] < record.num_frames:
                    raise ImageReadError(f"{record.path}: frames.mp4 has {frames.shape[0]} frames, meta.json "
                                         f"says {record.num_frames}")
                self._lru[clip] = frames
                while len(self._lru) > self.config.cache_clips:
                    self._lru.popitem(last=False)
            else:
                self._lru.move_to_end(clip)
            out = frames[torch.as_tensor(indices, dtype=torch.long)]
        else:
            out = read_clip_frames(record.path, indices)
        out = out.float().div_(255.0)
        S = self.config.image_size
        if tuple(out.shape[-2:]) != (S, S):
            out = F.interpolate(out, size=(S, S), mode="bilinear", align_corners=False, antialias=True).clamp_(0, 1)
        return out

    def _render(self, params: _ClipParams, idx: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """NCC images ``(n, 3, S, S)``, masks ``(n, 1, S, S)`` and posed vertices of frames ``idx``."""
        from ..render import render_ncc

        if params.id_offset is None:  # the model is linear: the identity's share is computed once per clip
            params.id_offset = self.model.identity(params.id)[0] - self.model.mean
        verts = self.model(None, params.exp[idx]) + params.id_offset
        out = render_ncc(self.model, verts, params.camera(idx), mode=self.config.ncc_mode,
                         backend=self.config.backend)
        return out.image, out.mask, verts

    def _audio_window(self, audio: Tensor | None, t: int, T: int) -> Tensor:
        """``(8, D_a)`` flattened audio features of frames ``t - 4 .. t + 3`` (clamped), zeros without audio."""
        if audio is None:
            return torch.zeros(AUDIO_WINDOW_FRAMES, self.audio_dim)
        idx = (torch.arange(AUDIO_WINDOW_FRAMES) + t - AUDIO_WINDOW_FRAMES // 2).clamp(0, T - 1)
        return audio[idx].reshape(AUDIO_WINDOW_FRAMES, -1).float()

    def _mouth_box(self, params: _ClipParams, verts: Tensor, t: int) -> Tensor:
        S = self.config.image_size
        if self._mouth_ids is None or bool((self._mouth_ids < 0).any()):
            return torch.tensor([0.0, 0.0, float(S), float(S)])
        pix, _ = params.camera(torch.tensor([t])).project(verts[:, self._mouth_ids])
        return crop_box_from_landmarks(pix[0], (S, S), scale=self.config.mouth_scale, shift=0.0, keep_inside=True)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        c = self.config
        clip, t, src_clip, s = self.draw(index)
        dp, sp = self._params[clip], self._params[src_clip]
        T = self.clips[clip].num_frames
        with torch.no_grad():
            if c.renders:
                history = torch.arange(t - c.k, t + 1).clamp(0, T - 1)
                d_ncc, d_mask, d_verts = self._render(dp, history)
                s_ncc, s_mask, _ = self._render(sp, torch.tensor([s]))
            if src_clip == clip:
                both = self._frames(clip, [s, t])
                source, driving = both[0], both[1]
            else:
                source, driving = self._frames(src_clip, [s])[0], self._frames(clip, [t])[0]
            window = torch.arange(-c.motion_window, c.motion_window + 1)
            d_win = (t + window).clamp(0, T - 1)
            s_win = (s + window).clamp(0, self.clips[src_clip].num_frames - 1)
            audio = self._audio[clip]
            sample = {
                "source": source,
                "driving": driving,
                "source_motion": sp.motion(s_win),
                "driving_motion": dp.motion(d_win),
                "source_params": sp.flat(s),
                "driving_params": dp.flat(t),
                "audio": audio[t].reshape(-1).float() if audio is not None else torch.zeros(self.audio_dim),
                "has_audio": torch.tensor(1.0 if audio is not None else 0.0),
                "clip_index": torch.tensor(clip, dtype=torch.long),
                "identity_index": torch.tensor(self._clip_identity[clip], dtype=torch.long),
                "source_clip_index": torch.tensor(src_clip, dtype=torch.long),
                "source_index": torch.tensor(s, dtype=torch.long),
                "driving_index": torch.tensor(t, dtype=torch.long),
            }
            if c.renders:
                sample.update(source_ncc=s_ncc[0], driving_ncc=d_ncc.reshape(-1, c.image_size, c.image_size),
                              source_mask=s_mask[0], driving_mask=d_mask[-1],
                              mouth_box=self._mouth_box(dp, d_verts[-1:], t))
            if c.extra_sources:
                sample["extra_sources"] = self._frames(src_clip, self._extra_frames(index, src_clip, s))
            if self._au_matrix is not None:  # kp3d: the 17 FACS AUs of the fitted expressions
                sample["source_aus"] = (sp.exp[s] @ self._au_matrix.T).clamp(0.0, 5.0)
                sample["driving_aus"] = (dp.exp[t] @ self._au_matrix.T).clamp(0.0, 5.0)
            src_audio = self._audio[src_clip]
            sample["source_audio_window"] = self._audio_window(src_audio, s, self.clips[src_clip].num_frames)
            sample["driving_audio_window"] = self._audio_window(audio, t, T)
            sample["source_has_audio"] = torch.tensor(1.0 if src_audio is not None else 0.0)
            if c.uv_size is not None:
                from ..uv.unwrap import unwrap

                uv = unwrap(source[None], sp.fit(torch.tensor([s])), self.model, size=c.uv_size,
                            backend=c.backend)
                sample["source_uv"] = torch.cat([uv.texture[0], uv.mask[0]], dim=0)
        return sample

    def __repr__(self) -> str:
        c = self.config
        return (f"ReenactmentDataset(root={c.root!r}, split={c.split!r}, mode={c.mode!r}, clips={len(self.clips)}, "
                f"identities={len(self.identities)}, frames={self.total_frames}, len={len(self)})")
