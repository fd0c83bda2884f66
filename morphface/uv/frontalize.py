"""Non-learned face frontalisation: fit, unwrap with visibility, complete, relight, re-render frontally, blend.

:func:`frontalize` runs the stages of :class:`Frontalizer`, one method each, with the options of one
frozen :class:`FrontalizeConfig` (a small part per stage: :class:`FitConfig`, :class:`TextureConfig`,
:class:`ViewConfig`, :class:`CompositeConfig`, each checked when made)::

    config = FrontalizeConfig(texture=TextureConfig(size=512), view=ViewConfig(neutral_expression=True))
    result = frontalize(image, config=config)

    stages = Frontalizer(config=config)               # or a subclass with one stage replaced
    face = stages.fit(images)                         # FaceFit: fit, frontal pose, person mask
    texels = stages.unwrap(images, face)              # Texels: the unwrap, the photo's light
    done = stages.complete(texels, face)              # Completion: every texel filled
    done = stages.relight(done, texels, face)         # lit by the same light at the frontal normals
    done = stages.keep_photo(done, images, face)      # a nearly frontal photo keeps its colours
    rendered = stages.render(done.texture, face, images)
    out = stages.composite(images, face, rendered)    # Composite: image, face_mask, background

For each image:

1. **Fit** (:meth:`Frontalizer.fit`). 68 landmarks from a detector (or given), then
   :func:`~morphface.fitting.fit_landmarks` (perspective); with MediaPipe, its 468 dense points
   through the model's correspondence table (:func:`~morphface.fitting.fit_dense_landmarks`). The
   default detector prefers MediaPipe over dlib (:func:`make_frontalize_detector`): dlib's landmarks
   collapse toward a frontal shape beyond ~35 degrees of yaw. 2D regressors (dlib, FAN 2D) put the
   jaw points of a turned face on its silhouette, not on fixed skin points, so for them the far-side
   jaw landmarks are re-assigned to the model's silhouette vertices and the fit is repeated
   (:func:`fit_with_contour`, the "landmark marching" of Zhu et al., CVPR 2015). With a person mask
   (:func:`~morphface.fitting.make_segmenter`, MediaPipe's selfie segmentation when installed) the
   fit is pulled back wherever its outline reaches onto the background
   (:func:`~morphface.fitting.refine_with_person_mask`). Optionally
   :func:`~morphface.fitting.fit_photometric` refines the fit.
2. **Unwrap** (:meth:`Frontalizer.unwrap`, :func:`~morphface.uv.unwrap`) into the UV layout of the
   model with its eye and mouth openings closed (:func:`~morphface.uv.fill_holes`), so that the eyes
   and the inside of the mouth are part of the texture; visibility from the z-buffer, texels next to
   depth discontinuities distrusted, texels on the person mask's background not sampled. The photo's
   first-order shading is divided out (:mod:`morphface.uv.shading`), and then texels whose colour is
   not the face's skin colour are dropped where a better source exists: grazing ones with a squarer
   mirror, hair over one side whose mirror is clean skin, hair framing the face from the temples (a
   fringe on the forehead stays: nothing shows the skin under it), grazing ones on the nose ridge,
   and the fringes of all these (:func:`~morphface.uv.reject_colour_outliers`). Judged after the
   shading is divided out, a cheek that is only darker or brighter from the light is no outlier.
3. **Complete** (:meth:`Frontalizer.complete`, :func:`~morphface.uv.complete_texture`): mirror,
   albedo model, push-pull fill; then **relight** (:meth:`Frontalizer.relight`) with the light
   fitted in step 2 at the frontal normals. A face that is nearly frontal already (turned by less
   than 8 degrees, mixed up to 15) keeps the photo's own colour on every texel the camera sees:
   nothing in it is judged or replaced, so a frontal photo comes back as it was, hair over a cheek
   included (:meth:`Frontalizer.keep_photo`).
4. **Render** (:meth:`Frontalizer.render`) the textured face with zero rotation (and, optionally,
   neutral expression), lit by the same light, which stays fixed in the camera frame, at its frontal
   normals.
5. **Composite** (:meth:`Frontalizer.composite`). The hair, ears, neck and background are kept, but
   moved so that they meet the frontal face where they met the turned one. The neck and everything
   beyond the head follow :func:`warp_surroundings` (the region just outside the old face outline is
   brought to just outside the new one, fading to no motion a third of a face width away); without
   this, the parts of the turned face that the frontal face does not cover (the profile of the nose,
   the far jaw) would stay beside it. The ears, the hair on the scalp and the photo's face above the
   mouth turn with the head (:func:`~morphface.uv.head_flow`: the fitted head with its ears and
   scalp, rasterised in both poses, gives each pixel its source; points the photo did not see take
   their mirror's pixel), so the hair frames the frontal face instead of staying where the turned
   head had it, and a nearly frontal photo keeps its own forehead and temples. With a person mask,
   the hair beyond the head is then evened out
   (:func:`~morphface.uv.surroundings.even_head_outline`): a turned head shows the back of the head
   on one side and little beyond the temple on the other; the wider side is narrowed toward the mean
   of the two, so the frontal face is not framed by the back of the head on one side only. The
   rendered face then replaces the face region: Laplacian-pyramid blending
   (:func:`~morphface.uv.blend.laplacian_blend`) with a nearly hard mask (the silhouette's outermost
   0.5% dropped) and the render extended past its silhouette by push-pull filling, so that the
   seam's colours are mixed over a band (the coarsest about 1/32 of the face's width: coarser bands
   carried the surroundings' colours into the whole face) while fine detail stays sharp on both
   sides. Inside the face the render is mixed with the old face's skin (which continues the forehead
   and the jaw), never with its eyes or hair (:func:`_under_layer`). Above the brows, hair that the
   re-posed photo shows in front of the forehead (a lock the texture had rejected and filled with
   skin) stays in front of it (:func:`_hair_over_forehead`). With a person mask, the background that
   a turned head's chin leaves between the frontal chin and the photo's neck is painted with the
   neck's skin (:func:`_neck_under_chin`).

**Where the frontal face goes.** At the fitted depth (so at the input face's scale), with the
rotation set to zero. With :attr:`ViewConfig.placement` ``"box"`` (default) the translation is then adjusted so
that the frontal face's image bounding box has the same centre as the fitted face's: the face stays
where it was in the picture and the surroundings move least. ``"origin"`` keeps the
fitted translation itself (the head turns about the model origin, ~13 cm behind the nose tip, near
the neck), which moves the face toward the middle of the head, as a physically turning head does.

Output resolution (:attr:`ViewConfig.output_size`) scales the camera's intrinsics and resizes the photo: the
frontal face keeps its place in the picture.

Limits: the result is only as good as the fit. Beyond ~50 degrees of yaw, or with landmarks off by
more than a few pixels, texels of the face sample the background or the wrong feature (a grey nose
tip, a second nostril on the cheek). A texel that no view shows is filled, never left empty.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import BackendUnavailableError, FitError, MorphfaceError
from ..fitting.dense import dense_correspondence_for, fit_dense_landmarks
from ..fitting.detectors import LandmarkDetector
from ..fitting.image import dense_points
from ..fitting.landmark_fit import fit_landmarks
from ..fitting.result import FitResult
from ..fitting.segmentation import PersonSegmenter, make_segmenter
from ..fitting.silhouette import refine_with_person_mask
from ..fitting.skin import fit_colour_model, luma_chroma
from ..morphable.model import MorphableModel
from ..render import rasterize, vertex_normals
from ..render.types import Rendered
from .blend import blur, dilate, erode, feather_mask, laplacian_blend
from .complete import Completion, complete_texture, push_pull_fill
from .headwarp import HeadFlow, head_flow
from .holes import fill_holes
from .outliers import reject_colour_outliers
from .paint import inside_polygon
from .render import render_uv_texture
from .shading import camera_normal_map, fit_texel_shading, skin_texel_mask, texel_shading
from .surroundings import even_head_outline, resample_source, sample_pixels, surroundings_source, warp_surroundings
from .unwrap import UnwrapResult, unwrap

__all__ = [
    "CompositeConfig",
    "Composite",
    "FaceFit",
    "FitConfig",
    "FrontalizeConfig",
    "FrontalizeResult",
    "Frontalizer",
    "Texels",
    "TextureConfig",
    "ViewConfig",
    "frontalize",
    "frontal_fit",
    "fit_with_contour",
    "make_frontalize_detector",
    "warp_surroundings",
]

# iBUG-68 jaw points on the subject's left (+x) and right (-x) of the chin (point 8).
_JAW_LEFT = list(range(9, 17))
_JAW_RIGHT = list(range(0, 8))
_MIRROR_MODES = ("blend", "fill", None)


def _pair(value, name: str) -> tuple[float, float] | None:
    """``(lo, hi)`` as a tuple of floats with ``0 <= lo <= hi`` (``None`` stays ``None``)."""
    if value is None:
        return None
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a (lo, hi) pair of degrees or None; got {value!r}") from None
    if not 0 <= lo <= hi:
        raise ValueError(f"{name} must have 0 <= lo <= hi; got {value!r}")
    return lo, hi


@dataclass(frozen=True)
class FitConfig:
    """Stage 1, :meth:`Frontalizer.fit`: landmarks -> a fit of the face model, and the person mask.

    Attributes:
        contour: treat the far-side jaw landmarks as silhouette points (:func:`fit_with_contour`).
            Right for 2D regressors (dlib, FAN 2D), whose jaw points follow the visible outline;
            wrong for MediaPipe (its points are projections of a fitted 3D mesh) and for landmarks
            that are projections of the model's own landmark vertices. ``None``: True for the dlib
            and FAN detectors, False for MediaPipe and for given ``landmarks``.
        dense: fit MediaPipe's 468 points through the model's correspondence table
            (:func:`~morphface.fitting.fit_dense_landmarks`) instead of the 68: the lips, eyelids and
            cheeks are followed more closely (a closed mouth stays closed). ``None``: when the detector
            gives them and the model has a table (the embedded model does).
        silhouette: with a person mask, refit so that the face's occluding contour (nose, lips, far
            cheek) does not reach onto the background (:func:`~morphface.fitting.refine_with_person_mask`);
            a fit inside the mask is unchanged. Not with ``contour`` (its jaw points are silhouette
            points already).
        segmenter: a :class:`~morphface.fitting.PersonSegmenter`, a backend name, ``"auto"`` (MediaPipe's
            when it can run here, else none) or ``None``. The person mask keeps texels that land on the
            background out of the texture (:func:`~morphface.uv.unwrap`'s ``foreground``), evens out
            the hair around a turned head (:attr:`CompositeConfig.even_outline`) and paints the
            background that a turned head's chin leaves between the frontal chin and the photo's neck
            with the neck's skin. A mask covering less than half of the fitted face is taken for a
            failed segmentation and ignored.
        photometric_steps: if > 0, refine the landmark fit with that many steps of
            :func:`~morphface.fitting.fit_photometric`.
        max_fit_error: a fit whose landmark RMSE exceeds this fraction of the landmark box diagonal
            raises :class:`~morphface.errors.FitError`.
    """

    contour: bool | None = None
    dense: bool | None = None
    silhouette: bool = True
    segmenter: PersonSegmenter | str | None = "auto"
    photometric_steps: int = 0
    max_fit_error: float = 0.1

    def __post_init__(self) -> None:
        if not (self.segmenter is None or isinstance(self.segmenter, (str, PersonSegmenter))):
            raise ValueError(
                f"FitConfig.segmenter must be a PersonSegmenter, a backend name, 'auto' or None; got {self.segmenter!r}"
            )
        if not isinstance(self.photometric_steps, int) or self.photometric_steps < 0:
            raise ValueError(f"FitConfig.photometric_steps must be an int >= 0; got {self.photometric_steps!r}")
        if not self.max_fit_error > 0:
            raise ValueError(f"FitConfig.max_fit_error must be > 0; got {self.max_fit_error!r}")


@dataclass(frozen=True)
class TextureConfig:
    """Stages 2-4, :meth:`Frontalizer.unwrap`, :meth:`~Frontalizer.complete`, :meth:`~Frontalizer.relight`
    and :meth:`~Frontalizer.keep_photo`: the UV texture.

    Attributes:
        size: UV texture resolution ``S``; ``None``: the power of two at or above the fitted face's
            size in the image (its landmark box's longer side), between 128 and 1024 (finer textures
            than the photo's own resolution only cost time).
        edge_margin: texels within this fraction of the face width of a depth discontinuity
            (outline, nose) are distrusted (see :func:`~morphface.uv.unwrap`).
        reject_outliers: texels whose colour is far from the face's skin colour count as unseen where
            completion has something better (:func:`~morphface.uv.reject_colour_outliers`: grazing
            texels with a squarer mirror, hair over one side or framing the face above the nose, the
            nose ridge of a profile).
        relight: complete the texture with the photo's first-order shading divided out and light the
            frontal face with the same light (fixed in the camera frame) at its frontal normals
            (:mod:`morphface.uv.shading`): no seam where the darker side is mirrored from the brighter
            one, and no shading glued to the skin from the old pose.
        mirror: completion mode, see :func:`~morphface.uv.complete_texture`.
        keep_photo: ``(lo, hi)`` degrees: a face that the frontal view turns by less than ``lo``
            keeps the photo's own colour on every texel it shows (completion only fills the others),
            mixed with the completed texture up to ``hi``: a nearly frontal photo comes back as it
            was, hair over a cheek included, instead of with a patchwork of mirrored skin where the
            colour rules took some of the hair for skin and some not. ``None`` turns it off.
    """

    size: int | None = None
    edge_margin: float = 0.05
    reject_outliers: bool = True
    relight: bool = True
    mirror: str | None = "blend"
    keep_photo: tuple[float, float] | None = (8.0, 15.0)

    def __post_init__(self) -> None:
        if self.size is not None and (not isinstance(self.size, int) or self.size < 1):
            raise ValueError(f"TextureConfig.size must be a positive int or None; got {self.size!r}")
        if not self.edge_margin >= 0:
            raise ValueError(f"TextureConfig.edge_margin must be >= 0; got {self.edge_margin!r}")
        if self.mirror not in _MIRROR_MODES:
            raise ValueError(f"TextureConfig.mirror must be one of {_MIRROR_MODES}; got {self.mirror!r}")
        object.__setattr__(self, "keep_photo", _pair(self.keep_photo, "TextureConfig.keep_photo"))


@dataclass(frozen=True)
class ViewConfig:
    """The frontal view that stage 5 (:meth:`Frontalizer.render`) draws (fixed by :meth:`Frontalizer.fit`).

    Attributes:
        neutral_expression: render with zero expression (default: keep the fitted expression).
        placement: ``"box"`` or ``"origin"`` (module doc, :func:`frontal_fit`).
        output_size: ``(H', W')`` or one side length for a square input; default the input size.
    """

    neutral_expression: bool = False
    placement: str = "box"
    output_size: tuple[int, int] | int | None = None

    def __post_init__(self) -> None:
        if self.placement not in ("box", "origin"):
            raise ValueError(f"ViewConfig.placement must be 'box' or 'origin'; got {self.placement!r}")
        size = self.output_size
        if isinstance(size, (list, tuple)):
            if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
                raise ValueError(f"ViewConfig.output_size must be (H, W) with positive ints; got {size!r}")
            object.__setattr__(self, "output_size", tuple(size))
        elif size is not None and (not isinstance(size, int) or size < 1):
            raise ValueError(f"ViewConfig.output_size must be a positive int, (H, W) or None; got {size!r}")

    def size_for(self, H: int, W: int) -> tuple[int, int] | None:
        """``(H', W')`` of the output for an ``H x W`` input (``None``: the input size)."""
        if isinstance(self.output_size, int):
            s = self.output_size
            return round(s * H / max(H, W)), round(s * W / max(H, W))
        return self.output_size


@dataclass(frozen=True)
class CompositeConfig:
    """Stage 6, :meth:`Frontalizer.composite`: the frontal face put back into the photo.

    Attributes:
        head: move the ears, the hair on the scalp and the photo's face above the mouth with the
            head (:func:`~morphface.uv.head_flow`; points the photo saw badly take their mirror's
            pixel when the head turns by more than ~12 degrees): a model with the fitted model's
            bases to rasterise, ``True`` (the embedded model's full region with ears, front scalp
            and neck for the default model; the fitted model itself otherwise) or ``False`` (only
            the radial warp of :func:`warp_surroundings`, and no hair kept in front of the forehead).
        even_outline: with a person mask, narrow the side of a turned head that shows the back of the
            head toward the mean width of the two sides
            (:func:`~morphface.uv.surroundings.even_head_outline`); faded in from 8 to 15 degrees of
            turn, like :attr:`TextureConfig.keep_photo`, so a nearly frontal photo keeps its outline.
        outline_margin: the old face's outline is grown by this fraction of its width before the
            surroundings are moved (:func:`warp_surroundings`), so that parts of the real face
            beyond the fitted silhouette do not stay beside the frontal face.
    """

    head: MorphableModel | bool = True
    even_outline: bool = True
    outline_margin: float = 0.04

    def __post_init__(self) -> None:
        if not isinstance(self.head, (bool, MorphableModel)):
            raise ValueError(f"CompositeConfig.head must be True, False or a MorphableModel; got {self.head!r}")
        if not self.outline_margin >= 0:
            raise ValueError(f"CompositeConfig.outline_margin must be >= 0; got {self.outline_margin!r}")


@dataclass(frozen=True)
class FrontalizeConfig:
    """Every tuning option of :func:`frontalize`, one small frozen config per stage.

    ``FrontalizeConfig(texture=TextureConfig(size=512, relight=False))``; change one option of an
    existing config with :func:`dataclasses.replace` on its part.

    Attributes:
        fit: :class:`FitConfig` (stage 1).
        texture: :class:`TextureConfig` (stages 2-4).
        view: :class:`ViewConfig` (the frontal pose that stage 5 renders).
        composite: :class:`CompositeConfig` (stage 6).
    """

    fit: FitConfig = field(default_factory=FitConfig)
    texture: TextureConfig = field(default_factory=TextureConfig)
    view: ViewConfig = field(default_factory=ViewConfig)
    composite: CompositeConfig = field(default_factory=CompositeConfig)

    def __post_init__(self) -> None:
        for name, kind in (("fit", FitConfig), ("texture", TextureConfig), ("view", ViewConfig),
                           ("composite", CompositeConfig)):
            if not isinstance(getattr(self, name), kind):
                raise ValueError(
                    f"FrontalizeConfig.{name} must be a {kind.__name__}; got {type(getattr(self, name)).__name__}"
                )


@dataclass
class FrontalizeResult:
    """What :func:`frontalize` returns.

    Attributes:
        image: ``(B, 3, H', W')`` the frontalised photos, RGB in ``[0, 1]``.
        face_mask: ``(B, 1, H', W')`` the mask the rendered face was blended with (1: render).
        texture: ``(B, 3, S, S)`` the completed UV texture (layout of ``fill_holes(model)``).
        fit: the fit of the input images.
        frontal_fit: the frontal pose and coefficients that were rendered (output image frame).
        intermediates: with ``return_intermediates=True``: ``"overlay"`` (fitted mesh on the photo),
            ``"unwrapped"``, ``"confidence"``, ``"visibility"`` (the raw unwrap), ``"source"``
            (completion codes, see :class:`~morphface.uv.Completion`), ``"render"`` and
            ``"render_mask"`` (the frontal render alone); else empty.
    """

    image: Tensor
    face_mask: Tensor
    texture: Tensor
    fit: FitResult
    frontal_fit: FitResult
    intermediates: dict[str, Tensor] = field(default_factory=dict)

    def side_by_side(self, source: Tensor, index: int = 0, height: int | None = None) -> Tensor:
        """``(3, height, W)`` panel: input | UV texture | frontalised image, each scaled to ``height``.

        Args:
            source: ``(3, H, W)`` the input photo of batch entry ``index``.
            height: panel height in pixels (default: the frontal image's height).
        """
        height = height or self.image.shape[-2]

        def fit_height(x: Tensor) -> Tensor:
            h, w = x.shape[-2:]
            size = (height, max(1, round(w * height / h)))
            return F.interpolate(x[None].float(), size=size, mode="bilinear", align_corners=False,
                                 antialias=True)[0]

        parts = [source.to(self.image.device), self.texture[index], self.image[index]]
        return torch.cat([fit_height(x) for x in parts], dim=-1).clamp(0, 1)


@functools.lru_cache(maxsize=2)
def _default_model(region: str = "narrow") -> MorphableModel:
    from ..morphable import load_default_model

    return load_default_model(region)


def _as_images(image) -> tuple[Tensor, list[str | None]]:
    if isinstance(image, (str, Path)):
        from ..io import read_image

        return read_image(image)[None], [str(image)]
    if not isinstance(image, Tensor) or image.dim() not in (3, 4) or image.shape[-3] != 3:
        shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise ValueError(f"image must be a path or a (B, 3, H, W) / (3, H, W) float tensor; got {shape}")
    if not image.is_floating_point():
        raise ValueError(f"image must be a float tensor in [0, 1]; got dtype {image.dtype}")
    images = image if image.dim() == 4 else image[None]
    return images, [None] * images.shape[0]


def make_frontalize_detector(backend: str = "auto") -> LandmarkDetector:
    """The landmark detector :func:`frontalize` uses for a backend name.

    ``"auto"`` prefers, in order, FAN (when its weights are present), MediaPipe and dlib: turned
    faces are what frontalisation is for, and dlib's 68-point regressor pulls the landmarks of a
    face turned beyond ~35 degrees toward a frontal shape (a 50-degree face fits at ~15 degrees),
    while MediaPipe's face mesh keeps the pose. Other names go to
    :func:`~morphface.fitting.make_detector`.
    """
    from ..fitting.detectors import available_detectors, make_detector

    if backend != "auto":
        return make_detector(backend)
    status = available_detectors()
    failures = []
    for name in ("fan", "mediapipe", "dlib"):
        if status.get(name) is not None:
            failures.append(f"{name}: {status[name]}")
            continue
        try:
            return make_detector(name)
        except MorphfaceError as e:
            failures.append(f"{name}: {e}")
    raise BackendUnavailableError("no landmark detector can run here; tried:\n  " + "\n  ".join(failures))


def _detect(images: Tensor, detector, names: list[str | None]) -> tuple[Tensor, Tensor | None, str]:
    """``(B, 68, 2)`` landmarks, ``(B, 468, 2)`` dense MediaPipe points (or ``None``), detector name."""
    det = detector if isinstance(detector, LandmarkDetector) else make_frontalize_detector(detector)
    lms, dense = [], []
    for b in range(images.shape[0]):
        name = names[b] or (f"image {b} of the batch" if images.shape[0] > 1 else None)
        face = det.detect_largest(images[b].detach().cpu(), name=name)
        lms.append(face.landmarks_2d)
        points = dense_points([face])
        if points is not None:
            dense.append(points[0])
    dense_t = torch.stack(dense).to(images) if len(dense) == images.shape[0] else None
    return torch.stack(lms).to(images), dense_t, det.name


def _check_fit_quality(fit: FitResult, landmarks: Tensor, max_error: float) -> None:
    size = (landmarks.amax(1) - landmarks.amin(1)).norm(dim=-1)  # landmark box diagonal, px
    rel = fit.residuals.to(size) / size.clamp(min=1e-6)
    bad = torch.nonzero(rel > max_error).flatten().tolist()
    if bad:
        b = bad[0]
        raise FitError(
            f"the landmark fit failed for image {b}: reprojection RMSE {float(fit.residuals[b]):.1f} px "
            f"for a face of {float(size[b]):.0f} px ({100 * float(rel[b]):.1f}% > the {100 * max_error:.0f}% "
            f"allowed); are the landmarks iBUG-68 points of one face?"
        )


def fit_with_contour(
    model: MorphableModel,
    landmarks: Tensor,
    image_size: tuple[int, int],
    rounds: int = 2,
    band_mm: float = 4.0,
    min_yaw_degrees: float = 8.0,
    **fit_kwargs,
) -> FitResult:
    """:func:`~morphface.fitting.fit_landmarks`, with the far-side jaw landmarks on the silhouette.

    After a first fit, for a face turned by more than ``min_yaw_degrees`` each jaw landmark on the
    side turned away (iBUG 9-16 for yaw > 0, 0-7 for yaw < 0) is re-assigned to the model vertex at
    its height (mean-shape ``y`` within ``band_mm``) on that side which faces the camera and lies
    furthest out in the image, i.e. on the silhouette where a 2D detector puts it; then the fit is
    repeated. ``rounds`` such updates per image (images are refitted one at a time, since the
    correspondences differ).

    Args:
        model: the morphable model (with the 68 landmarks).
        landmarks: ``(B, 68, 2)`` detected landmarks, pixels.
        image_size: ``(H, W)``.
        **fit_kwargs: passed to :func:`~morphface.fitting.fit_landmarks`.

    Returns:
        :class:`~morphface.fitting.FitResult` for the batch.
    """
    fit = fit_landmarks(model, landmarks, image_size, **fit_kwargs)
    if rounds <= 0 or model.landmarks.numel() != 68:
        return fit
    mean = model.mean.detach()
    faces = model.triangles
    out = []
    for b in range(fit.batch_size):
        f = fit[b]
        ids = model.landmarks.clone()
        for _ in range(rounds):
            yaw = float(f.euler_degrees[0, 1])
            if abs(yaw) < min_yaw_degrees:
                break
            side = 1.0 if yaw > 0 else -1.0
            with torch.no_grad():
                verts = f.vertices(model)
                pix, _ = f.camera.project(verts)
                normals = vertex_normals(verts, faces)
                facing = ((normals * f.camera.view_directions(verts)).sum(-1) > 0)[0]
                R = f.rotation[0].to(pix)
                # image direction in which the model's +x (times side) axis points (image y is down)
                direction = torch.stack([R[0, 0], -R[1, 0]]) * side
                score = pix[0] @ direction
                cand = facing & (side * mean[:, 0] > 0)
            changed = False
            for k in _JAW_LEFT if side > 0 else _JAW_RIGHT:
                band = cand & ((mean[:, 1] - mean[model.landmarks[k], 1]).abs() < band_mm)
                if not bool(band.any()):
                    continue
                best = int(torch.where(band, score, torch.full_like(score, -torch.inf)).argmax())
                changed |= best != int(ids[k])
                ids[k] = best
            if not changed:
                break
            f = fit_landmarks(model, landmarks[b : b + 1], image_size, vertex_ids=ids, **fit_kwargs)
        out.append(f)
    return FitResult.cat(out) if len(out) > 1 else out[0]


def _box_centre(pix: Tensor) -> Tensor:
    return 0.5 * (pix.amin(1) + pix.amax(1))


def frontal_fit(
    fit: FitResult,
    model: MorphableModel,
    placement: str = "box",
    neutral_expression: bool = False,
    output_size: tuple[int, int] | None = None,
) -> FitResult:
    """The frontal pose that :func:`frontalize` renders (placement rules in the module doc).

    Args:
        fit: the fit of the input images.
        model: the model whose vertices set the face's bounding box.
        placement: ``"box"`` or ``"origin"``.
        neutral_expression: zero the expression coefficients.
        output_size: ``(H', W')`` of the output image (same aspect ratio as the input); default the
            input size.

    Returns:
        A :class:`~morphface.fitting.FitResult` with zero angles, for images of ``output_size``.
    """
    if placement not in ("box", "origin"):
        raise ValueError(f"placement must be 'box' or 'origin'; got {placement!r}")
    exp = torch.zeros_like(fit.exp_coeffs) if neutral_expression else fit.exp_coeffs
    zero = torch.zeros_like(fit.angles)
    front = replace(
        fit, angles=zero, exp_coeffs=exp, landmarks=None, target_landmarks=None, residuals=None, history=[]
    )
    if placement == "box":
        with torch.no_grad():
            verts = fit.vertices(model).to(fit.angles)
            fverts = front.vertices(model).to(fit.angles)
            target = _box_centre(fit.camera.project(verts)[0])
            if fit.camera_kind == "perspective":
                # Same camera-space centroid (hence the same depth and scale), then match box centres.
                centroid = (verts @ fit.rotation.transpose(1, 2)).mean(1) + fit.translation
                t = centroid - fverts.mean(1)
                for _ in range(3):
                    cam = replace(front, translation=t).camera
                    d = target - _box_centre(cam.project(fverts)[0])
                    depth = -(fverts.mean(1) + t)[:, 2]
                    k = depth / fit.focal
                    t = t + torch.stack([d[:, 0] * k, -d[:, 1] * k, torch.zeros_like(k)], dim=-1)
            else:
                t = fit.translation + target - _box_centre(front.camera.project(fverts)[0])
        front = replace(front, translation=t.detach())
    if output_size is not None:
        H, W = fit.image_size
        H2, W2 = int(output_size[0]), int(output_size[1])
        sx, sy = W2 / W, H2 / H
        if abs(sx - sy) > 0.01 * max(sx, sy):
            raise ValueError(f"output_size {(H2, W2)} must keep the input's aspect ratio {(H, W)}")
        s = 0.5 * (sx + sy)
        scale_xy = fit.angles.new_tensor([sx, sy])
        if fit.camera_kind == "perspective":
            front = replace(
                front,
                focal=front.focal * s,
                principal_point=front.principal_point * scale_xy,
                image_size=(H2, W2),
            )
        else:
            front = replace(
                front, focal=front.focal * s, translation=front.translation * scale_xy, image_size=(H2, W2)
            )
    return front


def _photo_weight(fit: FitResult, front: FitResult, degrees: tuple[float, float]) -> Tensor:
    """``(B, 1, 1, 1)``: 1 where the frontal view turns the head by less than ``degrees[0]`` (the angle
    of the rotation between the two poses), falling smoothly to 0 at ``degrees[1]``."""
    rel = front.rotation @ fit.rotation.transpose(1, 2)
    cos = ((rel.diagonal(dim1=1, dim2=2).sum(-1) - 1) / 2).clamp(-1.0, 1.0)
    angle = torch.rad2deg(torch.arccos(cos))
    lo, hi = degrees
    t = ((hi - angle) / max(hi - lo, 1e-6)).clamp(0.0, 1.0)
    return (t * t * (3 - 2 * t)).view(-1, 1, 1, 1)


def _under_layer(face: Tensor, background: Tensor, mask: Tensor) -> Tensor:
    """``(B, 3, H, W)``: what the blend mixes the face with inside its mask.

    The warped photo there shows the old face from a little inside its outline
    (:func:`warp_surroundings`): its skin continues the forehead and the jaw, so the render's
    edge fades into it. Where the old face is not skin-coloured (an eye or a brow near the far
    profile, hair) the render itself is used instead (from 3 robust SDs of the render's colours,
    fully at 4), or those features show as smudges along the seam.
    """
    inside = mask > 0.5
    B = face.shape[0]
    colours = face.permute(0, 2, 3, 1).reshape(B, -1, 3)
    skin = fit_colour_model(colours, inside.reshape(B, -1))
    z = skin.zscore(background.permute(0, 2, 3, 1).reshape(B, -1, 3)).reshape(B, 1, *mask.shape[-2:])
    use_face = inside.to(face.dtype) * torch.nan_to_num((z - 3.0).clamp(0.0, 1.0), nan=1.0)
    return torch.lerp(background, face, use_face)


def _hair_over_forehead(render: Tensor, background: Tensor, mask: Tensor, region: Tensor, width: float) -> Tensor:
    """``(B, 1, H, W)`` in ``[0, 1]``: where the re-posed photo (``background``, moved with the head by
    :func:`~morphface.uv.head_flow`) shows hair in front of the frontal face's forehead: inside ``mask``
    and ``region`` (``(B, 1, H, W)``, above the brows and trusted by the flow), darker than the render's
    skin and beyond 3 robust SDs of its colours. Specks narrower than 1% of the face ``width`` are
    dropped (an opening), the rest softened over 0.5%. The texture has hair framing the face from the
    temples rejected and filled from the skin around it, a pale patch where the photo had hair; in
    front of the forehead the hair itself is the right thing to show."""
    B = mask.shape[0]
    inside = mask > 0.5
    skin = fit_colour_model(render.permute(0, 2, 3, 1).reshape(B, -1, 3), inside.reshape(B, -1))
    photo = background.permute(0, 2, 3, 1).reshape(B, -1, 3)
    z = skin.zscore(photo).reshape(mask.shape)
    dark = (luma_chroma(photo)[..., 0] < skin.centre[:, :, 0]).reshape(mask.shape)
    hair = torch.nan_to_num((z - 3.0).clamp(0.0, 1.0) * dark * region * inside, nan=0.0)
    r = max(1, int(round(0.005 * width)))
    hair = dilate(erode(hair, r), r)
    return blur(hair, max(0.5, 0.005 * width)).clamp(0.0, 1.0)


def _neck_under_chin(
    out: Tensor, background: Tensor, person: Tensor, render_mask: Tensor, jaw: Tensor, width: float
) -> tuple[Tensor, Tensor]:
    """Close the gap between the frontal chin and the photo's neck: ``(1, 3, H, W)`` composite,
    re-posed photo and ``(1, 1, H, W)`` person probability moved with it, the frontal render's mask,
    ``(1, 17, 2)`` frontal jaw landmarks (pixels) and the face width (pixels) -> the composite with the
    gap filled and the ``(1, 1, H, W)`` fill's alpha.

    A turned head's chin sticks out beside the neck; turned to the front, it sits above the neck,
    and the photo has background where the front of the neck should be. The neck is taken as the
    run of person pixels nearest the chin a third of a face width below it (at most 0.6 face widths
    of it), joined by straight sides to a segment as wide centred under the chin; the background
    inside is painted with the neck's own skin (push-pull fill from the person pixels around it).
    Nothing changes for a chin already above its neck (a frontal photo) or without a neck near it.
    """
    H, W = out.shape[-2:]
    alpha = torch.zeros_like(render_mask)
    pts = jaw[0]
    chin = pts[8]
    cx = float(chin[0])
    # At most 0.6 face widths of the run: a turned neck's reaches round to the nape, a lower one's to
    # the shoulders.
    y_b = int(min(H - 1, max(0, round(float(chin[1]) + width / 3))))
    cols = torch.nonzero(person[0, 0, y_b] > 0.5).flatten()
    if cols.numel() == 0:
        return out, alpha
    breaks = torch.nonzero(cols[1:] - cols[:-1] > 1).flatten()
    starts = torch.cat([cols[:1], cols[breaks + 1]]).to(out.dtype)
    ends = torch.cat([cols[breaks], cols[-1:]]).to(out.dtype) + 1
    dist = torch.clamp(torch.maximum(starts - cx, cx - ends), min=0.0)
    k = int(dist.argmin())
    lo, hi = float(starts[k]), float(ends[k])
    if float(dist[k]) > 0.5 * width or hi - lo < 0.2 * width:
        return out, alpha
    neck = min(hi - lo, 0.6 * width)
    mid = min(max(cx, lo + 0.5 * neck), hi - 0.5 * neck)
    lo, hi = mid - 0.5 * neck, mid + 0.5 * neck
    # A chin above its neck (a frontal photo) needs nothing; the fill fades in from 10% to 20% of
    # the face width of offset, so that a video's frames do not flicker between the two.
    t = min(max((abs(mid - cx) / width - 0.1) / 0.1, 0.0), 1.0)
    strength = t * t * (3 - 2 * t)
    if strength == 0.0:
        return out, alpha
    # The neck's top, as wide, under the chin (a little above its lowest point: the render covers the
    # face, only the background beside and below the chin is painted).
    top = float(chin[1]) - 0.1 * width
    poly = pts.new_tensor([[cx - 0.5 * neck, top], [cx + 0.5 * neck, top], [hi, y_b + 0.5], [lo, y_b + 0.5]])
    y0 = max(0, int(poly[:, 1].min()))
    y1 = min(H, y_b + 1)
    x0, x1 = max(0, int(poly[:, 0].min())), min(W, int(poly[:, 0].max()) + 2)
    if y1 <= y0 or x1 <= x0:
        return out, alpha
    yy, xx = torch.meshgrid(
        torch.arange(y0, y1, device=out.device, dtype=out.dtype) + 0.5,
        torch.arange(x0, x1, device=out.device, dtype=out.dtype) + 0.5,
        indexing="ij",
    )
    inside = inside_polygon(torch.stack([xx, yy], -1).reshape(-1, 2), poly).reshape(yy.shape).to(out.dtype)
    # The neck's colours: person pixels around the gap (within 15% of the face width), outside the face.
    r = max(2, int(0.15 * width))
    by0, bx0 = max(0, y0 - r), max(0, x0 - r)
    box = (..., slice(by0, min(H, y1 + r)), slice(bx0, min(W, x1 + r)))
    gap = torch.zeros_like(render_mask[box])
    gap[0, 0, y0 - by0 : y1 - by0, x0 - bx0 : x1 - bx0] = inside
    gap = gap * (person[box] < 0.5) * (render_mask[box] < 0.5)
    if not bool(gap.any()):
        return out, alpha
    near = dilate(gap, r) * (person[box] > 0.5) * (render_mask[box] < 0.5)
    fill = push_pull_fill(background[box], near)
    soft = blur(gap, max(1.0, 0.004 * width)) * (1 - render_mask[box])
    alpha[box] = strength * torch.maximum(soft, gap * (1 - render_mask[box]))
    out = out.clone()
    out[box] = torch.lerp(out[box], fill, alpha[box])
    return out, alpha


def _composite(
    image: Tensor,
    old_mask: Tensor,
    render: Tensor,
    render_mask: Tensor,
    outline_margin: float,
    flow: HeadFlow | None = None,
    forehead: Tensor | None = None,
    person: Tensor | None = None,
    jaw: Tensor | None = None,
    evenness: float = 0.0,
) -> tuple[Tensor, Tensor, Tensor]:
    """Step 5 of the module doc for one image: ``(1, 3, H, W)`` photo, ``(1, 1, H, W)`` old face mask,
    ``(1, 3, H', W')`` / ``(1, 1, H', W')`` frontal render and its mask, the head's flow (or none),
    the ``(1, 1, H', W')`` rows above the frontal brows, the photo's ``(1, 1, H, W)`` person
    probability, the ``(1, 17, 2)`` frontal jaw points in output pixels (or none: no neck fill) and
    the strength of :func:`~morphface.uv.surroundings.even_head_outline` (with a person mask)
    -> the composite, the soft face mask and the warped surroundings (``(1, C, H', W')`` each)."""
    with torch.no_grad():
        # The real face may reach past the fitted silhouette (a fit is never pixel-exact): start the
        # surroundings a little further out.
        old_width = float((old_mask.amax(dim=2) > 0).sum(-1).clamp(min=1).amax())
        old_mask = dilate(old_mask, int(round(outline_margin * old_width)))
        source = surroundings_source(old_mask, render_mask)
        if flow is not None:
            source = torch.lerp(source, flow.source.to(source), flow.weight[..., None].to(source))
        if person is not None and evenness > 0 and bool(render_mask.any()):
            head = render_mask if flow is None else torch.maximum(render_mask, flow.coverage[:, None].to(render_mask))
            cols = torch.nonzero(render_mask.amax(dim=(0, 1, 2)) > 0).flatten()
            rows = render_mask[0, 0].sum(1)
            y = torch.arange(rows.numel(), dtype=rows.dtype, device=rows.device) + 0.5
            centre = torch.stack([(cols[0] + cols[-1] + 1).to(rows) / 2, (rows * y).sum() / rows.sum()])
            at = even_head_outline(
                sample_pixels(person.to(image), source),
                head,
                centre[None],
                torch.tensor([float(cols[-1] - cols[0] + 1)]),
                strength=evenness,
            )
            source = resample_source(source, at)
        background = sample_pixels(image, source)
    soft = torch.zeros_like(render_mask)
    out = background.clone()
    if bool(render_mask.any()):
        width = float((render_mask.amax(dim=2) > 0).sum(-1).clamp(min=1).amax())
        # Blend in the box around the face: outside it the mask is 0 and the result is the background.
        # Coarsest band about 32 px across the face: coarser bands (8 px) mixed the surroundings'
        # low frequencies (dark hair beside a light face) into the whole face, 1.7-2.3 dB on
        # frontal synthetic faces.
        levels = max(0, int(math.floor(math.log2(max(width, 32.0) / 32.0))))
        pad = 2 ** (levels + 2) + int(0.05 * width)
        Ho, Wo = render_mask.shape[-2:]
        rows = torch.nonzero(render_mask.amax(dim=(0, 1, 3)) > 0).flatten()
        cols = torch.nonzero(render_mask.amax(dim=(0, 1, 2)) > 0).flatten()
        y0, y1 = max(0, int(rows[0]) - pad), min(Ho, int(rows[-1]) + pad + 1)
        x0, x1 = max(0, int(cols[0]) - pad), min(Wo, int(cols[-1]) + pad + 1)
        box = (..., slice(y0, y1), slice(x0, x1))
        # A nearly hard mask (the silhouette's outermost pixels dropped, 1 px of antialiasing): the
        # pyramid mixes the low frequencies over a band but keeps fine detail sharp on each side, so
        # no structure of the old face shows through. The face is extended outside its silhouette by
        # push-pull filling, which is what the coarse bands see there.
        soft[box] = feather_mask(render_mask[box], erode_px=0.005 * width, blur_px=1.0)
        if flow is not None and forehead is not None:
            region = forehead[box] * flow.weight[:, None][box].to(forehead)
            hair = _hair_over_forehead(render[box], background[box], render_mask[box], region, width)
            soft[box] = soft[box] * (1 - hair)
        extended = push_pull_fill(render[box], erode(render_mask[box], int(round(0.005 * width))))
        under = _under_layer(extended, background[box], render_mask[box])
        out[box] = laplacian_blend(extended, under, soft[box], levels=levels)
        if person is not None and jaw is not None:
            with torch.no_grad():
                moved = sample_pixels(person.to(image), source)
            out, _ = _neck_under_chin(out, background, moved, render_mask, jaw, width)
    return out.clamp(0.0, 1.0), soft, background


def _coverage(fit: FitResult, model: MorphableModel, backend: str) -> Tensor:
    """``(B, 1, H, W)`` float mask of the pixels the model covers in a fit's pose."""
    cam = fit.camera
    verts = fit.to(device=model.mean.device).vertices(model).to(device=cam.R.device, dtype=cam.R.dtype)
    frags = rasterize(
        cam.to_ndc(verts),
        model.triangles.to(verts.device),
        cam.image_size,
        perspective=cam.is_perspective,
        backend=backend,
    )
    return frags.mask[:, None].to(verts.dtype)


@functools.lru_cache(maxsize=1)
def _auto_segmenter() -> PersonSegmenter | None:
    try:
        return make_segmenter("auto")
    except BackendUnavailableError:
        return None


def _foreground(images: Tensor, segmenter, fit: FitResult, face: MorphableModel, backend: str) -> Tensor | None:
    """``(B, 1, H, W)`` person probabilities for :func:`unwrap`, or ``None`` (no segmenter, or a mask
    that misses most of the fitted face: a segmentation that failed, e.g. on a rendered head)."""
    if segmenter is None:
        return None
    seg = _auto_segmenter() if segmenter == "auto" else segmenter
    if isinstance(seg, str):
        seg = make_segmenter(seg)
    if seg is None:
        return None
    if not isinstance(seg, PersonSegmenter):
        raise ValueError(f"segmenter must be a PersonSegmenter, a backend name, 'auto' or None; got {seg!r}")
    prob = seg.segment(images)
    with torch.no_grad():
        cover = _coverage(fit.to(images), face, backend)
        share = (prob * cover).sum((1, 2, 3)) / cover.sum((1, 2, 3)).clamp(min=1.0)
    # Images whose mask misses the face keep all their texels (probability 1 everywhere).
    return torch.where((share >= 0.5)[:, None, None, None], prob, torch.ones_like(prob))


class FaceFit(NamedTuple):
    """What :meth:`Frontalizer.fit` returns.

    Attributes:
        fit: the fit of the input images (detached, on the model's device).
        front: the frontal pose and coefficients to render (:func:`frontal_fit`; output image frame).
        foreground: ``(B, 1, H, W)`` person probabilities, or ``None`` (no person mask).
    """

    fit: FitResult
    front: FitResult
    foreground: Tensor | None


class Texels(NamedTuple):
    """What :meth:`Frontalizer.unwrap` returns.

    Attributes:
        seen: the unwrap: ``(B, 3, S, S)`` texture (the photo's shading divided out with
            :attr:`TextureConfig.relight`), ``(B, 1, S, S)`` confidence and visibility mask, with the
            colour outliers dropped.
        light: ``(B, 4)`` first-order light of the photo (:func:`~morphface.uv.fit_texel_shading`), or
            ``None`` (no relighting).
        skin: ``(1, 1, S, S)`` skin texels (:func:`~morphface.uv.skin_texel_mask`; shading is only
            divided out and applied there), or ``None``.
    """

    seen: UnwrapResult
    light: Tensor | None
    skin: Tensor | None


class Composite(NamedTuple):
    """What :meth:`Frontalizer.composite` returns: ``(B, 3, H', W')`` image, ``(B, 1, H', W')``
    face mask it was blended with (1: render) and ``(B, 3, H', W')`` warped surroundings."""

    image: Tensor
    face_mask: Tensor
    background: Tensor


def _texel_shading(light: Tensor, normals: Tensor, skin: Tensor, reference: Tensor) -> Tensor:
    """``(B, 1, S, S)`` shading of ``light`` at texel ``normals`` on the skin, 1 elsewhere."""
    return torch.lerp(torch.ones_like(skin), texel_shading(light, normals, reference=reference), skin)


def _auto_texture_size(fit: FitResult, model: MorphableModel) -> int:
    """The power of two at or above the fitted face's landmark box's longer side, in [128, 1024]."""
    lm = (
        fit.landmarks
        if fit.landmarks is not None
        else fit.camera.project(fit.vertices(model)[:, model.landmarks.clamp(min=0)])[0]
    )
    side = float((lm.amax(1) - lm.amin(1)).amax())
    return int(min(1024, max(128, 2 ** math.ceil(math.log2(max(side, 1.0))))))


class Frontalizer:
    """The stages of :func:`frontalize` (module doc), one method each:

    ``fit -> unwrap -> complete -> relight -> keep_photo -> render -> composite``

    Each stage takes the images and the earlier stages' small results and returns its own
    (:class:`FaceFit`, :class:`Texels`, :class:`~morphface.uv.Completion`,
    :class:`~morphface.render.Rendered`, :class:`Composite`); calling the object runs them in turn.
    To swap a stage, subclass and override its method, or call the stages yourself.

    Args:
        model: the morphable model to fit (default: the embedded ICT model's ``"narrow"`` face
            region, forehead to chin); its holes are closed internally.
        config: :class:`FrontalizeConfig` (default: all defaults).
        detector: a :class:`~morphface.fitting.LandmarkDetector` or a backend name
            (:func:`make_frontalize_detector`); not used when landmarks or a fit are given.
        backend: rasteriser backend.
    """

    def __init__(
        self,
        model: MorphableModel | None = None,
        config: FrontalizeConfig | None = None,
        detector: LandmarkDetector | str = "auto",
        backend: str = "auto",
    ) -> None:
        self.config = FrontalizeConfig() if config is None else config
        if not isinstance(self.config, FrontalizeConfig):
            raise ValueError(f"config must be a FrontalizeConfig or None; got {type(self.config).__name__}")
        head = self.config.composite.head
        if isinstance(head, MorphableModel):
            self.head_model: MorphableModel | None = head
        elif head:
            self.head_model = _default_model("full") if model is None else model
        else:
            self.head_model = None
        self.model = _default_model() if model is None else model
        self.face = fill_holes(self.model)
        self.detector = detector
        self.backend = backend

    def __call__(
        self, image, landmarks: Tensor | None = None, fit: FitResult | None = None, return_intermediates: bool = False
    ) -> FrontalizeResult:
        """Run every stage on ``image`` (arguments as for :func:`frontalize`)."""
        images, names = _as_images(image)
        face = self.fit(images, names, landmarks=landmarks, fit=fit)
        texels = self.unwrap(images, face)
        completion = self.complete(texels, face)
        completion = self.relight(completion, texels, face)
        completion = self.keep_photo(completion, images, face)
        rendered = self.render(completion.texture, face, images)
        out = self.composite(images, face, rendered)
        extra = self.intermediates(images, face, texels, completion, rendered, out) if return_intermediates else {}
        return FrontalizeResult(
            image=out.image, face_mask=out.face_mask, texture=completion.texture, fit=face.fit,
            frontal_fit=face.front, intermediates=extra,
        )

    # -- 1. fit -----------------------------------------------------------------------------------

    def fit(
        self,
        images: Tensor,
        names: list[str | None] | None = None,
        landmarks: Tensor | None = None,
        fit: FitResult | None = None,
    ) -> FaceFit:
        """``(B, 3, H, W)`` images (their file ``names`` for messages) -> the fit, the frontal pose and
        the person mask. Fits ``landmarks`` (``(B, 68, 2)`` pixels) or detected ones unless a ``fit``
        of these images is given."""
        B, _, H, W = images.shape
        if fit is None:
            fit, foreground = self._fit_landmarks(images, names or [None] * B, landmarks)
        elif fit.batch_size != B or tuple(fit.image_size) != (H, W):
            raise ValueError(f"fit is for {fit.batch_size} images of {fit.image_size}; got {B} of {(H, W)}")
        else:
            foreground = _foreground(images, self.config.fit.segmenter, fit, self.face, self.backend)
        # Coefficients live with the model (its bases), images wherever they are.
        fit = fit.detach().to(device=self.model.mean.device)
        view = self.config.view
        front = frontal_fit(
            fit, self.face, placement=view.placement, neutral_expression=view.neutral_expression,
            output_size=view.size_for(H, W),
        )
        return FaceFit(fit, front, foreground)

    def _fit_landmarks(
        self, images: Tensor, names: list[str | None], landmarks: Tensor | None
    ) -> tuple[FitResult, Tensor | None]:
        """Detect (unless given), fit, check, and refine with the person mask and photometrically."""
        cfg, model, backend = self.config.fit, self.model, self.backend
        B, _, H, W = images.shape
        contour, dense_pts = cfg.contour, None
        if landmarks is None:
            landmarks, dense_pts, det_name = _detect(images, self.detector, names)
            if contour is None:
                contour = det_name in ("dlib", "fan")
        lms = torch.as_tensor(landmarks).to(images)
        lms = lms if lms.dim() == 3 else lms[None]
        if lms.shape[0] != B:
            raise ValueError(f"landmarks are for {lms.shape[0]} images; got {B} images")
        table = None if dense_pts is None or cfg.dense is False else dense_correspondence_for(model, dense_pts.shape[1])
        if cfg.dense and dense_pts is None:
            raise ValueError("dense=True needs a detector that gives dense points (MediaPipe), not given landmarks "
                             "or a 68-point detector")
        if cfg.dense and table is None:
            raise ValueError(f"dense=True but there is no dense-correspondence table for model {model.name!r}")
        if table is not None:
            fit = fit_dense_landmarks(model, dense_pts, (H, W), correspondence=table)
            points = dense_pts
        else:
            fit = fit_with_contour(model, lms, (H, W)) if contour else fit_landmarks(model, lms, (H, W))
            points = lms
        fit.check_finite()
        _check_fit_quality(fit, points, cfg.max_fit_error)
        foreground = _foreground(images, cfg.segmenter, fit, self.face, backend)
        if cfg.silhouette and foreground is not None and not contour:
            fit = refine_with_person_mask(
                self.face,
                points,
                fit,
                foreground,
                vertex_ids=model.landmarks if table is None else table.vertex_ids(model),
                weights=None if table is None else table.weights(),
                backend=backend,
            )
            fit.check_finite()
        if cfg.photometric_steps > 0:
            from ..fitting.photometric import fit_photometric

            fit = fit_photometric(model, images, init=fit, landmarks=lms, steps=cfg.photometric_steps, backend=backend)
            fit.check_finite()
        return fit, foreground

    # -- 2. unwrap --------------------------------------------------------------------------------

    def unwrap(self, images: Tensor, face: FaceFit) -> Texels:
        """``(B, 3, H, W)`` images -> their ``(B, ., S, S)`` unwrap into the UV layout of the closed
        face; with :attr:`TextureConfig.relight` the photo's first-order shading divided out (completion
        then works in an albedo-like space); texels of another colour than the skin's dropped where
        completion has better (:attr:`TextureConfig.reject_outliers`)."""
        cfg = self.config.texture
        size = _auto_texture_size(face.fit, self.model) if cfg.size is None else cfg.size
        seen = unwrap(
            images, face.fit, self.face, size=size, edge_margin=cfg.edge_margin, foreground=face.foreground,
            backend=self.backend,
        )
        light = skin = None
        if cfg.relight:
            normals = camera_normal_map(face.fit, self.face, size).to(seen.texture)
            light = fit_texel_shading(seen, normals, self.face)
            skin = skin_texel_mask(self.face, size).to(seen.texture)
            shading = _texel_shading(light, normals, skin, reference=seen.mask)
            seen = UnwrapResult(seen.texture / shading, seen.confidence, seen.mask)
        if cfg.reject_outliers:
            seen, _ = reject_colour_outliers(seen, self.face)
        return Texels(seen, light, skin)

    # -- 3. complete ------------------------------------------------------------------------------

    def complete(self, texels: Texels, face: FaceFit) -> Completion:
        """Fill every texel: mirror, albedo model, push-pull (:func:`~morphface.uv.complete_texture`)."""
        return complete_texture(texels.seen, self.face, face.fit, mirror=self.config.texture.mirror)

    # -- 4. relight -------------------------------------------------------------------------------

    def relight(self, completion: Completion, texels: Texels, face: FaceFit) -> Completion:
        """Light the completed albedo-like texture with the photo's light (fixed in the camera frame) at
        the frontal pose's normals; unchanged without :attr:`TextureConfig.relight`."""
        if texels.light is None:
            return completion
        normals = camera_normal_map(face.front, self.face, completion.texture.shape[-1]).to(texels.seen.texture)
        shading = _texel_shading(texels.light, normals, texels.skin, reference=texels.seen.mask)
        return completion._replace(texture=(completion.texture * shading).clamp(0, 1))

    def keep_photo(self, completion: Completion, images: Tensor, face: FaceFit) -> Completion:
        """A nearly frontal face (:attr:`TextureConfig.keep_photo`) takes the photo's own colour on every
        texel the camera sees, the outlines' neighbourhoods included: with the head barely turned,
        they land where they were."""
        degrees = self.config.texture.keep_photo
        if degrees is None:
            return completion
        keep = _photo_weight(face.fit, face.front, degrees).to(completion.texture)
        if not bool((keep > 0).any()):
            return completion
        size = completion.texture.shape[-1]
        photo = unwrap(images, face.fit, self.face, size=size, edge_margin=0.0, backend=self.backend)
        return completion._replace(texture=torch.lerp(completion.texture, photo.texture, keep * photo.mask))

    # -- 5. render --------------------------------------------------------------------------------

    def render(self, texture: Tensor, face: FaceFit, images: Tensor) -> Rendered:
        """``(B, 3, S, S)`` texture -> the frontal face, ``(B, 3, H', W')`` image and ``(B, 1, H', W')``
        mask, on the images' device."""
        front = face.front.to(images)
        return render_uv_texture(
            texture, self.face, front.camera, verts=face.front.vertices(self.face).to(images), backend=self.backend
        )

    # -- 6. composite -----------------------------------------------------------------------------

    def composite(self, images: Tensor, face: FaceFit, rendered: Rendered) -> Composite:
        """Move the surroundings (and with :attr:`CompositeConfig.head`, the head) to meet the frontal
        face and blend the render in (step 5 of the module doc), one image at a time: the warp's
        outlines, the blending box and the pyramid depth follow that image's face alone, so an image's
        result does not depend on the others in its batch."""
        cfg, B = self.config.composite, images.shape[0]
        # 1 for a nearly frontal photo, 0 for a turned one: gates the head flow's mirroring and the outline's evening.
        frontal = _photo_weight(face.fit, face.front, (8.0, 15.0)).flatten()
        with torch.no_grad():
            old_mask = _coverage(face.fit.to(images), self.face, self.backend)
            flow, forehead = self._head_motion(images, face, rendered, turned=frontal.to(images.device) < 0.5)
            jaw = None
            if face.foreground is not None and self._has_landmarks(0, 17):
                jaw = self._frontal_landmarks(face, images, slice(0, 17))
        evenness = torch.zeros(B)
        if cfg.even_outline and face.foreground is not None:
            evenness = 1 - frontal.cpu()

        def one(x: Tensor | None, b: int) -> Tensor | None:
            return None if x is None else x[b : b + 1]

        parts = [
            _composite(
                one(images, b), one(old_mask, b), one(rendered.image, b), one(rendered.mask, b), cfg.outline_margin,
                None if flow is None else HeadFlow(*(one(t, b) for t in flow)),
                one(forehead, b), one(face.foreground, b), one(jaw, b), float(evenness[b]),
            )
            for b in range(B)
        ]
        return Composite(*(torch.cat(t) for t in zip(*parts)))

    def _head_motion(
        self, images: Tensor, face: FaceFit, rendered: Rendered, turned: Tensor
    ) -> tuple[HeadFlow | None, Tensor | None]:
        """The head's flow (:func:`~morphface.uv.head_flow`; ``turned``, ``(B,)`` bool: points the photo
        saw badly take their mirror's pixel) and the ``(B, 1, H', W')`` output rows above the frontal
        brows, where hair of the photo may lie in front of the new forehead; ``None`` without a head."""
        if self.head_model is None:
            return None, None
        # Not mirrored for nearly frontal faces: edge-on points at the sides of the head would take
        # their mirror's colour in patches.
        flow = head_flow(
            face.fit.to(images), face.front.to(images), fill_holes(self.head_model), mirror=turned,
            backend=self.backend,
        )
        if not self._has_landmarks(17, 27):
            return flow, None
        brows = self._frontal_landmarks(face, images, slice(17, 27))
        Ho, Wo = rendered.image.shape[-2:]
        rows = torch.arange(Ho, device=images.device, dtype=images.dtype) + 0.5
        forehead = (rows[None, :] < brows[..., 1].amin(1)[:, None]).to(images.dtype)
        return flow, forehead[:, None, :, None].expand(-1, 1, Ho, Wo)

    def _has_landmarks(self, lo: int, hi: int) -> bool:
        ids = self.face.landmarks
        return ids.numel() >= hi and bool((ids[lo:hi] >= 0).all())

    def _frontal_landmarks(self, face: FaceFit, images: Tensor, which: slice) -> Tensor:
        """``(B, K, 2)`` output pixels of the frontal face's landmarks ``which``."""
        front = face.front.to(images)
        pix, _ = front.camera.project(face.front.vertices(self.face).to(images)[:, self.face.landmarks[which]])
        return pix

    def intermediates(
        self, images: Tensor, face: FaceFit, texels: Texels, completion: Completion, rendered: Rendered,
        out: Composite,
    ) -> dict[str, Tensor]:
        """:attr:`FrontalizeResult.intermediates` from the stages' results."""
        return {
            "overlay": face.fit.to(images).render_overlay(self.model, images, backend=self.backend),
            "unwrapped": texels.seen.texture,
            "confidence": texels.seen.confidence,
            "visibility": texels.seen.mask,
            "source": completion.source,
            "render": rendered.image,
            "render_mask": rendered.mask,
            "background": out.background,
        }


def frontalize(
    image,
    model: MorphableModel | None = None,
    detector: LandmarkDetector | str = "auto",
    landmarks: Tensor | None = None,
    fit: FitResult | None = None,
    config: FrontalizeConfig | None = None,
    return_intermediates: bool = False,
    backend: str = "auto",
) -> FrontalizeResult:
    """Frontalise the face in each image (stages and placement rule in the module doc).

    Args:
        image: ``(B, 3, H, W)`` / ``(3, H, W)`` float RGB in ``[0, 1]``, or an image file path.
        model: the morphable model to fit (default: the embedded ICT model's ``"narrow"`` face
            region, forehead to chin); its holes are closed internally.
        detector: a :class:`~morphface.fitting.LandmarkDetector` or a backend name
            (:func:`make_frontalize_detector`); not used when ``landmarks`` or ``fit`` is given.
        landmarks: ``(B, 68, 2)`` iBUG-68 landmarks in pixels, instead of detecting them.
        fit: a :class:`~morphface.fitting.FitResult` of these images for ``model``, instead of fitting.
        config: :class:`FrontalizeConfig`, the tuning options of every stage (default: all defaults).
        return_intermediates: fill :attr:`FrontalizeResult.intermediates` (for notebooks).
        backend: rasteriser backend.

    Returns:
        :class:`FrontalizeResult`.

    Raises:
        NoFaceError: the detector found no face.
        ImageReadError: ``image`` is a path that cannot be read.
        FitError: the fit failed or is too poor to use.
        ValueError: bad shapes or options.
    """
    stages = Frontalizer(model, config, detector=detector, backend=backend)
    return stages(image, landmarks=landmarks, fit=fit, return_intermediates=return_intermediates)
