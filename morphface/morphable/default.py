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

import numpy as np

from ..errors import ModelFormatError
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
    path = default_model_path()
    try:
        with path.open("rb") as fh, np.load(fh, allow_pickle=False) as z:
            d = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise ModelFormatError(f"embedded model {path} is missing or unreadable ({e}); reinstall morphface") from e
    n_narrow = int(d["narrow_n_vertices"])
    model = MorphableModel(
        mean=d["mean"], triangles=d["triangles"],
        id_basis=d["id_basis"], id_std=d["id_std"],
        exp_basis=d["exp_basis"], exp_kind="blendshape", exp_names=[str(n) for n in d["exp_names"]],
        uv=d["uv"], landmarks=d["landmarks_68"],
        vertex_sets={
            "narrow_face": np.arange(n_narrow),
            "fitting": d["fitting_vertices"],
            "jaw_right_sub": d["landmarks_68_jaw_right_sub"],
            "jaw_left_sub": d["landmarks_68_jaw_left_sub"],
            "jawline_right_ext": d["jawline_right_ext"],
            "jawline_left_ext": d["jawline_left_ext"],
        },
        name="ICT-FaceKit Light (MIT, USC ICT)",
    )
    if region == "full":
        return model
    if region == "narrow":
        return model.subset("narrow_face")
    raise ValueError(f"region must be 'full' or 'narrow'; got {region!r}")
