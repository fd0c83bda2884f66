"""The embedded default model: ICT-FaceKit "Light" (MIT), shipped in ``morphface/assets/ict_facekit``.

9,409 vertices / 18,460 triangles (the upstream "full face area": forehead to chin with ears and
front neck), 100 identity PCA modes (pre-scaled to one std, prior N(0, I)), 53 named ARKit-style
expression blendshapes (weights in [0, 1]), per-vertex UVs without seams, 68 iBUG landmarks, and
no albedo model. See ``morphface/assets/ict_facekit/README.md`` for provenance and licence.

Vertex sets: ``narrow_face`` (no ears/neck; what fitting uses), ``fitting`` (upstream's fitting
vertices), ``jaw_right_sub``/``jaw_left_sub`` and ``jawline_right_ext``/``jawline_left_ext``
(candidate chains for contour landmarks).
"""

from __future__ import annotations

from importlib import resources

from .loaders import load_ict_npz
from .model import MorphableModel

__all__ = ["load_default_model", "default_model_path"]


def default_model_path():
    """Path of the shipped ``model.npz`` (a ``Traversable`` inside the installed package)."""
    return resources.files("morphface").joinpath("assets", "ict_facekit", "model.npz")


def load_default_model(region: str = "full") -> MorphableModel:
    """Load the embedded ICT-FaceKit model.

    Args:
        region: ``"full"`` (9,409 vertices with ears and neck) or ``"narrow"`` (6,706 vertices,
            forehead to chin; the region fitting and NCC renders use).
    """
    if region not in ("full", "narrow"):
        raise ValueError(f"region must be 'full' or 'narrow'; got {region!r}")
    with resources.as_file(default_model_path()) as path:
        model = load_ict_npz(path)
    model.name = "ICT-FaceKit Light (MIT, USC ICT)"
    return model if region == "full" else model.subset("narrow_face")
