"""X2Face: the model-free reenactor driven by images, pose codes and audio (Wiles et al., ECCV 2018).

No 3DMM conditions the networks (:class:`~morphface.nets.X2FaceGenerator`): the embedding network
samples the source into an **embedded face**, the driving network encodes the driving frame into a
128-D **driving vector** and decodes it into a flow that samples the embedded face into the output. So
this pipeline derives from the generic :class:`~morphface.pipelines.base.Reenactor`; the 3DMM fits of
the data cache serve only as pose labels for the linear maps of §4 (and for evaluation).

**Training curriculum** (§3.2), on the data contract's same-clip pairs (``source``, ``driving``):

* stage I: ``lambda_l1 * L1(generated, driving)`` only;
* stage II (from step ``stage2_step``): identity losses with a frozen identity network
  (:class:`~morphface.nets.IdentityVGG`; the paper's VGG-Face VGG-11, here any torchvision-layout
  VGG-11/VGG-16 state dict at ``identity_weights``):
  ``L_id(d_A, g_dA)`` = photometric L1 + content L1 on ``identity_layers_same`` (the paper's Conv2-5
  and Conv7), and ``L_id(s_A, g_dR)`` = content L1 on ``identity_layers_other`` (Conv6-7) where
  ``g_dR`` is the source driven by the driving frame of another identity ``d_R``: the next sample of
  the batch (``batch.roll(1)``), pairs of the same identity masked out (``identity_index``, else
  ``clip_index``). Weights as in the paper: each same-identity layer is scaled to be as strong as the
  photometric L1 (``lambda_identity_same`` times it, the scale a detached ratio), each other-identity
  layer to ``lambda_identity_other`` (1/10) of it. The paper restarts stage II with lr / 10: start a
  second run from the stage-I checkpoint with a lower ``lr`` to reproduce that.
* ``identity_loss``: ``"auto"`` runs stage II when ``identity_weights`` is set and skips it otherwise with
  one logged warning (never with a substitute network); ``"on"`` requires the weights
  (:class:`~morphface.errors.WeightsNotFoundError`); ``"off"`` is stage I only. ``"random"`` uses a
  randomly initialised VGG (tests only, with a warning).

**Multi-source**: a batch may carry ``extra_sources (B, N-1, 3, S, S)`` (the dataset's ``extra_sources``
option); the embedded faces of all ``N`` source frames are averaged, as at inference when
``source_image`` is ``(N, 3, H, W)``.

**Other modalities** (§4): :meth:`X2Face.fit_maps` fits, by least squares on the cache's training
frames, ``f_v->p`` / ``f_p->v`` between driving vectors and the cache's 3DMM head pose (yaw/pitch/roll:
fitted by ``morphface preprocess``, ground truth for ``morphface synth``), and ``f_a->v`` from the
cache's frame-aligned MFCC features (:mod:`morphface.audio`) to driving vectors; they are buffers of
``nets["maps"]`` and are saved with :func:`~morphface.pipelines.save_pipeline`. Then

* :meth:`~X2Face.drive_with_pose`: ``v = v_src + W_pv (p - f_v->p(v_src))`` (the source driven by itself,
  its vector moved by the pose change);
* :meth:`~X2Face.drive_with_audio`: ``v = v_src + f_a->v(a) - f_a->v(a_src) - W_pv (p_a - p_a_src)`` with
  ``p_a = f_v->p(f_a->v(a))``: the audio's change of vector with the head-pose change it implies removed
  (the paper's intent; ``a_src`` defaults to the training mean, i.e. a still source).

**Video editing** (§6): :meth:`~X2Face.embed` returns the embedded face; edit it and
:meth:`~X2Face.render_from_embedding` drives it with frames, carrying the edit along.

User-facing angles are in **degrees** (as :meth:`MorphableReenactor.edit`); the maps work in radians.
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ImageSizeError, WeightsNotFoundError
from ..fitting import FitResult
from ..nets import (
    DrivingVectorMaps,
    IdentityVGG,
    X2FaceGenerator,
    X2FaceGeneratorConfig,
    identity_content_loss,
    l1_loss,
    load_identity_vgg,
)
from .base import Reenactor, ReenactorConfig, StepResult, to_signed, to_unit

__all__ = ["X2FaceConfig", "X2Face", "IDENTITY_LOSS_MODES"]

IDENTITY_LOSS_MODES = ("auto", "on", "off", "random")


@dataclasses.dataclass
class X2FaceConfig(ReenactorConfig):
    """Configuration of :class:`X2Face` (fields of :class:`ReenactorConfig` plus these); defaults are the
    paper's sizes (256 x 256, pix2pix U-Net, 128-D driving vector).

    Attributes:
        perceptual: X2Face has no VGG19 perceptual loss: ``"off"`` by default (an optional extra term on
            the output, weight ``lambda_vgg``, when set to ``"auto"``/``"on"``).
        base_channels, max_channels, depth, norm: network sizes (:class:`~morphface.nets.X2FaceGeneratorConfig`).
        vector_dim: driving vector length (128).
        audio_dim: flattened frame-aligned audio features of the maps (the contract's ``2k * 27 = 108``).
        identity_loss: stage II mode (module docstring): ``"auto"``, ``"on"``, ``"off"`` or ``"random"``.
        identity_weights: torchvision-layout VGG-11/VGG-16 state dict (``.pth`` or ``.safetensors``).
        stage2_step: first step of stage II (the paper: once stage I's loss has converged).
        identity_layers_same: layers of ``L_id(d_A, g_dA)`` (the paper's Conv2-5, Conv7 of VGG-11).
        identity_layers_other: layers of ``L_id(s_A, g_dR)`` (Conv6-7).
        lambda_l1: weight of the photometric L1.
        lambda_identity_same: strength of each same-identity content layer relative to the photometric L1 (1).
        lambda_identity_other: the same for the other-identity layers (1/10).
        lambda_vgg: weight of the optional VGG19 perceptual term.
    """

    perceptual: str = "off"
    base_channels: int = 64
    max_channels: int = 512
    depth: int = 8
    norm: str = "batch"
    vector_dim: int = 128
    flow_scale: float = 1.0
    audio_dim: int = 108
    identity_loss: str = "auto"
    identity_weights: str | None = None
    stage2_step: int = 0
    identity_layers_same: tuple[str, ...] = ("relu2_1", "relu3_1", "relu3_2", "relu4_1", "relu5_1")
    identity_layers_other: tuple[str, ...] = ("relu4_2", "relu5_1")
    lambda_l1: float = 1.0
    lambda_identity_same: float = 1.0
    lambda_identity_other: float = 0.1
    lambda_vgg: float = 1.0

    def validate(self) -> None:
        super().validate()
        if self.identity_loss not in IDENTITY_LOSS_MODES:
            raise ValueError(f"identity_loss must be one of {IDENTITY_LOSS_MODES}; got {self.identity_loss!r}")
        if self.identity_loss in ("off", "random") and self.identity_weights is not None:
            raise ValueError(f"identity_weights={self.identity_weights!r} was given but identity_loss="
                             f"{self.identity_loss!r} does not use it")
        if self.stage2_step < 0:
            raise ValueError(f"stage2_step must be >= 0; got {self.stage2_step}")
        for name in ("lambda_l1", "lambda_identity_same", "lambda_identity_other", "lambda_vgg"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0; got {getattr(self, name)}")
        self.identity_layers_same = tuple(self.identity_layers_same)
        self.identity_layers_other = tuple(self.identity_layers_other)


class X2Face(Reenactor):
    """The X2Face pipeline (module docstring); ``nets``: ``"generator"`` (embedding + driving networks)
    and ``"maps"`` (the fitted linear maps, no trainable parameters)."""

    name = "x2face"
    config_class = X2FaceConfig
    config: X2FaceConfig

    def __init__(self, config: X2FaceConfig | Mapping[str, Any] | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        cfg = self.config
        gen = X2FaceGenerator(X2FaceGeneratorConfig(
            image_size=cfg.image_size, base_channels=cfg.base_channels, max_channels=cfg.max_channels,
            depth=cfg.depth, norm=cfg.norm, width=cfg.width, vector_dim=cfg.vector_dim,
            flow_scale=cfg.flow_scale))
        self.nets = nn.ModuleDict({"generator": gen, "maps": DrivingVectorMaps(cfg.vector_dim, cfg.audio_dim)})
        self._skip_notice = False
        self.identity = self._build_identity()
        self._step = 0

    def _build_identity(self) -> IdentityVGG | None:
        cfg = self.config
        if cfg.identity_loss == "off":
            return None
        if cfg.identity_loss == "random":
            warnings.warn("X2Face: identity_loss='random' uses a randomly initialised VGG-11; its identity "
                          "losses are not identity losses (use only for tests)", stacklevel=3)
            return IdentityVGG("vgg11")
        if cfg.identity_weights is None:
            if cfg.identity_loss == "on":
                raise WeightsNotFoundError("X2Face: identity_loss='on' (stage II) needs identity network weights: "
                                           "set identity_weights to a torchvision-layout VGG-11/VGG-16 state dict")
            self._skip_notice = True  # said once, at the first training step (not when loading for inference)
            return None
        return load_identity_vgg(cfg.identity_weights)

    def config_dict(self) -> dict[str, Any]:
        """JSON-serialisable config (layer tuples as lists, as they come back from a checkpoint)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in super().config_dict().items()}

    # ------------------------------------------------------------------ protocol
    def set_step(self, step: int) -> None:
        """The trainer's step counter (stage II starts at ``config.stage2_step``)."""
        self._step = int(step)

    @property
    def stage(self) -> int:
        """The curriculum stage of the current step: 2 when the identity losses run, else 1."""
        return 2 if self.identity is not None and self._step >= self.config.stage2_step else 1

    def _sources(self, batch: Mapping[str, Tensor]) -> Tensor:
        """``(B, N, 3, S, S)`` in [-1, 1]: the source and any ``extra_sources``."""
        B = self._check_images(batch, "source")
        src = batch["source"][:, None]
        extra = batch.get("extra_sources")
        if extra is not None:
            S = self.config.image_size
            if extra.dim() != 5 or extra.shape[0] != B or tuple(extra.shape[2:]) != (3, S, S):
                raise ImageSizeError(f"batch['extra_sources'] must have shape ({B}, N, 3, {S}, {S}); got "
                                     f"{tuple(extra.shape)}")
            src = torch.cat([src, extra.to(src)], 1)
        return to_signed(src)

    def generate(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The generator on a batch: ``fake`` (= ``warped``: X2Face's output is a warp), ``embedded``
        ``(B, 3, S, S)`` in [-1, 1], ``embedding_flow (B, N, 2, S, S)``, ``driving_flow (B, 2, S, S)`` in
        pixels and ``vector (B, D)``."""
        self._check_images(batch, "source", "driving")
        out = self.nets["generator"](self._sources(batch), to_signed(batch["driving"]))
        return {"fake": out.image, "warped": out.image, "embedded": out.embedded,
                "embedding_flow": out.embedding_flow, "driving_flow": out.driving_flow, "vector": out.vector}

    def _other_identity(self, batch: Mapping[str, Tensor], B: int) -> Tensor:
        """``(B,)`` 1 where ``roll(1)`` pairs a sample with another identity."""
        key = "identity_index" if "identity_index" in batch else "clip_index"
        if key not in batch:
            raise ValueError("X2Face stage II needs batch['identity_index'] (or 'clip_index') to pick driving "
                             "frames of other identities")
        ids = batch[key].reshape(B)
        return (ids != ids.roll(1)).float()

    def generator_step(self, batch: Mapping[str, Tensor]) -> StepResult:
        cfg = self.config
        B = self._check_images(batch, "source", "driving")
        if self._skip_notice:
            self._skip_notice = False
            warnings.warn("X2Face: no identity_weights given: training stage II (identity losses) is SKIPPED and "
                          "the model trains with stage I's L1 only. Set identity_weights to a torchvision-layout "
                          "VGG-11/VGG-16 state dict (ideally VGG-Face) to run it.", stacklevel=2)
        out = self.generate(batch)
        fake = out["fake"]
        target = to_signed(batch["driving"]).to(fake)
        l1 = l1_loss(fake, target)
        loss = cfg.lambda_l1 * l1
        logs: dict[str, Tensor] = {"l1": l1.detach(), "stage": torch.tensor(float(self.stage))}
        if self.perceptual is not None and cfg.lambda_vgg > 0:
            vgg = self.perceptual(fake, target)
            loss = loss + cfg.lambda_vgg * vgg
            logs["vgg"] = vgg.detach()
        if self.stage == 2:
            # L_identity(d_A, g_dA): content layers, each as strong as the photometric L1
            same, per = identity_content_loss(self.identity, fake, target, cfg.identity_layers_same)
            scale = [cfg.lambda_identity_same * l1.detach() / p.detach().clamp_min(1e-8) for p in per]
            id_same = sum(s * p for s, p in zip(scale, per))
            # L_identity(s_A, g_dR): the source driven by another identity's frame keeps the source's identity
            gen = self.nets["generator"]
            other = self._other_identity(batch, B).to(fake)
            v_r = gen.driving.encode(target.roll(1, 0))
            g_r, _ = gen.render(out["embedded"], v_r)
            source = to_signed(batch["source"]).to(fake)
            feats = self.identity(torch.cat([g_r, source.detach()]), cfg.identity_layers_other)
            w = other.view(B, 1, 1, 1)
            n = other.sum().clamp_min(1.0)
            id_other = fake.new_zeros(())
            for f in feats:
                d = ((f[:B] - f[B:].detach()).abs() * w).sum() / (n * f[0].numel())
                id_other = id_other + cfg.lambda_identity_other * l1.detach() / d.detach().clamp_min(1e-8) * d
            loss = loss + id_same + id_other
            logs.update(id_same=same.detach(), id_other=id_other.detach(), other_pairs=other.mean().detach())
            out["fake_other"] = g_r
        return StepResult(loss, logs, out)

    def discriminator_step(self, batch: Mapping[str, Tensor], outputs: dict[str, Tensor]) -> None:
        """X2Face has no discriminator."""
        return None

    def visuals(self, batch: Mapping[str, Tensor], outputs: dict[str, Tensor]) -> dict[str, Tensor]:
        """source | embedded face | output | driving frame, each ``(B, 3, S, S)`` in [0, 1]."""
        return {"source": batch["source"], "embedded": to_unit(outputs["embedded"]),
                "output": to_unit(outputs["fake"]), "target": batch["driving"]}

    # ------------------------------------------------------------------ inference helpers
    def _source_batch(self, source_image: Tensor, crop: bool | None) -> Tensor:
        """``(1, N, 3, S, S)`` in [-1, 1] from ``(3, H, W)`` or ``(N, 3, H, W)`` (several frames of one face)."""
        if isinstance(source_image, Tensor) and source_image.dim() == 4:
            imgs = self.prepare_driving(source_image, crop=crop).images
        else:
            imgs = self.prepare_source(source_image, crop=crop).images[None]
        return to_signed(imgs)[None]

    def _driving_batch(self, frames: Tensor, crop: bool | None) -> Tensor:
        return to_signed(self.prepare_driving(frames, crop=crop).images)

    def _embedded(self, source_image: Tensor, crop: bool | None) -> Tensor:
        return self.nets["generator"].embed(self._source_batch(source_image, crop))[0]

    def _render_vectors(self, embedded: Tensor, vectors: Tensor, batch_size: int) -> Tensor:
        gen = self.nets["generator"]
        frames = []
        for a in range(0, vectors.shape[0], batch_size):
            v = vectors[a:a + batch_size]
            img, _ = gen.render(embedded.expand(v.shape[0], -1, -1, -1), v)
            frames.append(to_unit(img).float())
        return torch.cat(frames)

    def _vectors(self, frames: Tensor, batch_size: int) -> Tensor:
        enc = self.nets["generator"].driving.encode
        return torch.cat([enc(frames[a:a + batch_size]) for a in range(0, frames.shape[0], batch_size)])

    # ------------------------------------------------------------------ inference: frames
    def reenact(self, source_image: Tensor, driving_frames: Tensor | None = None,
                driving_params: FitResult | Tensor | None = None, *,
                source_fit: FitResult | Tensor | None = None, audio: Tensor | None = None,
                relative: bool = False, crop: bool | None = None, batch_size: int = 8,
                output: str = "fake") -> Tensor:
        """Drive a source face with driving frames.

        Args:
            source_image: ``(3, H, W)`` RGB in [0, 1], or ``(N, 3, H, W)`` frames of one face (their
                embedded faces are averaged), or a path.
            driving_frames: ``(T, 3, H', W')`` RGB in [0, 1] (or a video path); required: X2Face is
                driven by images.
            driving_params, source_fit, audio: accepted with the shared interface and not used (no 3DMM
                conditions X2Face; audio drives it through :meth:`drive_with_audio`).
            relative: add the change of the driving vector since the first driving frame to the source's
                own vector (keeps the source's pose; the vector arithmetic of §4) instead of using the
                driving vectors as they are.
            crop: crop around the faces (default: when an input is not ``S x S``).
            batch_size: frames per network call.
            output: ``"fake"`` or ``"warped"`` (the same for X2Face, whose output is a warp).

        Returns:
            ``(T, 3, S, S)`` frames in [0, 1].
        """
        if output not in ("fake", "warped"):
            raise ValueError(f"output must be 'fake' or 'warped'; got {output!r}")
        if driving_frames is None:
            raise ValueError("X2Face is driven by images: pass driving_frames (T, 3, H, W); a 3DMM fit alone "
                             "cannot drive it (use drive_with_pose for head-pose control)")
        with self._eval():
            src = self._source_batch(source_image, crop)
            embedded = self.nets["generator"].embed(src)[0]
            vectors = self._vectors(self._driving_batch(driving_frames, crop), batch_size)
            if relative:
                own = self.nets["generator"].driving.encode(src[0, :1])
                vectors = own + vectors - vectors[:1]
            return self._render_vectors(embedded, vectors, batch_size)

    def reconstruct(self, frames: Tensor, params: FitResult | Tensor | None = None, *,
                    audio: Tensor | None = None, crop: bool | None = None, batch_size: int = 8) -> Tensor:
        """Self-reenactment: the clip's first frame driven by the whole clip, ``(T, 3, S, S)`` in [0, 1]
        (``params`` and ``audio`` are not used)."""
        with self._eval():
            clip = self.prepare_driving(frames, crop=crop).images
        return self.reenact(clip[0], clip, crop=False, batch_size=batch_size)

    def embed(self, frames: Tensor, *, crop: bool | None = None) -> Tensor:
        """The embedded face of one or several frames of a face (§6: an editable texture-like image).

        Args:
            frames: ``(3, H, W)`` or ``(N, 3, H, W)`` RGB in [0, 1] (several: averaged embedded faces).

        Returns:
            ``(3, S, S)`` in [0, 1].
        """
        with self._eval():
            return to_unit(self._embedded(frames, crop)[0])

    def render_from_embedding(self, embedded: Tensor, driving_frames: Tensor, *, crop: bool | None = None,
                              batch_size: int = 8) -> Tensor:
        """Drive an (edited) embedded face with frames: the edit follows the face through the clip.

        Args:
            embedded: ``(3, S, S)`` in [0, 1], e.g. :meth:`embed`'s output painted on.
            driving_frames: ``(T, 3, H, W)`` RGB in [0, 1].

        Returns:
            ``(T, 3, S, S)`` in [0, 1].
        """
        S = self.config.image_size
        if not isinstance(embedded, Tensor) or embedded.shape != (3, S, S):
            shape = tuple(embedded.shape) if isinstance(embedded, Tensor) else type(embedded).__name__
            raise ImageSizeError(f"embedded must have shape (3, {S}, {S}); got {shape}")
        with self._eval():
            emb = to_signed(embedded.to(self.device, torch.float32))[None]
            vectors = self._vectors(self._driving_batch(driving_frames, crop), batch_size)
            return self._render_vectors(emb, vectors, batch_size)

    def driving_vectors(self, frames: Tensor, *, crop: bool | None = None, batch_size: int = 8) -> Tensor:
        """``(T, D)`` driving vectors of frames ``(T, 3, H, W)`` in [0, 1]."""
        with self._eval():
            return self._vectors(self._driving_batch(frames, crop), batch_size)

    # ------------------------------------------------------------------ other modalities
    def fit_maps(self, root: str | os.PathLike, *, split: str = "train", test_fraction: float = 0.1,
                 test_identities: Sequence[str] | None = None, max_frames: int | None = None,
                 pose_ridge: float = 1e-3, audio_ridge: float = 1.0, batch_size: int = 16) -> dict[str, float]:
        """Fit the pose and audio maps by least squares on the frames of a clip cache (§4).

        Args:
            root: a clip cache (``morphface preprocess`` / ``morphface synth``); its per-frame 3DMM fits
                give the head pose, its ``audio.safetensors`` the frame-aligned MFCC features.
            split, test_fraction, test_identities: which identities (the training ones by default, as
                :func:`morphface.data.split_identities`).
            max_frames: use at most this many frames per clip.
            pose_ridge, audio_ridge: ridge penalties of ``f_v->p`` and ``f_a->v`` (ridge-regularised least
                squares; the audio map from ~100 features is under-constrained).

        Returns:
            ``{"frames": N, "audio_frames": N_a, "pose_mae_deg": ...}``: the fit's training error of ``f_v->p``.

        Raises:
            ValueError: no clip in the split, or fewer than 2 frames.
        """
        from ..data import split_identities
        from ..data.cache import PARAMS_NAME, find_clips, load_audio_features, read_clip_frames

        records = find_clips(root)
        chosen = set(split_identities([r.identity for r in records], split, test_fraction,
                                      list(test_identities) if test_identities is not None else None))
        records = [r for r in records if r.identity in chosen]
        if not records:
            raise ValueError(f"the {split!r} split of {root} has no clips")
        vecs, poses, a_vecs, auds = [], [], [], []
        with self._eval():
            for r in records:
                n = r.num_frames if max_frames is None else min(r.num_frames, max_frames)
                frames = read_clip_frames(r.path, list(range(n))).float().div(255.0).to(self.device)
                frames = self._resize(frames)
                v = self._vectors(to_signed(frames), batch_size)
                fit = FitResult.load(r.path / PARAMS_NAME)[:n]
                vecs.append(v)
                poses.append(fit.angles.to(v))
                audio = load_audio_features(r.path) if r.meta.get("audio") else None
                if audio is not None:
                    a_vecs.append(v)
                    auds.append(audio[:n].reshape(n, -1).to(v))
            v, p = torch.cat(vecs), torch.cat(poses)
            maps = self.nets["maps"]
            maps.fit_pose(v, p, pose_ridge)
            stats = {"frames": float(v.shape[0]), "audio_frames": 0.0,
                     "pose_mae_deg": float(math.degrees(float((maps.pose(v) - p).abs().mean())))}
            if auds and auds[0].shape[1] == maps.audio_dim:
                maps.fit_audio(torch.cat(auds), torch.cat(a_vecs), audio_ridge)
                stats["audio_frames"] = float(sum(a.shape[0] for a in auds))
            elif auds:
                warnings.warn(f"X2Face.fit_maps: the cache's audio features have {auds[0].shape[1]} values per frame; "
                              f"the pipeline's audio_dim is {maps.audio_dim}: the audio map is not fitted",
                              stacklevel=2)
        return stats

    def _require(self, what: str) -> DrivingVectorMaps:
        maps = self.nets["maps"]
        if not bool(getattr(maps, f"{what}_fitted")):
            raise ValueError(f"X2Face: the {what} map is not fitted: call fit_maps(cache_root) (and save the "
                             "pipeline) first")
        return maps

    def pose_of(self, frames: Tensor, *, crop: bool | None = None, batch_size: int = 8) -> Tensor:
        """Head pose predicted from the driving vectors by ``f_v->p``: ``(T, 3)`` pitch, yaw, roll in degrees."""
        maps = self._require("pose")
        if isinstance(frames, Tensor) and frames.dim() == 3:
            frames = frames[None]
        with self._eval():
            return torch.rad2deg(maps.pose(self._vectors(self._driving_batch(frames, crop), batch_size)))

    def drive_with_pose(self, source: Tensor, angles: Tensor | Sequence[Sequence[float]], *,
                        crop: bool | None = None, batch_size: int = 8) -> Tensor:
        """Turn a face to given head poses (§4.1): ``v = v_src + W_pv (p - f_v->p(v_src))``.

        Args:
            source: ``(3, H, W)`` RGB in [0, 1] (or ``(N, 3, H, W)`` frames of one face: the first gives
                ``v_src``, all are embedded).
            angles: ``(T, 3)`` absolute pitch, yaw, roll in **degrees** (``morphface.camera`` signs); NaN
                keeps the source's own value of that angle.

        Returns:
            ``(T, 3, S, S)`` in [0, 1].
        """
        maps = self._require("pose")
        with self._eval():
            src = self._source_batch(source, crop)
            embedded = self.nets["generator"].embed(src)[0]
            v_src = self.nets["generator"].driving.encode(src[0, :1])
            p_src = maps.pose(v_src)
            a = torch.deg2rad(torch.as_tensor(angles, dtype=v_src.dtype, device=v_src.device))
            if a.dim() == 1:
                a = a[None]
            if a.dim() != 2 or a.shape[1] != 3:
                raise ValueError(f"angles must have shape (T, 3) (pitch, yaw, roll in degrees); got {tuple(a.shape)}")
            a = torch.where(torch.isnan(a), p_src.expand_as(a), a)
            vectors = v_src + maps.pose_delta(a - p_src)
            return self._render_vectors(embedded, vectors, batch_size)

    def drive_with_audio(self, source: Tensor, audio: Tensor | str | os.PathLike, fps: float = 25.0, *,
                         sample_rate: int = 16000, source_audio: Tensor | None = None, crop: bool | None = None,
                         batch_size: int = 8) -> Tensor:
        """Animate a face with speech (§4.2); see the module docstring for the vector arithmetic.

        Args:
            source: ``(3, H, W)`` RGB in [0, 1] (or ``(N, 3, H, W)``).
            audio: ``(T, 2k * D)`` (or ``(T, 2k, D)``) frame-aligned MFCC features of
                :func:`morphface.audio.frame_aligned_features` at ``fps``; or a ``(samples,)`` waveform at
                ``sample_rate``; or the path of an audio/video file (decoded at ``sample_rate``).
            fps: frame rate of the generated frames.
            source_audio: ``(2k * D,)`` features of the source frame's audio; default: the training mean.

        Returns:
            ``(T, 3, S, S)`` in [0, 1], one frame per ``1 / fps`` s of audio.
        """
        maps = self._require("audio")
        feats = self._audio_features(audio, fps, sample_rate).to(self.device, torch.float32)
        if feats.shape[1] != maps.audio_dim:
            raise ValueError(f"audio features must have {maps.audio_dim} values per frame; got {feats.shape[1]}")
        with self._eval():
            src = self._source_batch(source, crop)
            embedded = self.nets["generator"].embed(src)[0]
            v_src = self.nets["generator"].driving.encode(src[0, :1])
            a_src = maps.audio_mean[None] if source_audio is None else \
                torch.as_tensor(source_audio, dtype=torch.float32, device=self.device).reshape(1, -1)
            va, va_src = maps.audio_vector(feats), maps.audio_vector(a_src)
            if bool(maps.pose_fitted):
                va = va - maps.pose_delta(maps.pose(va) - maps.pose(va_src))
            return self._render_vectors(embedded, v_src + va - va_src, batch_size)

    @staticmethod
    def _audio_features(audio: Tensor | str | os.PathLike, fps: float, sample_rate: int) -> Tensor:
        from ..audio import frame_aligned_features

        if isinstance(audio, (str, Path)) or hasattr(audio, "__fspath__"):
            from ..audio import load_audio

            wave, sr = load_audio(audio, sample_rate)
            return frame_aligned_features(wave, sr, fps, flatten=True)
        a = torch.as_tensor(audio, dtype=torch.float32)
        if a.dim() == 1:
            return frame_aligned_features(a, sample_rate, fps, flatten=True)
        if a.dim() == 3:
            a = a.reshape(a.shape[0], -1)
        if a.dim() != 2:
            raise ValueError(f"audio must be (T, A) features, (T, 2k, D) features, a (samples,) waveform or a "
                             f"path; got {tuple(a.shape)}")
        return a
