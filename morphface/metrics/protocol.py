"""Evaluation protocols of reenactment: same-identity reconstruction and cross-identity reenactment.

The protocol is independent of the model under test: it calls a ``generate(source, source_fit,
driving_fit, audio, driving_frames) -> frames`` function (a pipeline's ``reenact`` bound by the caller) on clips held in
memory (:class:`EvalClip`: frames, their fit, optional audio), and measures:

* **self** (same identity, HeadGAN/PIRenderer's reconstruction protocol): the first frame of each clip
  is the source, the clip's own parameters drive it, and every other frame is the ground truth.
  Metrics: L1 (0-255), PSNR, SSIM, LPIPS, FID (outputs vs. ground-truth frames), CSIM (output vs.
  ground-truth frame), AED, APD, ARD (fitted output vs. fitted ground truth).
* **cross** (cross identity): the first frame of clip ``i`` is driven by clip ``i + 1`` (the next clip of a
  different identity where there is one). Metrics: FID (outputs vs. driving frames), CSIM (output vs.
  the *source*), AED and ARD (fitted output vs. fitted driving frame).

Metrics whose backend or weights are missing (LPIPS, FID, or dlib for CSIM) are listed under
``unavailable`` with the reason, never replaced by a substitute. AED/APD/ARD use the frames where the
landmark detector finds a face in both images; the report gives that count. CSIM needs no detection: the
face box of an output is the projected 3DMM landmark box of its driving parameters.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor

from ..errors import MorphfaceError
from ..fitting import FitResult
from ..morphable import MorphableModel
from .identity import FaceEmbedder, cosine_similarity
from .image import l1_255, psnr, ssim
from .motion import expression_distance, fit_frames, pose_distance, rotation_distance

__all__ = ["EvalClip", "EvaluationReport", "GenerateFn", "evaluate_reenactment", "SELF_METRICS",
           "CROSS_METRICS",
           "landmark_boxes"]

#: metrics of each mode, in table order
SELF_METRICS = ("L1", "PSNR", "SSIM", "LPIPS", "FID", "CSIM", "AED", "APD", "ARD")
CROSS_METRICS = ("FID", "CSIM", "AED", "ARD")

#: ``generate(source (3, S, S), source_fit (batch 1), driving_fit (T), audio (T, A) | None,
#: driving_frames (T, 3, S, S)) -> (T, 3, S, S)``: 3DMM pipelines drive with the fit, image-driven ones
#: (X2Face) with the frames.
GenerateFn = Callable[[Tensor, FitResult, FitResult, "Tensor | None", Tensor], Tensor]


class EvalClip(NamedTuple):
    """A clip to evaluate on.

    Attributes:
        name: a label (e.g. ``identity/video/clip``).
        identity: who is in it (cross mode pairs different identities).
        frames: ``(T, 3, S, S)`` RGB in [0, 1].
        fit: its ``T``-frame fit in the frames' pixels.
        audio: ``(T, A)`` frame-aligned audio features, or ``None``.
        fps: frame rate (for the results video).
    """

    name: str
    identity: str
    frames: Tensor
    fit: FitResult
    audio: Tensor | None = None
    fps: float = 25.0


@dataclass
class EvaluationReport:
    """Results of :func:`evaluate_reenactment`.

    Attributes:
        mode: ``"self"`` or ``"cross"``.
        metrics: metric name -> value, for the metrics that could be computed.
        unavailable: metric name -> why it could not be computed.
        counts: ``clips``, ``frames`` (evaluated frames), ``motion_frames`` (frames with a face detected
            in both images, used by AED/APD/ARD), ``csim_frames``.
        per_clip: one row per evaluated clip (pair): names and per-clip means.
    """

    mode: str
    metrics: dict[str, float] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    per_clip: list[dict[str, Any]] = field(default_factory=list)

    def rows(self) -> list[tuple[str, str]]:
        """``(metric, value or "unavailable: reason")`` in table order."""
        names = SELF_METRICS if self.mode == "self" else CROSS_METRICS
        out = []
        for name in names:
            if name in self.metrics:
                out.append((name, f"{self.metrics[name]:.4f}"))
            else:
                out.append((name, f"unavailable: {self.unavailable.get(name, 'not computed')}"))
        return out

    def table(self) -> str:
        """A plain-text table of the metrics and counts."""
        rows = self.rows()
        width = max(len(n) for n, _ in rows)
        lines = [f"{self.mode}-reenactment evaluation ({self.counts.get('clips', 0)} clips, "
                 f"{self.counts.get('frames', 0)} frames)"]
        lines += [f"  {n:<{width}}  {v}" for n, v in rows]
        if "motion_frames" in self.counts:
            lines.append(f"  (AED/APD/ARD on {self.counts['motion_frames']} frames with a face detected "
                         f"in both images)")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "metrics": self.metrics, "unavailable": self.unavailable,
                "counts": self.counts, "per_clip": self.per_clip}

    def save_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(_finite(self.to_dict()), indent=1))
        return path

    def save_csv(self, path: str | Path) -> Path:
        """One row per metric: ``metric,value,status`` (status ``ok`` or the reason it is unavailable)."""
        path = Path(path)
        names = SELF_METRICS if self.mode == "self" else CROSS_METRICS
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["metric", "value", "status"])
            for name in names:
                if name in self.metrics:
                    w.writerow([name, repr(self.metrics[name]), "ok"])
                else:
                    w.writerow([name, "", f"unavailable: {self.unavailable.get(name, 'not computed')}"])
            for k, v in self.counts.items():
                w.writerow([f"count:{k}", v, "ok"])
        return path


def _finite(obj: Any) -> Any:
    """JSON has no inf/NaN: write them as strings."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    return obj


