"""What HeadGAN and IFaceUV share: config, the training-protocol plumbing and the inference API.

A pipeline is an ``nn.Module`` holding its trainable networks in ``self.nets`` (an ``nn.ModuleDict``
called only through that dict, as :mod:`morphface.train.protocol` requires), the morphable model
(``self.model``, not trained, rebuilt from the config) and the optional frozen VGG19 of the perceptual
loss. Subclasses implement ``generate(batch) -> outputs`` (the differentiable forward pass on a batch
dict of the data contract), ``generator_step``, ``discriminator_step`` and ``visuals``.

**Inference** (:meth:`Reenactor.reenact`, :meth:`~Reenactor.reconstruct`, :meth:`~Reenactor.edit`,
:meth:`~Reenactor.frontalize`, :meth:`~Reenactor.encode`, :meth:`~Reenactor.decode`) runs without
gradients in eval mode. Images are ``(3, H, W)`` RGB in [0, 1]. Faces are fitted with the configured
landmark detector and :func:`~morphface.fitting.fit_landmarks` / :func:`~morphface.fitting.fit_video`
unless a fit is passed (``source_fit=``, ``driving_params=``: the way to skip detection, e.g. for
synthetic renders). Photos larger than the pipeline's ``image_size`` are cropped around the face with
the FOMM/VoxCeleb rule of :func:`~morphface.fitting.crop_box_from_landmarks` (one box for a whole
driving clip), so every output is a ``(T, 3, S, S)`` crop, ``S = config.image_size``, in [0, 1]. The
transferred parameters are the source's identity with the driving expression and head pose
(:func:`~morphface.pipelines.params.transfer_motion`), rendered on the fly into the networks' 3D inputs.
User-facing angles (:meth:`~Reenactor.edit`) are in **degrees**; everything else is in radians.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import math
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import InputShapeError, TrainingDivergedError
from ..fitting import CropTransform, FitResult
from ..morphable import MorphableModel
from .params import ParamLayout, crop_fit, motion_windows, rescale_fit, transfer_motion
from .perceptual import PERCEPTUAL_MODES, build_perceptual_loss

__all__ = ["ReenactorConfig", "Reenactor", "Prepared", "StepResult", "to_signed", "to_unit",
           "load_pipeline_model"]


class StepResult(NamedTuple):
    """What ``generator_step`` / ``discriminator_step`` return (the trainer's protocol: a scalar loss,
    ``logs`` of 0-dim tensors and ``outputs`` for the discriminator step and the visuals)."""

    loss: Tensor
    logs: dict[str, Tensor]
    outputs: dict[str, Tensor]


def to_signed(image: Tensor) -> Tensor:
    """[0, 1] -> [-1, 1] (the networks' range)."""
    return image * 2 - 1


def to_unit(image: Tensor) -> Tensor:
    """[-1, 1] -> [0, 1], clamped."""
    return ((image + 1) * 0.5).clamp(0.0, 1.0)


def load_pipeline_model(spec: str) -> MorphableModel:
    """The morphable model named in a pipeline config: ``"default"`` is
    ``load_default_model("narrow")`` (what the data cache is fitted with); anything else is a path read
    by :func:`morphface.morphable.load_model`."""
    from ..morphable import load_default_model, load_model

    if spec == "default":
        return load_default_model("narrow")
    return load_model(spec)


@dataclasses.dataclass
class ReenactorConfig:
    """Fields every pipeline has.

    Attributes:
        image_size: side of the square face crops in pixels (256 in both papers; a multiple of 32).
        model: ``"default"`` (the embedded ICT model, narrow face region) or a model file path.
        width: multiplier of all generator channel counts (1 = the papers' sizes; tests use ~1/16).
        num_previous: ``k``, previous driving frames in the 3D conditioning (HeadGAN: 2).
        window_radius: ``w``, motion-window half length (PIRenderer/IFaceUV: 13, 27 frames).
        perceptual: VGG loss mode, see :mod:`morphface.pipelines.perceptual` (``"auto"``: on when
            weights are found, else off with a warning).
        vgg_weights: path of torchvision's ``vgg19-dcbb9e9d.pth`` (``None``: torch hub's cache).
        detector: landmark detector backend for inference (:func:`morphface.fitting.make_detector`).
        render_backend: rasterisation backend of the on-the-fly renders.
    """

    image_size: int = 256
    model: str = "default"
    width: float = 1.0
    num_previous: int = 2
    window_radius: int = 13
    perceptual: str = "auto"
    vgg_weights: str | None = None
    detector: str = "auto"
    render_backend: str = "auto"

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad field."""
        if self.image_size < 32 or self.image_size % 32:
            raise ValueError(f"image_size must be a positive multiple of 32; got {self.image_size}")
        if not self.width > 0:
            raise ValueError(f"width must be > 0; got {self.width}")
        if self.num_previous < 0 or self.window_radius < self.num_previous:
            raise ValueError(f"need 0 <= num_previous <= window_radius; got {self.num_previous}, "
                             f"{self.window_radius}")
        if self.perceptual not in PERCEPTUAL_MODES:
            raise ValueError(f"perceptual must be one of {PERCEPTUAL_MODES}; got {self.perceptual!r}")


class Prepared(NamedTuple):
    """A face image or clip ready for a pipeline.

    Attributes:
        images: ``(3, S, S)`` (an image) or ``(T, 3, S, S)`` (a clip), RGB in [0, 1].
        fit: the perspective fit in the crop's pixels (batch 1 or ``T``).
        crop: the crop applied to the input (``None`` when the input was used as it is, or resized).
    """

    images: Tensor
    fit: FitResult
    crop: CropTransform | None


class Reenactor(nn.Module, abc.ABC):
    """Base class of the trainable reenactment pipelines (see the module docstring)."""

    #: registry name (``morphface.train`` builds the pipeline from it)
    name: ClassVar[str] = ""
    config_class: ClassVar[type[ReenactorConfig]] = ReenactorConfig
    #: the model and the VGG loss are rebuilt from the config: checkpoints hold only ``nets``
    nets: nn.ModuleDict

    def __init__(self, config: ReenactorConfig | Mapping[str, Any] | None = None, **overrides: Any) -> None:
        super().__init__()
        cfg = self._make_config(config, overrides)
        cfg.validate()
        self.config = cfg
        self.model = load_pipeline_model(cfg.model)
        self.layout = ParamLayout.of(self.model)
        self.perceptual = build_perceptual_loss(cfg.perceptual, cfg.vgg_weights, type(self).__name__)
        self._detector = None

    # ------------------------------------------------------------------ config
    @classmethod
    def _make_config(cls, config, overrides) -> ReenactorConfig:
        if config is None:
            config = {}
        if isinstance(config, cls.config_class):
            return dataclasses.replace(config, **overrides) if overrides else config
        if not isinstance(config, Mapping):
            raise TypeError(f"config must be a {cls.config_class.__name__} or a dict; got "
                            f"{type(config).__name__}")
        merged = {**config, **overrides}
        known = {f.name for f in dataclasses.fields(cls.config_class)}
        unknown = sorted(set(merged) - known)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} config field(s) {unknown}; known fields: "
                             f"{sorted(known)}")
        return cls.config_class(**merged)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Reenactor:
        """Registry factory: the pipeline built from a config dict (as :meth:`config_dict` returns)."""
        return cls(dict(config))

    def config_dict(self) -> dict[str, Any]:
        """JSON-serialisable config that rebuilds an identical (untrained) pipeline."""
        return dataclasses.asdict(self.config)

    # ------------------------------------------------------------------ protocol plumbing
    def networks(self) -> dict[str, nn.Module]:
        return dict(self.nets)

    def discriminator_names(self) -> list[str]:
        return [n for n in self.nets if "discriminator" in n]

    @property
    def device(self) -> torch.device:
        return self.model.mean.device

    def make_optimizers(self, lr: float = 2e-4, betas: tuple[float, float] = (0.5, 0.999)) -> dict[str, Any]:
        """One Adam per network (the papers' learning rate 2e-4), for :meth:`training_step`."""
        return {n: torch.optim.Adam(net.parameters(), lr=lr, betas=betas) for n, net in self.nets.items()
                if any(p.requires_grad for p in net.parameters())}

    def training_step(self, batch: Mapping[str, Tensor], optimizers: Mapping[str, Any] | None = None
                      ) -> dict[str, float]:
        """One generator update and one discriminator update, for users running their own loop.

        Args:
            batch: a batch dict of the data contract, on the pipeline's device.
            optimizers: network name -> optimiser (e.g. :meth:`make_optimizers`); networks without one
                only accumulate gradients.

        Returns:
            ``{"loss_g": ..., "g/<term>": ..., "loss_d": ..., "d/<term>": ...}`` as floats.

        Raises:
            TrainingDivergedError: a loss is NaN or infinite.
        """
        optimizers = dict(optimizers or {})
        disc = set(self.discriminator_names())
        gen = [n for n in self.nets if n not in disc]

        def zero(names):
            for n in names:
                if n in optimizers:
                    optimizers[n].zero_grad(set_to_none=True)
                else:
                    self.nets[n].zero_grad(set_to_none=True)

        def check(name, loss):
            if not bool(torch.isfinite(loss.detach())):
                raise TrainingDivergedError(f"{type(self).__name__}.{name} returned a non-finite loss "
                                            f"({float(loss)})")

        zero(gen)
        res = self.generator_step(batch)
        check("generator_step", res.loss)
        res.loss.backward()
        for n in gen:
            if n in optimizers:
                optimizers[n].step()
        logs = {"loss_g": float(res.loss.detach())}
        logs.update({f"g/{k}": float(v) for k, v in res.logs.items()})
        d = self.discriminator_step(batch, {k: v.detach() for k, v in res.outputs.items()})
        if d is not None:
            zero(disc)
            check("discriminator_step", d.loss)
            d.loss.backward()
            for n in disc:
                if n in optimizers:
                    optimizers[n].step()
            logs["loss_d"] = float(d.loss.detach())
            logs.update({f"d/{k}": float(v) for k, v in d.logs.items()})
        return logs

    # ------------------------------------------------------------------ subclass hooks
    @abc.abstractmethod
    def generate(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Differentiable forward pass on a batch dict of the data contract; ``outputs["fake"]`` is
        ``(B, 3, S, S)`` in [-1, 1]. Missing 3D inputs are rendered from the batch's parameters."""

    @abc.abstractmethod
    def generator_step(self, batch: Mapping[str, Tensor]) -> StepResult:
        """Forward pass and losses of the generator update."""

    @abc.abstractmethod
    def discriminator_step(self, batch: Mapping[str, Tensor],
                           outputs: dict[str, Tensor]) -> StepResult | None:
        """Losses of the discriminator update on detached generator outputs, or ``None``."""

    @abc.abstractmethod
    def visuals(self, batch: Mapping[str, Tensor], outputs: dict[str, Tensor]) -> dict[str, Tensor]:
        """Images for the training grids, ``(B, 3, H, W)`` in [0, 1]."""

    def _source_inputs(self, source: Tensor, source_params: Tensor) -> dict[str, Tensor]:
        """Batch entries that depend on the source only (computed once per :meth:`reenact`)."""
        return {}

    def _sequence_inputs(self, params: Tensor, indices: Tensor) -> dict[str, Tensor]:
        """Batch entries of driving frames ``indices`` of a sequence ``params (T, D_p)``."""
        return {}

    # ------------------------------------------------------------------ batch helpers
    def _check_images(self, batch: Mapping[str, Tensor], *keys: str) -> int:
        S = self.config.image_size
        B = None
        for k in keys:
            if k not in batch:
                raise ValueError(f"{type(self).__name__}: the batch has no {k!r} (B, 3, {S}, {S}); it has "
                                 f"{sorted(batch)}")
            x = batch[k]
            ok = isinstance(x, Tensor) and x.dim() == 4 and x.shape[1:] == (3, S, S)
            if not ok or (B and x.shape[0] != B):
                shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
                raise InputShapeError(f"{type(self).__name__}: batch[{k!r}] must have shape ({B or 'B'}, 3, {S}, "
                                 f"{S}); got {shape}")
            B = x.shape[0]
        return B

    def _params(self, batch: Mapping[str, Tensor], key: str) -> Tensor:
        if key not in batch:
            raise ValueError(f"{type(self).__name__}: the batch has no {key!r} (B, {self.layout.dim}); it "
                             f"has {sorted(batch)}")
        return self.layout.check(batch[key], f"batch[{key!r}]")

    def _motion(self, batch: Mapping[str, Tensor], key: str, params_key: str) -> Tensor:
        """``(B, 2w + 1, D_m)`` motion windows: the batch's, or static windows of its parameters."""
        w = self.config.window_radius
        if key in batch:
            m = batch[key]
            want = (2 * w + 1, self.layout.motion_dim)
            if m.dim() != 3 or tuple(m.shape[1:]) != want:
                raise ValueError(f"batch[{key!r}] must have shape (B, {want[0]}, {want[1]}); got "
                                 f"{tuple(m.shape)}")
            return m
        return self.layout.motion(self._params(batch, params_key))[:, None].expand(-1, 2 * w + 1, -1)

    # ------------------------------------------------------------------ inference: preparing faces
    @property
    def detector(self):
        """The landmark detector of inference (built on first use from ``config.detector``; assignable)."""
        if self._detector is None:
            from ..fitting import make_detector

            self._detector = make_detector(self.config.detector)
        return self._detector

    @detector.setter
    def detector(self, value) -> None:
        self._detector = value

    def _image(self, image: Tensor, name: str) -> Tensor:
        if isinstance(image, str) or hasattr(image, "__fspath__"):
            from ..io import read_image

            image = read_image(image)
        if not isinstance(image, Tensor) or image.dim() != 3 or image.shape[0] != 3:
            shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
            raise ValueError(f"{name} must be a (3, H, W) RGB image in [0, 1]; got {shape}")
        return image.to(self.device, torch.float32)

    def _resize(self, images: Tensor) -> Tensor:
        S = self.config.image_size
        if tuple(images.shape[-2:]) == (S, S):
            return images
        shrink = images.shape[-1] > S
        return F.interpolate(images, size=(S, S), mode="bilinear", align_corners=False,
                             antialias=shrink).clamp(0, 1)

    def _as_fit(self, fit: FitResult | Tensor, image_size: tuple[int, int], name: str) -> FitResult:
        """A FitResult on the pipeline's device; a ``(B, D_p)`` tensor is read in ``image_size`` pixels."""
        if isinstance(fit, Tensor):
            fit = self.layout.unpack(fit.to(self.device, torch.float32), image_size)
        if not isinstance(fit, FitResult):
            raise ValueError(f"{name} must be a FitResult or a (B, {self.layout.dim}) parameter tensor; got "
                             f"{type(fit).__name__}")
        if fit.camera_kind != "perspective":
            raise ValueError(f"{name} must be a perspective fit; got {fit.camera_kind!r}")
        return fit.to(self.device, torch.float32)

    def _fit_landmarks(self, landmarks: Tensor, image_size: tuple[int, int]) -> FitResult:
        from ..fitting import fit_landmarks

        return fit_landmarks(self.model, landmarks.to(self.device), image_size).to(torch.float32)

    def prepare_source(self, image: Tensor, fit: FitResult | Tensor | None = None, crop: bool | None = None
                       ) -> Prepared:
        """Crop (or resize) and fit a source image.

        Args:
            image: ``(3, H, W)`` RGB in [0, 1] (or a path).
            fit: a fit of ``image`` (batch 1, or a ``(D_p,)`` vector in its pixels) to skip detection.
            crop: crop around the face; ``None``: only when the image is not already ``S x S``.

        Returns:
            :class:`Prepared` with ``images (3, S, S)`` and a fit of batch 1 in its pixels.

        Raises:
            NoFaceError: no face was detected (pass ``fit``).
        """
        img = self._image(image, "source image")
        H, W = img.shape[-2:]
        S = self.config.image_size
        do_crop = crop if crop is not None else (H, W) != (S, S)
        if fit is not None:
            f = self._as_fit(fit, (H, W), "source fit")
            if f.batch_size != 1:
                raise ValueError(f"source fit must have batch 1; got {f.batch_size}")
            if tuple(f.image_size) != (H, W):
                raise ValueError(f"source fit refers to a {f.image_size} image but the image is {(H, W)}")
            if not do_crop:
                return Prepared(self._resize(img[None])[0], rescale_fit(f, S), None)
            lms = f.landmarks if f.landmarks is not None else self._project_landmarks(f)
            ct = CropTransform.from_landmarks(lms[0], S)
            return Prepared(ct.crop(img), crop_fit(f, ct), ct)
        lms = self.detector.detect_largest(img).landmarks_2d.to(self.device)
        if do_crop:
            ct = CropTransform.from_landmarks(lms, S)
            return Prepared(ct.crop(img), self._fit_landmarks(ct.apply(lms)[None], (S, S)), ct)
        fit_ = self._fit_landmarks(lms[None], (H, W))
        return Prepared(self._resize(img[None])[0], rescale_fit(fit_, S), None)

    def _project_landmarks(self, fit: FitResult) -> Tensor:
        ids = self.model.landmarks.clamp(min=0)
        pix, _ = fit.camera.project(fit.vertices(self.model)[:, ids])
        return pix

    def prepare_driving(self, frames: Tensor, fit: FitResult | Tensor | None = None, crop: bool | None = None
                        ) -> Prepared:
        """Crop (one box for the whole clip) and fit driving frames.

        Args:
            frames: ``(T, 3, H, W)`` RGB in [0, 1] (or a video path).
            fit: a fit of the ``T`` frames (or ``(T, D_p)`` vectors in their pixels) to skip detection.
            crop: as :meth:`prepare_source`.

        Returns:
            :class:`Prepared` with ``images (T, 3, S, S)`` and a ``T``-frame fit in their pixels (one
            identity for the clip: :func:`~morphface.fitting.fit_video`, temporally smoothed).
        """
        if isinstance(frames, str) or hasattr(frames, "__fspath__"):
            from ..io import read_video

            frames = read_video(frames).frames
        if not isinstance(frames, Tensor) or frames.dim() != 4 or frames.shape[1] != 3 or frames.shape[0] < 1:
            shape = tuple(frames.shape) if isinstance(frames, Tensor) else type(frames).__name__
            raise ValueError(f"driving frames must be (T, 3, H, W) RGB in [0, 1] with T >= 1; got {shape}")
        frames = frames.to(self.device, torch.float32)
        T, _, H, W = frames.shape
        S = self.config.image_size
        do_crop = crop if crop is not None else (H, W) != (S, S)
        if fit is not None:
            f = self._as_fit(fit, (H, W), "driving fit")
            if f.batch_size != T or tuple(f.image_size) != (H, W):
                raise ValueError(f"driving fit must have {T} entries for {(H, W)} images; got {f.batch_size} "
                                 f"for {f.image_size}")
            if not do_crop:
                return Prepared(self._resize(frames), rescale_fit(f, S), None)
            lms = f.landmarks if f.landmarks is not None else self._project_landmarks(f)
            ct = self._clip_crop(lms)
            return Prepared(ct.crop(frames), crop_fit(f, ct.to(f.focal)), ct)
        from ..errors import NoFaceError
        from ..fitting import fit_video
        from ..fitting.video import detect_video_landmarks, interpolate_missing

        lms, found, _ = detect_video_landmarks(frames, self.detector, progress=False)
        if not bool(found.any()):
            raise NoFaceError(f"no face found in any of the {T} driving frames")
        lms = interpolate_missing(lms, found).to(self.device)
        if do_crop:
            ct = self._clip_crop(lms)
            fit_ = fit_video(self.model, None, landmarks=ct.apply(lms), image_size=(S, S), progress=False)
            return Prepared(ct.crop(frames), fit_.to(torch.float32), ct)
        fit_ = fit_video(self.model, None, landmarks=lms, image_size=(H, W), progress=False)
        return Prepared(self._resize(frames), rescale_fit(fit_.to(torch.float32), S), None)

    def _clip_crop(self, landmarks: Tensor) -> CropTransform:
        from ..fitting import crop_box_from_landmarks, smooth_crop_track

        box = smooth_crop_track(crop_box_from_landmarks(landmarks))
        return CropTransform.from_box(box, self.config.image_size)

    def _driving_fit(self, driving_frames, driving_params, crop) -> FitResult:
        S = self.config.image_size
        if driving_params is not None:
            f = self._as_fit(driving_params, (S, S), "driving_params")
            return rescale_fit(f, S)
        if driving_frames is None:
            raise ValueError("pass driving_frames (T, 3, H, W) or driving_params (a FitResult or (T, D_p) "
                             "tensor)")
        return self.prepare_driving(driving_frames, crop=crop).fit

    # ------------------------------------------------------------------ inference: generating
    @contextlib.contextmanager
    def _eval(self) -> Iterator[None]:
        was = self.training
        self.eval()
        try:
            with torch.no_grad():
                yield
        finally:
            self.train(was)

    def _audio_tensor(self, audio: Tensor | None, T: int) -> Tensor | None:
        if audio is None:
            return None
        a = torch.as_tensor(audio, dtype=torch.float32, device=self.device)
        if a.dim() == 3:
            a = a.reshape(a.shape[0], -1)
        if a.dim() != 2 or a.shape[0] < T:
            raise ValueError(f"audio must be (T, 2k * D) (or (T, 2k, D)) with T >= {T} frames; got "
                             f"{tuple(torch.as_tensor(audio).shape)}")
        return a[:T]

    def generate_sequence(self, source: Tensor, source_fit: FitResult, sequence: FitResult,
                          audio: Tensor | None = None, batch_size: int = 8, output: str = "fake") -> Tensor:
        """Run the generator for every frame of a parameter sequence.

        Args:
            source: ``(3, S, S)`` source crop in [0, 1].
            source_fit: its fit (batch 1, ``S x S`` pixels).
            sequence: ``T`` target parameter sets (``S x S`` pixels), e.g. from :func:`transfer_motion`.
            audio: optional ``(T, 2k * D)`` frame-aligned audio features.
            batch_size: frames per generator call.
            output: ``"fake"`` (the generator's result) or ``"warped"`` (the source warped by the
                predicted flow alone: the warp-only ablation).

        Returns:
            ``(T, 3, S, S)`` frames in [0, 1].
        """
        if output not in ("fake", "warped"):
            raise ValueError(f"output must be 'fake' or 'warped'; got {output!r}")
        S = self.config.image_size
        if source.shape != (3, S, S):
            raise ValueError(f"source must be (3, {S}, {S}); got {tuple(source.shape)}")
        with self._eval():
            src = source.to(self.device, torch.float32)[None]
            src_params = self.layout.pack(source_fit.to(self.device, torch.float32))
            seq_params = self.layout.pack(sequence.to(self.device, torch.float32))
            T = seq_params.shape[0]
            motion = self.layout.motion(seq_params)
            audio = self._audio_tensor(audio, T)
            static = self._source_inputs(src, src_params)
            frames = []
            for a in range(0, T, batch_size):
                idx = torch.arange(a, min(a + batch_size, T), device=self.device)
                n = idx.numel()
                batch = {"source": src.expand(n, -1, -1, -1), "source_params": src_params.expand(n, -1),
                         "driving_params": seq_params[idx],
                         "driving_motion": motion_windows(motion, self.config.window_radius, idx)}
                batch.update({k: v.expand(n, *v.shape[1:]) for k, v in static.items()})
                if audio is not None:
                    batch["audio"] = audio[idx]
                    batch["has_audio"] = torch.ones(n, device=self.device)
                batch.update(self._sequence_inputs(seq_params, idx))
                frames.append(to_unit(self.generate(batch)[output]).float())
            return torch.cat(frames)

    def reenact(self, source_image: Tensor, driving_frames: Tensor | None = None,
                driving_params: FitResult | Tensor | None = None, *,
                source_fit: FitResult | Tensor | None = None, audio: Tensor | None = None,
                relative: bool = False, crop: bool | None = None, batch_size: int = 8,
                output: str = "fake") -> Tensor:
        """Animate a source face with the expression and head pose of a driving clip.

        Args:
            source_image: ``(3, H, W)`` RGB in [0, 1].
            driving_frames: ``(T, 3, H', W')`` RGB in [0, 1] (fitted here), or
            driving_params: their fit instead (a ``T``-frame :class:`FitResult` or ``(T, D_p)`` vectors in
                ``S x S`` crop pixels, as the data cache stores them).
            source_fit: a fit of ``source_image`` (skips detection).
            audio: ``(T, 2k * D)`` frame-aligned audio of the driving clip (HeadGAN with audio).
            relative: transfer motion relative to the first driving frame (see :func:`transfer_motion`).
            crop: crop around the faces (default: when an input is not ``S x S``).
            batch_size: frames per generator call.
            output: ``"fake"`` or ``"warped"`` (warp-only ablation), see :meth:`generate_sequence`.

        Returns:
            ``(T, 3, S, S)`` frames in [0, 1].
        """
        src = self.prepare_source(source_image, fit=source_fit, crop=crop)
        drv = self._driving_fit(driving_frames, driving_params, crop)
        seq = transfer_motion(src.fit, drv, relative=relative, model=self.model)
        return self.generate_sequence(src.images, src.fit, seq, audio=audio, batch_size=batch_size, output=output)

    def reconstruct(self, frames: Tensor, params: FitResult | Tensor | None = None, *,
                    audio: Tensor | None = None, crop: bool | None = None, batch_size: int = 8) -> Tensor:
        """Self-reenactment: regenerate a clip from its first frame and its own motion.

        Args:
            frames: ``(T, 3, H, W)`` RGB in [0, 1].
            params: their fit (skips detection), as in :meth:`prepare_driving`.

        Returns:
            ``(T, 3, S, S)`` in [0, 1] (compare with the cropped frames of :meth:`prepare_driving`).
        """
        drv = self.prepare_driving(frames, fit=params, crop=crop)
        return self.generate_sequence(drv.images[0], drv.fit[0], drv.fit, audio=audio, batch_size=batch_size)

    def edit_fit(self, fit: FitResult, expression: Tensor | Mapping[str, float] | None = None,
                 yaw: float | None = None, pitch: float | None = None, roll: float | None = None,
                 relative: bool = True) -> FitResult:
        """Edited copy of a fit (see :meth:`edit` for the arguments)."""
        exp = fit.exp_coeffs.clone()
        if expression is not None:
            if isinstance(expression, Mapping):
                names = list(self.model.exp_names or [])
                for key, value in expression.items():
                    if key not in names:
                        raise ValueError(f"unknown expression {key!r}; the model's are {names}")
                    j = names.index(key)
                    exp[:, j] = exp[:, j] + value if relative else exp.new_tensor(float(value))
            else:
                e = torch.as_tensor(expression, dtype=exp.dtype, device=exp.device).reshape(-1)
                if e.numel() != self.layout.n_exp:
                    raise ValueError(f"expression must have {self.layout.n_exp} coefficients; got "
                                     f"{e.numel()}")
                exp = exp + e if relative else e.expand_as(exp).clone()
        if self.model.exp_kind == "blendshape":
            exp = exp.clamp(0.0, 1.0)
        angles = fit.angles.clone()
        for j, value in ((0, pitch), (1, yaw), (2, roll)):
            if value is not None:
                rad = math.radians(float(value))
                angles[:, j] = angles[:, j] + rad if relative else angles.new_tensor(rad)
        return dataclasses.replace(fit, exp_coeffs=exp, angles=angles)

    def edit(self, image: Tensor, expression: Tensor | Mapping[str, float] | None = None,
             yaw: float | None = None, pitch: float | None = None, roll: float | None = None,
             relative: bool = True, *,
             fit: FitResult | Tensor | None = None, crop: bool | None = None) -> Tensor:
        """Change the expression and/or head rotation of a face.

        Args:
            image: ``(3, H, W)`` RGB in [0, 1].
            expression: ``(K_exp,)`` coefficients, or ``{blendshape name: weight}`` for named models
                (the default model's ARKit-style names, e.g. ``{"jawOpen": 0.6}``).
            yaw, pitch, roll: head rotation in **degrees** (``morphface.camera`` signs: yaw > 0 turns
                the nose toward the image's right, pitch > 0 looks down, roll > 0 is counter-clockwise).
            relative: add the values to the fitted ones (True) or set them (False).
            fit: a fit of ``image`` (skips detection).

        Returns:
            ``(3, S, S)`` in [0, 1]. Blendshape weights are clamped to [0, 1].
        """
        src = self.prepare_source(image, fit=fit, crop=crop)
        target = self.edit_fit(src.fit, expression, yaw, pitch, roll, relative)
        return self.generate_sequence(src.images, src.fit, target)[0]

    def frontalize(self, image: Tensor, *, fit: FitResult | Tensor | None = None,
                   crop: bool | None = None) -> Tensor:
        """The face turned to a frontal view (zero pitch, yaw and roll), ``(3, S, S)`` in [0, 1]."""
        return self.edit(image, yaw=0.0, pitch=0.0, roll=0.0, relative=False, fit=fit, crop=crop)

    def encode(self, frame: Tensor, *, fit: FitResult | Tensor | None = None,
               crop: bool | None = None) -> Tensor:
        """HeadGAN's video-compression view: a frame as ``K_exp + 7`` floats.

        ``[expression (K_exp), angles (3, rad), translation (3, mm), focal (1, px)]``, in the frame's
        ``S x S`` crop pixels. HeadGAN sends 35 floats (28 expression coefficients of its 3DMM + 7 camera
        parameters); with the default ICT model it is 53 + 7 = 60. The identity is not sent: it comes
        from the reference frame in :meth:`decode`.

        Returns:
            ``(K_exp + 7,)`` float32.
        """
        src = self.prepare_source(frame, fit=fit, crop=crop)
        return self.layout.code(self.layout.pack(src.fit))[0]

    def decode(self, reference: Tensor, code: Tensor, *, reference_fit: FitResult | Tensor | None = None,
               crop: bool | None = None) -> Tensor:
        """Rebuild a frame from a reference image and a code of :meth:`encode`.

        Args:
            reference: ``(3, H, W)`` reference frame (sent once) in [0, 1].
            code: ``(K_exp + 7,)`` (or ``(T, K_exp + 7)`` for several frames).

        Returns:
            ``(3, S, S)`` (or ``(T, 3, S, S)``) in [0, 1].
        """
        src = self.prepare_source(reference, fit=reference_fit, crop=crop)
        c = torch.as_tensor(code, dtype=torch.float32, device=self.device)
        params = self.layout.from_code(self.layout.pack(src.fit), c)
        seq = self.layout.unpack(params, src.fit.image_size)
        out = self.generate_sequence(src.images, src.fit, seq)
        return out[0] if c.dim() == 1 else out
