"""FACS action units from the named ICT (ARKit-style) blendshapes: the offline stand-in for OpenFace's AUs.

The 3D-keypoint GAN (Hatakeyama et al. 2024) is driven by the 17 AU intensities OpenFace 2.0 estimates,
each in [0, 5]. OpenFace cannot run here, so the AUs of a frame are computed from its 3DMM expression fit:
the embedded ICT FaceKit model's blendshapes are named after facial movements close to FACS units, and
every AU is assigned the blendshapes that perform it (table below; left and right halves are averaged):

======  ==========================  ======================================
AU      FACS name                   ICT blendshapes
======  ==========================  ======================================
AU01    inner brow raiser           browInnerUp_L, browInnerUp_R
AU02    outer brow raiser           browOuterUp_L, browOuterUp_R
AU04    brow lowerer                browDown_L, browDown_R
AU05    upper lid raiser            eyeWide_L, eyeWide_R
AU06    cheek raiser                cheekSquint_L, cheekSquint_R
AU07    lid tightener               eyeSquint_L, eyeSquint_R
AU09    nose wrinkler               noseSneer_L, noseSneer_R
AU10    upper lip raiser            mouthUpperUp_L, mouthUpperUp_R
AU12    lip corner puller           mouthSmile_L, mouthSmile_R
AU14    dimpler                     mouthDimple_L, mouthDimple_R
AU15    lip corner depressor        mouthFrown_L, mouthFrown_R
AU17    chin raiser                 mouthShrugLower
AU20    lip stretcher               mouthStretch_L, mouthStretch_R
AU23    lip tightener               mouthPress_L, mouthPress_R
AU25    lips part                   mouthLowerDown_L, mouthLowerDown_R
AU26    jaw drop                    jawOpen
AU45    blink                       eyeBlink_L, eyeBlink_R
======  ==========================  ======================================

**Scale.** A blendshape weight of 1 is the full movement, FACS intensity E (5), so
``AU = 5 * mean(weights of its blendshapes)``, clipped to [0, 5]. The map is linear,
``aus = clip(M w)`` with ``M`` ``(17, K_exp)`` (:func:`au_matrix`); blendshapes not in the table (gaze,
jaw sideways, pucker, ...) do not contribute. :func:`aus_to_expression` is its right inverse: it sets
every blendshape of an AU to ``AU / 5`` (others 0), so ``expression_to_aus(aus_to_expression(a)) == a``
for any ``a`` in [0, 5]^17.

**Other models.** Any model whose expression names include the table's ICT names (e.g. a converted
ARKit model) works as it is. A model without them (PCA expressions such as BFM's) has no AUs here:
:func:`au_matrix` raises :class:`~morphface.errors.ModelFormatError`; projecting such a fit onto the ICT
blendshapes needs a dense correspondence between the two meshes, which the library does not ship.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..errors import InputShapeError, ModelFormatError

__all__ = ["FACS_AUS", "AU_NAMES", "ICT_AU_BLENDSHAPES", "AU_MAX", "au_index", "au_matrix", "expression_to_aus",
           "aus_to_expression"]

#: The 17 OpenFace intensity AUs, in OpenFace's order (the order of every ``(B, 17)`` AU tensor).
FACS_AUS: tuple[int, ...] = (1, 2, 4, 5, 6, 7, 9, 10, 12, 14, 15, 17, 20, 23, 25, 26, 45)

#: FACS names of :data:`FACS_AUS`.
AU_NAMES: dict[int, str] = {
    1: "inner brow raiser", 2: "outer brow raiser", 4: "brow lowerer", 5: "upper lid raiser", 6: "cheek raiser",
    7: "lid tightener", 9: "nose wrinkler", 10: "upper lip raiser", 12: "lip corner puller", 14: "dimpler",
    15: "lip corner depressor", 17: "chin raiser", 20: "lip stretcher", 23: "lip tightener", 25: "lips part",
    26: "jaw drop", 45: "blink",
}

#: AU number -> the ICT blendshapes performing it (module docstring table).
ICT_AU_BLENDSHAPES: dict[int, tuple[str, ...]] = {
    1: ("browInnerUp_L", "browInnerUp_R"),
    2: ("browOuterUp_L", "browOuterUp_R"),
    4: ("browDown_L", "browDown_R"),
    5: ("eyeWide_L", "eyeWide_R"),
    6: ("cheekSquint_L", "cheekSquint_R"),
    7: ("eyeSquint_L", "eyeSquint_R"),
    9: ("noseSneer_L", "noseSneer_R"),
    10: ("mouthUpperUp_L", "mouthUpperUp_R"),
    12: ("mouthSmile_L", "mouthSmile_R"),
    14: ("mouthDimple_L", "mouthDimple_R"),
    15: ("mouthFrown_L", "mouthFrown_R"),
    17: ("mouthShrugLower",),
    20: ("mouthStretch_L", "mouthStretch_R"),
    23: ("mouthPress_L", "mouthPress_R"),
    25: ("mouthLowerDown_L", "mouthLowerDown_R"),
    26: ("jawOpen",),
    45: ("eyeBlink_L", "eyeBlink_R"),
}

#: AU intensities are in [0, AU_MAX].
AU_MAX = 5.0


def au_index(au: int) -> int:
    """Position of AU number ``au`` (e.g. 12) in :data:`FACS_AUS`.

    Raises:
        KeyError: ``au`` is not one of the 17.
    """
    try:
        return FACS_AUS.index(int(au))
    except ValueError:
        raise KeyError(f"AU{au} is not one of the 17 AUs {list(FACS_AUS)}") from None


def au_matrix(exp_names: Sequence[str] | None, *, dtype: torch.dtype = torch.float32, device=None) -> Tensor:
    """The linear map ``M`` ``(17, K_exp)`` from blendshape weights to AU intensities (before clipping).

    Args:
        exp_names: the model's expression names (``MorphableModel.exp_names``).

    Raises:
        ModelFormatError: the names lack a blendshape of the table (e.g. a PCA expression model).
    """
    names = list(exp_names or [])
    missing = sorted({n for shapes in ICT_AU_BLENDSHAPES.values() for n in shapes} - set(names))
    if missing:
        raise ModelFormatError(f"AUs need the ICT blendshapes of morphface.morphable.facs; the model's "
                               f"{len(names)} expression names lack {missing[:4]}{'...' if len(missing) > 4 else ''}")
    M = torch.zeros(len(FACS_AUS), len(names), dtype=dtype, device=device)
    for row, au in enumerate(FACS_AUS):
        shapes = ICT_AU_BLENDSHAPES[au]
        for n in shapes:
            M[row, names.index(n)] = AU_MAX / len(shapes)
    return M


def expression_to_aus(exp: Tensor, exp_names: Sequence[str] | None) -> Tensor:
    """AU intensities of blendshape weights.

    Args:
        exp: ``(..., K_exp)`` blendshape weights (nominally in [0, 1]).
        exp_names: the model's expression names.

    Returns:
        ``(..., 17)`` in [0, 5], same dtype and device as ``exp``.
    """
    M = au_matrix(exp_names, dtype=exp.dtype, device=exp.device)
    if exp.shape[-1] != M.shape[1]:
        raise InputShapeError(f"exp must end in the model's {M.shape[1]} expression weights; got {tuple(exp.shape)}")
    return (exp @ M.T).clamp(0.0, AU_MAX)


def aus_to_expression(aus: Tensor, exp_names: Sequence[str] | None) -> Tensor:
    """Blendshape weights that produce given AUs (the right inverse of :func:`expression_to_aus`).

    Args:
        aus: ``(..., 17)`` AU intensities in [0, 5].
        exp_names: the model's expression names.

    Returns:
        ``(..., K_exp)``: every blendshape of an AU at ``AU / 5``, blendshapes outside the table at 0.
    """
    M = au_matrix(exp_names, dtype=aus.dtype, device=aus.device)
    if aus.shape[-1] != len(FACS_AUS):
        raise InputShapeError(f"aus must end in {len(FACS_AUS)} AU intensities; got {tuple(aus.shape)}")
    return aus @ (M > 0).to(aus.dtype) / AU_MAX