def landmark_boxes(fit: FitResult, model: MorphableModel) -> Tensor:
    """``(B, 4)`` bounding boxes of the projected 68 model landmarks (pixels, on the fit's device)."""
    ids = model.landmarks.clamp(min=0)
    on_model = fit.to(model.mean.device, model.mean.dtype)
    pix, _ = on_model.camera.project(on_model.vertices(model)[:, ids])
    return torch.cat([pix.amin(dim=1), pix.amax(dim=1)], dim=-1).to(fit.angles)


class _Optional:
    """An optional metric backend: built once, or the reason it cannot be."""

    def __init__(self, name: str, build: Callable[[], Any] | None, reason: str | None = None) -> None:
        self.name, self.value, self.reason = name, None, reason
        if build is not None and reason is None:
            try:
                self.value = build()
            except (MorphfaceError, ImportError, OSError) as e:
                self.reason = str(e)


def _mean(values: list[Tensor]) -> float:
    v = torch.cat([x.reshape(-1) for x in values]) if values else torch.zeros(0, dtype=torch.float64)
    v = v[~torch.isnan(v)]
    return float(v.mean()) if v.numel() else math.nan


def _pairs(clips: Sequence[EvalClip], mode: str) -> list[tuple[int, int]]:
    if mode == "self":
        return [(i, i) for i in range(len(clips))]
    if len(clips) < 2:
        raise ValueError(f"cross-identity evaluation needs at least 2 clips; got {len(clips)}")
    pairs = []
    for i, clip in enumerate(clips):
        order = [(i + d) % len(clips) for d in range(1, len(clips))]
        other = next((j for j in order if clips[j].identity != clip.identity), order[0])
        pairs.append((i, other))
    return pairs


