"""Synthetic talking heads with ground-truth parameters, written in the clip-cache format.

Each **identity** is an identity vector ~ N(0, I) (all 100 ICT modes), a procedural albedo texture
(:func:`~morphface.data.textures.procedural_face_texture`) and a voice pitch; each **clip** of an
identity adds a random background (:func:`~morphface.data.backgrounds.random_background`), a
random SH lighting (ambient + one soft directional light, slightly tinted), and smooth head and
expression trajectories (:mod:`~morphface.data.trajectories`).

**Which model.** The frames are rendered with the *full* default model (ears, neck, scalp) so that
they look like head crops; the parameters are stored for the *narrow* face region
(``meta["model"] = "default"``, i.e. ``load_default_model("narrow")``, the model fitting and the
NCC renders use). The narrow model is a vertex subset of the full one with the same identity and
expression bases, so the same coefficients and camera describe both: the narrow mesh of the stored
parameters lies exactly on the rendered full head.

**Framing.** The camera is the perspective camera of :func:`~morphface.fitting.default_focal`
centred on the image, placed so that the identity's landmark box spans ``1 / face_scale`` of the
frame (1.8: the crop rule of ``morphface preprocess``, :func:`~morphface.fitting.crop_box_from_landmarks`)
and sits 0.1 of its side below the centre, as a preprocessed crop would show it.

**Rendering.** Textured, SH-shaded Lambertian rendering (:func:`~morphface.render.render_shaded`),
supersampled ``supersample`` times per axis and box-filtered (anti-aliased edges). The mesh has
holes at the eyes and the mouth; pixels enclosed by the face mask (``binary_fill_holes``) are
filled with a dark interior colour (eye sockets, mouth cavity).

**Audio.** Optionally (``audio=True``) a voice-like waveform whose loudness follows ``jawOpen``
(a harmonic tone at the identity's pitch with slow vibrato, plus breath noise) is turned into
frame-aligned features (:func:`~morphface.audio.frame_aligned_features`, ``k = 2``) and stored in
``audio.safetensors``, so that audio-driven models have a learnable audio-mouth relation on
synthetic data.

**Determinism.** Identity ``i`` draws from a generator seeded by ``(seed, "identity", i)`` and
clip ``j`` of it from ``(seed, "clip", i, j)``, so a clip does not depend on how many identities or
clips are generated, and an interrupted run resumes (complete clips, with ``meta.json``, are
skipped; half-written ones are redone). The settings are stored in the root's
``cache_settings.json`` (every option but the counts ``identities`` and ``clips_per_identity``):
a run into a folder made with other settings (another ``size``, ``seed``, ...) raises
:class:`~morphface.errors.SettingsMismatchError` instead of mixing two sets; more identities or
clips with the same settings extend the set.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..fitting import FitResult, default_focal
from ..morphable import MorphableModel, load_default_model
from .backgrounds import random_background
from .cache import (
    CACHE_VERSION,
    PARAMS_NAME,
    check_cache_settings,
    is_complete,
    prepare_clip_folder,
    save_audio_features,
    write_clip_frames,
    write_meta,
)
from .seeding import seeded_generator
from .textures import procedural_face_texture
from .trajectories import expression_trajectory, head_trajectory

__all__ = ["SynthConfig", "SynthIdentity", "SynthClip", "sample_identity", "synthesize_clip", "synthesize_dataset",
           "clip_folder", "synthetic_voice", "render_posed_faces"]

_INTERIOR = (0.06, 0.03, 0.03)  # linear RGB of the eye sockets and mouth cavity


@dataclass
class SynthConfig:
    """Options of the synthetic dataset.

    Attributes:
        identities: number of identities (``id00000`` ...).
        clips_per_identity: clips per identity (``vid00/clip00``, ``vid01/clip00`` ...).
        frames: frames per clip.
        size: frame side in pixels (square frames).
        fps: frame rate of the clips (the trajectories' frequencies are in Hz).
        seed: master seed.
        texture_size: side of the albedo textures in texels.
        supersample: rendering supersampling factor per axis (1 = off).
        face_scale: frame side over the identity's landmark-box side (1.8 = the preprocess crops).
        max_degrees: head-rotation bounds ``(pitch, yaw, roll)`` in degrees.
        audio: also synthesise a voice-like track and store its frame-aligned features.
        crf: H.264 quality of ``frames.mp4`` (0 lossless, 18 visually lossless).
        frames_format: ``"mp4"`` or ``"jpg"`` (``frames/%06d.jpg``).
    """

    identities: int = 4
    clips_per_identity: int = 2
    frames: int = 50
    size: int = 256
    fps: float = 25.0
    seed: int = 0
    texture_size: int = 256
    supersample: int = 2
    face_scale: float = 1.8
    max_degrees: tuple[float, float, float] = (15.0, 30.0, 10.0)
    audio: bool = True
    crf: int = 18
    frames_format: str = "mp4"

    def __post_init__(self) -> None:
        for name in ("identities", "clips_per_identity", "frames", "size", "texture_size", "supersample"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an int >= 1; got {v!r}")
        if self.size < 16:
            raise ValueError(f"size must be >= 16 pixels; got {self.size}")
        if not (self.fps > 0 and self.face_scale > 0):
            raise ValueError(f"fps and face_scale must be > 0; got {self.fps}, {self.face_scale}")
        if self.frames_format not in ("mp4", "jpg"):
            raise ValueError(f"frames_format must be 'mp4' or 'jpg'; got {self.frames_format!r}")
        self.max_degrees = tuple(float(d) for d in self.max_degrees)


class SynthIdentity(NamedTuple):
    """One synthetic person: ``id_coeffs (1, K_id)``, ``texture (1, 3, S, S)`` and voice ``pitch_hz``."""

    id_coeffs: Tensor
    texture: Tensor
    pitch_hz: float


class SynthClip(NamedTuple):
    """A rendered clip: ``frames (T, 3, H, W)`` in [0, 1], the ground-truth ``fit`` (narrow-model
    landmarks included), ``face_mask (T, 1, H, W)`` of the rendered full head (holes filled), and
    ``audio (T, 2k, D)`` features or ``None``."""

    frames: Tensor
    fit: FitResult
    face_mask: Tensor
    audio: Tensor | None


def clip_folder(root: str | Path, identity: int, clip: int) -> Path:
    """Where clip ``clip`` of identity ``identity`` goes: ``root/id%05d/vid%02d/clip00``."""
    return Path(root) / f"id{identity:05d}" / f"vid{clip:02d}" / "clip00"


def sample_identity(model: MorphableModel, index: int, config: SynthConfig) -> SynthIdentity:
    """Identity ``index`` of the dataset (a deterministic function of ``(config.seed, index)``)."""
    g = seeded_generator(config.seed, "identity", index)
    ida = torch.randn(1, model.n_id, generator=g)
    tex = procedural_face_texture(model, config.texture_size, g)[None]
    pitch = 90.0 + 130.0 * float(torch.rand((), generator=g))
    return SynthIdentity(id_coeffs=ida, texture=tex, pitch_hz=pitch)


def _random_light(g: torch.Generator) -> Tensor:
    """``(27,)`` SH coefficients: ambient plus one directional light from the front hemisphere."""
    ambient = 0.65 + 0.3 * float(torch.rand((), generator=g))
    strength = 0.15 + 0.35 * float(torch.rand((), generator=g))
    d = torch.stack([torch.rand((), generator=g) * 1.2 - 0.6, torch.rand((), generator=g) * 0.7 - 0.1,
                     0.5 + 0.5 * torch.rand((), generator=g)])
    d = d / d.norm()
    tint = 1 + 0.08 * (torch.rand(3, generator=g) * 2 - 1)
    sh = torch.zeros(3, 9)
    sh[:, 0] = ambient * tint
    # first-order basis terms are (-y, z, -x): these weights make the irradiance grow with n . d
    sh[:, 1], sh[:, 2], sh[:, 3] = -strength * d[1], strength * d[2], -strength * d[0]
    return sh.reshape(27)


def _camera_placement(model: MorphableModel, id_coeffs: Tensor, size: int, face_scale: float
                      ) -> tuple[float, Tensor]:
    """Focal (px) and base translation ``(3,)`` mm framing the neutral face (module doc)."""
    focal = default_focal((size, size))
    lms = model.identity(id_coeffs)[0, model.landmarks.clamp(min=0)]
    lo, hi = lms.amin(0), lms.amax(0)
    centre = (lo + hi) / 2
    side = float((hi - lo)[:2].max())
    dist = focal * side * face_scale / size  # the landmark box spans size / face_scale pixels
    # landmark centre 0.1 box sides below the image centre; y up in the camera frame
    t = torch.stack([-centre[0], -centre[1] - 0.1 * side, -centre[2] - dist])
    return focal, t


def synthetic_voice(jaw: Tensor, fps: float, pitch_hz: float, sample_rate: int = 16000,
                    generator: torch.Generator | None = None) -> Tensor:
    """A voice-like waveform whose loudness follows the mouth opening.

    Args:
        jaw: ``(T,)`` mouth opening per video frame in [0, 1] (e.g. the ``jawOpen`` weight).
        fps: video frame rate.
        pitch_hz: fundamental frequency.
        sample_rate: Hz.
        generator: random source (vibrato phase, breath noise).

    Returns:
        ``(round(T / fps * sample_rate),)`` float32 in ``[-1, 1]``.
    """
    T = jaw.shape[0]
    n = max(1, int(round(T / fps * sample_rate)))
    t = torch.arange(n, dtype=torch.float64) / sample_rate
    # the envelope is the jaw curve linearly interpolated at the audio rate (frame j at j / fps)
    pos = (t * fps).clamp(max=T - 1)
    lo = pos.floor().long().clamp(max=T - 1)
    hi = (lo + 1).clamp(max=T - 1)
    w = pos - lo
    env = jaw.double()[lo] * (1 - w) + jaw.double()[hi] * w
    phase0 = float(torch.rand((), generator=generator)) * 2 * math.pi
    f0 = pitch_hz * (1 + 0.03 * torch.sin(2 * math.pi * 5.0 * t + phase0))
    phase = 2 * math.pi * torch.cumsum(f0, 0) / sample_rate
    voiced = sum(torch.sin(h * phase) / h for h in range(1, 9)) / 2.7
    breath = torch.randn(n, generator=generator, dtype=torch.float64) * 0.02
    return (0.8 * env * voiced + breath).clamp(-1, 1).float()


def _render_frames(model: MorphableModel, verts: Tensor, camera, texture: Tensor, light: Tensor,
                   background: Tensor) -> tuple[Tensor, Tensor]:
    """Textured, Gouraud-shaded frames over ``background``, eye/mouth holes filled; ``(B, 3, H, W)``
    images and ``(B, 1, H, W)`` hole-filled head masks.

    One rasterisation; the SH irradiance is evaluated per vertex and interpolated (Gouraud), which
    on this dense mesh looks like per-pixel shading at a fraction of the cost.
    """
    from scipy.ndimage import binary_fill_holes

    from ..camera import rotate
    from ..render import interpolate, rasterize, sample_texture, sh_shading, vertex_normals

    B = verts.shape[0]
    frags = rasterize(camera.to_ndc(verts), model.triangles, camera.image_size, perspective=True,
                      znear=float(camera.znear))
    normals = rotate(vertex_normals(verts, model.triangles), camera.R.to(verts.dtype))
    irradiance = sh_shading(normals, light[None].expand(B, -1))  # (B, V, 3)
    both = interpolate(torch.cat([irradiance, model.uv[None].expand(B, -1, -1)], dim=-1), model.triangles, frags)
    mask = frags.mask[:, None].to(verts.dtype)
    albedo = sample_texture(texture, both[..., 3:], mask=mask)
    shaded = albedo * both[..., :3].permute(0, 3, 1, 2)
    filled = torch.from_numpy(np.stack([binary_fill_holes(m) for m in frags.mask.cpu().numpy()]))
    filled = filled[:, None].to(verts.dtype)
    interior = torch.tensor(_INTERIOR, dtype=verts.dtype)[None, :, None, None]
    image = shaded * mask + interior * (filled - mask) + background[None] * (1 - filled)
    return image, filled


def synthesize_clip(render_model: MorphableModel, fit_model: MorphableModel, identity: SynthIdentity,
                    identity_index: int, clip_index: int, config: SynthConfig, chunk: int = 16) -> SynthClip:
    """Render one clip (module doc) with its ground truth.

    Args:
        render_model: the model drawn (the full default model).
        fit_model: the model the parameters refer to (the narrow default model, same bases).
        identity: from :func:`sample_identity`.
        identity_index, clip_index: which clip (its random stream).
        config: the dataset options.
        chunk: frames rendered per batch.
    """
    g = seeded_generator(config.seed, "clip", identity_index, clip_index)
    T, S, ss = config.frames, config.size, config.supersample
    head = head_trajectory(T, config.fps, config.max_degrees, generator=g)
    exp = expression_trajectory(render_model, T, config.fps, generator=g)
    light = _random_light(g)
    background = random_background((S * ss, S * ss), g)
    focal, t0 = _camera_placement(fit_model, identity.id_coeffs, S, config.face_scale)
    fit = FitResult(id_coeffs=identity.id_coeffs.expand(T, -1).clone(), exp_coeffs=exp, angles=head.angles,
                    translation=t0[None] + head.translation, focal=torch.full((T,), focal), image_size=(S, S),
                    camera_kind="perspective", sh=light[None].expand(T, -1).clone())
    with torch.no_grad():
        lm_pix, _ = fit.camera.project(fit.vertices(fit_model)[:, fit_model.landmarks.clamp(min=0)])
    fit.landmarks = lm_pix
    fit.target_landmarks = lm_pix.clone()
    fit.residuals = torch.zeros(T)

    big = FitResult(id_coeffs=fit.id_coeffs, exp_coeffs=fit.exp_coeffs, angles=fit.angles,
                    translation=fit.translation, focal=fit.focal * ss, image_size=(S * ss, S * ss))
    frames, masks = [], []
    with torch.no_grad():
        for i in range(0, T, chunk):
            part = big[i:i + chunk]
            img, filled = _render_frames(render_model, part.vertices(render_model), part.camera, identity.texture,
                                         light, background)
            if ss > 1:
                img, filled = F.avg_pool2d(img, ss), F.avg_pool2d(filled, ss)
            frames.append(img.clamp(0, 1))
            masks.append(filled)
    frames_t = torch.cat(frames)
    audio = None
    if config.audio:
        from ..audio import frame_aligned_features

        jaw_id = render_model.exp_names.index("jawOpen") if "jawOpen" in render_model.exp_names else None
        jaw = exp[:, jaw_id] if jaw_id is not None else torch.zeros(T)
        wave = synthetic_voice(jaw, config.fps, identity.pitch_hz, 16000, g)
        audio = frame_aligned_features(wave, 16000, config.fps, 2, n_frames=T).float()
    return SynthClip(frames=frames_t, fit=fit, face_mask=torch.cat(masks), audio=audio)


def render_posed_faces(render_model: MorphableModel, fit_model: MorphableModel, angles: Tensor, identity: int = 0,
                       size: int = 256, seed: int = 0, supersample: int = 2, expressions: Tensor | None = None
                       ) -> tuple[Tensor, FitResult]:
    """One synthetic person (identity, texture, light, background of :func:`sample_identity` and
    :func:`synthesize_clip`) rendered at given head rotations (neutral expression unless given): pose
    ground truth for detector-on-render tests (``bench/fit_real.py``) and the pose regressor's
    training set (``morphface.pipelines.pose_regressor``).

    Args:
        render_model: the model drawn (the full default model).
        fit_model: the model the ground truth refers to (the narrow default model).
        angles: ``(B, 3)`` radians, pitch, yaw, roll (``morphface.camera``).
        identity: which person (its random stream, as in the dataset with ``seed``).
        size: image side in pixels.
        seed: master seed.
        supersample: supersampling factor per axis.
        expressions: ``(B, n_exp)`` expression coefficients (default: zeros, the neutral face).

    Returns:
        ``images (B, 3, size, size)`` in [0, 1] and the ground-truth :class:`FitResult` (its
        ``landmarks``: the fit model's 68 landmarks in pixels).
    """
    config = SynthConfig(size=size, seed=seed, supersample=supersample, audio=False)
    person = sample_identity(render_model, identity, config)
    g = seeded_generator(seed, "posed", identity)
    light = _random_light(g)
    background = random_background((size * supersample, size * supersample), g)
    focal, t0 = _camera_placement(fit_model, person.id_coeffs, size, config.face_scale)
    angles = torch.as_tensor(angles, dtype=torch.float32).reshape(-1, 3)
    B = angles.shape[0]
    exp = torch.zeros(B, render_model.n_exp) if expressions is None else torch.as_tensor(expressions).float()
    if exp.shape != (B, render_model.n_exp):
        raise ValueError(f"expressions must have shape ({B}, {render_model.n_exp}); got {tuple(exp.shape)}")
    fit = FitResult(id_coeffs=person.id_coeffs.expand(B, -1).clone(), exp_coeffs=exp,
                    angles=angles, translation=t0[None].expand(B, -1).clone(), focal=torch.full((B,), focal),
                    image_size=(size, size), camera_kind="perspective", sh=light[None].expand(B, -1).clone())
    big = FitResult(id_coeffs=fit.id_coeffs, exp_coeffs=fit.exp_coeffs, angles=angles, translation=fit.translation,
                    focal=fit.focal * supersample, image_size=(size * supersample, size * supersample))
    with torch.no_grad():
        images, _ = _render_frames(render_model, big.vertices(render_model), big.camera, person.texture, light,
                                   background)
        if supersample > 1:
            images = F.avg_pool2d(images, supersample)
        fit.landmarks, _ = fit.camera.project(fit.vertices(fit_model)[:, fit_model.landmarks.clamp(min=0)])
    return images.clamp(0, 1), fit


def _settings(config: SynthConfig) -> dict:
    """The options every clip of one dataset shares (all but the counts), JSON-ready."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()
            if k not in ("identities", "clips_per_identity")}


def synthesize_dataset(output: str | Path, config: SynthConfig | None = None, progress: bool = True,
                       on_clip: Callable[[Path], None] | None = None) -> list[Path]:
    """Write ``config.identities x config.clips_per_identity`` synthetic clips under ``output``.

    Complete clips already there are kept (resumable); half-written ones are redone.

    Args:
        output: the cache root.
        config: options (default :class:`SynthConfig`).
        progress: show a progress bar.
        on_clip: called with each clip folder after it is complete (e.g. for logging).

    Returns:
        The clip folders, in generation order.

    Raises:
        SettingsMismatchError: ``output`` holds a set made with other settings (module doc).
        NotADirectoryError: ``output`` is an existing file.
    """
    from tqdm.auto import tqdm

    config = config or SynthConfig()
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise NotADirectoryError(f"output {output} is an existing file; expected a folder (new, or one an "
                                 f"earlier synth run wrote)")
    output.mkdir(parents=True, exist_ok=True)
    synth_options = _settings(config)
    check_cache_settings(output, "synth", synth_options, from_meta=lambda meta: meta["synth"])
    full, narrow = load_default_model("full"), load_default_model("narrow")
    jobs = [(i, j) for i in range(config.identities) for j in range(config.clips_per_identity)]
    folders = []
    identity_cache: dict[int, SynthIdentity] = {}
    for i, j in tqdm(jobs, desc="synth", unit="clip", disable=not progress):
        folder = clip_folder(output, i, j)
        folders.append(folder)
        if is_complete(folder):
            continue
        if i not in identity_cache:
            identity_cache.clear()  # identities come in order; keep only the current one
            identity_cache[i] = sample_identity(full, i, config)
        clip = synthesize_clip(full, narrow, identity_cache[i], i, j, config)
        prepare_clip_folder(folder)
        write_clip_frames(folder, clip.frames, config.fps, config.frames_format, config.crf)
        clip.fit.save(folder / PARAMS_NAME)
        if clip.audio is not None:
            save_audio_features(folder, clip.audio)
        write_meta(folder, {
            "fps": float(config.fps), "num_frames": config.frames, "size": config.size, "crop_box": None,
            "source": "synthetic", "model": "default", "audio": clip.audio is not None,
            "version": CACHE_VERSION, "ground_truth": True, "render_model": "default-full",
            "identity_index": i, "clip_index": j, "synth": synth_options,
        })
        if on_clip is not None:
            on_clip(folder)
    return folders