def evaluate_reenactment(generate: GenerateFn, clips: Sequence[EvalClip], model: MorphableModel, *,
                         mode: str = "self", max_frames: int | None = None, detector: Any = "auto",
                         embedder: FaceEmbedder | str | None = "auto", lpips: Callable | str | None = "auto",
                         fid: Callable | str | Path | None = "auto", video_path: str | Path | None = None,
                         progress: bool = False) -> EvaluationReport:
    """Run a reenactment model over clips and measure it (module docstring).

    Args:
        generate: the model under test (:data:`GenerateFn`); it runs without gradients here.
        clips: the evaluation clips (same frame size).
        model: the morphable model of the clips' fits (also used to fit outputs for AED/APD/ARD).
        mode: ``"self"`` or ``"cross"``.
        max_frames: use at most this many frames of each (driving) clip.
        detector: landmark detector for AED/APD/ARD (``"auto"``: :func:`~morphface.fitting.make_detector`;
            ``None``: skip those metrics).
        embedder: CSIM backend (``"auto"``: :class:`FaceEmbedder`; ``None``: skip CSIM).
        lpips: ``(pred, target) -> (B,)`` LPIPS function, ``"auto"`` (:func:`~morphface.metrics.lpips.
            lpips_metric` when its package and weights are here) or ``None``.
        fid: ``images -> (B, D)`` feature extractor, ``"auto"`` (the FID Inception network when the
            ``pytorch-fid`` package and its cached weights are here), a weights file path for that network,
            or ``None``.
        video_path: write a results video (per clip: source | driving | output side by side) here.
        progress: show a progress bar.

    Returns:
        :class:`EvaluationReport`.
    """
    from tqdm.auto import tqdm

    if mode not in ("self", "cross"):
        raise ValueError(f"mode must be 'self' or 'cross'; got {mode!r}")
    if not clips:
        raise ValueError("no clips to evaluate")
    report = EvaluationReport(mode=mode)
    names = SELF_METRICS if mode == "self" else CROSS_METRICS

    def _auto_detector():
        from ..fitting import make_detector

        return make_detector("auto")

    def _auto_lpips():
        from .lpips import lpips_metric

        return lpips_metric()

    def _auto_fid():
        from .fid import inception_feature_extractor

        return inception_feature_extractor(None if fid == "auto" else fid)

    det = _Optional("detector", _auto_detector if detector == "auto" else None,
                    "no landmark detector given" if detector is None else None)
    if detector not in ("auto", None):
        det.value = detector
    emb = _Optional("CSIM", FaceEmbedder if embedder == "auto" else None,
                    "no face embedder given" if embedder is None else None)
    if embedder not in ("auto", None):
        emb.value = embedder
    lp = _Optional("LPIPS", _auto_lpips if lpips == "auto" else None, "disabled" if lpips is None else None)
    if callable(lpips):
        lp.value = lpips
    fd = _Optional("FID", _auto_fid if isinstance(fid, (str, Path)) else None,
                   "disabled" if fid is None else None)
    if callable(fid):
        fd.value = fid

    acc: dict[str, list[Tensor]] = {n: [] for n in names}
    real_feats, fake_feats = [], []
    frames_total = motion_frames = csim_frames = 0
    writer = None
    if video_path is not None:
        from ..io import VideoWriter

        writer = VideoWriter(video_path, fps=float(clips[0].fps))
    pairs = _pairs(clips, mode)
    try:
        for i, j in tqdm(pairs, desc=f"evaluate ({mode})", disable=not progress):
            src_clip, drv_clip = clips[i], clips[j]
            T = drv_clip.frames.shape[0] if max_frames is None else min(max_frames, drv_clip.frames.shape[0])
            source, source_fit = src_clip.frames[0], src_clip.fit[0]
            driving, driving_fit = drv_clip.frames[:T], drv_clip.fit[:T]
            audio = None if drv_clip.audio is None else drv_clip.audio[:T]
            with torch.no_grad():
                out = generate(source, source_fit, driving_fit, audio, driving).detach().float().cpu().clamp(0, 1)
            if out.shape != driving.shape:
                raise ValueError(f"generate returned {tuple(out.shape)} for {T} driving frames of shape "
                                 f"{tuple(driving.shape)}")
            if writer is not None:
                writer.write(torch.cat([source.cpu()[None].expand(T, -1, -1, -1), driving.cpu(), out],
                                       dim=-1))
            # self mode: frame 0 is the source itself; score the others (all when the clip has one frame)
            keep = torch.arange(1 if (mode == "self" and T > 1) else 0, T)
            fake, ref = out[keep], driving.cpu().float()[keep]
            frames_total += keep.numel()
            row: dict[str, Any] = {"source": src_clip.name, "driving": drv_clip.name,
                                   "frames": int(keep.numel())}
            if mode == "self":
                for name, fn in (("L1", l1_255), ("PSNR", psnr), ("SSIM", ssim)):
                    v = fn(fake, ref)
                    acc[name].append(v)
                    row[name] = float(v.mean())
                if lp.value is not None:
                    v = lp.value(fake, ref)
                    acc["LPIPS"].append(v)
                    row["LPIPS"] = float(v.mean())
            if fd.value is not None:
                real_feats.append(fd.value(ref).cpu())
                fake_feats.append(fd.value(fake).cpu())
            if emb.value is not None:
                boxes = landmark_boxes(driving_fit[keep], model).cpu()
                e_fake = emb.value.embed_batch(fake, boxes)
                if mode == "self":
                    e_ref = emb.value.embed_batch(ref, boxes)
                else:
                    src_box = landmark_boxes(source_fit, model).cpu()
                    e_ref = emb.value.embed(source.cpu(), src_box[0])[None].expand(keep.numel(), -1)
                v = cosine_similarity(e_fake, e_ref)
                csim_frames += int((~torch.isnan(v)).sum())
                acc["CSIM"].append(v)
                row["CSIM"] = _mean([v])
            if det.value is not None:
                f_fake = fit_frames(model, fake, det.value)
                found = [k for k, f in enumerate(f_fake) if f is not None]
                # references are fitted only where the output has a face (fitting is the slow part)
                f_ref = fit_frames(model, ref[found], det.value) if found else []
                both = [(f_fake[k], b) for k, b in zip(found, f_ref) if b is not None]
                motion_frames += len(both)
                if both:
                    fa, fb = FitResult.cat([a for a, _ in both]), FitResult.cat([b for _, b in both])
                    parts = {"AED": expression_distance(fa.exp_coeffs, fb.exp_coeffs),
                             "APD": pose_distance(fa.angles, fa.translation, fb.angles, fb.translation),
                             "ARD": rotation_distance(fa.angles, fb.angles)}
                    for name, v in parts.items():
                        if name in acc:
                            acc[name].append(v)
                            row[name] = float(v.mean())
            report.per_clip.append(row)
    finally:
        if writer is not None:
            writer.close()

    report.counts = {"clips": len(pairs), "frames": frames_total}
    for name in ("L1", "PSNR", "SSIM"):
        if name in names:
            report.metrics[name] = _mean(acc[name])
    for name, backend in (("LPIPS", lp), ("CSIM", emb)):
        if name not in names:
            continue
        if backend.value is None:
            report.unavailable[name] = backend.reason or "unavailable"
        else:
            report.metrics[name] = _mean(acc[name])
            if name == "CSIM":
                report.counts["csim_frames"] = csim_frames
    if fd.value is None:
        report.unavailable["FID"] = fd.reason or "unavailable"
    else:
        real, fake = torch.cat(real_feats), torch.cat(fake_feats)
        if real.shape[0] < 2:
            report.unavailable["FID"] = f"needs at least 2 frames; evaluated {real.shape[0]}"
        else:
            from .fid import fid_from_features

            report.metrics["FID"] = fid_from_features(real, fake)
    motion_names = [n for n in ("AED", "APD", "ARD") if n in names]
    if det.value is None:
        for n in motion_names:
            report.unavailable[n] = f"no landmark detector: {det.reason}"
    else:
        report.counts["motion_frames"] = motion_frames
        for n in motion_names:
            if motion_frames:
                report.metrics[n] = _mean(acc[n])
            else:
                report.unavailable[n] = ("the landmark detector found a face in both the output and the "
                                         f"reference in none of the {frames_total} frames")
    return report
